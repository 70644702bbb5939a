// The cluster controller's view of its nodes: what each last reported (resources, instances), when
// it last answered, and whether it is up. A node that has not answered for `downAfterMs` is down:
// the scheduler skips it and its instances are reported as impaired until it answers again.
// A node put to sleep (power-save) is 'asleep', not down, however long it stays silent; one being
// woken is 'waking' until it answers.
import type { NodeApi, NodeInstanceStatus, NodeResources } from '../node/node-api.ts';
import type { NodeState, NodeView, PinoLikeLogger } from './policy.ts';

export interface NodeRegistration {
  name: string;
  /** How the operator knows the node (host:port, or "local" in-process). */
  address: string;
  client: NodeApi;
  /** Hardware address for Wake-on-LAN. */
  mac?: string;
  labels?: Record<string, string>;
}

export interface NodeEntry extends NodeRegistration {
  id: string;
  state: NodeState;
  /** Why the node is in its state when that was our doing (asleep, waking, a wake that failed). */
  stateReason?: string;
  /** ms since the epoch when the controller last set the state itself. */
  stateSince?: number;
  resources?: NodeResources;
  instances: NodeInstanceStatus[];
  /** ms since the epoch of the last answer. */
  lastSeen?: number;
  lastError?: string;
  lastPlacementReason?: string;
  idleSince?: number;
  addedAt: number;
  /**
   * Bumped whenever the controller changes what it knows of this node itself (a launch, a
   * terminate): a report that was requested before that change is stale and is not applied.
   */
  version: number;
}

export interface NodeRegistryOptions {
  downAfterMs?: number;
  /** Longest wait for one describe call. */
  callTimeoutMs?: number;
  /** Nodes polled at once. */
  concurrency?: number;
  now?: () => number;
  log?: PinoLikeLogger;
  /**
   * How long an asleep node that still answers is taken to be on its way down (the sleep command
   * returns before the host suspends); after that an answer means someone woke it.
   */
  sleepGraceMs?: number;
  /** Told after each applied report, to reconcile instance bookkeeping. */
  onReport?: (entry: NodeEntry) => void;
}

export class NodeCallTimeoutError extends Error {
  constructor(nodeName: string, what: string, ms: number) {
    super(`node ${nodeName} did not answer ${what} within ${ms} ms`);
    this.name = 'NodeCallTimeoutError';
  }
}

export class NodeRegistry {
  readonly downAfterMs: number;
  readonly callTimeoutMs: number;
  readonly sleepGraceMs: number;
  private readonly concurrency: number;
  private readonly now: () => number;
  private readonly log?: PinoLikeLogger;
  onReport?: (entry: NodeEntry) => void;
  private readonly entries = new Map<string, NodeEntry>();

  constructor(opts: NodeRegistryOptions = {}) {
    this.downAfterMs = opts.downAfterMs ?? 10_000;
    this.callTimeoutMs = opts.callTimeoutMs ?? 5000;
    this.sleepGraceMs = opts.sleepGraceMs ?? 60_000;
    this.concurrency = Math.max(1, opts.concurrency ?? 8);
    this.now = opts.now ?? Date.now;
    this.log = opts.log;
    this.onReport = opts.onReport;
  }

  /** Registers a node (or replaces its registration); it counts as down until it first answers. */
  add(id: string, reg: NodeRegistration): NodeEntry {
    const existing = this.entries.get(id);
    if (existing) {
      Object.assign(existing, reg);
      existing.version++;
      return existing;
    }
    const entry: NodeEntry = { ...reg, id, state: 'down', instances: [], addedAt: this.now(), version: 0 };
    this.entries.set(id, entry);
    return entry;
  }

  remove(id: string): boolean {
    return this.entries.delete(id);
  }

  get(id: string): NodeEntry | undefined {
    return this.entries.get(id);
  }

  list(): NodeEntry[] {
    return [...this.entries.values()].sort((a, b) => (a.name === b.name ? (a.id < b.id ? -1 : 1) : a.name < b.name ? -1 : 1));
  }

  /** An operator takes a node out of scheduling (it keeps being polled and reported). */
  setDisabled(id: string, disabled: boolean): void {
    const entry = this.entries.get(id);
    if (!entry) return;
    if (disabled) entry.state = 'disabled';
    else if (entry.state === 'disabled') entry.state = entry.lastSeen !== undefined && this.now() - entry.lastSeen < this.downAfterMs ? 'up' : 'down';
  }

  /** The power manager put the node to sleep: it is not polled into 'down' while silent. */
  markAsleep(id: string, reason: string): void {
    this.setState(id, 'asleep', reason);
  }

