// Runs each VM as its own daemonized qemu-system-x86_64, controlled over QMP. QEMU outlives the node
// controller: every VM keeps a record (vm.json), pid file and QMP socket in its work directory, and
// QemuDriver.open() re-adopts whatever is still running after a node controller restart.
import { execFile } from 'node:child_process';
import { chmod, readdir, readFile, rename, rm, rmdir, stat, symlink, unlink, writeFile, open as openFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type Accelerator, type DetachOptions, type HypervisorDriver, type StopOptions, type VmInfo, type VmSpec, type VmState, type VolumeAttachment,
  assertOperationAllowed, assertTransition, InvalidVmSpecError, validateVmSpec, VmNotFoundError,
} from './hypervisor.ts';
import { QmpClient, type QmpEvent } from './qmp-client.ts';
import { ensurePrivateDir, ensurePrivateFile, PRIVATE_FILE_MODE, restrictFile } from '../store/private-files.ts';
import { describeExit, lastLines } from './command-failure.ts';
import { smbiosType1Arg } from './smbios-identity.ts';
import { ensureUefiVars, OVMF_CODE } from './hypervisor/uefi-firmware.ts';
import { rootVolumeArgs } from './storage/root-volume.ts';
import { hotplugPortArgs, pluggedVolumes, plugVolume, unplugVolume } from './storage/qmp-volumes.ts';

export interface QemuDriverOptions {
  /** Directory indexing every VM this driver manages (entries are work dirs or links to them). */
  runDir: string;
  accelerator: Accelerator;
  qemuBinary?: string;
  machine?: 'q35' | 'pc';
  /** How long QEMU may take to daemonize. */
  launchTimeoutMs?: number;
  qmpTimeoutMs?: number;
  /** Default time a guest gets to honour an ACPI power-down. */
  stopTimeoutMs?: number;
  /** Told about every state change, including ones nobody asked for (crashes, guest power-off). */
  onStateChange?: (info: VmInfo) => void;
}

const FILES = { record: 'vm.json', qmp: 'qmp.sock', pid: 'qemu.pid', console: 'console.log' } as const;
const CONSOLE_TAIL_BYTES = 64 * 1024;
// sockaddr_un.sun_path is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH = 107;

interface VmRecord {
  spec: VmSpec;
  state: VmState;
  startedAt?: string;
}

interface QemuVm {
  spec: VmSpec;
  state: VmState;
  pid?: number;
  startedAt?: Date;
  qmp?: QmpClient;
  /** Set while stop/destroy ends QEMU on purpose, so its exit is not taken for a crash. */
  expectingExit: boolean;
  /** The guest powered itself off (QEMU runs with -no-shutdown, so it waits for us to quit it). */
  guestPoweredOff: boolean;
  shutdownWaiters: Set<() => void>;
  lock: Promise<void>;
  busy: number;
}

export class QemuDriver implements HypervisorDriver {
  readonly name = 'qemu' as const;
  private readonly opts: Required<Omit<QemuDriverOptions, 'onStateChange'>> & Pick<QemuDriverOptions, 'onStateChange'>;
  private readonly vms = new Map<string, QemuVm>();
  private closing = false;

  private constructor(opts: QemuDriverOptions) {
    this.opts = {
      qemuBinary: 'qemu-system-x86_64',
      machine: 'q35',
      launchTimeoutMs: 30_000,
      qmpTimeoutMs: 10_000,
      stopTimeoutMs: 30_000,
      // An option passed as undefined keeps its default.
      ...(Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as QemuDriverOptions),
      runDir: resolve(opts.runDir),
    };
  }

  /** Creates the driver and re-adopts the VMs recorded under runDir. */
  static async open(opts: QemuDriverOptions): Promise<QemuDriver> {
    const driver = new QemuDriver(opts);
    await ensurePrivateDir(driver.opts.runDir);
    await driver.adoptAll();
    return driver;
  }

  accelerator(): Accelerator {
    return this.opts.accelerator;
  }

