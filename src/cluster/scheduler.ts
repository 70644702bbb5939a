// Placement of one RunInstances request on the zone's nodes: filter, then the allocation policy
// chooses, then the scheduler reserves and moves on to the request's next instance. Every instance
// of a request gets a node or none does (InsufficientInstanceCapacity, with a reason per node).
//
// Reservations. A successful `place` holds the capacity it used until the caller says what became
// of it: `commit(reservationId)` once the node views passed to later `place` calls include these
// instances (the store recorded them, or the node reported them), `release(reservationId)` when
// the launch was abandoned. Until then every later `place` sees that capacity as taken. `place`
// calls run one at a time, so two concurrent requests never oversubscribe a node.
import { Ec2Error, insufficientCapacity } from '../protocol/errors.ts';
import {
  compareNodes, describeShortfall, placementLog,
  type AllocationPolicy, type Choice, type NodeState, type NodeView, type Placement, type PlacementLog,
  type PlacementLogSink, type PlacementRequest, type PlacementUnit, type Resources, type VmTypeNeed,
} from './policy.ts';
import type { PowerAction, PowerManager } from './power.ts';

export interface NodeSkip {
  nodeId: string;
  reason: string;
}

export interface PlacementDecision {
  instanceId: string;
  nodeId: string | undefined;
  policy: string;
  chosenBecause: string;
  /** Nodes that were not candidates for this instance, and why (computed when first read). */
  readonly skipped: NodeSkip[];
}

export interface NodePlacement extends Placement {
  nodeName: string;
  address: string;
}

export type PlacementResult =
  | { ok: true; reservationId: string; placements: NodePlacement[]; decisions: PlacementDecision[]; woken: string[] }
  /** `error` is what the tenant may see; `reason` and `skipped` are the operator's (nodes, free capacity). */
  | { ok: false; error: Ec2Error; reason: string; skipped: NodeSkip[]; decisions: PlacementDecision[] };

export interface SchedulerOptions {
  policy: AllocationPolicy;
  /** The availability zone placed in, named in the capacity error tenants see. */
  zone?: string;
  log?: PlacementLogSink;
  /** Wakes asleep nodes a policy places on and sleeps idle ones; without it asleep nodes are never used. */
  power?: PowerManager;
}

interface HeldInstance {
  nodeId: string;
  need: Resources;
}

/** Runs async critical sections one after another. */
class AsyncMutex {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(section: () => Promise<T>): Promise<T> {
    const result = this.tail.then(section);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

const STATE_REASONS: Record<NodeState, string> = {
  up: 'up',
  down: 'down',
  disabled: 'disabled',
  asleep: 'asleep',
  waking: 'waking',
};

/**
 * Why nodes were not candidates for one instance. Placing thousands of instances on a large, busy
 * cluster would otherwise build a reason string per full node per placement, so the numbers are
 * kept and the strings are made only when someone reads them.
 */
class SkipRecorder {
  private readonly nodes: NodeView[] = [];
  private readonly reasons: (string | undefined)[] = [];
  private readonly free: number[] = [];
  private list: NodeSkip[] | undefined;

  constructor(private readonly need: VmTypeNeed) {}

  get size(): number {
    return this.nodes.length;
  }

  because(node: NodeView, reason: string): void {
    this.nodes.push(node);
    this.reasons.push(reason);
  }

  tooFull(node: NodeView, cores: number, memoryMiB: number, diskGiB: number): void {
    this.nodes.push(node);
    this.reasons.push(undefined);
    this.free.push(cores, memoryMiB, diskGiB);
  }

  skips(): NodeSkip[] {
    if (this.list) return this.list;
    const list: NodeSkip[] = [];
    let f = 0;
    for (let i = 0; i < this.nodes.length; i++) {
      let reason = this.reasons[i];
      if (reason === undefined) {
        const free = { cores: this.free[f]!, memoryMiB: this.free[f + 1]!, diskGiB: this.free[f + 2]! };
        f += 3;
        reason = describeShortfall(this.need, free) ?? 'no room';
      }
      list.push({ nodeId: this.nodes[i]!.id, reason });
    }
    this.list = list;
    return list;
  }