  /** A wake command went out: the node is 'waking' until it answers (or the waker gives up). */
  markWaking(id: string, reason: string): void {
    this.setState(id, 'waking', reason);
  }

  /** The waker gave up on a node that never answered after its wake. */
  markDown(id: string, reason: string): void {
    this.setState(id, 'down', reason);
  }

  private setState(id: string, state: NodeState, reason: string): void {
    const entry = this.entries.get(id);
    if (!entry || entry.state === 'disabled') return;
    entry.state = state;
    entry.stateReason = reason;
    entry.stateSince = this.now();
  }

  /** Calls the node with a time limit; the limit turns a hung node into an error. */
  call<T>(entry: NodeEntry, what: string, fn: (client: NodeApi) => Promise<T>, timeoutMs = this.callTimeoutMs): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new NodeCallTimeoutError(entry.name, what, timeoutMs)), timeoutMs);
      let call: Promise<T>;
      try {
        call = fn(entry.client);
      } catch (err) {
        call = Promise.reject(err);
      }
      call.then(
        (value) => { clearTimeout(timer); resolve(value); },
        (err) => { clearTimeout(timer); reject(err); },
      );
    });
  }

  /** Asks one node for its resources and instances and applies the answer. */
  async poll(entry: NodeEntry): Promise<boolean> {
    const version = entry.version;
    try {
      const [resources, instances] = await Promise.all([
        this.call(entry, 'describeResources', (c) => c.describeResources()),
        this.call(entry, 'describeInstances', (c) => c.describeInstances()),
      ]);
      if (this.entries.get(entry.id) !== entry) return false; // removed meanwhile
      const was = entry.state;
      const firstAnswer = entry.lastSeen === undefined;
      const now = this.now();
      entry.lastSeen = now;
      entry.lastError = undefined;
      if (was === 'down') {
        entry.state = 'up';
        entry.stateReason = undefined;
        // Idle time counts from when it answers again (power-save must not sleep it at once).
        if (entry.idleSince !== undefined) entry.idleSince = now;
        this.log?.info({ nodeId: entry.id, node: entry.name }, firstAnswer ? 'node is up' : 'node answers again: up');
      } else if (was === 'waking' || (was === 'asleep' && now - (entry.stateSince ?? 0) >= this.sleepGraceMs)) {
        entry.state = 'up';
        entry.stateReason = was === 'waking' ? undefined : 'answered while asleep: woken outside Ironbark';
        // A full idle period before it may be put to sleep again.
        entry.idleSince = now;
        this.log?.info({ nodeId: entry.id, node: entry.name }, was === 'waking' ? 'woken node answers: up' : 'asleep node answers: it was woken outside Ironbark, up');
      }
      // A command sent meanwhile makes this answer stale, and the next poll brings a fresh one; but a
      // node's first answer is applied even so: without it the cluster (just restarted) knows none of
      // the node's instances while already calling the node up, and the cloud would take them for lost.
      if (entry.version !== version && !firstAnswer) return true;
      entry.resources = resources;
      entry.instances = instances;
      this.noteIdle(entry);
      this.onReport?.(entry);
      return true;
    } catch (err) {
      entry.lastError = (err as Error).message;
      const since = entry.lastSeen ?? entry.addedAt;
      // An asleep or waking node is silent on purpose; the waker decides when a wake has failed.
      if (entry.state === 'up' && this.now() - since >= this.downAfterMs) {
        entry.state = 'down';
        entry.stateReason = undefined;
        this.log?.warn({ nodeId: entry.id, node: entry.name, err: entry.lastError }, `node has not answered for ${this.now() - since} ms: down`);
      }
      return false;
    }
  }

  /** Polls every node, a few at a time. */
  async pollAll(): Promise<void> {
    const queue = this.list();
    const worker = async () => {
      for (let entry = queue.shift(); entry; entry = queue.shift()) await this.poll(entry);
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, queue.length) }, worker));
  }

  /** What the scheduler places against: nodes that reported resources at least once. */
  views(): NodeView[] {
    const out: NodeView[] = [];
    for (const entry of this.list()) {
      const r = entry.resources;
      if (!r) continue;
      out.push({
        id: entry.id, name: entry.name, address: entry.address, mac: entry.mac, labels: entry.labels,
        state: entry.state,
        capacity: { ...r.capacity }, free: { ...r.free },
        instanceCount: r.instanceCount, idleSince: entry.idleSince,
      });
    }
    return out;
  }

  noteIdle(entry: NodeEntry): void {
    const running = entry.instances.filter((i) => i.state !== 'terminated').length;
    if (running > 0) entry.idleSince = undefined;
    else entry.idleSince ??= this.now();
  }
}
