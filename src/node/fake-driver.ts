// A hypervisor that only pretends: VMs are a few fields in a map, so one process can hold thousands
// for scale simulation and fast tests. It keeps the same state machine and errors as the qemu driver;
// no per-VM timers or files exist, and console output is synthesized on demand.
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type DetachOptions, type HypervisorDriver, type StopOptions, type VolumeAttachment, type VmInfo, type VmSpec, type VmState,
  assertOperationAllowed, assertTransition, validateVmSpec, VmNotFoundError,
} from './hypervisor.ts';

export interface FakeDriverDelays {
  /** Time spent in `starting` before the VM is running. */
  startMs?: number;
  /** Time the guest takes to power off on a graceful stop (a forced stop is instant). */
  stopMs?: number;
  rebootMs?: number;
}

export interface FakeDriverOptions {
  delays?: FakeDriverDelays;
  onStateChange?: (info: VmInfo) => void;
}

interface FakeVm {
  spec: VmSpec;
  state: VmState;
  startedAt?: Date;
  /** Boots since the last start (1 + reboots); the console shows one boot log per boot. */
  boots: number;
  /** Set while a start or stop is in flight so a second stop can wait for it. */
  inFlight?: Promise<void>;
  abortStop?: () => void;
  /** Volumes plugged in, by id; a VM that stops loses them (its QEMU would end). */
  volumes: Map<string, VolumeAttachment>;
}

export class FakeDriver implements HypervisorDriver {
  readonly name = 'fake' as const;
  private readonly vms = new Map<string, FakeVm>();
  private readonly delays: Required<FakeDriverDelays>;
  private readonly onStateChange?: (info: VmInfo) => void;

  constructor(opts: FakeDriverOptions = {}) {
    this.delays = { startMs: 0, stopMs: 0, rebootMs: 0, ...opts.delays };
    this.onStateChange = opts.onStateChange;
  }

  accelerator(): 'none' {
    return 'none';
  }

  async create(spec: VmSpec): Promise<void> {
    validateVmSpec(spec);
    const existing = this.vms.get(spec.id);
    if (existing) assertOperationAllowed(spec.id, existing.state, 'create');
    const vm: FakeVm = { spec: { ...spec }, state: 'defined', boots: 0, volumes: new Map() };
    this.vms.set(spec.id, vm);
    this.notify(vm);
  }

  async start(id: string): Promise<void> {
    const vm = this.get(id);
    assertOperationAllowed(id, vm.state, 'start');
    this.setState(vm, 'starting');
    const run = (async () => {
      if (this.delays.startMs > 0) await sleep(this.delays.startMs);
      if (vm.state !== 'starting') return; // destroyed meanwhile
      vm.boots = 1;
      vm.startedAt = new Date();
      this.setState(vm, 'running');
    })();
    vm.inFlight = run;
    await run.finally(() => { vm.inFlight = undefined; });
  }

  async stop(id: string, opts: StopOptions = {}): Promise<void> {
    const vm = this.get(id);
    if (vm.state === 'stopping') {
      if (opts.force) vm.abortStop?.();
      await vm.inFlight;
      return;
    }
    assertOperationAllowed(id, vm.state, 'stop');
    if (vm.state === 'crashed') {
      this.setState(vm, 'stopped');
      return;
    }
    this.setState(vm, 'stopping');
    const run = (async () => {
      if (!opts.force && this.delays.stopMs > 0) {
        // A graceful stop that a forced stop may cut short; like QEMU's, a guest that takes longer
        // than the caller's timeout is ended then.
        const ac = new AbortController();
        vm.abortStop = () => ac.abort();
        const waitMs = Math.min(this.delays.stopMs, opts.timeoutMs ?? Number.POSITIVE_INFINITY);
        await sleep(waitMs, undefined, { signal: ac.signal }).catch(() => undefined);
        vm.abortStop = undefined;
      }
      if (vm.state !== 'stopping') return;
      vm.startedAt = undefined;
      this.setState(vm, 'stopped');
    })();
    vm.inFlight = run;
    await run.finally(() => { vm.inFlight = undefined; });
  }

  async reboot(id: string): Promise<void> {
    const vm = this.get(id);
    assertOperationAllowed(id, vm.state, 'reboot');
    if (this.delays.rebootMs > 0) await sleep(this.delays.rebootMs);
    if (vm.state === 'running') vm.boots++;
  }

