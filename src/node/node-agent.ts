// The node controller: turns "this instance should exist" into a VM on this host and reports what
// actually runs. Each instance's spec is persisted before anything is made for it; images come
// through the checksum-verifying cache, the root disk is a qcow2 overlay, the tap and DHCP
// reservation come from the zone's NodeNetwork, and the hypervisor driver runs the VM.
//
// Decisions an operator should know:
// - runInstance returns as soon as the spec is stored and the capacity counted (state `pending`);
//   fetching images and booting go on in the background, as on Eucalyptus' node controller. A launch
//   that fails leaves the instance `terminated` with the reason, and nothing on the host.
// - stopInstance likewise answers `stopping` at once; the guest's ACPI power-down goes on in the
//   background, and a guest that ignores it is ended after stopTimeoutMs (a still-booting guest
//   usually does). terminateInstance ends a stop under way at once instead of waiting for it.
// - Resources: pending, running, stopping and shutting-down instances hold cores, memory and disk;
//   stopped and crashed instances keep only their disk. Starting one again needs free cores and memory.
// - After a restart the agent re-adopts every VM the driver still runs. A VM that should run but is
//   gone (host reboot, QEMU killed) is reported `crashed` and is NOT restarted behind the operator's
//   back: startInstance boots its kept disk again. An interrupted launch is resumed, an interrupted
//   stop or terminate is finished.
import os from 'node:os';
import { mkdir, rm, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { Ec2Error } from '../protocol/errors.ts';
import type { HypervisorDriver, VmNetwork, VmSpec, VmState } from './hypervisor.ts';
import type { ImageCache } from './image-cache.ts';
import { createInstanceDisk, deleteInstanceDisk, diskInfo } from './instance-disk.ts';
import type { InstanceMetadata } from './metadata-service.ts';
import { metadataFromSpec } from './metadata-from-spec.ts';
import { withCurrentPublicAddress } from './network/metadata-public-address.ts';
import { checkMetadataOptions } from './metadata-options.ts';
import type { NodeNetwork } from './network.ts';
import type { FirewallApplyResult, FirewallDocument } from './network/firewall-document.ts';
import { NodeFirewallDocuments } from './network/firewall-documents.ts';
import type { HostNetworks } from './network/host-networks.ts';
import type { NetworkDiagnosis } from './network/diagnosis.ts';
import { validateZonePeers, type ZonePeers } from './network/overlay.ts';
import { GUEST_SHUTDOWN_REASON, type ImageRef, type InstanceMetadataOptions, type InstanceSpec, type InstanceUpdate, type NodeApi, type NodeVolumeAttachment, type NodeInstanceState, type NodeInstanceStatus, type NodeResources } from './node-api.ts';
import { NodeStateStore, type InstanceRecord, type QuarantinedRecord } from './node-state.ts';
import { checkAttachment, NodeVolumes } from './storage/node-volumes.ts';
import { checkRootVolume, ROOT_VOLUME_DEVICE } from './storage/root-volume.ts';
import { attachVolume as driverAttachVolume, detachVolume as driverDetachVolume } from './hypervisor.ts';

export interface AgentLogger {
  debug(fields: object, msg: string): void;
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
  error(fields: object, msg: string): void;
}

export interface Capacity {
  cores: number;
  memoryMiB: number;
  diskGiB: number;
}

export interface NodeAgentOptions {
  nodeId: string;
  /** Holds instance records, disks and VM work directories. */
  stateDir: string;
  driver: HypervisorDriver;
  imageCache: ImageCache;
  /** The zone network for instances of (zone, cidr); none for drivers without real networking (fake). */
  network?: (zone: string, cidr: string) => NodeNetwork;
  /** All of the host's zone networks (network/host-networks.ts): the zone's peers, diagnosis. */
  hostNetworks?: HostNetworks;
  /** Replaces what is read from the host (os.cpus, os.totalmem, the file system of stateDir). */
  capacity?: Partial<Capacity>;
  log?: AgentLogger;
  /** How long a guest gets to power off on a graceful stop before it is ended (default 30 s). */
  stopTimeoutMs?: number;
  /** Shown in describeResources, e.g. the accelerator probe's verdict. */
  acceleratorReason?: string;
  /** Make a qcow2 overlay per instance; defaults to true for qemu, false for the fake driver. */
  instanceDisks?: boolean;
}

interface Instance {
  record: InstanceRecord;
  lock: Promise<void>;
  busy: number;
  /** Set by terminate so a launch in progress gives up at its next step. */
  terminating: boolean;
  launch?: Promise<void>;
}

/** How long a guest gets to honour an ACPI power-down before its VM is ended. */
export const DEFAULT_STOP_TIMEOUT_MS = 30_000;
const GiB = 1024 ** 3;
/** Space the node keeps free on its state directory's file system for instance records and logs. */
const STATE_DIR_RESERVE = 16 * 1024 * 1024;
const MiB = 1024 ** 2;
/** States in which an instance has (or is about to have) a live VM: it holds cores and memory. */
const HOLDS_CPU: ReadonlySet<NodeInstanceState> = new Set(['pending', 'running', 'stopping', 'shutting-down']);
/** VM states (the driver's) in which a QEMU process holds its cores and memory. */
const VM_HOLDS_HOST: ReadonlySet<VmState> = new Set(['starting', 'running', 'stopping']);

const noopLog: AgentLogger = { debug() {}, info() {}, warn() {}, error() {} };

class LaunchAborted extends Error {}

export class NodeAgent implements NodeApi {
  readonly nodeId: string;
  private readonly opts: NodeAgentOptions;
  private readonly driver: HypervisorDriver;
  private readonly store: NodeStateStore;
  private readonly log: AgentLogger;
  private readonly instances = new Map<string, Instance>();
  private readonly networks = new Map<string, { network: NodeNetwork; ready: Promise<void> }>();
  /** The zones' firewall documents (security groups), on disk when this node has real networking. */
  private readonly firewallDocs: NodeFirewallDocuments;
  private readonly metadataByIp = new Map<string, InstanceMetadata>();
  private readonly instanceDisks: boolean;
  /** The EBS volumes each instance keeps (storage/node-volumes.ts). */
  private readonly volumes: NodeVolumes;
  private recovered: Promise<void> | undefined;
  /** Records set aside at start (unreadable or damaged): their VMs are kept, and they are reported. */
  private quarantined: QuarantinedRecord[] = [];
  /**
   * The cores and memory of the VMs those records named, while they run: kept VMs still use the
   * host, so the scheduler must not hand their room to new instances.
   */
  private readonly quarantinedVms = new Map<string, { cores: number; memoryMiB: number }>();

  constructor(opts: NodeAgentOptions) {
    this.opts = opts;
    this.nodeId = opts.nodeId;
    this.driver = opts.driver;
    this.store = new NodeStateStore(opts.stateDir);
    this.firewallDocs = new NodeFirewallDocuments(opts.network ? opts.stateDir : undefined);
    this.log = opts.log ?? noopLog;
    this.instanceDisks = opts.instanceDisks ?? opts.driver.name === 'qemu';
    this.volumes = new NodeVolumes(opts.stateDir);
  }

  /** For the metadata service: the instance whose private address this is. */
  /** The public address is the one the zone's firewall document says now (network/metadata-public-address.ts). */
  readonly lookupMetadata = (ip: string): InstanceMetadata | undefined => withCurrentPublicAddress(this.metadataByIp.get(ip), this.firewallDocs);

  /** For the image cache: base images that back instance disks here must not be evicted. */
  imageInUse(imageId: string): boolean {
    for (const { record } of this.instances.values()) {
      if (record.state === 'terminated') continue;
      const { kernel, ramdisk, root } = record.spec;
      if (root.id === imageId || kernel?.id === imageId || ramdisk?.id === imageId) return true;
    }
    return false;
  }

  /** Instances this node holds (any state), for the composition's shutdown decisions. */
  get instanceCount(): number {
    return this.instances.size;
  }

  /** Waits until a background launch of the instance has finished (for callers that need `running`). */
  async settled(instanceId: string): Promise<NodeInstanceStatus | undefined> {
    await this.recover();
    const inst = this.instances.get(instanceId);
    if (!inst) return undefined;
    await inst.launch;
    await inst.lock;
    return this.statusOf(inst);
  }

  /** Reads the persisted instances and reconciles them with the driver; runs once, before any call. */
  recover(): Promise<void> {
    this.recovered ??= this.reconcileOnStart();
    return this.recovered;
  }

  // --- NodeApi ---------------------------------------------------------------------------------

  async describeResources(): Promise<NodeResources> {
    await this.recover();
    const capacity = await this.capacity();
    this.lastCapacity = capacity;
    await this.refreshQuarantinedVms();
    const held = this.held();
    return {
      nodeId: this.nodeId,
      hypervisor: this.driver.name,
      accelerator: this.driver.accelerator(),
      acceleratorReason: this.opts.acceleratorReason,
      capacity,
      free: {
        cores: Math.max(0, capacity.cores - held.cores),
        memoryMiB: Math.max(0, capacity.memoryMiB - held.memoryMiB),
        // A file system that is (nearly) full cannot take an instance's record, whatever the
        // accounting says: no room, so the scheduler passes this node by until space is freed.
        diskGiB: await this.stateDirFull() ? 0 : Math.max(0, capacity.diskGiB - held.diskGiB),
      },
      instanceCount: [...this.instances.values()].filter((i) => i.record.state !== 'terminated').length,
      ...(this.quarantined.length > 0 ? { quarantined: this.quarantined.map((q) => ({ ...q })) } : {}),
    };
  }

  async describeInstances(): Promise<NodeInstanceStatus[]> {
    await this.recover();
    const out: NodeInstanceStatus[] = [];
    for (const inst of [...this.instances.values()]) {
      await this.observe(inst);
      out.push(this.statusOf(inst));
    }
    return out;
  }

  async runInstance(spec: InstanceSpec): Promise<NodeInstanceStatus> {
    await this.recover();
    validateSpec(spec);
    const existing = this.instances.get(spec.instanceId);
    if (existing) return this.statusOf(existing);
    this.assertRoomFor(spec, 'launch');
    const inst: Instance = {
      record: { spec, state: 'pending', since: new Date().toISOString() },
      lock: Promise.resolve(), busy: 0, terminating: false,
    };
    // Counted before the first await, so concurrent launches see each other's capacity.
    this.instances.set(spec.instanceId, inst);
    try {
      await this.store.save(inst.record);
    } catch (err) {
      this.instances.delete(spec.instanceId);
      // A full disk is a lack of capacity (EC2's answer for a host that cannot take the instance).
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
        throw new Ec2Error('InsufficientInstanceCapacity', `Node ${this.nodeId} has no room left on its disk for instance ${spec.instanceId}.`);
      }
      throw new Ec2Error('InternalError', `Node ${this.nodeId} could not record instance ${spec.instanceId}: ${(err as Error).message}`);
    }
    this.log.info({ instanceId: spec.instanceId, vmType: spec.vmType.name }, 'launching instance');
    inst.launch = this.withLock(inst, () => this.launch(inst));
    return this.statusOf(inst);
  }

  async startInstance(instanceId: string, update?: InstanceUpdate): Promise<NodeInstanceStatus> {
    await this.recover();
    const inst = this.get(instanceId);
    return this.withLock(inst, async () => {
      await this.observe(inst, true);
      const { state } = inst.record;
      if (state === 'running' || state === 'pending') return this.statusOf(inst);
      if (state !== 'stopped' && state !== 'crashed') throw incorrectState(instanceId, 'started');
      if (update) await this.applyUpdate(inst, update);
      this.assertRoomFor(inst.record.spec, 'start', instanceId);
      const before = state;
      await this.setState(inst, 'pending');
      try {
        await this.bootVm(inst);
      } catch (err) {
        const message = (err as Error).message;
        await this.setState(inst, before === 'crashed' ? 'crashed' : 'stopped', `start failed: ${message}`);
        this.log.warn({ instanceId, err: message }, 'instance start failed');
        throw new Ec2Error('InternalError', `Instance ${instanceId} could not be started on node ${this.nodeId}: ${message}`);
      }
      await this.setState(inst, 'running');
      return this.statusOf(inst);
    });
  }

  /**
   * Answers as soon as the stop is under way (`stopping`; `stopped` if it already is): the guest's
   * ACPI power-down runs in the background under the instance's lock, and a guest that does not
   * power off within stopTimeoutMs is ended. A stop that must wait for other work on the instance
   * (a start still booting) answers with the state now and follows that work.
   */
  async stopInstance(instanceId: string, force = false): Promise<NodeInstanceStatus> {
    await this.recover();
    const inst = this.get(instanceId);
    const { state } = inst.record;
    if (state === 'stopping') {
      // Cut a graceful stop in progress short; the driver allows a forced stop while stopping.
      if (force) await this.driver.stop(instanceId, { force: true }).catch((err) => this.logSwallowed(instanceId, 'force the stop under way', err));
      return this.statusOf(inst);
    }
    if (state === 'stopped') return this.statusOf(inst);
    if (state === 'shutting-down' || state === 'terminated') throw incorrectState(instanceId, 'stopped');
    let answer!: (status: NodeInstanceStatus) => void;
    let refuse!: (err: unknown) => void;
    const answered = new Promise<NodeInstanceStatus>((resolve, reject) => { answer = resolve; refuse = reject; });
    const queued = inst.busy > 0;
    this.withLock(inst, async () => {
      await this.observe(inst, true);
      const now = inst.record.state;
      if (now === 'stopped' || now === 'stopping') return answer(this.statusOf(inst));
      if (now !== 'running' && now !== 'crashed') throw incorrectState(instanceId, 'stopped');
      await this.stopVm(inst, force, () => answer(this.statusOf(inst)));
    }).catch((err: unknown) => {
      refuse(err);
      this.log.warn({ instanceId, err: (err as Error)?.message ?? String(err) }, 'instance stop failed');
    });
    if (!queued) return answered;
    answered.catch(() => undefined); // the caller has its answer; a failure is logged above
    return this.statusOf(inst);
  }

  async rebootInstance(instanceId: string): Promise<void> {
    await this.recover();
    const inst = this.get(instanceId);
    // Refused at once when it cannot be running by the time the lock is free (a stop under way).
    if (inst.record.state !== 'running' && inst.record.state !== 'pending') throw incorrectState(instanceId, 'rebooted');
    await this.withLock(inst, async () => {
      await this.observe(inst, true);
      if (inst.record.state !== 'running') throw incorrectState(instanceId, 'rebooted');
      await this.driver.reboot(instanceId);
    });
  }

  async terminateInstance(instanceId: string): Promise<void> {
    await this.recover();
    const inst = this.instances.get(instanceId);
    if (!inst) return;
    inst.terminating = true;
    // A graceful stop under way holds the lock until the guest powers off: end the VM now instead.
    if (inst.record.state === 'stopping') {
      await this.driver.stop(instanceId, { force: true }).catch((err) => this.logSwallowed(instanceId, 'force the stop under way before terminating', err));
    }
    await this.withLock(inst, () => this.terminate(inst));
  }

  async consoleOutput(instanceId: string): Promise<string> {
    await this.recover();
    this.get(instanceId);
    const info = await this.driver.info(instanceId);
    if (!info || info.state === 'destroyed') return '';
    return this.driver.consoleOutput(instanceId);
  }

  /** ModifyInstanceMetadataOptions: kept with the instance, honoured by its metadata service from the next request. */
  async setMetadataOptions(instanceId: string, options: InstanceMetadataOptions): Promise<void> {
    await this.recover();
    const inst = this.get(instanceId);
    const checked = checkMetadataOptions(options);
    inst.record.spec = { ...inst.record.spec, metadataOptions: checked };
    await this.store.save(inst.record);
    const ip = inst.record.spec.privateIp;
    if (this.metadataByIp.get(ip)?.instanceId === instanceId) this.metadataByIp.set(ip, metadataFromSpec(inst.record.spec));
  }

  /**
   * AttachVolume on this node: kept with the instance first (so it survives stop/start and a
   * restart of this controller), then hot-plugged if the instance runs; a pending instance gets it
   * at the end of its boot, a stopped one at its next start.
   */
  async attachVolume(instanceId: string, raw: NodeVolumeAttachment): Promise<void> {
    await this.recover();
    const att = checkAttachment(raw);
    const inst = this.get(instanceId);
    await this.withLock(inst, async () => {
      await this.observe(inst, true);
      const { state } = inst.record;
      if (state === 'shutting-down' || state === 'terminated') throw incorrectState(instanceId, 'attached to');
      await this.volumes.add(instanceId, att);
      if (state === 'running') await driverAttachVolume(this.driver, instanceId, await this.volumes.forDriver(att));
      this.log.info({ instanceId, volumeId: att.volumeId, device: att.device, plugged: state === 'running' }, 'volume attached');
    });
  }

  /**
   * DetachVolume on this node: unplugged once the guest lets go (within the stop timeout), then
   * forgotten. With `force` it is forgotten even when the guest holds on (the storage host cuts
   * the guest off); without, the caller hears why and may ask again.
   */
  async detachVolume(instanceId: string, volumeId: string, force = false): Promise<void> {
    await this.recover();
    const inst = this.instances.get(instanceId);
    if (!inst) return;
    await this.withLock(inst, async () => {
      await this.observe(inst, true);
      const info = await this.driver.info(instanceId);
      if (info?.state === 'running') {
        try {
          await driverDetachVolume(this.driver, instanceId, volumeId, { timeoutMs: this.opts.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS });
        } catch (err) {
          if (!force) throw new Ec2Error('IncorrectState', `Volume ${volumeId} could not be detached from ${instanceId}: ${(err as Error).message}.`);
          this.log.warn({ instanceId, volumeId, err: (err as Error).message }, 'forced detach: the guest still holds the disk');
        }
      }
      await this.volumes.remove(instanceId, volumeId);
      this.log.info({ instanceId, volumeId, force }, 'volume detached');
    });
  }

  /** Plugs every volume the instance keeps into its freshly booted VM. */
  private async plugVolumes(instanceId: string): Promise<void> {
    for (const att of await this.volumes.of(instanceId)) {
      await driverAttachVolume(this.driver, instanceId, await this.volumes.forDriver(att));
    }
  }

  /** Keeps the zone's firewall document and rebuilds the security-group rules of its networks here. */
  async applyFirewall(raw: FirewallDocument): Promise<FirewallApplyResult> {
    // Without real networking (the fake driver) there is nothing to filter: acknowledged, not kept.
    if (!this.opts.network) return { version: String(raw?.version ?? '') };
    await this.recover();
    const doc = await this.firewallDocs.put(raw);
    for (const entry of [...this.networks.values()]) {
      if (entry.network.zone !== doc.zone) continue;
      if (await entry.ready.then(() => true, () => false)) await entry.network.setFirewallDocument(doc);
    }
    return { version: doc.version };
  }

  /** The zone's other nodes, from the cluster: the zone network's tunnel follows them (network/overlay.ts). */
  async setZonePeers(raw: ZonePeers): Promise<void> {
    const peers = validateZonePeers(raw);
    await this.opts.hostNetworks?.setZonePeers(peers);
  }

  /** This host's networking against what it should be (`ironbark admin node diagnose`). */
  async diagnoseNetwork(): Promise<NetworkDiagnosis> {
    if (!this.opts.hostNetworks) return { nodeId: this.nodeId, items: [], summary: { ok: 0, missing: 0, extra: 0 } };
    return this.opts.hostNetworks.diagnose(this.nodeId);
  }

  // --- launching, stopping, terminating ----------------------------------------------------------

  private async launch(inst: Instance): Promise<void> {
    const { spec } = inst.record;
    const id = spec.instanceId;
    try {
      await this.bootVm(inst);
      await this.setState(inst, 'running');
      this.log.info({ instanceId: id }, 'instance running');
    } catch (err) {
      if (inst.terminating) return; // terminate cleans up
      const message = (err as Error).message;
      this.log.warn({ instanceId: id, err: message }, 'instance launch failed');
      try {
        await this.releaseHostResources(inst);
      } catch (cleanupErr) {
        this.log.error({ instanceId: id, err: (cleanupErr as Error).message }, 'cleanup after a failed launch failed');
      }
      await this.setState(inst, 'terminated', `launch failed: ${message}`).catch((e) => this.logSwallowed(id, 'record the failed launch', e));
    }
  }

  /** Images, disk, network port, metadata and the VM itself; every step is safe to repeat. */
  private async bootVm(inst: Instance): Promise<void> {
    const { spec } = inst.record;
    const id = spec.instanceId;
    const step = () => { if (inst.terminating) throw new LaunchAborted(`instance ${id} is being terminated`); };
    const kernelPath = spec.kernel ? await this.opts.imageCache.ensure(imageSource(spec.kernel)) : undefined;
    const initrdPath = spec.ramdisk ? await this.opts.imageCache.ensure(imageSource(spec.ramdisk)) : undefined;
    // An EBS root (boot from volume) is the zone storage's: no image to fetch, no local disk.
    const rootVolume = spec.rootVolume
      ? await this.volumes.forDriver({ ...checkRootVolume(id, spec.rootVolume), device: ROOT_VOLUME_DEVICE })
      : undefined;
    const rootPath = rootVolume ? undefined : await this.opts.imageCache.ensure(imageSource(spec.root));
    step();
    const diskPath = this.diskPath(id);
    if (rootPath && this.instanceDisks && !(await exists(diskPath))) {
      await createInstanceDisk(rootPath, diskPath, { baseFormat: spec.root.format, sizeGiB: await diskSizeFor(rootPath, spec) });
    }
    if (rootPath && inst.record.diskPath !== diskPath && this.instanceDisks) {
      inst.record.diskPath = diskPath;
      await this.store.save(inst.record);
    }
    step();
    let network: VmNetwork = { kind: 'none' };
    const zoneNetwork = await this.networkFor(spec);
    if (zoneNetwork) {
      const firewall = { vpcId: spec.vpcId, groups: spec.securityGroups.map((g) => g.id) };
      const { tapName } = await zoneNetwork.addInstance({ instanceId: id, mac: spec.mac, ip: spec.privateIp, firewall });
      network = { kind: 'tap', tapName };
    }
    this.metadataByIp.set(spec.privateIp, metadataFromSpec(spec));
    step();
    const vmSpec: VmSpec = {
      id,
      vcpus: spec.vmType.cores,
      memoryMiB: spec.vmType.memoryMiB,
      kernelPath,
      initrdPath,
      kernelCmdline: spec.kernelCmdline,
      ...(spec.bootMode ? { bootMode: spec.bootMode } : {}),
      diskPath,
      ...(rootVolume ? { rootVolume } : {}),
      macAddress: spec.mac,
      network,
      workDir: this.workDir(id),
    };
    const info = await this.driver.info(id);
    if (!info || info.state === 'destroyed') await this.driver.create(vmSpec);
    if (info?.state !== 'running') await this.driver.start(id);
    await this.plugVolumes(id);
  }

  /** Shuts the VM down; `onStopping` is told once the instance is recorded as stopping. */
  private async stopVm(inst: Instance, force: boolean, onStopping?: () => void): Promise<void> {
    const id = inst.record.spec.instanceId;
    const before = inst.record.state;
    await this.setState(inst, 'stopping');
    onStopping?.();
    try {
      const info = await this.driver.info(id);
      if (info && (info.state === 'running' || info.state === 'stopping' || info.state === 'crashed')) {
        await this.driver.stop(id, { force, timeoutMs: this.opts.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS });
      }
    } catch (err) {
      const message = (err as Error).message;
      const info = await this.driver.info(id).catch((e) => this.logSwallowed(id, 'read the VM state after a failed stop', e));
      await this.setState(inst, info?.state === 'running' ? 'running' : before, `stop failed: ${message}`);
      throw new Ec2Error('InternalError', `Instance ${id} could not be stopped on node ${this.nodeId}: ${message}`);
    }
    await this.setState(inst, 'stopped', before === 'crashed' ? inst.record.reason : undefined);
  }

  private async terminate(inst: Instance): Promise<void> {
    const id = inst.record.spec.instanceId;
    if (this.instances.get(id) !== inst) return; // a concurrent terminate finished first
    if (inst.record.state !== 'terminated') await this.setState(inst, 'shutting-down');
    await this.releaseHostResources(inst);
    await this.store.remove(id);
    this.instances.delete(id);
    this.log.info({ instanceId: id }, 'instance terminated');
  }

  /** Removes everything the instance had on this host: VM, metadata entry, tap and lease, disk. */
  private async releaseHostResources(inst: Instance): Promise<void> {
    const { spec } = inst.record;
    const id = spec.instanceId;
    const info = await this.driver.info(id);
    if (info && info.state !== 'destroyed') {
      if (info.state === 'stopping') await this.driver.stop(id, { force: true }).catch((err) => this.logSwallowed(id, 'force the stop under way before destroying', err));
      await this.driver.destroy(id);
    }
    if (this.metadataByIp.get(spec.privateIp)?.instanceId === id) this.metadataByIp.delete(spec.privateIp);
    const zoneNetwork = await this.networkFor(spec);
    await zoneNetwork?.removeInstance(id);
    if (this.instanceDisks) await deleteInstanceDisk(this.diskPath(id));
    await this.volumes.forget(id);
    await rm(this.workDir(id), { recursive: true, force: true });
  }

  // --- state -------------------------------------------------------------------------------------

  /** Notices what happened to a running VM without being asked: a crash or the guest powering off. */
  private async observe(inst: Instance, insideLock = false): Promise<void> {
    if ((!insideLock && inst.busy > 0) || inst.record.state !== 'running') return;
    const id = inst.record.spec.instanceId;
    const info = await this.driver.info(id);
    if (!info || info.state === 'destroyed') await this.setState(inst, 'crashed', 'the VM disappeared from the hypervisor');
    else if (info.state === 'crashed') await this.setState(inst, 'crashed', 'the VM process exited unexpectedly');
    else if (info.state === 'stopped') await this.setState(inst, 'stopped', GUEST_SHUTDOWN_REASON);
  }

  /** A new VM type or user data, given while stopped: the next boot uses them (the metadata service too). */
  private async applyUpdate(inst: Instance, update: InstanceUpdate): Promise<void> {
    const spec = inst.record.spec;
    const next = { ...spec };
    if (update.vmType) next.vmType = update.vmType;
    if (update.userData !== undefined) next.userData = update.userData ?? undefined;
    if (update.metadataOptions) next.metadataOptions = checkMetadataOptions(update.metadataOptions);
    if (JSON.stringify(next) === JSON.stringify(spec)) return;
    if (JSON.stringify(next.vmType) !== JSON.stringify(spec.vmType)) {
      // The VM's cores and memory are fixed when it is defined: define it anew (the disk stays).
      const info = await this.driver.info(spec.instanceId);
      if (info && info.state !== 'destroyed') await this.driver.destroy(spec.instanceId);
    }
    inst.record.spec = next;
    await this.store.save(inst.record);
  }

  private async setState(inst: Instance, state: NodeInstanceState, reason?: string): Promise<void> {
    const changed = inst.record.state !== state || inst.record.reason !== reason;
    if (!changed) return;
    if (inst.record.state !== state) inst.record.since = new Date().toISOString();
    inst.record.state = state;
    inst.record.reason = reason;
    if (this.instances.get(inst.record.spec.instanceId) === inst) await this.store.save(inst.record);
  }

  private statusOf(inst: Instance): NodeInstanceStatus {
    const { record } = inst;
    return {
      instanceId: record.spec.instanceId,
      state: record.state,
      reason: record.reason,
      accelerator: this.driver.accelerator(),
      since: record.since,
    };
  }

  private get(instanceId: string): Instance {
    const inst = this.instances.get(instanceId);
    if (!inst) throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${instanceId}' does not exist`);
    return inst;
  }

  private withLock<T>(inst: Instance, work: () => Promise<T>): Promise<T> {
    inst.busy++;
    const run = inst.lock.then(work).finally(() => { inst.busy--; });
    inst.lock = run.then(() => undefined, () => undefined);
    return run;
  }

  // --- resources -----------------------------------------------------------------------------------

  private async capacity(): Promise<Capacity> {
    const override = this.opts.capacity ?? {};
    let diskGiB = override.diskGiB;
    if (diskGiB === undefined) {
      await mkdir(this.opts.stateDir, { recursive: true });
      const fs = await statfs(this.opts.stateDir);
      diskGiB = Math.floor((fs.blocks * fs.bsize) / GiB);
    }
    return {
      cores: override.cores ?? os.cpus().length,
      memoryMiB: override.memoryMiB ?? Math.floor(os.totalmem() / MiB),
      diskGiB,
    };
  }

  /** Whether the file system of the state directory has less than STATE_DIR_RESERVE left. */
  private async stateDirFull(): Promise<boolean> {
    try {
      const fs = await statfs(this.opts.stateDir);
      return fs.bavail * fs.bsize < STATE_DIR_RESERVE;
    } catch {
      return false; // not made yet: describeResources' capacity() makes it
    }
  }

  private held(except?: string): Capacity {
    const held = { cores: 0, memoryMiB: 0, diskGiB: 0 };
    for (const [id, { record }] of this.instances) {
      if (id === except || record.state === 'terminated') continue;
      const t = record.spec.vmType;
      held.diskGiB += t.diskGiB;
      if (HOLDS_CPU.has(record.state)) {
        held.cores += t.cores;
        held.memoryMiB += t.memoryMiB;
      }
    }
    for (const vm of this.quarantinedVms.values()) {
      held.cores += vm.cores;
      held.memoryMiB += vm.memoryMiB;
    }
    return held;
  }

  /** Forgets the kept VMs that have ended since (the operator stopped or destroyed them). */
  private async refreshQuarantinedVms(): Promise<void> {
    for (const id of [...this.quarantinedVms.keys()]) {
      // Unknown to the driver now is the same as gone; a failing driver keeps the room held.
      const vm = await this.driver.info(id).catch((err) => { this.logSwallowed(id, 'look at the VM of a quarantined record', err); return null; });
      if (vm === null) continue;
      if (!vm || !VM_HOLDS_HOST.has(vm.state)) this.quarantinedVms.delete(id);
    }
  }

  /** Capacity is checked synchronously against the last computed host capacity (refreshed on describe). */
  private lastCapacity: Capacity | undefined;

  private assertRoomFor(spec: InstanceSpec, what: 'launch' | 'start', except?: string): void {
    const capacity = this.lastCapacity;
    if (!capacity) return;
    const held = this.held(except);
    const need = spec.vmType;
    const short: string[] = [];
    if (capacity.cores - held.cores < need.cores) short.push(`needs ${need.cores} cores, ${capacity.cores - held.cores} free`);
    if (capacity.memoryMiB - held.memoryMiB < need.memoryMiB) short.push(`needs ${need.memoryMiB} MiB memory, ${capacity.memoryMiB - held.memoryMiB} MiB free`);
    const diskFree = capacity.diskGiB - held.diskGiB + (what === 'start' ? need.diskGiB : 0);
    if (diskFree < need.diskGiB) short.push(`needs ${need.diskGiB} GiB disk, ${diskFree} GiB free`);
    if (short.length) {
      throw new Ec2Error('InsufficientInstanceCapacity',
        `Node ${this.nodeId} has not enough capacity to ${what} instance ${spec.instanceId} (${need.name}): ${short.join(' and ')}.`);
    }
  }

  // --- networks and paths ----------------------------------------------------------------------------

  private async networkFor(spec: InstanceSpec): Promise<NodeNetwork | undefined> {
    const factory = this.opts.network;
    if (!factory) return undefined;
    const key = `${spec.zone}|${spec.subnetCidr}`;
    let entry = this.networks.get(key);
    if (!entry) {
      const network = factory(spec.zone, spec.subnetCidr);
      const doc = this.firewallDocs.get(spec.zone);
      if (doc) void network.setFirewallDocument(doc); // taken into the set-up that follows
      entry = { network, ready: network.setUp() };
      this.networks.set(key, entry);
      // A failed set-up is tried again by the next instance that needs this network.
      entry.ready.catch(() => { if (this.networks.get(key) === entry) this.networks.delete(key); });
    }
    await entry.ready;
    return entry.network;
  }

  private diskPath(instanceId: string): string {
    return join(this.opts.stateDir, 'disks', `${instanceId}.qcow2`);
  }

  private workDir(instanceId: string): string {
    return join(this.opts.stateDir, 'vm', instanceId);
  }

  // --- recovery ------------------------------------------------------------------------------------

  private async reconcileOnStart(): Promise<void> {
    this.lastCapacity = await this.capacity();
    const { records, quarantined } = await this.store.load();
    this.quarantined = quarantined;
    for (const q of quarantined) {
      this.log.error({ instanceId: q.instanceId, file: q.file, reason: q.reason, since: q.at },
        'instance record quarantined: its VM is kept and left alone until the operator deals with it');
    }
    const kept = new Set(quarantined.map((q) => q.instanceId));
    await this.firewallDocs.load((file, err) => this.log.warn({ file, err: err.message }, 'ignoring a firewall document kept on disk'));
    const vms = new Map((await this.driver.list()).map((vm) => [vm.id, vm]));
    const finish: Promise<void>[] = [];
    for (const record of records) {
      const id = record.spec.instanceId;
      const inst: Instance = { record, lock: Promise.resolve(), busy: 0, terminating: false };
      this.instances.set(id, inst);
      const vm = vms.get(id);
      vms.delete(id);
      if (record.state === 'terminated') continue;
      if (record.state !== 'shutting-down') {
        // Brings back the bridge, taps and DHCP server as recorded, and the instance's metadata.
        try {
          await this.networkFor(record.spec);
        } catch (err) {
          this.log.error({ instanceId: id, err: (err as Error).message }, 'cannot restore the zone network');
        }
        this.metadataByIp.set(record.spec.privateIp, metadataFromSpec(record.spec));
      }
      const vmState = vm?.state;
      switch (record.state) {
        case 'pending':
          inst.launch = this.withLock(inst, () => this.launch(inst));
          break;
        case 'running':
          if (vmState === 'stopped') await this.setState(inst, 'stopped', GUEST_SHUTDOWN_REASON);
          else if (vmState !== 'running' && vmState !== 'stopping') {
            await this.setState(inst, 'crashed', 'the VM was not running when the node controller restarted (host reboot or VM process exit)');
          }
          break;
        case 'stopping':
          if (vmState === 'running' || vmState === 'stopping') {
            finish.push(this.withLock(inst, () => this.stopVm(inst, false)).catch((err) => this.logBackground(id, 'stop', err)));
          } else {
            await this.setState(inst, 'stopped');
          }
          break;
        case 'stopped':
        case 'crashed':
          if (vmState === 'running') await this.setState(inst, 'running');
          break;
        case 'shutting-down':
          inst.terminating = true;
          finish.push(this.withLock(inst, () => this.terminate(inst)).catch((err) => this.logBackground(id, 'terminate', err)));
          break;
      }
      this.log.info({ instanceId: id, state: inst.record.state, vm: vmState ?? 'none' }, 'adopted instance');
    }
    for (const vm of vms.values()) {
      if (kept.has(vm.id)) {
        // Its record is damaged, not gone: a running guest is worth more than a tidy host.
        this.log.error({ instanceId: vm.id, state: vm.state }, 'keeping a VM whose instance record is quarantined');
        if (VM_HOLDS_HOST.has(vm.state)) this.quarantinedVms.set(vm.id, { cores: vm.vcpus, memoryMiB: vm.memoryMiB });
        continue;
      }
      // Specs are written before VMs are made, so a VM without one is a leftover of an interrupted terminate.
      this.log.warn({ instanceId: vm.id, state: vm.state }, 'destroying a VM that no instance record claims');
      if (vm.state === 'stopping') await this.driver.stop(vm.id, { force: true }).catch((err) => this.logSwallowed(vm.id, 'force the stop under way of a leftover VM', err));
      await this.driver.destroy(vm.id).catch((err) => this.logBackground(vm.id, 'destroy', err));
    }
    // Background work must not hold up recovery, which every API call waits for.
    void Promise.all(finish);
  }

  /** For errors that must not stop what follows (the next step copes either way), but must be seen. */
  private logSwallowed(instanceId: string, what: string, err: unknown): undefined {
    this.log.warn({ instanceId, err: (err as Error)?.message ?? String(err) }, `could not ${what}; carrying on`);
    return undefined;
  }

  private logBackground(instanceId: string, what: string, err: unknown): void {
    this.log.error({ instanceId, err: (err as Error).message }, `could not ${what} instance after restart`);
  }
}

