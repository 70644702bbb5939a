// Keeps instance rows in step with what the clusters report: pending becomes running once the
// node runs the VM, stopping becomes stopped, shutting-down becomes terminated (giving up its
// address), a guest that powered itself off stops or terminates its instance as the instance's
// shutdown behavior says, lost or crashed instances say why, and instances on a node that stopped
// answering are marked impaired. Commands a cluster missed (it was down, the call failed) are sent again.
// Every zone is read with one call and written with a few batched statements, so ten thousand
// instances reconcile in one pass of well under a second.
import type { Store, Tx } from '../store/store.ts';
import type { InstancesTable } from '../store/schema.ts';
import type { ClusterApi, ClusterInstanceStatus } from '../cluster/cluster-api.ts';
import type { ComputeDirectory } from './compute-directory.ts';
import { REASONS } from './instance-view.ts';
import { startUpdateFor } from './instance-update.ts';

export interface ReconcilerLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface InstanceReconcilerOptions {
  store: Store;
  directory: ComputeDirectory;
  log: ReconcilerLog;
  intervalMs?: number;
  /** How long terminated instances stay visible before their rows are deleted. */
  terminatedRetentionMs?: number;
  /** How long a pending instance the cluster has not placed yet may take before it counts as lost. */
  pendingGraceMs?: number;
  /** How long to wait before repeating a command the cluster has not carried out. */
  resendAfterMs?: number;
}

type Row = Pick<InstancesTable, 'id' | 'state' | 'node_id' | 'status_impaired' | 'state_changed_at' | 'accelerator' | 'shutdown_behavior'>;

type Command = 'start' | 'stop' | 'terminate';

interface StateChange {
  from: string; to: string; reason: string | null | undefined; releaseAddress: boolean;
  /** Sent to the cluster for each row this change did move (not for rows an API call moved first). */
  command?: Command;
}

const CHUNK = 500;

export class InstanceReconciler {
  readonly #store: Store;
  readonly #directory: ComputeDirectory;
  readonly #log: ReconcilerLog;
  readonly #intervalMs: number;
  readonly #retentionMs: number;
  readonly #pendingGraceMs: number;
  readonly #resendAfterMs: number;
  /** When each command was last sent by the reconciler, so a slow node is not flooded. */
  readonly #lastSent = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = true;

  constructor(opts: InstanceReconcilerOptions) {
    this.#store = opts.store;
    this.#directory = opts.directory;
    this.#log = opts.log;
    this.#intervalMs = opts.intervalMs ?? 1000;
    this.#retentionMs = opts.terminatedRetentionMs ?? 3_600_000;
    this.#pendingGraceMs = opts.pendingGraceMs ?? 600_000;
    this.#resendAfterMs = opts.resendAfterMs ?? 30_000;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule(0);
  }

  /** Stops polling and waits for a pass in progress to finish. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  #schedule(delay: number): void {
    this.#timer = setTimeout(() => {
      this.#running = this.reconcileOnce()
        .catch((e) => this.#log.error({ err: (e as Error)?.message ?? String(e) }, 'instance reconciliation failed'))
        .finally(() => {
          this.#running = undefined;
          if (!this.#stopped) this.#schedule(this.#intervalMs);
        });
    }, delay);
    this.#timer.unref?.();
  }

  /** One pass over every connected zone, then the clean-up of long-terminated instances. */
  async reconcileOnce(): Promise<void> {
    const zones = this.#directory.zones();
    await Promise.all(zones.map(async (zone) => {
      const cluster = this.#directory.forZone(zone);
      if (!cluster) return;
      // Rows are read before the cluster is asked, so a row the cluster does not report was
      // already there (and, if placed, already on a node) when it answered.
      const rows: Row[] = await this.#store.db.selectFrom('instances')
        .select(['id', 'state', 'node_id', 'status_impaired', 'state_changed_at', 'accelerator', 'shutdown_behavior'])
        .where('zone', '=', zone).execute();
      let reported: ClusterInstanceStatus[];
      try {
        reported = await cluster.describeInstances();
      } catch (e) {
        // A cluster that does not answer tells us nothing: every row stays as it is.
        this.#log.warn({ zone, err: (e as Error)?.message ?? String(e) }, 'cluster did not report its instances');
        return;
      }
      await this.#reconcileZone(zone, cluster, rows, reported);
    }));
    await this.#deleteExpired();
  }

  async #reconcileZone(zone: string, cluster: ClusterApi, rows: Row[], reported: ClusterInstanceStatus[]): Promise<void> {
    const actual = new Map(reported.map((r) => [r.instanceId, r]));
    const now = Date.now();
    const changes = new Map<string, { change: StateChange; ids: string[] }>();
    const impaired: string[] = [];
    const healthy: string[] = [];
    const placed = new Map<string, string[]>();
    const accelerated = new Map<string, string[]>();
    const commands: { id: string; command: Command }[] = [];
    const known = new Set<string>();