  async create(spec: VmSpec): Promise<void> {
    validateVmSpec(spec);
    const socketPath = join(spec.workDir, FILES.qmp);
    if (socketPath.length > MAX_SOCKET_PATH) {
      throw new InvalidVmSpecError(spec.id, `workDir is too long for a unix socket path (${socketPath.length} > ${MAX_SOCKET_PATH})`);
    }
    const existing = this.vms.get(spec.id);
    if (existing) assertOperationAllowed(spec.id, existing.state, 'create');
    const vm: QemuVm = {
      spec: { ...spec, workDir: resolve(spec.workDir) },
      state: 'defined', expectingExit: false, guestPoweredOff: false, shutdownWaiters: new Set(), lock: Promise.resolve(), busy: 0,
    };
    this.vms.set(spec.id, vm);
    // vm.json and the console log may show user data: 0600 in a 0700 directory.
    await ensurePrivateDir(vm.spec.workDir);
    await this.persist(vm);
    const indexEntry = join(this.opts.runDir, spec.id);
    if (indexEntry !== vm.spec.workDir) {
      await rm(indexEntry, { force: true });
      await symlink(vm.spec.workDir, indexEntry);
    }
    this.notify(vm);
  }

  async start(id: string): Promise<void> {
    const vm = this.get(id);
    return this.withLock(vm, async () => {
      assertOperationAllowed(id, vm.state, 'start');
      const previous = vm.state;
      this.setState(vm, 'starting');
      try {
        await this.launch(vm);
      } catch (err) {
        await this.terminate(vm).catch(() => undefined);
        vm.pid = undefined;
        this.setState(vm, previous);
        throw err;
      }
      vm.startedAt = new Date();
      this.setState(vm, 'running');
    });
  }

  async stop(id: string, opts: StopOptions = {}): Promise<void> {
    const vm = this.get(id);
    if (vm.state === 'stopping') {
      // Another stop is under way: a forced stop cuts its grace period short; either way wait for it.
      if (opts.force && vm.pid) killProcess(vm.pid);
      await vm.lock;
      return;
    }
    return this.withLock(vm, async () => {
      assertOperationAllowed(id, vm.state, 'stop');
      if (vm.state === 'crashed') {
        this.setState(vm, 'stopped');
        return;
      }
      this.setState(vm, 'stopping');
      vm.expectingExit = true;
      try {
        if (!opts.force && !vm.guestPoweredOff) {
          const poweredOff = this.waitForGuestShutdown(vm, opts.timeoutMs ?? this.opts.stopTimeoutMs);
          const qmp = await this.monitor(vm);
          if (qmp) await qmp.execute('system_powerdown').catch(() => undefined);
          await poweredOff;
        }
      } catch (err) {
        vm.expectingExit = false;
        throw err;
      }
      await this.endAsStopped(vm);
    });
  }

  async reboot(id: string): Promise<void> {
    const vm = this.get(id);
    return this.withLock(vm, async () => {
      assertOperationAllowed(id, vm.state, 'reboot');
      const qmp = await this.monitor(vm);
      if (!qmp) throw new Error(`cannot reboot VM ${id}: its QEMU monitor is unreachable`);
      await qmp.execute('system_reset');
    });
  }

  async destroy(id: string): Promise<void> {
    const vm = this.get(id);
    return this.withLock(vm, async () => {
      assertOperationAllowed(id, vm.state, 'destroy');
      vm.expectingExit = true;
      try {
        if (vm.pid && processAlive(vm.pid)) {
          killProcess(vm.pid);
          await waitForExit(vm.pid, 10_000);
        }
        await vm.qmp?.close();
      } finally {
        vm.expectingExit = false;
      }
      vm.qmp = undefined;
      vm.pid = undefined;
      const dir = vm.spec.workDir;
      await this.persistChain; // no queued record write may land after the removal
      const files = [...Object.values(FILES), `${FILES.record}.tmp`];
      await Promise.all(files.map((f) => rm(join(dir, f), { force: true })));
      await rmdir(dir).catch(() => undefined); // keeps anything the caller put there, such as the disk
      const indexEntry = join(this.opts.runDir, id);
      if (indexEntry !== dir) await unlink(indexEntry).catch(() => undefined);
      this.setState(vm, 'destroyed', { persist: false });
    });
  }

  async info(id: string): Promise<VmInfo | undefined> {
    const vm = this.vms.get(id);
    if (!vm) return undefined;
    if (vm.state === 'running' && vm.busy === 0) await this.withLock(vm, () => this.refresh(vm));
    return this.describe(vm);
  }

  async list(): Promise<VmInfo[]> {
    const out: VmInfo[] = [];
    for (const id of this.vms.keys()) {
      const info = await this.info(id);
      if (info && info.state !== 'destroyed') out.push(info);
    }
    return out;
  }