  lines(): string[] {
    return this.skips().map((skip, i) => `${this.nodes[i]!.name}: ${skip.reason}`);
  }
}

function decision(instanceId: string, nodeId: string | undefined, policy: string, chosenBecause: string, skips: SkipRecorder): PlacementDecision {
  return {
    instanceId, nodeId, policy, chosenBecause,
    get skipped() { return skips.skips(); },
  };
}

function inNameOrder(nodes: readonly NodeView[]): readonly NodeView[] {
  for (let i = 1; i < nodes.length; i++) {
    if (compareNodes(nodes[i - 1]!, nodes[i]!) > 0) return [...nodes].sort(compareNodes);
  }
  return nodes;
}

/** Capacity taken on one node, and by how many instances. */
interface Taken extends Resources {
  instances: number;
}

function addTo(map: Map<string, Taken>, nodeId: string, need: Resources): void {
  const r = map.get(nodeId);
  if (r) {
    r.cores += need.cores;
    r.memoryMiB += need.memoryMiB;
    r.diskGiB += need.diskGiB;
    r.instances += 1;
  } else {
    map.set(nodeId, { cores: need.cores, memoryMiB: need.memoryMiB, diskGiB: need.diskGiB, instances: 1 });
  }
}

function validateRequest(req: PlacementRequest): void {
  if (!req.instances?.length) throw new Ec2Error('InvalidParameterValue', `Placement request ${req.requestId} has no instances.`);
  const seen = new Set<string>();
  for (const { instanceId, vmType } of req.instances) {
    if (seen.has(instanceId)) throw new Ec2Error('InvalidParameterValue', `Instance ${instanceId} appears twice in placement request ${req.requestId}.`);
    seen.add(instanceId);
    for (const key of ['cores', 'memoryMiB', 'diskGiB'] as const) {
      const value = vmType?.[key];
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
        throw new Ec2Error('InvalidParameterValue', `Instance ${instanceId} has an invalid ${key} requirement for instance type ${vmType?.name}.`);
      }
    }
  }
}

type Attempt =
  | { ok: true; placements: NodePlacement[]; decisions: PlacementDecision[]; chosen: NodeView[] }
  | { ok: false; reason: string; skipped: NodeSkip[]; decisions: PlacementDecision[] };

export class Scheduler {
  readonly policy: AllocationPolicy;
  private readonly power?: PowerManager;
  private readonly log: PlacementLog;
  private readonly zone: string;
  private readonly mutex = new AsyncMutex();
  /** Capacity held by uncommitted reservations, per node. */
  private readonly held = new Map<string, Taken>();
  private readonly reservations = new Map<string, Map<string, HeldInstance>>();
  private reservationCounter = 0;

  constructor(opts: SchedulerOptions) {
    this.policy = opts.policy;
    this.zone = opts.zone ?? 'this zone';
    this.power = opts.power;
    this.log = placementLog(opts.log);
  }

  async place(req: PlacementRequest, nodes: readonly NodeView[]): Promise<PlacementResult> {
    validateRequest(req);
    return this.mutex.run(() => this.placeExclusively(req, nodes));
  }

  /** The reservation's instances now show in the node views; stop holding their capacity. */
  commit(reservationId: string, instanceIds?: readonly string[]): boolean {
    return this.drop(reservationId, instanceIds);
  }

  /** The reservation's instances will not run; give their capacity back. */
  release(reservationId: string, instanceIds?: readonly string[]): boolean {
    return this.drop(reservationId, instanceIds);
  }

  /** Capacity held on a node by uncommitted reservations. */
  reservedOn(nodeId: string): Resources | undefined {
    const r = this.held.get(nodeId);
    return r ? { cores: r.cores, memoryMiB: r.memoryMiB, diskGiB: r.diskGiB } : undefined;
  }

  /**
   * One power-save round: sleeps nodes idle past the threshold, never one with a reservation in
   * flight. Pass a function to read the nodes only once no placement is running (a launch that
   * just finished must be seen).
   */
  sleepIdleNodes(nodes: readonly NodeView[] | (() => readonly NodeView[])): Promise<PowerAction[]> {
    const power = this.power;
    if (!power || !this.policy.sleepsIdleNodes) return Promise.resolve([]);
    return this.mutex.run(() => power.tick(typeof nodes === 'function' ? nodes() : nodes, (nodeId) => this.held.has(nodeId)));
  }