    const add = <K>(map: Map<K, string[]>, key: K, id: string) => {
      const list = map.get(key);
      if (list) list.push(id); else map.set(key, [id]);
    };

    for (const row of rows) {
      known.add(row.id);
      const seen = actual.get(row.id);
      const present = seen !== undefined && seen.state !== 'terminated';
      const change = this.#nextState(row, present ? seen : undefined, now);
      if (change) {
        const key = `${change.from}|${change.to}|${change.reason ?? ''}|${change.releaseAddress}|${change.command ?? ''}`;
        const group = changes.get(key);
        if (group) group.ids.push(row.id); else changes.set(key, { change, ids: [row.id] });
      }
      const command = change ? undefined : this.#missedCommand(row, present ? seen : undefined, now);
      if (command) commands.push({ id: row.id, command });
      if (present) {
        const down = seen.nodeDown === true ? 1 : 0;
        if (down !== row.status_impaired) (down ? impaired : healthy).push(row.id);
        if (seen.nodeId && seen.nodeId !== row.node_id) add(placed, seen.nodeId, row.id);
        if (seen.accelerator && seen.accelerator !== row.accelerator) add(accelerated, seen.accelerator, row.id);
      } else if (row.status_impaired === 1) {
        healthy.push(row.id);
      }
    }

