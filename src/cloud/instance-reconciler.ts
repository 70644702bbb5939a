// Keeps instance rows in step with what the clusters report: pending becomes running once the
// node runs the VM, stopping becomes stopped, shutting-down becomes terminated (giving up its
// address), a guest that powered itself off stops or terminates its instance as the instance's
// shutdown behavior says, lost or crashed instances say why, and instances on a node that stopped
// answering are marked impaired. Commands a cluster missed (it was down, the call failed, the cloud
// restarted before the call was made) are sent again: a stop, start or termination when the node's
// state is not the one the row asks for, a reboot while the row records it unacknowledged, and a
// launch that was cut short (pending, no node) is placed again.
// A zone whose cluster controller has not answered for `zoneDownAfterMs` (partitioned from the
// cloud, or down) tells nothing about its instances: they keep their state, but their system
// status check reads impaired until the cluster answers again, as EC2 reports instances whose host
// it cannot reach. Nothing is forgotten meanwhile: the next answer is reconciled as any other.
// Every zone is read with one call and written with a few batched statements, so ten thousand
// instances reconcile in one pass of well under a second.
import type { Store, Tx } from '../store/store.ts';
import type { InstancesTable } from '../store/schema.ts';
import type { ClusterApi, ClusterInstanceStatus } from '../cluster/cluster-api.ts';
import type { ComputeDirectory } from './compute-directory.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { REASONS } from './instance-view.ts';
import { startUpdateFor } from './instance-update.ts';
import { isUnplaced, placeStoredInstances } from './instance-placement.ts';
import { releaseEndedInstancesPublicAddresses, releaseStoppedInstancesLaunchAddresses } from './network/public-addresses.ts';
import { errorMessage, PeriodicPass } from './periodic-pass.ts';

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
  /**
   * How long to wait before repeating a command the cluster has not carried out (or placing again
   * a launch that no cluster took).
   */
  resendAfterMs?: number;
  /** Where clusters fetch images, for launches placed again (as RunInstances gives them). */
  imageUrl?: (imageId: string) => string;
  /** How long a cluster may fail to answer before its zone's running instances read impaired. */
  zoneDownAfterMs?: number;
}

type Row = Pick<InstancesTable, 'id' | 'state' | 'node_id' | 'status_impaired' | 'state_changed_at' | 'accelerator' | 'shutdown_behavior'
  | 'reservation_id' | 'reboot_requested_at'>;