  async destroy(id: string): Promise<void> {
    const vm = this.get(id);
    assertOperationAllowed(id, vm.state, 'destroy');
    vm.abortStop?.();
    vm.startedAt = undefined;
    this.setState(vm, 'destroyed');
  }

  async info(id: string): Promise<VmInfo | undefined> {
    const vm = this.vms.get(id);
    return vm && this.describe(vm);
  }

  async list(): Promise<VmInfo[]> {
    const out: VmInfo[] = [];
    for (const vm of this.vms.values()) if (vm.state !== 'destroyed') out.push(this.describe(vm));
    return out;
  }

  async consoleOutput(id: string): Promise<string> {
    const vm = this.get(id);
    if (vm.state === 'destroyed' || vm.boots === 0) return '';
    const lines: string[] = [];
    for (let boot = 1; boot <= vm.boots; boot++) lines.push(...bootLog(vm.spec, boot));
    return lines.join('\n') + '\n';
  }

  async attachVolume(id: string, volume: VolumeAttachment): Promise<void> {
    const vm = this.get(id);
    assertOperationAllowed(id, vm.state, 'attachVolume');
    if (!volume.nbd && !volume.path) throw new Error(`volume ${volume.volumeId} has neither an NBD export nor a file`);
    vm.volumes.set(volume.volumeId, { ...volume });
  }

  async detachVolume(id: string, volumeId: string, _opts?: DetachOptions): Promise<void> {
    const vm = this.get(id);
    assertOperationAllowed(id, vm.state, 'detachVolume');
    vm.volumes.delete(volumeId);
  }

  async attachedVolumes(id: string): Promise<string[]> {
    const vm = this.get(id);
    return vm.state === 'running' ? [...vm.volumes.keys()].sort() : [];
  }

  /** Simulates QEMU dying under a running VM (for tests of crash handling). */
  simulateCrash(id: string): void {
    const vm = this.get(id);
    if (vm.state !== 'running' && vm.state !== 'stopping') return;
    vm.abortStop?.();
    vm.startedAt = undefined;
    this.setState(vm, 'crashed');
  }

  /** Simulates the guest powering itself off (shutdown -h inside the instance). */
  simulateGuestPowerOff(id: string): void {
    const vm = this.get(id);
    if (vm.state !== 'running') return;
    vm.startedAt = undefined;
    this.setState(vm, 'stopped');
  }

  private get(id: string): FakeVm {
    const vm = this.vms.get(id);
    if (!vm) throw new VmNotFoundError(id);
    return vm;
  }

  private setState(vm: FakeVm, to: VmState): void {
    assertTransition(vm.spec.id, vm.state, to);
    vm.state = to;
    // Like a serial log file: each start begins a fresh one; a stopped VM keeps its last run's output.
    if (to === 'starting' || to === 'destroyed') vm.boots = 0;
    if (to !== 'running' && to !== 'stopping') vm.volumes.clear();
    this.notify(vm);
  }

  private describe(vm: FakeVm): VmInfo {
    return {
      id: vm.spec.id, state: vm.state, accelerator: 'none', startedAt: vm.state === 'running' ? vm.startedAt : undefined,
      vcpus: vm.spec.vcpus, memoryMiB: vm.spec.memoryMiB,
    };
  }

  private notify(vm: FakeVm): void {
    this.onStateChange?.(this.describe(vm));
  }
}

/** What a minimal Linux guest with ironbark's guest agent prints on its serial console. */
function bootLog(spec: VmSpec, boot: number): string[] {
  // A disk with its own boot loader is reached through the firmware, as on a real VM.
  const firmware = spec.kernelPath ? [] : [spec.bootMode === 'uefi' ? 'BdsDxe: starting Boot0001 "UEFI Misc Device"' : 'Booting from Hard Disk...'];
  return [
    ...firmware,
    `[    0.000000] Linux version 6.1.0-ironbark-fake (boot ${boot})`,
    `[    0.000000] Command line: ${spec.kernelCmdline}`,
    `[    0.010000] Memory: ${spec.memoryMiB * 1024}K available`,
    `[    0.020000] smpboot: Allowing ${spec.vcpus} CPUs`,
    `[    0.500000] virtio_net virtio0: ${spec.network.kind === 'none' ? 'no network' : `mac ${spec.macAddress}`}`,
    `ironbark-guest: instance-id=${spec.id}`,
    `ironbark-guest: boot ${boot} complete`,
  ];
}