  private drop(reservationId: string, instanceIds?: readonly string[]): boolean {
    const reservation = this.reservations.get(reservationId);
    if (!reservation) return false;
    for (const instanceId of instanceIds ?? [...reservation.keys()]) {
      const held = reservation.get(instanceId);
      if (!held) continue;
      reservation.delete(instanceId);
      const r = this.held.get(held.nodeId)!;
      r.cores -= held.need.cores;
      r.memoryMiB -= held.need.memoryMiB;
      r.diskGiB -= held.need.diskGiB;
      if (--r.instances === 0) this.held.delete(held.nodeId);
    }
    if (reservation.size === 0) this.reservations.delete(reservationId);
    return true;
  }

  private async placeExclusively(req: PlacementRequest, nodes: readonly NodeView[]): Promise<PlacementResult> {
    const ordered = inNameOrder(nodes);
    const power = this.power;
    const states = power ? ordered.map((node) => power.effectiveState(node)) : undefined;
    // Nodes whose wake failed are left out and the request is placed again without them.
    const excluded = new Map<string, string>();
    for (;;) {
      const attempt = await this.attempt(req, ordered, states, excluded);
      if (!attempt.ok) {
        // The reason names nodes and their free capacity: it went to the placement log and stays in
        // the result for the operator's views; the tenant gets EC2's own words.
        const error = insufficientCapacity(req.instances[0]?.vmType.name, this.zone);
        return { ok: false, error, reason: attempt.reason, skipped: attempt.skipped, decisions: attempt.decisions };
      }
      const asleep = new Map<string, NodeView>();
      attempt.chosen.forEach((node) => { if (node.state === 'asleep') asleep.set(node.id, node); });
      const woken: string[] = [];
      if (asleep.size > 0 && power) {
        const actions = await Promise.all([...asleep.values()].map((node) => power.wake(node)));
        for (const action of actions) {
          if (action.ok) woken.push(action.nodeId);
          else excluded.set(action.nodeId, `asleep, and waking it failed: ${action.error}`);
        }
        if (woken.length < asleep.size) continue;
      }
      return { ok: true, reservationId: this.hold(attempt.placements, req), placements: attempt.placements, decisions: attempt.decisions, woken };
    }
  }

  private hold(placements: NodePlacement[], req: PlacementRequest): string {
    const id = `${req.requestId}#${++this.reservationCounter}`;
    const reservation = new Map<string, HeldInstance>();
    placements.forEach((p, i) => {
      const need = req.instances[i]!.vmType;
      reservation.set(p.instanceId, { nodeId: p.nodeId, need: { cores: need.cores, memoryMiB: need.memoryMiB, diskGiB: need.diskGiB } });
      addTo(this.held, p.nodeId, need);
    });
    this.reservations.set(id, reservation);
    return id;
  }