type Command = 'start' | 'stop' | 'terminate' | 'reboot';

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
  readonly #loop: PeriodicPass;
  readonly #retentionMs: number;
  readonly #pendingGraceMs: number;
  readonly #resendAfterMs: number;
  readonly #imageUrl?: (imageId: string) => string;
  readonly #zoneDownAfterMs: number;
  /** When each zone's cluster last answered (or when this reconciler first looked at it). */
  readonly #zoneLastAnswer = new Map<string, number>();
  /** When each command was last sent by the reconciler, so a slow node is not flooded. */
  readonly #lastSent = new Map<string, number>();

  constructor(opts: InstanceReconcilerOptions) {
    this.#store = opts.store;
    this.#directory = opts.directory;
    this.#log = opts.log;
    this.#intervalMs = opts.intervalMs ?? 1000;
    this.#retentionMs = opts.terminatedRetentionMs ?? 3_600_000;
    this.#pendingGraceMs = opts.pendingGraceMs ?? 600_000;
    this.#resendAfterMs = opts.resendAfterMs ?? 30_000;
    this.#imageUrl = opts.imageUrl;
    this.#zoneDownAfterMs = opts.zoneDownAfterMs ?? 15_000;
    this.#loop = new PeriodicPass({
      intervalMs: this.#intervalMs, pass: () => this.reconcileOnce(),
      onError: (e) => this.#log.error({ err: errorMessage(e) }, 'instance reconciliation failed'),
    });
  }

  start(): void {
    this.#loop.start();
  }

  /** Stops polling and waits for a pass in progress to finish. */
  async stop(): Promise<void> {
    await this.#loop.stop();
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
        .select(['id', 'state', 'node_id', 'status_impaired', 'state_changed_at', 'accelerator', 'shutdown_behavior', 'reservation_id', 'reboot_requested_at'])
        .where('zone', '=', zone).execute();
      let reported: ClusterInstanceStatus[];
      /** Nodes the cluster has not heard from since it started: it cannot know their instances yet. */
      let unheard: Set<string>;
      const asked = Date.now();
      if (!this.#zoneLastAnswer.has(zone)) this.#zoneLastAnswer.set(zone, asked);
      try {
        // Nodes first: a node the cluster heard from before this answer is in the instances that follow.
        // (A node that is up has answered; lastSeen is what an HTTP cluster adds to say when.)
        unheard = new Set((await cluster.describeNodes()).filter((n) => n.state !== 'up' && n.lastSeen === undefined).map((n) => n.nodeId));
        reported = await cluster.describeInstances();
      } catch (e) {
        // A cluster that does not answer tells us nothing: every row keeps its state, and once the
        // silence has lasted, the zone's running instances read impaired.
        const silentMs = Date.now() - this.#zoneLastAnswer.get(zone)!;
        this.#log.warn({ zone, silentMs, err: (e as Error)?.message ?? String(e) }, 'cluster did not report its instances');
        if (silentMs >= this.#zoneDownAfterMs) {
          if (!this.#directory.unreachable.has(zone)) this.#log.warn({ zone, silentMs }, 'cluster unreachable: launches there are refused until it answers');
          this.#directory.unreachable.add(zone);
          await this.#markZoneImpaired(zone, rows);
        }
        return;
      }
      this.#zoneLastAnswer.set(zone, asked);
      if (this.#directory.unreachable.delete(zone)) this.#log.info({ zone }, 'cluster answers again');
      await this.#reconcileZone(zone, cluster, rows, reported, unheard);
    }));
    await this.#deleteExpired();
  }

  async #reconcileZone(zone: string, cluster: ClusterApi, rows: Row[], reported: ClusterInstanceStatus[], unheard: ReadonlySet<string> = new Set()): Promise<void> {
    const actual = new Map(reported.map((r) => [r.instanceId, r]));
    const now = Date.now();
    const changes = new Map<string, { change: StateChange; ids: string[] }>();
    const impaired: string[] = [];
    const healthy: string[] = [];
    const placed = new Map<string, string[]>();
    const accelerated = new Map<string, string[]>();
    const commands: { id: string; command: Command }[] = [];
    const known = new Set<string>();
    /** Launches cut short, by reservation: placed again once they are older than the resend delay. */
    const unplaced = new Map<string, string[]>();
    /** Reboots asked of instances that no longer run: nothing to deliver. */
    const moot: string[] = [];

    const add = <K>(map: Map<K, string[]>, key: K, id: string) => {
      const list = map.get(key);
      if (list) list.push(id); else map.set(key, [id]);
    };

    for (const row of rows) {
      known.add(row.id);
      const seen = actual.get(row.id);
      // A cluster that was restarted answers before all its nodes have: an instance on a node it
      // has not heard from yet is unknown, not gone (marking it lost would terminate it for good).
      if (seen === undefined && row.node_id !== null && unheard.has(row.node_id)) continue;
      const present = seen !== undefined && seen.state !== 'terminated';
      const change = this.#nextState(row, present ? seen : undefined, now);
      if (change) {
        const key = `${change.from}|${change.to}|${change.reason ?? ''}|${change.releaseAddress}|${change.command ?? ''}`;
        const group = changes.get(key);
        if (group) group.ids.push(row.id); else changes.set(key, { change, ids: [row.id] });
      }
      const command = change ? undefined : this.#missedCommand(row, present ? seen : undefined, now);
      if (command) commands.push({ id: row.id, command });
      if (!change && seen === undefined && isUnplaced(row) && now - Date.parse(row.state_changed_at) >= this.#resendAfterMs
        && !this.#directory.placing.has(row.id)) add(unplaced, row.reservation_id, row.id);
      if (row.reboot_requested_at) {
        if (row.state !== 'running' || change) moot.push(row.id);
        else if (seen?.state === 'running' && now - Date.parse(row.reboot_requested_at) >= this.#resendAfterMs) commands.push({ id: row.id, command: 'reboot' });
      }
      if (present) {
        const down = seen.nodeDown === true ? 1 : 0;
        if (down !== row.status_impaired) (down ? impaired : healthy).push(row.id);
        if (seen.nodeId && seen.nodeId !== row.node_id) add(placed, seen.nodeId, row.id);
        if (seen.accelerator && seen.accelerator !== row.accelerator) add(accelerated, seen.accelerator, row.id);
      } else if (row.status_impaired === 1) {
        healthy.push(row.id);
      }
    }

    const nothingToWrite = changes.size === 0 && impaired.length === 0 && healthy.length === 0 && placed.size === 0 && accelerated.size === 0
      && moot.length === 0;
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
        if (change.releaseAddress) await releaseEndedInstancesPublicAddresses(tx, ids);
        if (change.to === 'stopped') await releaseStoppedInstancesLaunchAddresses(tx, ids);
      }
      await chunked(impaired, (chunk) => tx.updateTable('instances').set({ status_impaired: 1 }).where('id', 'in', chunk).execute());
      await chunked(healthy, (chunk) => tx.updateTable('instances').set({ status_impaired: 0 }).where('id', 'in', chunk).execute());
      for (const [nodeId, ids] of placed) await chunked(ids, (chunk) => updateColumn(tx, chunk, { node_id: nodeId }));
      for (const [accelerator, ids] of accelerated) await chunked(ids, (chunk) => updateColumn(tx, chunk, { accelerator }));
      await chunked(moot, (chunk) => updateColumn(tx, chunk, { reboot_requested_at: null }));
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
    // Instances that ended but whose node still keeps their record (a launch that failed there and
    // was then found lost here): told to forget them, or a node's records pile up for ever.
    const ended = new Set(rows.filter((r) => r.state === 'terminated').map((r) => r.id));
    for (const r of reported) if (r.state === 'terminated' && ended.has(r.instanceId)) commands.push({ id: r.instanceId, command: 'terminate' });
    await this.#send(zone, cluster, commands, now);
    await this.#placeAgain(zone, cluster, unplaced, now);
  }

  /** The zone's cluster is unreachable: its running instances' system status reads impaired. */
  async #markZoneImpaired(zone: string, rows: Row[]): Promise<void> {
    const ids = rows.filter((r) => r.state === 'running' && r.status_impaired !== 1).map((r) => r.id);
    if (ids.length === 0) return;
    await chunked(ids, (chunk) => this.#store.db.updateTable('instances').set({ status_impaired: 1 })
      .where('id', 'in', chunk).where('state', '=', 'running').execute());
    this.#log.warn({ zone, count: ids.length }, 'cluster unreachable: its running instances are reported impaired');
  }

  /**
   * Launches the cloud wrote but no cluster took (the cloud stopped while RunInstances waited, or
   * its call failed unanswered): each reservation is asked of the cluster again, all or none. A
   * refusal for capacity ends them as EC2 ends a launch it cannot fulfil; other failures are tried
   * again after the resend delay, until the pending grace counts them as lost.
   */
  async #placeAgain(zone: string, cluster: ClusterApi, unplaced: Map<string, string[]>, now: number): Promise<void> {
    for (const [reservationId, ids] of unplaced) {
      const key = `run:${reservationId}`;
      if (now - (this.#lastSent.get(key) ?? 0) < this.#resendAfterMs) continue;
      const release = this.#directory.placing.claim(ids);
      if (!release) continue; // a replay is placing them right now
      this.#lastSent.set(key, now);
      try {
        const rows = (await this.#store.db.selectFrom('instances').selectAll().where('id', 'in', ids).execute()).filter(isUnplaced);
        if (rows.length === 0) continue;
        this.#log.info({ zone, reservationId, instanceIds: rows.map((r) => r.id) }, 'placing a launch that was cut short');
        await placeStoredInstances(this.#store, cluster, rows, this.#imageUrl);
      } catch (e) {
        const message = (e as Error)?.message ?? String(e);
        if (e instanceof Ec2Error && e.code === 'InsufficientInstanceCapacity') {
          this.#log.warn({ zone, reservationId, err: message }, 'no capacity for a launch that was cut short: its instances are terminated');
          await this.#store.transaction(async (tx) => {
            await tx.updateTable('instances')
              .set({ state: 'terminated', state_reason: REASONS.noCapacity, state_changed_at: new Date().toISOString(), private_ip: null, public_ip: null })
              .where('id', 'in', ids).where('state', '=', 'pending').where('node_id', 'is', null).execute();
            await releaseEndedInstancesPublicAddresses(tx, ids);
          });
        } else {
          this.#log.warn({ zone, reservationId, err: message }, 'could not place a launch that was cut short; will try again');
        }
      } finally {
        release();
      }
    }
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
        // A crash older than the launch or start is the crash being started again, not a new one
        // (the node has not carried the start out yet): wait for it, as for a stop below.
        if (seen.state === 'crashed' && Date.parse(seen.since) > Date.parse(row.state_changed_at)) return to('stopped', REASONS.crashed(seen.reason));
        if (seen.state === 'crashed') return undefined;
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
    else if (row.state === 'pending' && (seen.state === 'stopped' || seen.state === 'crashed')) command = 'start';
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
        else if (command === 'reboot') {
          const asked = await this.#store.db.selectFrom('instances').select('reboot_requested_at').where('id', '=', id).executeTakeFirst();
          if (!asked?.reboot_requested_at) return; // acknowledged meanwhile
          await cluster.rebootInstance(id);
          await acknowledgeReboot(this.#store, id, asked.reboot_requested_at);
        } else {
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

/** A reboot the cluster took: forget the request (unless a newer one was asked meanwhile). */
export async function acknowledgeReboot(store: Store, id: string, requestedAt: string): Promise<void> {
  await store.db.updateTable('instances').set({ reboot_requested_at: null })
    .where('id', '=', id).where('reboot_requested_at', '=', requestedAt).execute();
}

function updateColumn(tx: Tx, ids: string[], set: Partial<InstancesTable>) {
  return tx.updateTable('instances').set(set).where('id', 'in', ids).execute();
}