  async consoleOutput(id: string): Promise<string> {
    const vm = this.get(id);
    if (vm.state === 'destroyed') return '';
    return readTail(join(vm.spec.workDir, FILES.console), CONSOLE_TAIL_BYTES);
  }

  /** Hot-plugs a volume into the running VM (storage/qmp-volumes.ts); plugging one already there is a no-op. */
  async attachVolume(id: string, volume: VolumeAttachment): Promise<void> {
    const vm = this.get(id);
    return this.withLock(vm, async () => {
      assertOperationAllowed(id, vm.state, 'attachVolume');
      const qmp = await this.monitor(vm);
      if (!qmp) throw new Error(`cannot attach volume ${volume.volumeId} to VM ${id}: its QEMU monitor is unreachable`);
      await plugVolume(qmp, volume, this.opts.machine);
    });
  }

  /** Unplugs a volume once the guest lets go of it (by default within 30 s); not plugged is a no-op. */
  async detachVolume(id: string, volumeId: string, opts: DetachOptions = {}): Promise<void> {
    const vm = this.get(id);
    return this.withLock(vm, async () => {
      assertOperationAllowed(id, vm.state, 'detachVolume');
      const qmp = await this.monitor(vm);
      if (!qmp) throw new Error(`cannot detach volume ${volumeId} from VM ${id}: its QEMU monitor is unreachable`);
      await unplugVolume(qmp, volumeId, opts.timeoutMs ?? 30_000);
    });
  }

  async attachedVolumes(id: string): Promise<string[]> {
    const vm = this.get(id);
    if (vm.state !== 'running') return [];
    const qmp = await this.monitor(vm);
    return qmp ? pluggedVolumes(qmp) : [];
  }

