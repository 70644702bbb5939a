// The cluster controller of one availability zone: places instances on its nodes with the
// scheduler, relays the cloud's commands to the node that runs each instance, and reports actual
// state from what its nodes say. Like Eucalyptus' CC it keeps soft state only: which node runs
// which instance is learnt from the nodes' own reports, so a restarted controller rebuilds its map
// from one round of polling, and a node that comes back after being down is believed as it is.
// With power-save it also puts idle nodes to sleep and wakes them before they are used (power.ts).
import { Ec2Error, insufficientCapacity } from '../protocol/errors.ts';
import type { InstanceMetadataOptions, InstanceSpec, InstanceUpdate, NodeInstanceStatus } from '../node/node-api.ts';
import type { ClusterApi, ClusterInstanceStatus, ClusterNodeStatus, ClusterSnapshotInfo, ClusterVolumeInfo, Placement } from './cluster-api.ts';
import { ClusterVolumes } from './storage/cluster-volumes.ts';
import { withRootVolumeExport } from './storage/root-volume-export.ts';
import type { VolumeBackend } from './storage/volume-backend.ts';
import { NodeRegistry, type NodeEntry, type NodeRegistration } from './node-registry.ts';
import { createPolicy } from './policies/index.ts';
import type { AllocationPolicy, PinoLikeLogger } from './policy.ts';
import { Scheduler, type PlacementDecision } from './scheduler.ts';
import { PowerManager, type PowerOptions } from './power.ts';
import { PlacementIndex } from './placement-index.ts';
import { relayFirewall } from './firewall-relay.ts';
import { ZonePeersRelay } from './zone-peers-relay.ts';
import type { NetworkDiagnosis } from '../node/network/diagnosis.ts';
import type { FirewallDocument, FirewallPushResult } from '../node/network/firewall-document.ts';

/** The operator's sleep and wake commands (see power.ts for their placeholders), or a power switch. */
export interface ClusterPowerOptions extends Omit<PowerOptions, 'now' | 'log'> {
  /** How long a woken node may take to answer before what needed it fails (default 120 s). */
  wakeTimeoutS?: number;
  /** How often a waking node is asked whether it is up (default 1000 ms). */
  wakePollMs?: number;
}

export interface ClusterControllerOptions {
  zone: string;
  /** The zone's private network; every instance's address lies in it. */
  cidr: string;
  /** An allocation policy name or plugin spec (see createPolicy), or a policy object. */
  policy: string | AllocationPolicy;
  /** Nodes to start with; more come and go through addNode/removeNode. */
  nodes?: Record<string, NodeRegistration>;
  log?: PinoLikeLogger;
  /** 0 turns the background polling off (tests call pollOnce themselves). */
  pollIntervalMs?: number;
  downAfterMs?: number;
  /** Limit for describe calls to a node. */
  callTimeoutMs?: number;
  /** Limit for commands that change an instance (a node answers a stop at once and shuts the guest down after). */
  commandTimeoutMs?: number;
  pollConcurrency?: number;
  now?: () => number;
  /**
   * Sleep and wake commands. The power-save policy then puts nodes idle past the threshold to
   * sleep; any policy that may use asleep nodes (greedy, power-save) wakes them first.
   */
  power?: ClusterPowerOptions;
  /** Where the zone's EBS volumes live (cluster/storage/); without one the zone has no volumes. */
  volumes?: VolumeBackend;
}

/** Seconds an asleep node that still answers is taken to be on its way down (power.ts' transitionS). */
const DEFAULT_POWER_TRANSITION_S = 60;

const noopLog: PinoLikeLogger = { debug() {}, info() {}, warn() {}, error() {} };

export class ClusterController implements ClusterApi {
  readonly zone: string;
  readonly cidr: string;
  readonly registry: NodeRegistry;
  private readonly log: PinoLikeLogger;
  private readonly commandTimeoutMs: number;
  private readonly pollIntervalMs: number;
  private readonly schedulerReady: Promise<Scheduler>;
  /** instance id → node id, as the nodes last reported (plus launches made since). */
  private readonly placements = new PlacementIndex();
  /** Placements under way, by instance id: a repeated request for them waits for the first. */
  private readonly launching = new Map<string, Promise<Placement[]>>();
  /** Terminations a node could not be told about yet (it was down); finished when it answers. */
  private readonly pendingTerminations = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private polling: Promise<void> | undefined;
  private readonly now: () => number;
  private readonly power?: PowerManager;
  private readonly wakeTimeoutMs: number;
  private readonly wakePollMs: number;
  /** Wakes under way, by node id: everyone who needs the node waits for the same one. */
  private readonly wakes = new Map<string, Promise<void>>();
  /** Tells the nodes the zone's other nodes, for the zone network's tunnel. */
  private readonly zonePeers: ZonePeersRelay;

