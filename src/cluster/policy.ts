// The vocabulary shared by the scheduler and every allocation policy: what a node looks like to the
// scheduler, what is being placed, what a policy answers, and how placement decisions are logged.

export type NodeState = 'up' | 'down' | 'asleep' | 'waking' | 'disabled';

export interface Resources {
  cores: number;
  memoryMiB: number;
  diskGiB: number;
}

/** A node as the cluster controller last saw it. `free` is book-kept (capacity minus what its instances asked for). */
export interface NodeView {
  id: string;
  name: string;
  address: string;
  /** Hardware address for Wake-on-LAN (the `{mac}` placeholder of the power commands). */
  mac?: string;
  state: NodeState;
  capacity: Resources;
  free: Resources;
  instanceCount: number;
  /** When the node last dropped to zero instances (ms since the epoch); absent while it runs any. */
  idleSince?: number;
  labels?: Record<string, string>;
}

export interface VmTypeNeed extends Resources {
  name: string;
}

export interface PlacementRequest {
  requestId: string;
  /** One entry per instance (RunInstances' MaxCount); all are placed or none is. */
  instances: { instanceId: string; vmType: VmTypeNeed }[];
  accountId?: string;
  imageId?: string;
}

/** The one instance a policy is asked to place, with its place in the request. */
export interface PlacementUnit {
  requestId: string;
  instanceId: string;
  vmType: VmTypeNeed;
  accountId?: string;
  imageId?: string;
  /** 0-based position of this instance in its request, and the request's size. */
  index: number;
  count: number;
}

export interface Placement {
  instanceId: string;
  nodeId: string;
}

/** What a policy may look at beyond the candidates. */
export interface PolicyState {
  /** Every node the cluster knows, in name order, as reported (candidates carry free capacity net of reservations). */
  nodes: readonly NodeView[];
  /** Instances of the same request already placed in this attempt, in order. */
  placed: readonly Placement[];
}

export type Choice = { nodeId: string; reason: string } | { nodeId: undefined; reason: string };

/**
 * An allocation policy picks one node for one instance. The scheduler has already filtered the
 * candidates (usable state, enough free cores, memory and disk after reservations) and hands them
 * over in name order; the array is only valid during the call. A policy may keep its own state
 * between calls (round-robin's cursor). Throwing or rejecting fails the request, never the process.
 */
export interface AllocationPolicy {
  readonly name: string;
  /** Offer asleep (and waking) nodes as candidates too; the scheduler wakes an asleep node it places on. */
  readonly wakesSleepingNodes?: boolean;
  /** The cluster controller should put idle nodes to sleep while this policy is active. */
  readonly sleepsIdleNodes?: boolean;
  choose(req: PlacementUnit, candidates: readonly NodeView[], state: PolicyState): Promise<Choice> | Choice;
}

export function isAwake(state: NodeState): boolean {
  return state === 'up' || state === 'waking';
}

/** The reason `free` cannot hold `need`, e.g. "needs 2 cores, 1 free", or undefined when it fits. */
export function describeShortfall(need: Resources, free: Resources): string | undefined {
  const parts: string[] = [];
  if (free.cores < need.cores) parts.push(`needs ${need.cores} cores, ${free.cores} free`);
  if (free.memoryMiB < need.memoryMiB) parts.push(`needs ${need.memoryMiB} MiB memory, ${free.memoryMiB} MiB free`);
  if (free.diskGiB < need.diskGiB) parts.push(`needs ${need.diskGiB} GiB disk, ${free.diskGiB} GiB free`);
  return parts.length ? parts.join(' and ') : undefined;
}

/** Stable node order for every policy: by name, then by id when two nodes share a name. */
export type NodeKey = Pick<NodeView, 'name' | 'id'>;

export function compareNodes(a: NodeKey, b: NodeKey): number {
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  return 0;
}

// ---- logging: a pino logger or a plain callback ----

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface PinoLikeLogger {
  debug(fields: object, msg: string): void;
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
  error(fields: object, msg: string): void;
  isLevelEnabled?(level: string): boolean;
}

export type LogCallback = (level: LogLevel, msg: string, fields: Record<string, unknown>) => void;

export type PlacementLogSink = PinoLikeLogger | LogCallback;

export interface PlacementLog {
  enabled(level: LogLevel): boolean;
  write(level: LogLevel, msg: string, fields: Record<string, unknown>): void;
}

export function placementLog(sink: PlacementLogSink | undefined): PlacementLog {
  if (!sink) return { enabled: () => false, write: () => {} };
  if (typeof sink === 'function') return { enabled: () => true, write: (level, msg, fields) => sink(level, msg, fields) };
  return {
    enabled: (level) => sink.isLevelEnabled?.(level) ?? true,
    write: (level, msg, fields) => sink[level](fields, msg),
  };
}