  /** Lets go of every QEMU monitor; the VMs keep running for the next driver to adopt. */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.vms.values()].map((vm) => vm.qmp?.close()));
  }

  // --- launching and ending QEMU -------------------------------------------------------------

  private async launch(vm: QemuVm): Promise<void> {
    const dir = vm.spec.workDir;
    await rm(join(dir, FILES.qmp), { force: true });
    await rm(join(dir, FILES.pid), { force: true });
    vm.guestPoweredOff = false;
    // QEMU opens the console log with the umask's mode; made first, it keeps ours (the guest prints user data there).
    await ensurePrivateFile(join(dir, FILES.console));
    const args = buildQemuArgs(vm.spec, {
      accelerator: this.opts.accelerator,
      machine: this.opts.machine,
      qmpSocket: join(dir, FILES.qmp),
      pidFile: join(dir, FILES.pid),
      consoleLog: join(dir, FILES.console),
      uefiVars: vm.spec.kernelPath === undefined && vm.spec.bootMode === 'uefi' ? await ensureUefiVars(dir) : undefined,
    });
    // -daemonize: the launcher exits once QEMU is initialised (or reports why it could not start),
    // and the VM is no child of ours, so it survives a node controller restart.
    await new Promise<void>((resolvePromise, reject) => {
      execFile(this.opts.qemuBinary, args, { timeout: this.opts.launchTimeoutMs, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
        if (!err) return resolvePromise();
        const exitCode = typeof err.code === 'number' ? err.code : null;
        const why = lastLines(stderr, 5).replace(/\n/g, '; ') || err.message;
        reject(new Error(`QEMU could not start VM ${vm.spec.id} (${describeExit({ exitCode, signal: err.signal, timedOut: err.killed })}): ${why}`));
      });
    });
    vm.pid = await readPid(join(dir, FILES.pid));
    if (!vm.pid) throw new Error(`QEMU started VM ${vm.spec.id} but wrote no pid file`);
    const qmp = await this.attach(vm, 5000);
    const status = await qmp.execute<{ status: string }>('query-status');
    if (status.status !== 'running') throw new Error(`VM ${vm.spec.id} is ${status.status} right after launch`);
  }

  /** Ends QEMU: quit over QMP if possible, SIGKILL if it does not go. */
  private async terminate(vm: QemuVm): Promise<void> {
    const pid = vm.pid;
    if (pid && processAlive(pid)) {
      const qmp = await this.monitor(vm);
      if (qmp) await qmp.execute('quit', undefined, { timeoutMs: 5000 }).catch(() => undefined);
      if (!(await waitForExit(pid, 5000))) {
        killProcess(pid);
        if (!(await waitForExit(pid, 10_000))) throw new Error(`QEMU (pid ${pid}) for VM ${vm.spec.id} would not exit`);
      }
    }
    await vm.qmp?.close();
    vm.qmp = undefined;
  }

  private waitForGuestShutdown(vm: QemuVm, timeoutMs: number): Promise<boolean> {
    return new Promise((resolvePromise) => {
      const done = (ok: boolean) => { clearTimeout(timer); vm.shutdownWaiters.delete(onShutdown); resolvePromise(ok); };
      const onShutdown = () => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      vm.shutdownWaiters.add(onShutdown);
    });
  }

  // --- QMP -----------------------------------------------------------------------------------

  private async attach(vm: QemuVm, retryForMs: number): Promise<QmpClient> {
    const qmp = await QmpClient.connect(join(vm.spec.workDir, FILES.qmp), { retryForMs, commandTimeoutMs: this.opts.qmpTimeoutMs });
    vm.qmp = qmp;
    qmp.on('event', (event: QmpEvent) => this.onEvent(vm, qmp, event));
    qmp.on('close', () => this.onMonitorClosed(vm, qmp));
    return qmp;
  }

  /** The VM's monitor, reconnecting if the connection was lost while QEMU lives on. */
  private async monitor(vm: QemuVm): Promise<QmpClient | undefined> {
    if (vm.qmp && !vm.qmp.isClosed) return vm.qmp;
    if (!vm.pid || !processAlive(vm.pid)) return undefined;
    return this.attach(vm, 1000).catch(() => undefined);
  }

  private onEvent(vm: QemuVm, qmp: QmpClient, event: QmpEvent): void {
    if (vm.qmp !== qmp || event.event !== 'SHUTDOWN' || event.data?.guest !== true) return;
    vm.guestPoweredOff = true;
    for (const wake of [...vm.shutdownWaiters]) wake();
    if (vm.expectingExit) return;
    // The guest powered off by itself: QEMU idles (-no-shutdown) until we end it and record a stop.
    this.withLock(vm, async () => {
      if (vm.state !== 'running' || !vm.guestPoweredOff) return;
      this.setState(vm, 'stopping');
      vm.expectingExit = true;
      await this.endAsStopped(vm);
    }).catch(() => undefined);
  }

  /** Ends QEMU (its exit is expected, so not a crash) and records the VM as stopped. */
  private async endAsStopped(vm: QemuVm): Promise<void> {
    try {
      await this.terminate(vm);
    } finally {
      vm.expectingExit = false;
    }
    vm.pid = undefined;
    vm.startedAt = undefined;
    this.setState(vm, 'stopped');
  }

  private onMonitorClosed(vm: QemuVm, qmp: QmpClient): void {
    if (vm.qmp !== qmp) return;
    vm.qmp = undefined;
    for (const wake of [...vm.shutdownWaiters]) wake();
    if (vm.expectingExit || this.closing) return;
    this.withLock(vm, () => this.refresh(vm, true)).catch(() => undefined);
  }

  /** Brings a running VM's recorded state in line with its QEMU process. */
  private async refresh(vm: QemuVm, monitorJustClosed = false): Promise<void> {
    if (vm.state !== 'running') return;
    const pid = vm.pid;
    if (pid && processAlive(pid)) {
      if (vm.qmp && !vm.qmp.isClosed) {
        const status = await vm.qmp.execute<{ status: string }>('query-status', undefined, { timeoutMs: 2000 }).catch(() => undefined);
        if (status?.status !== 'internal-error' && status?.status !== 'guest-panicked') return;
        // QEMU lives but the guest is dead for good: end it and report the crash.
        vm.expectingExit = true;
        try {
          await this.terminate(vm);
        } finally {
          vm.expectingExit = false;
        }
      } else if (!monitorJustClosed || !(await waitForExit(pid, 2000))) {
        // QEMU closes its monitor a moment before it exits; one that lives on keeps running unmonitored.
        return;
      }
    }
    vm.pid = undefined;
    vm.qmp = undefined;
    this.setState(vm, vm.guestPoweredOff ? 'stopped' : 'crashed');
  }

  // --- adoption ------------------------------------------------------------------------------

  private async adoptAll(): Promise<void> {
    for (const entry of await readdir(this.opts.runDir)) {
      const dir = join(this.opts.runDir, entry);
      const isDir = await stat(dir).then((s) => s.isDirectory(), () => false);
      if (!isDir) continue;
      const record = await readFile(join(dir, FILES.record), 'utf8').then((t) => JSON.parse(t) as VmRecord, () => undefined);
      if (!record || record.spec?.id !== entry) continue;
      await this.adopt(record);
    }
  }

  private async adopt(record: VmRecord): Promise<void> {
    const vm: QemuVm = {
      spec: record.spec,
      state: record.state,
      startedAt: record.startedAt ? new Date(record.startedAt) : undefined,
      expectingExit: false, guestPoweredOff: false, shutdownWaiters: new Set(), lock: Promise.resolve(), busy: 0,
    };
    this.vms.set(vm.spec.id, vm);
    const dir = vm.spec.workDir;
    // What an earlier version left readable to others is narrowed on adoption.
    await ensurePrivateDir(dir).catch(() => undefined);
    for (const f of [FILES.record, FILES.console]) await restrictFile(join(dir, f)).catch(() => undefined);
    const pid = await readPid(join(dir, FILES.pid));
    const live = pid !== undefined && processAlive(pid) && commandLineMentions(pid, join(dir, FILES.qmp));
    const before = vm.state;
    if (live) {
      vm.pid = pid;
      vm.state = 'running';
      const qmp = await this.attach(vm, 2000).catch(() => undefined);
      const status = await qmp?.execute<{ status: string }>('query-status').catch(() => undefined);
      if (status?.status === 'shutdown') {
        // Powered off while nobody was watching: finish the stop now.
        vm.state = 'stopping';
        vm.expectingExit = true;
        await this.terminate(vm).finally(() => { vm.expectingExit = false; });
        vm.pid = undefined;
        vm.state = 'stopped';
      }
    } else if (vm.state === 'running' || vm.state === 'starting') {
      vm.state = 'crashed';
    } else if (vm.state === 'stopping') {
      vm.state = 'stopped';
    }
    if (vm.state !== 'running') vm.startedAt = undefined;
    if (vm.state !== before) {
      await this.persist(vm);
      this.notify(vm);
    }
  }

  // --- bookkeeping ---------------------------------------------------------------------------

  private get(id: string): QemuVm {
    const vm = this.vms.get(id);
    if (!vm) throw new VmNotFoundError(id);
    return vm;
  }

  private withLock<T>(vm: QemuVm, fn: () => Promise<T>): Promise<T> {
    vm.busy++;
    const run = vm.lock.then(fn).finally(() => { vm.busy--; });
    vm.lock = run.then(() => undefined, () => undefined);
    return run;
  }

  private setState(vm: QemuVm, to: VmState, opts: { persist?: boolean } = {}): void {
    assertTransition(vm.spec.id, vm.state, to);
    vm.state = to;
    if (opts.persist !== false) {
      this.persist(vm).catch(() => undefined);
    }
    this.notify(vm);
  }

  private persistChain: Promise<void> = Promise.resolve();

  /** Writes vm.json atomically; writes are queued so an older state never lands after a newer one. */
  private persist(vm: QemuVm): Promise<void> {
    const record: VmRecord = { spec: vm.spec, state: vm.state, startedAt: vm.startedAt?.toISOString() };
    const file = join(vm.spec.workDir, FILES.record);
    const write = async () => {
      if (this.vms.get(vm.spec.id) !== vm || vm.state === 'destroyed') return;
      await writeFile(`${file}.tmp`, JSON.stringify(record, null, 2) + '\n', { mode: PRIVATE_FILE_MODE });
      await chmod(`${file}.tmp`, PRIVATE_FILE_MODE);
      await rename(`${file}.tmp`, file);
    };
    const next = this.persistChain.then(write);
    this.persistChain = next.catch(() => undefined);
    return next;
  }

  private describe(vm: QemuVm): VmInfo {
    return {
      id: vm.spec.id,
      state: vm.state,
      pid: vm.state === 'running' || vm.state === 'stopping' ? vm.pid : undefined,
      accelerator: this.opts.accelerator,
      startedAt: vm.state === 'running' ? vm.startedAt : undefined,
      vcpus: vm.spec.vcpus,
      memoryMiB: vm.spec.memoryMiB,
    };
  }

  private notify(vm: QemuVm): void {
    this.opts.onStateChange?.(this.describe(vm));
  }
}