  readonly policyName: string;
  /** The zone's volumes and their attachments (storage/cluster-volumes.ts). */
  readonly volumes: ClusterVolumes;
  constructor(opts: ClusterControllerOptions) {
    this.zone = opts.zone;
    this.cidr = opts.cidr;
    this.log = opts.log ?? noopLog;
    this.commandTimeoutMs = opts.commandTimeoutMs ?? 90_000;
    this.pollIntervalMs = opts.pollIntervalMs ?? 2000;
    this.now = opts.now ?? Date.now;
    const transitionS = opts.power?.transitionS ?? DEFAULT_POWER_TRANSITION_S;
    this.power = opts.power ? new PowerManager({ ...opts.power, transitionS, now: this.now, log: this.log }) : undefined;
    this.wakeTimeoutMs = (opts.power?.wakeTimeoutS ?? 120) * 1000;
    this.wakePollMs = opts.power?.wakePollMs ?? 1000;
    this.registry = new NodeRegistry({
      sleepGraceMs: transitionS * 1000,
      downAfterMs: opts.downAfterMs ?? 10_000,
      callTimeoutMs: opts.callTimeoutMs ?? 5000,
      concurrency: opts.pollConcurrency,
      now: opts.now,
      log: this.log,
      onReport: (entry) => this.reconcile(entry),
    });
    this.zonePeers = new ZonePeersRelay({ zone: opts.zone, registry: this.registry, now: this.now, log: this.log });
    const policy = opts.policy;
    this.policyName = typeof policy === 'string' ? policy : policy.name;
    this.schedulerReady = (typeof policy === 'string' ? createPolicy(policy) : Promise.resolve(policy))
      .then((p) => {
        if (p.sleepsIdleNodes && !this.power?.canSleep) this.log.warn({ policy: p.name }, 'no sleep command is configured: idle nodes are never put to sleep');
        if (!p.sleepsIdleNodes && opts.power?.sleepCommand) this.log.warn({ policy: p.name }, `policy ${p.name} does not put nodes to sleep: the sleep command is not used (use power-save)`);
        return new Scheduler({ policy: p, zone: this.zone, log: this.log, power: this.power });
      });
    this.schedulerReady.catch(() => undefined); // reported by the first request that needs it
    this.volumes = new ClusterVolumes({
      backend: opts.volumes, zone: this.zone,
      command: (instanceId, what, fn) => this.command(instanceId, what, fn),
      placed: (instanceId) => this.placements.has(instanceId) && !this.pendingTerminations.has(instanceId),
    });
    for (const [id, reg] of Object.entries(opts.nodes ?? {})) this.registry.add(id, reg);
    if (this.pollIntervalMs > 0) this.schedule(0);
  }

  /** Adds a node and asks it for its state once; resolves whether it answered. */
  async addNode(id: string, reg: NodeRegistration): Promise<boolean> {
    const entry = this.registry.add(id, reg);
    this.log.info({ nodeId: id, node: reg.name, address: reg.address }, 'node added');
    return this.registry.poll(entry);
  }

  removeNode(id: string): boolean {
    const removed = this.registry.remove(id);
    for (const instanceId of this.placements.onNode(id)) this.placements.delete(instanceId);
    for (const [instanceId, nodeId] of this.pendingTerminations) if (nodeId === id) this.pendingTerminations.delete(instanceId);
    if (removed) this.log.info({ nodeId: id }, 'node removed');
    return removed;
  }

  /** One round: every node's report, then any terminations that were waiting for a node. */
  pollOnce(): Promise<void> {
    this.polling ??= (async () => {
      try {
        await this.registry.pollAll();
        await this.zonePeers.sync();
        await this.finishPendingTerminations();
        await this.sleepIdleNodes();
      } finally {
        this.polling = undefined;
      }
    })();
    return this.polling;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.polling?.catch(() => undefined);
  }