function imageSource(ref: ImageRef) {
  return { id: ref.id, url: ref.url, sha256: ref.sha256, size: ref.sizeBytes };
}

/** The VM type's disk when it is larger than the image; the image's own size otherwise. */
async function diskSizeFor(rootPath: string, spec: InstanceSpec): Promise<number | undefined> {
  const info = await diskInfo(rootPath, { format: spec.root.format });
  return spec.vmType.diskGiB * GiB > info.virtualSize ? spec.vmType.diskGiB : undefined;
}

function incorrectState(instanceId: string, verb: string): Ec2Error {
  return new Ec2Error('IncorrectInstanceState', `The instance '${instanceId}' is not in a state from which it can be ${verb}.`);
}

function validateSpec(spec: InstanceSpec): void {
  const bad = (message: string) => { throw new Ec2Error('InvalidParameterValue', message); };
  if (!spec || typeof spec.instanceId !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(spec.instanceId)) {
    bad(`Invalid instance id ${JSON.stringify(spec?.instanceId)}.`);
  }
  const t = spec.vmType;
  if (!t || ![t.cores, t.memoryMiB, t.diskGiB].every((n) => Number.isInteger(n) && n > 0)) {
    bad(`Instance ${spec.instanceId} has an invalid instance type ${JSON.stringify(t)}.`);
  }
  if (spec.bootMode !== undefined && spec.bootMode !== 'legacy-bios' && spec.bootMode !== 'uefi') {
    bad(`Instance ${spec.instanceId} has an unknown boot mode ${JSON.stringify(spec.bootMode)}.`);
  }
  if (spec.bootMode === undefined && spec.kernel === undefined) bad(`Instance ${spec.instanceId} has neither a kernel nor a boot mode.`);
  for (const [name, ref] of [['kernel', spec.kernel], ['root', spec.root], ['ramdisk', spec.ramdisk]] as const) {
    if ((name === 'ramdisk' || (name === 'kernel' && spec.bootMode)) && ref === undefined) continue;
    // Booted from a volume: the image's reference is not used here.
    if (name === 'root' && spec.rootVolume !== undefined) continue;
    if (!ref || !ref.id || !ref.url || !/^[0-9a-fA-F]{64}$/.test(ref.sha256 ?? '')) bad(`Instance ${spec.instanceId} has an invalid ${name} image reference.`);
  }
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(spec.mac ?? '')) bad(`Instance ${spec.instanceId} has an invalid MAC address ${JSON.stringify(spec.mac)}.`);
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(spec.privateIp ?? '')) bad(`Instance ${spec.instanceId} has an invalid private IP ${JSON.stringify(spec.privateIp)}.`);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}