  /** Places every instance of the request against a working copy of free capacity; reserves nothing. */
  private async attempt(req: PlacementRequest, ordered: readonly NodeView[], states: NodeState[] | undefined,
    excluded: ReadonlyMap<string, string>): Promise<Attempt> {
    const policy = this.policy;
    const acceptsAsleep = Boolean(policy.wakesSleepingNodes) && Boolean(this.power?.canWake);
    const acceptsWaking = Boolean(policy.wakesSleepingNodes);
    const held = this.held;
    const inRequest = new Map<string, Taken>();
    const placements: NodePlacement[] = [];
    const decisions: PlacementDecision[] = [];
    const chosen: NodeView[] = [];
    const count = req.instances.length;

    for (let index = 0; index < count; index++) {
      const { instanceId, vmType } = req.instances[index]!;
      const skips = new SkipRecorder(vmType);
      const candidates: NodeView[] = [];
      for (let n = 0; n < ordered.length; n++) {
        const node = ordered[n]!;
        const state = states ? states[n]! : node.state;
        if (excluded.size > 0) {
          const reason = excluded.get(node.id);
          if (reason) { skips.because(node, reason); continue; }
        }
        if (state !== 'up' && !((state === 'asleep' && acceptsAsleep) || (state === 'waking' && acceptsWaking))) {
          skips.because(node, state === 'asleep' && acceptsWaking ? 'asleep, and no wake command is configured' : STATE_REASONS[state]);
          continue;
        }
        let cores = node.free.cores;
        let memoryMiB = node.free.memoryMiB;
        let diskGiB = node.free.diskGiB;
        const h = held.size > 0 ? held.get(node.id) : undefined;
        if (h) { cores -= h.cores; memoryMiB -= h.memoryMiB; diskGiB -= h.diskGiB; }
        const r = inRequest.size > 0 ? inRequest.get(node.id) : undefined;
        if (r) { cores -= r.cores; memoryMiB -= r.memoryMiB; diskGiB -= r.diskGiB; }
        if (cores < vmType.cores || memoryMiB < vmType.memoryMiB || diskGiB < vmType.diskGiB) {
          skips.tooFull(node, cores, memoryMiB, diskGiB);
          continue;
        }
        candidates.push(h || r || state !== node.state ? { ...node, state, free: { cores, memoryMiB, diskGiB } } : node);
      }

      const unit: PlacementUnit = { requestId: req.requestId, instanceId, vmType, accountId: req.accountId, imageId: req.imageId, index, count };
      const fail = (reason: string): Attempt => {
        const d = decision(instanceId, undefined, policy.name, reason, skips);
        decisions.push(d);
        const placedNote = index > 0 ? ` (after placing ${index} of ${count})` : '';
        const full = `${reason}${placedNote}${skips.size ? `; ${summarise(skips.lines())}` : ''}`;
        this.log.write('warn', `cannot place ${instanceId} (${vmType.name}) of request ${req.requestId}: ${full}`,
          { requestId: req.requestId, instanceId, policy: policy.name, skipped: skips.size });
        return { ok: false, reason: full, skipped: d.skipped, decisions };
      };
      if (candidates.length === 0) return fail(`no node has room for a ${vmType.name}`);

      let choice: Choice;
      try {
        choice = await policy.choose(unit, candidates, { nodes: ordered, placed: placements });
      } catch (e) {
        const message = e instanceof Error ? e.message : String(e);
        this.log.write('error', `allocation policy ${policy.name} failed for ${instanceId}: ${message}`,
          { requestId: req.requestId, instanceId, policy: policy.name, err: message });
        return fail(`allocation policy ${policy.name} failed: ${message}`);
      }
      const nodeId = choice?.nodeId;
      if (nodeId === undefined) return fail(`allocation policy ${policy.name} chose no node: ${choice?.reason ?? 'no reason given'}`);
      const node = candidates.find((c) => c.id === nodeId);
      if (!node) {
        const known = ordered.find((c) => c.id === nodeId);
        const why = known ? `which is not a candidate (${skips.skips().find((s) => s.nodeId === nodeId)?.reason ?? 'no room'})` : 'which is not a node of this cluster';
        const message = `chose node ${JSON.stringify(nodeId)}, ${why}`;
        this.log.write('error', `allocation policy ${policy.name} ${message}`, { requestId: req.requestId, instanceId, policy: policy.name });
        return fail(`allocation policy ${policy.name} ${message}`);
      }

      addTo(inRequest, node.id, vmType);
      placements.push({ instanceId, nodeId: node.id, nodeName: node.name, address: node.address });
      chosen.push(node);
      const d = decision(instanceId, node.id, policy.name, choice.reason, skips);
      decisions.push(d);
      if (this.log.enabled('debug')) {
        this.log.write('debug', `placed ${instanceId} (${vmType.name}) on ${node.name}: ${choice.reason}`,
          { requestId: req.requestId, instanceId, nodeId: node.id, policy: policy.name, chosenBecause: choice.reason, skipped: skips.size });
      }
    }
    return { ok: true, placements, decisions, chosen };
  }
}

function summarise(lines: string[], limit = 10): string {
  if (lines.length <= limit) return lines.join('; ');
  return `${lines.slice(0, limit).join('; ')}; and ${lines.length - limit} more`;
}