  // --- ClusterApi --------------------------------------------------------------------------------

  async runInstances(asked: InstanceSpec[]): Promise<Placement[]> {
    if (!asked.length) throw new Ec2Error('InvalidParameterValue', 'No instances to run.');
    // Instances that boot from a volume learn where the zone's storage serves it.
    const specs = await Promise.all(asked.map((s) => withRootVolumeExport(this.volumes, s)));
    for (const spec of specs) {
      if (spec.zone !== this.zone) {
        throw new Ec2Error('InvalidParameterValue', `Instance ${spec.instanceId} is for availability zone ${spec.zone}, not ${this.zone}.`);
      }
    }
    // A retried request (the cloud was cut off mid-launch and asks again): it waits for a placement
    // of these instances still under way, and instances already placed stay where they are.
    for (;;) {
      const underWay = new Set(specs.map((s) => this.launching.get(s.instanceId)).filter((p) => p !== undefined));
      if (underWay.size === 0) break;
      await Promise.allSettled(underWay);
    }
    const known = specs.filter((s) => this.placements.has(s.instanceId));
    if (known.length === specs.length) {
      await Promise.all(known.map((s) => this.command(s.instanceId, 'runInstance', (c) => c.runInstance(s))));
      return known.map((s) => ({ instanceId: s.instanceId, nodeId: this.placements.get(s.instanceId)! }));
    }
    if (known.length > 0) {
      throw new Ec2Error('InvalidParameterValue', `Instances ${known.map((s) => s.instanceId).join(', ')} already run in ${this.zone}; run the others in a request of their own.`);
    }
    const placing = this.placeNew(specs);
    for (const s of specs) this.launching.set(s.instanceId, placing);
    try {
      return await placing;
    } finally {
      for (const s of specs) if (this.launching.get(s.instanceId) === placing) this.launching.delete(s.instanceId);
    }
  }

  /** Schedules instances no node has yet and starts them on the chosen nodes: all of them or none. */
  private async placeNew(specs: InstanceSpec[]): Promise<Placement[]> {
    const scheduler = await this.schedulerReady;
    const first = specs[0]!;
    const result = await scheduler.place({
      requestId: first.reservationId,
      instances: specs.map((s) => ({ instanceId: s.instanceId, vmType: s.vmType })),
      accountId: first.accountId,
      imageId: first.imageId,
    }, this.registry.views());
    this.notePlacementReasons(result.decisions);
    if (!result.ok) throw result.error;
    try {
      await this.wakeChosenNodes(result.placements.map((p) => p.nodeId), result.woken, first.reservationId, first.vmType.name);
    } catch (err) {
      scheduler.release(result.reservationId);
      throw err;
    }

    const bySpec = new Map(specs.map((s) => [s.instanceId, s]));
    const outcomes = await Promise.allSettled(result.placements.map((p) => {
      const entry = this.registry.get(p.nodeId)!;
      return this.registry.call(entry, 'runInstance', (c) => c.runInstance(bySpec.get(p.instanceId)!), this.commandTimeoutMs);
    }));
    const failed = outcomes.findIndex((o) => o.status === 'rejected');
    if (failed >= 0) {
      // All or nothing: whatever did start (or may have, behind a timeout) is terminated again.
      await Promise.all(result.placements.map((p) => this.rollback(p.instanceId, p.nodeId)));
      scheduler.release(result.reservationId);
      const p = result.placements[failed]!;
      const err = (outcomes[failed] as PromiseRejectedResult).reason as Error;
      const node = this.registry.get(p.nodeId)?.name ?? p.nodeId;
      this.log.warn({ requestId: first.reservationId, instanceId: p.instanceId, nodeId: p.nodeId, err: err.message }, 'launch failed on a node; request rolled back');
      if (err instanceof Ec2Error && err.code === 'InsufficientInstanceCapacity') throw insufficientCapacity(first.vmType.name, this.zone);
      const message = `Instance ${p.instanceId} could not be started on node ${node}: ${err.message} The request was rolled back.`;
      throw new Ec2Error(err instanceof Ec2Error ? err.code : 'InternalError', message);
    }

    result.placements.forEach((p, i) => {
      const status = (outcomes[i] as PromiseFulfilledResult<NodeInstanceStatus>).value;
      const entry = this.registry.get(p.nodeId)!;
      this.placements.set(p.instanceId, p.nodeId);
      this.remember(entry, status);
      // Book-keep the capacity now taken until the node's next report says it itself.
      const need = bySpec.get(p.instanceId)!.vmType;
      if (entry.resources) {
        const free = entry.resources.free;
        free.cores -= need.cores;
        free.memoryMiB -= need.memoryMiB;
        free.diskGiB -= need.diskGiB;
        entry.resources.instanceCount += 1;
      }
    });
    scheduler.commit(result.reservationId);
    return result.placements.map(({ instanceId, nodeId }) => ({ instanceId, nodeId }));
  }

