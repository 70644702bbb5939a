// Moves snapshots from what was asked to what is: has the zone's storage take a pending snapshot
// (or copy one, for CopySnapshot) and records it completed at 100%, and has it let go of a deleted
// one. Each action runs on its own; a failed one is tried again after a delay, except when the
// storage says it never can (the volume or source is gone): the snapshot is then in `error`. A
// cloud that restarts finds every unfinished step in the rows (the storage's calls are idempotent).
import type { Store } from '../../store/store.ts';
import type { SnapshotsTable } from '../../store/schema.ts';
import type { ComputeDirectory } from '../compute-directory.ts';
import type { ClusterApi, ClusterSnapshotInfo } from '../../cluster/cluster-api.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { errorMessage, PeriodicPass } from '../periodic-pass.ts';
import { ActionsInFlight } from './actions-in-flight.ts';

export interface SnapshotReconcilerLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface SnapshotReconcilerOptions {
  store: Store;
  directory: ComputeDirectory;
  log: SnapshotReconcilerLog;
  intervalMs?: number;
  retryAfterMs?: number;
  /** How long deleted snapshots' rows are kept (the usage report's GiB-hours of the month read them). */
  deletedRetentionMs?: number;
}

/** Errors after which trying again cannot help. */
const FINAL_ERRORS = new Set(['InvalidVolume.NotFound', 'InvalidSnapshot.NotFound', 'UnsupportedOperation', 'InvalidParameterValue']);

export class SnapshotReconciler {
  readonly #store: Store;
  readonly #directory: ComputeDirectory;
  readonly #log: SnapshotReconcilerLog;
  readonly #intervalMs: number;
  readonly #loop: PeriodicPass;
  readonly #retentionMs: number;
  /** One storage action at a time per resource, and a pause before retrying a failed one. */
  readonly #actions: ActionsInFlight;

  constructor(opts: SnapshotReconcilerOptions) {
    this.#store = opts.store;
    this.#directory = opts.directory;
    this.#log = opts.log;
    this.#intervalMs = opts.intervalMs ?? 1000;
    this.#actions = new ActionsInFlight(opts.retryAfterMs ?? 5000);
    this.#retentionMs = opts.deletedRetentionMs ?? 40 * 24 * 3_600_000;
    this.#loop = new PeriodicPass({
      intervalMs: this.#intervalMs, pass: () => this.reconcileOnce(),
      onError: (e) => this.#log.error({ err: errorMessage(e) }, 'snapshot reconciliation failed'),
    });
  }

  start(): void {
    this.#loop.start();
  }

  async stop(): Promise<void> {
    await this.#loop.stop();
    await this.settled();
  }

  /** Waits for every action under way. */
  async settled(): Promise<void> {
    await this.#actions.settled();
  }

  /** Starts the action every unsettled snapshot needs; does not wait for them. */
  async reconcileOnce(): Promise<void> {
    const rows = await this.#store.db.selectFrom('snapshots').selectAll().where('state', 'in', ['pending', 'deleting']).execute();
    const now = Date.now();
    for (const row of rows) this.#begin(row, now);
    const cutoff = new Date(now - this.#retentionMs).toISOString();
    await this.#store.db.deleteFrom('snapshots').where('state', '=', 'deleted').where('deleted_at', '<', cutoff).execute();
  }

  #begin(row: SnapshotsTable, now: number): void {
    if (!this.#actions.ready(row.id, row.state, now)) return;
    const cluster = this.#directory.forZone(row.zone);
    if (!cluster) return;
    this.#actions.start(row.id, row.state, () => (row.state === 'pending' ? this.#take(row, cluster) : this.#delete(row, cluster)), (e) => {
      this.#log.warn({ snapshotId: row.id, state: row.state, zone: row.zone, err: errorMessage(e) }, 'snapshot action failed; will try again');
    });
  }


  async #take(row: SnapshotsTable, cluster: ClusterApi): Promise<void> {
    const db = this.#store.db;
    let made: ClusterSnapshotInfo;
    try {
      made = row.source_snapshot_id
        ? await need(cluster, 'copySnapshot').call(cluster, row.source_snapshot_id, row.id)
        : await need(cluster, 'createSnapshot').call(cluster, row.volume_id, row.id);
    } catch (e) {
      if (e instanceof Ec2Error && FINAL_ERRORS.has(e.code)) {
        await db.updateTable('snapshots').set({ state: 'error', state_message: e.message, state_changed_at: new Date().toISOString() })
          .where('id', '=', row.id).where('state', '=', 'pending').execute();
        this.#log.error({ snapshotId: row.id, err: e.message }, 'the zone storage could not take the snapshot');
        return;
      }
      throw e;
    }
    const stamp = new Date().toISOString();
    await db.updateTable('snapshots')
      .set({ state: 'completed', progress: 100, stored_bytes: made.allocatedBytes, completed_at: stamp, state_changed_at: stamp })
      .where('id', '=', row.id).where('state', '=', 'pending').execute();
    this.#log.info({ snapshotId: row.id, volumeId: row.volume_id, zone: row.zone }, 'snapshot completed');
  }

  async #delete(row: SnapshotsTable, cluster: ClusterApi): Promise<void> {
    await need(cluster, 'deleteSnapshot').call(cluster, row.id);
    await this.#store.db.updateTable('snapshots').set({ state: 'deleted', state_changed_at: new Date().toISOString() })
      .where('id', '=', row.id).where('state', '=', 'deleting').execute();
    this.#log.info({ snapshotId: row.id }, 'snapshot deleted');
  }
}

function need<K extends 'createSnapshot' | 'copySnapshot' | 'deleteSnapshot'>(cluster: ClusterApi, method: K): NonNullable<ClusterApi[K]> {
  const fn = cluster[method];
  if (typeof fn !== 'function') throw new Ec2Error('UnsupportedOperation', `The cluster of zone ${cluster.zone} keeps no snapshots.`);
  return fn as NonNullable<ClusterApi[K]>;
}