    const nothingToWrite = changes.size === 0 && impaired.length === 0 && healthy.length === 0 && placed.size === 0 && accelerated.size === 0;
    if (!nothingToWrite) await this.#store.transaction(async (tx) => {
      const stamp = new Date(now).toISOString();
      for (const { change, ids } of changes.values()) {
        const set: Partial<InstancesTable> = { state: change.to, state_changed_at: stamp };
        if (change.reason !== undefined) set.state_reason = change.reason;
        if (change.releaseAddress) Object.assign(set, { private_ip: null, public_ip: null, status_impaired: 0 });
        // Only rows still in the state this pass saw: an API call in between wins.
        await chunked(ids, async (chunk) => {
          const update = tx.updateTable('instances').set(set).where('id', 'in', chunk).where('state', '=', change.from);
          if (!change.command) return update.execute();
          for (const { id } of await update.returning('id').execute()) commands.push({ id, command: change.command });
        });
      }
      await chunked(impaired, (chunk) => tx.updateTable('instances').set({ status_impaired: 1 }).where('id', 'in', chunk).execute());
      await chunked(healthy, (chunk) => tx.updateTable('instances').set({ status_impaired: 0 }).where('id', 'in', chunk).execute());
      for (const [nodeId, ids] of placed) await chunked(ids, (chunk) => updateColumn(tx, chunk, { node_id: nodeId }));
      for (const [accelerator, ids] of accelerated) await chunked(ids, (chunk) => updateColumn(tx, chunk, { accelerator }));
    });
    if (changes.size > 0) {
      this.#log.info({ zone, changes: [...changes.values()].map(({ change, ids }) => ({ from: change.from, to: change.to, count: ids.length })) }, 'instance states reconciled');
    }

    // Instances the cluster runs that no row wants (a launch that was rolled back after the
    // cluster had in fact started them): terminate them so they do not hold resources.
    const unknown = reported.filter((r) => !known.has(r.instanceId) && r.state !== 'terminated').map((r) => r.instanceId);
    if (unknown.length > 0) {
      // A launch may have written its rows since they were read: only ids still without a row go.
      const exist = new Set<string>();
      await chunked(unknown, async (chunk) => {
        for (const r of await this.#store.db.selectFrom('instances').select('id').where('id', 'in', chunk).execute()) exist.add(r.id);
      });
      for (const id of unknown) if (!exist.has(id)) commands.push({ id, command: 'terminate' });
    }
    await this.#send(zone, cluster, commands, now);
  }

  /** Where a row goes given what the cluster reports (`seen` undefined: the cluster does not have it). */
  #nextState(row: Row, seen: ClusterInstanceStatus | undefined, now: number): StateChange | undefined {
    const to = (state: string, reason: string | null | undefined, releaseAddress = false): StateChange => ({ from: row.state, to: state, reason, releaseAddress });
    const lost = () => to('terminated', REASONS.lost, true);
    const guestShutdown = (): StateChange => (row.shutdown_behavior === 'terminate'
      ? { ...to('shutting-down', REASONS.instanceShutdown), command: 'terminate' }
      : to('stopped', REASONS.instanceShutdown));
    switch (row.state) {
      case 'pending':
        if (!seen) {
          // Not placed yet is normal while RunInstances waits for the cluster; for long, it is lost.
          if (row.node_id !== null) return lost();
          return now - Date.parse(row.state_changed_at) > this.#pendingGraceMs ? to('terminated', REASONS.launchLost, true) : undefined;
        }
        if (seen.state === 'running') return to('running', null);
        if (seen.state === 'crashed') return to('stopped', REASONS.crashed(seen.reason));
        // A short job that powers the guest off before anyone saw it running (a stop older than
        // the launch or start is instead a start the node has not carried out yet).
        if (seen.state === 'stopped' && seen.reason === REASONS.instanceShutdown && Date.parse(seen.since) > Date.parse(row.state_changed_at)) {
          return guestShutdown();
        }
        return undefined;
      case 'running':
        if (!seen) return lost();
        // Nobody asked for a stop (the row would be stopping): the guest powered itself off.
        if (seen.state === 'stopped') return guestShutdown();
        if (seen.state === 'crashed') return to('stopped', REASONS.crashed(seen.reason));
        if (seen.state === 'stopping' || seen.state === 'shutting-down') return to(seen.state, undefined);
        return undefined;
      case 'stopping':
        if (!seen) return lost();
        if (seen.state === 'stopped' || seen.state === 'crashed') return to('stopped', undefined);
        return undefined;
      case 'stopped':
        // A stopped instance keeps its disk on a node; if the cluster forgot it, it is gone.
        return seen ? undefined : lost();
      case 'shutting-down':
        return seen ? undefined : to('terminated', undefined, true);
      default:
        return undefined;
    }
  }

  /** A command the cluster evidently missed: the row wants one state, the node shows another. */
  #missedCommand(row: Row, seen: ClusterInstanceStatus | undefined, now: number): Command | undefined {
    if (!seen) return undefined;
    let command: Command | undefined;
    if ((row.state === 'shutting-down' || row.state === 'terminated') && seen.state !== 'shutting-down') command = 'terminate';
    else if (row.state === 'stopping' && (seen.state === 'running' || seen.state === 'pending')) command = 'stop';
    else if (row.state === 'pending' && seen.state === 'stopped') command = 'start';
    // Checked last: most rows agree with their node, and reading a timestamp for each is not free.
    if (command === undefined || now - Date.parse(row.state_changed_at) < this.#resendAfterMs) return undefined;
    return command;
  }

  async #send(zone: string, cluster: ClusterApi, commands: { id: string; command: Command }[], now: number): Promise<void> {
    const due = commands.filter(({ id, command }) => now - (this.#lastSent.get(`${command}:${id}`) ?? 0) >= this.#resendAfterMs);
    await Promise.all(due.map(async ({ id, command }) => {
      this.#lastSent.set(`${command}:${id}`, now);
      try {
        if (command === 'terminate') await cluster.terminateInstance(id);
        else if (command === 'stop') await cluster.stopInstance(id);
        else {
          const row = await this.#store.db.selectFrom('instances').select(['instance_type', 'user_data']).where('id', '=', id).executeTakeFirst();
          await cluster.startInstance(id, row ? await startUpdateFor(this.#store.db, row) : undefined);
        }
      } catch (e) {
        this.#log.warn({ zone, instanceId: id, command, err: (e as Error)?.message ?? String(e) }, 'cluster refused a repeated command');
      }
    }));
    // Forget commands about instances that have settled, so the map does not grow forever.
    if (this.#lastSent.size > 10 * Math.max(commands.length, 1000)) {
      for (const [key, at] of this.#lastSent) if (now - at > 10 * this.#resendAfterMs) this.#lastSent.delete(key);
    }
  }

  async #deleteExpired(): Promise<void> {
    const cutoff = new Date(Date.now() - this.#retentionMs).toISOString();
    const expired = await this.#store.db.selectFrom('instances').select('id')
      .where('state', '=', 'terminated').where('state_changed_at', '<', cutoff).execute();
    if (expired.length === 0) return;
    const ids = expired.map((r) => r.id);
    await this.#store.transaction(async (tx) => {
      await chunked(ids, async (chunk) => {
        await tx.deleteFrom('tags').where('resource_id', 'in', chunk).execute();
        await tx.deleteFrom('instances').where('id', 'in', chunk).where('state', '=', 'terminated').execute();
      });
    });
    this.#log.info({ count: ids.length }, 'deleted terminated instances past retention');
  }
}

async function chunked(ids: string[], work: (chunk: string[]) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < ids.length; i += CHUNK) await work(ids.slice(i, i + CHUNK));
}

function updateColumn(tx: Tx, ids: string[], set: Partial<InstancesTable>) {
  return tx.updateTable('instances').set(set).where('id', 'in', ids).execute();
}