  async startInstance(instanceId: string, update?: InstanceUpdate): Promise<void> {
    try {
      await this.command(instanceId, 'startInstance', (c) => c.startInstance(instanceId, update));
    } catch (err) {
      if (!(err instanceof Ec2Error) || err.code !== 'InsufficientInstanceCapacity') throw err;
      // The node's words name it and its free capacity: the operator's log has them, the tenant gets EC2's.
      this.log.warn({ instanceId, nodeId: this.placements.get(instanceId), err: err.message }, 'no room to start the instance on its node');
      throw insufficientCapacity(update?.vmType?.name, this.zone);
    }
  }

  async stopInstance(instanceId: string, force?: boolean): Promise<void> {
    await this.command(instanceId, 'stopInstance', (c) => c.stopInstance(instanceId, force));
  }

  async rebootInstance(instanceId: string): Promise<void> {
    await this.command(instanceId, 'rebootInstance', (c) => c.rebootInstance(instanceId));
  }

  async setMetadataOptions(instanceId: string, options: InstanceMetadataOptions): Promise<void> {
    await this.command(instanceId, 'setMetadataOptions', async (c) => {
      if (!c.setMetadataOptions) throw new Ec2Error('UnsupportedOperation', `The node of ${instanceId} cannot change metadata options.`);
      await c.setMetadataOptions(instanceId, options);
    });
  }

  createVolume(volumeId: string, sizeGiB: number): Promise<ClusterVolumeInfo> {
    return this.volumes.create(volumeId, sizeGiB);
  }

  deleteVolume(volumeId: string): Promise<void> {
    return this.volumes.delete(volumeId);
  }

  resizeVolume(volumeId: string, sizeGiB: number): Promise<ClusterVolumeInfo> {
    return this.volumes.resize(volumeId, sizeGiB);
  }

  attachVolume(instanceId: string, volumeId: string, device: string): Promise<void> {
    return this.volumes.attach(instanceId, volumeId, device);
  }

  detachVolume(instanceId: string, volumeId: string, force = false): Promise<void> {
    return this.volumes.detach(instanceId, volumeId, force);
  }

  createSnapshot(volumeId: string, snapshotId: string): Promise<ClusterSnapshotInfo> {
    return this.volumes.snapshot(volumeId, snapshotId);
  }

  createVolumeFromSnapshot(volumeId: string, snapshotId: string, sizeGiB: number): Promise<ClusterVolumeInfo> {
    return this.volumes.createFromSnapshot(volumeId, snapshotId, sizeGiB);
  }

  copySnapshot(sourceSnapshotId: string, snapshotId: string): Promise<ClusterSnapshotInfo> {
    return this.volumes.copySnapshot(sourceSnapshotId, snapshotId);
  }

  deleteSnapshot(snapshotId: string): Promise<void> {
    return this.volumes.deleteSnapshot(snapshotId);
  }

  async terminateInstance(instanceId: string): Promise<void> {
    const nodeId = this.placements.get(instanceId);
    if (nodeId === undefined) return; // unknown or already gone: terminating is idempotent
    const entry = this.registry.get(nodeId);
    if (!entry) {
      this.placements.delete(instanceId);
      return;
    }
    if (entry.state === 'down' || entry.state === 'asleep') {
      // Not worth waking a node for: an asleep node runs nothing (power-save sleeps idle nodes only).
      this.pendingTerminations.set(instanceId, nodeId);
      this.log.info({ instanceId, nodeId }, `node is ${entry.state}: termination queued until it answers`);
      return;
    }
    try {
      await this.registry.call(entry, 'terminateInstance', (c) => c.terminateInstance(instanceId), this.commandTimeoutMs);
    } catch (err) {
      if (err instanceof Ec2Error) throw err;
      this.pendingTerminations.set(instanceId, nodeId);
      this.log.warn({ instanceId, nodeId, err: (err as Error).message }, 'termination queued until the node answers');
      return;
    }
    this.forget(entry, instanceId);
  }