// --- QEMU command line ---------------------------------------------------------------------------

/** QEMU option lists separate with commas; a literal comma inside a value is written twice. */
function optValue(value: string): string {
  return value.replaceAll(',', ',,');
}

export function buildQemuArgs(spec: VmSpec, run: {
  accelerator: Accelerator;
  machine: 'q35' | 'pc';
  qmpSocket: string;
  pidFile: string;
  consoleLog: string;
  /** The VM's UEFI variable store, for bootMode uefi. */
  uefiVars?: string;
}): string[] {
  const args = [
    '-name', `guest=${optValue(spec.id)}`,
    '-machine', run.machine,
    '-accel', run.accelerator,
    '-cpu', run.accelerator === 'kvm' ? 'host' : 'max',
    '-smp', String(spec.vcpus),
    '-m', String(spec.memoryMiB),
    '-nodefaults', '-no-user-config', '-display', 'none',
    // A guest power-off leaves QEMU idle instead of exiting, so its exit always means stop or crash.
    '-no-shutdown',
    // Without a kernel the firmware boots the disk's own boot loader: SeaBIOS (QEMU's default)
    // for legacy-bios, OVMF in two flash chips (code read-only, the VM's variables) for uefi.
    ...(spec.kernelPath ? ['-kernel', spec.kernelPath, '-append', spec.kernelCmdline] : []),
    ...(spec.kernelPath === undefined && spec.bootMode === 'uefi' && run.uefiVars
      ? ['-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${optValue(OVMF_CODE)}`,
        '-drive', `if=pflash,format=raw,unit=1,file=${optValue(run.uefiVars)}`]
      : []),
    // The instance's identity as EC2 presents it (system UUID and serial "ec2…"): cloud-init knows
    // its platform by it and speaks IMDSv2.
    '-smbios', smbiosType1Arg(spec.id),
  ];
  if (spec.initrdPath) args.push('-initrd', spec.initrdPath);
  if (spec.rootVolume) args.push(...rootVolumeArgs(spec.rootVolume));
  else args.push('-drive', `file=${optValue(spec.diskPath)},if=virtio,format=qcow2`);
  // Entropy for the guest's first-boot host keys; without it key generation stalls on TCG.
  args.push('-device', 'virtio-rng-pci');
  // Empty ports for EBS volumes plugged in while the VM runs (q35's root bus takes no hot-plug).
  args.push(...hotplugPortArgs(run.machine));
  const net = spec.network;
  if (net.kind === 'none') {
    args.push('-nic', 'none');
  } else {
    let netdev: string;
    if (net.kind === 'tap') {
      netdev = `tap,id=net0,ifname=${net.tapName},script=no,downscript=no`;
    } else {
      netdev = 'user,id=net0';
      for (const f of net.hostfwd ?? []) {
        netdev += `,hostfwd=${f.protocol}:${f.hostAddress ?? '127.0.0.1'}:${f.hostPort}-:${f.guestPort}`;
      }
      for (const f of net.guestfwd ?? []) {
        netdev += `,guestfwd=tcp:${f.guestAddress}:${f.guestPort}-${optValue(f.target)}`;
      }
    }
    args.push('-netdev', netdev, '-device', `virtio-net-pci,netdev=net0,mac=${spec.macAddress},romfile=`);
  }
  args.push(
    '-chardev', `file,id=serial0,path=${optValue(run.consoleLog)}`,
    '-serial', 'chardev:serial0',
    '-chardev', `socket,id=qmp0,path=${optValue(run.qmpSocket)},server=on,wait=off`,
    '-mon', 'chardev=qmp0,mode=control',
    '-pidfile', run.pidFile,
    '-daemonize',
  );
  return args;
}

// --- processes and files -------------------------------------------------------------------------

/** True while the process exists and is not a zombie (a reaped-late QEMU must count as gone). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Guards against pid reuse: the pid must still be the QEMU that serves this VM's socket. */
function commandLineMentions(pid: number, text: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').some((arg) => arg.includes(text));
  } catch {
    return false;
  }
}

function killProcess(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (processAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await sleep(25);
  }
  return true;
}

async function readPid(file: string): Promise<number | undefined> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

async function readTail(file: string, maxBytes: number): Promise<string> {
  let handle;
  try {
    handle = await openFile(file, 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, maxBytes);
    const buf = Buffer.alloc(length);
    await handle.read(buf, 0, length, size - length);
    return buf.toString('utf8');
  } finally {
    await handle.close();
  }
}