  async consoleOutput(instanceId: string): Promise<string> {
    const entry = this.route(instanceId);
    await this.awake(entry, `to read the console of ${instanceId}`);
    return this.registry.call(entry, 'consoleOutput', (c) => c.consoleOutput(instanceId), this.commandTimeoutMs);
  }

  async describeInstances(): Promise<ClusterInstanceStatus[]> {
    const out: ClusterInstanceStatus[] = [];
    for (const entry of this.registry.list()) {
      const nodeDown = entry.state === 'down';
      for (const inst of entry.instances) {
        const queued = this.pendingTerminations.has(inst.instanceId);
        out.push({
          ...inst,
          ...(queued ? { state: 'shutting-down' as const, reason: `node ${entry.name} is not answering; termination is queued` } : {}),
          nodeId: entry.id,
          ...(nodeDown ? { nodeDown: true } : {}),
        });
      }
    }
    return out;
  }

  async describeNodes(): Promise<ClusterNodeStatus[]> {
    return this.registry.list().map((entry) => {
      const r = entry.resources;
      return {
        nodeId: entry.id,
        hypervisor: r?.hypervisor ?? 'qemu',
        accelerator: r?.accelerator ?? 'none',
        acceleratorReason: r ? r.acceleratorReason : 'the node has not answered yet',
        capacity: r ? { ...r.capacity } : { cores: 0, memoryMiB: 0, diskGiB: 0 },
        free: r ? { ...r.free } : { cores: 0, memoryMiB: 0, diskGiB: 0 },
        instanceCount: r?.instanceCount ?? 0,
        ...(r?.quarantined?.length ? { quarantined: r.quarantined } : {}),
        name: entry.name,
        address: entry.address,
        ...(entry.mac ? { mac: entry.mac } : {}),
        state: entry.state,
        lastSeen: entry.lastSeen !== undefined ? new Date(entry.lastSeen).toISOString() : undefined,
        lastPlacementReason: entry.lastPlacementReason,
        ...(entry.stateReason ? { stateReason: entry.stateReason } : {}),
        policy: this.policyName,
      };
    });
  }

  /** Passes the cloud's firewall document on to the nodes (each HTTP node gets its own part). */
  applyFirewall(doc: FirewallDocument): Promise<FirewallPushResult> {
    return relayFirewall(doc, { registry: this.registry, nodeOf: (id) => this.placements.get(id), log: this.log });
  }

  /** Asks one node how its host networking compares with what it should be. */
  diagnoseNode(nodeId: string): Promise<NetworkDiagnosis> {
    const entry = this.registry.list().find((e) => e.id === nodeId);
    if (!entry) throw new Ec2Error('InvalidNodeID.NotFound', `The node ${nodeId} is not a node of zone ${this.zone}.`, 404);
    if (!entry.client.diagnoseNetwork) throw new Ec2Error('UnsupportedOperation', `The node ${nodeId} cannot diagnose its network.`);
    return this.registry.call(entry, 'diagnoseNetwork', (c) => c.diagnoseNetwork!(), 60_000);
  }

  /** The node that runs an instance, as this controller knows it. */
  nodeOf(instanceId: string): string | undefined {
    return this.placements.get(instanceId);
  }

  // --- internals ---------------------------------------------------------------------------------

  private route(instanceId: string): NodeEntry {
    const nodeId = this.placements.get(instanceId);
    const entry = nodeId !== undefined ? this.registry.get(nodeId) : undefined;
    if (!entry || this.pendingTerminations.has(instanceId)) {
      throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${instanceId}' does not exist`);
    }
    if (entry.state === 'down') {
      throw new Ec2Error('Unavailable', `The node ${entry.name} that hosts instance ${instanceId} is not responding; try again later.`);
    }
    return entry;
  }

  /** Sends a command to the instance's node and keeps the status it answers. */
  private async command<T extends NodeInstanceStatus | void | string>(instanceId: string, what: string,
    fn: (client: NodeEntry['client']) => Promise<T>): Promise<T> {
    const entry = this.route(instanceId);
    await this.awake(entry, `for ${what} of ${instanceId}`);
    const result = await this.registry.call(entry, what, fn, this.commandTimeoutMs);
    if (result && typeof result === 'object') this.remember(entry, result as NodeInstanceStatus);
    return result;
  }

  private remember(entry: NodeEntry, status: NodeInstanceStatus): void {
    const i = entry.instances.findIndex((s) => s.instanceId === status.instanceId);
    entry.instances = i >= 0 ? entry.instances.map((s, j) => (j === i ? status : s)) : [...entry.instances, status];
    entry.version++;
    this.registry.noteIdle(entry);
  }

  private forget(entry: NodeEntry, instanceId: string): void {
    this.placements.delete(instanceId);
    this.pendingTerminations.delete(instanceId);
    entry.instances = entry.instances.filter((s) => s.instanceId !== instanceId);
    entry.version++;
    this.registry.noteIdle(entry);
  }

  private async rollback(instanceId: string, nodeId: string): Promise<void> {
    const entry = this.registry.get(nodeId);
    if (!entry) return;
    try {
      await this.registry.call(entry, 'terminateInstance', (c) => c.terminateInstance(instanceId), this.commandTimeoutMs);
    } catch (err) {
      // The node may still hold it: remember to terminate it when the node answers again.
      this.placements.set(instanceId, nodeId);
      this.pendingTerminations.set(instanceId, nodeId);
      this.log.warn({ instanceId, nodeId, err: (err as Error).message }, 'rollback of a launch is queued until the node answers');
    }
  }

  /** The node is the source of truth for what runs on it. */
  private reconcile(entry: NodeEntry): void {
    const reported = new Set<string>();
    for (const inst of entry.instances) {
      reported.add(inst.instanceId);
      const previous = this.placements.get(inst.instanceId);
      if (previous !== undefined && previous !== entry.id) {
        const other = this.registry.get(previous);
        if (other && other.instances.some((s) => s.instanceId === inst.instanceId)) {
          this.log.error({ instanceId: inst.instanceId, nodes: [previous, entry.id] }, 'instance is reported by two nodes');
          continue;
        }
      }
      this.placements.set(inst.instanceId, entry.id);
    }
    for (const instanceId of this.placements.onNode(entry.id)) {
      if (!reported.has(instanceId)) {
        this.placements.delete(instanceId);
        this.pendingTerminations.delete(instanceId);
      }
    }
  }

  private async finishPendingTerminations(): Promise<void> {
    const work: Promise<void>[] = [];
    for (const [instanceId, nodeId] of this.pendingTerminations) {
      const entry = this.registry.get(nodeId);
      if (!entry || entry.state === 'down' || entry.state === 'asleep') continue;
      work.push(this.registry.call(entry, 'terminateInstance', (c) => c.terminateInstance(instanceId), this.commandTimeoutMs)
        .then(() => {
          this.log.info({ instanceId, nodeId }, 'queued termination done');
          this.forget(entry, instanceId);
        }, (err: Error) => this.log.warn({ instanceId, nodeId, err: err.message }, 'queued termination failed; will retry')));
    }
    await Promise.all(work);
  }

  // --- power-save ------------------------------------------------------------------------------

  /** Puts nodes idle past the threshold to sleep (power-save policy with a sleep command only). */
  private async sleepIdleNodes(): Promise<void> {
    if (!this.power || this.closed) return;
    const scheduler = await this.schedulerReady.catch(() => undefined);
    if (!scheduler?.policy.sleepsIdleNodes) return;
    const actions = await scheduler.sleepIdleNodes(() => this.registry.views());
    const now = this.now();
    for (const action of actions) {
      const entry = this.registry.get(action.nodeId);
      if (!entry) continue;
      if (action.ok) {
        const idleS = entry.idleSince !== undefined ? Math.round((now - entry.idleSince) / 1000) : this.power.idleThresholdS;
        this.registry.markAsleep(entry.id,
          `put to sleep by power-save at ${new Date(now).toISOString()}: no instances for ${idleS} s (threshold ${this.power.idleThresholdS} s)`);
      } else {
        // Tried again after another idle period, not at every poll.
        entry.idleSince = now;
        entry.stateReason = `power-save could not put it to sleep: ${action.error}`;
      }
    }
  }

  /** Waits until the nodes a placement chose are awake; `woken` are those the scheduler just woke. */
  private async wakeChosenNodes(nodeIds: string[], woken: readonly string[], requestId: string, vmType: string): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const nodeId of new Set(nodeIds)) {
      const entry = this.registry.get(nodeId);
      if (!entry || (entry.state !== 'asleep' && entry.state !== 'waking')) continue;
      waits.push(this.ensureAwake(entry, woken.includes(nodeId), `for request ${requestId}`).catch((err: Error) => {
        // Why the node did not wake is the operator's (log, and the node's state reason), not the tenant's.
        this.log.warn({ requestId, nodeId, err: err.message }, 'a node chosen for the request did not wake; request not placed');
        throw insufficientCapacity(vmType, this.zone);
      }));
    }
    const outcomes = await Promise.allSettled(waits);
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** Wakes the node of a command if it sleeps; Unavailable when it does not come up. */
  private async awake(entry: NodeEntry, why: string): Promise<void> {
    if (entry.state !== 'asleep' && entry.state !== 'waking') return;
    await this.ensureAwake(entry, false, why).catch((err: Error) => {
      throw new Ec2Error('Unavailable', `${err.message} Try again later.`);
    });
  }

  /** Runs the wake command (unless already run) and waits until the node answers. */
  private ensureAwake(entry: NodeEntry, alreadyWoken: boolean, why: string): Promise<void> {
    if (entry.state !== 'asleep' && entry.state !== 'waking') return Promise.resolve();
    const running = this.wakes.get(entry.id);
    if (running) return running;
    const wake = (async () => {
      if (entry.state === 'asleep' && !alreadyWoken) {
        const view = this.registry.views().find((v) => v.id === entry.id);
        const action = this.power && view ? await this.power.wake(view) : { ok: false, error: 'no wake command is configured' };
        if (!action.ok) throw new Error(`Node ${entry.name} is asleep and could not be woken: ${action.error}.`);
      }
      const startedAt = Date.now();
      this.registry.markWaking(entry.id, `woken by power-save at ${new Date(this.now()).toISOString()} ${why}`);
      for (;;) {
        if (this.closed) throw new Error(`The cluster controller of ${this.zone} is shutting down.`);
        if ((await this.registry.poll(entry)) && entry.state === 'up') {
          this.log.info({ nodeId: entry.id, node: entry.name, ms: Date.now() - startedAt }, 'woken node is up');
          return;
        }
        if (Date.now() - startedAt >= this.wakeTimeoutMs) {
          const reason = `woken ${why}, but it did not answer within ${this.wakeTimeoutMs / 1000} s`;
          this.registry.markDown(entry.id, reason);
          this.log.warn({ nodeId: entry.id, node: entry.name }, `node ${reason}: down`);
          throw new Error(`Node ${entry.name} was ${reason}.`);
        }
        await new Promise((resolve) => setTimeout(resolve, this.wakePollMs));
      }
    })().finally(() => this.wakes.delete(entry.id));
    this.wakes.set(entry.id, wake);
    return wake;
  }

  private notePlacementReasons(decisions: readonly PlacementDecision[]): void {
    for (const d of decisions) {
      if (d.nodeId !== undefined) {
        const entry = this.registry.get(d.nodeId);
        if (entry) entry.lastPlacementReason = `chose it for ${d.instanceId}: ${d.chosenBecause}`;
      }
      for (const skip of d.skipped) {
        const entry = this.registry.get(skip.nodeId);
        if (entry) entry.lastPlacementReason = `skipped it for ${d.instanceId}: ${skip.reason}`;
      }
    }
  }

  private schedule(delayMs: number): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      this.pollOnce()
        .catch((err: Error) => this.log.error({ err: err.message }, 'polling nodes failed'))
        .finally(() => this.schedule(this.pollIntervalMs));
    }, delayMs);
    this.timer.unref();
  }
}
