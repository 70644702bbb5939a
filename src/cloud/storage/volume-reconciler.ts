// Moves volumes from what was asked to what is: has the zone's cluster make a creating volume,
// remove a deleting one, grow one being modified, attach an attaching one to its instance's node
// and detach a detaching one, and records each step once the cluster has done it. A volume whose
// instance is gone (terminated) is let go of (or deleted, with DeleteOnTermination). Nothing
// here waits for another volume: each action runs on its own and a failed one is tried again
// after a delay, so a guest slow to let go of a disk holds up only its own volume. A cloud that
// restarts finds every unfinished step in the rows and carries it out.
import type { Store } from '../../store/store.ts';
import type { VolumesTable } from '../../store/schema.ts';
import type { ComputeDirectory } from '../compute-directory.ts';
import type { ClusterApi } from '../../cluster/cluster-api.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { errorMessage, PeriodicPass } from '../periodic-pass.ts';
import { ActionsInFlight } from './actions-in-flight.ts';

export interface VolumeReconcilerLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface VolumeReconcilerOptions {
  store: Store;
  directory: ComputeDirectory;
  log: VolumeReconcilerLog;
  intervalMs?: number;
  /** How long a failed action waits before it is tried again. */
  retryAfterMs?: number;
  /** How long deleted volumes are kept (for the usage report) before their rows go. */
  deletedRetentionMs?: number;
}

/** Instance states in which a volume's attachment has an instance to be on. */
const INSTANCE_GONE = new Set(['terminated', 'shutting-down']);

type Action = 'create' | 'delete' | 'attach' | 'detach' | 'resize' | 'release';

export class VolumeReconciler {
  readonly #store: Store;
  readonly #directory: ComputeDirectory;
  readonly #log: VolumeReconcilerLog;
  readonly #intervalMs: number;
  readonly #loop: PeriodicPass;
  readonly #retentionMs: number;
  /** One storage action at a time per resource, and a pause before retrying a failed one. */
  readonly #actions: ActionsInFlight;

  constructor(opts: VolumeReconcilerOptions) {
    this.#store = opts.store;
    this.#directory = opts.directory;
    this.#log = opts.log;
    this.#intervalMs = opts.intervalMs ?? 1000;
    this.#actions = new ActionsInFlight(opts.retryAfterMs ?? 5000);
    this.#retentionMs = opts.deletedRetentionMs ?? 3_600_000;
    this.#loop = new PeriodicPass({
      intervalMs: this.#intervalMs, pass: () => this.reconcileOnce(),
      onError: (e) => this.#log.error({ err: errorMessage(e) }, 'volume reconciliation failed'),
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

  /** Starts the action every unsettled volume needs (those not already under way); does not wait for them. */
  async reconcileOnce(): Promise<void> {
    const rows = await this.#store.db.selectFrom('volumes').selectAll()
      .where((eb) => eb.or([
        eb('state', 'in', ['creating', 'deleting']),
        eb('attach_state', 'in', ['attaching', 'detaching']),
        eb('instance_id', 'is not', null),
      ])).execute();
    const modifying = new Set((await this.#store.db.selectFrom('volume_modifications').select('volume_id')
      .where('state', '=', 'modifying').execute()).map((r) => r.volume_id));
    // A volume deleted while a snapshot of it is being taken goes once the snapshot is done, as in EC2.
    const snapshotting = new Set((await this.#store.db.selectFrom('snapshots').select('volume_id')
      .where('state', '=', 'pending').where('source_snapshot_id', 'is', null).execute()).map((r) => r.volume_id));
    const instanceIds = [...new Set(rows.map((r) => r.instance_id).filter((id): id is string => id !== null))];
    const instances = new Map<string, { state: string; node_id: string | null }>();
    for (let i = 0; i < instanceIds.length; i += 500) {
      for (const r of await this.#store.db.selectFrom('instances').select(['id', 'state', 'node_id']).where('id', 'in', instanceIds.slice(i, i + 500)).execute()) {
        instances.set(r.id, r);
      }
    }
    const now = Date.now();
    const seen = new Set(rows.map((r) => r.id));
    for (const row of rows) {
      const action = this.#actionFor(row, row.instance_id ? instances.get(row.instance_id) : undefined, modifying.has(row.id));
      if (action === 'delete' && snapshotting.has(row.id)) continue;
      if (action) this.#begin(row, action, now);
    }
    // A modification of a volume that needs nothing else.
    const alone = [...modifying].filter((id) => !seen.has(id));
    if (alone.length > 0) {
      const others = await this.#store.db.selectFrom('volumes').selectAll().where('id', 'in', alone).where('state', 'in', ['available', 'in-use']).execute();
      for (const row of others) this.#begin(row, 'resize', now);
    }
    await this.#forgetDeleted(now);
  }

  #actionFor(row: VolumesTable, instance: { state: string; node_id: string | null } | undefined, modifying: boolean): Action | undefined {
    if (row.state === 'creating') {
      // A volume of a launch (BlockDeviceMappings) is made once its instance is placed: a launch
      // that fails before then removes the row, and no storage has anything to clean up.
      if (row.instance_id && instance && instance.state === 'pending' && instance.node_id === null) return undefined;
      return 'create';
    }
    if (row.state === 'deleting') return 'delete';
    if (row.instance_id) {
      // The instance ended (or its row is gone): nothing to detach from; let the volume go.
      if (!instance || INSTANCE_GONE.has(instance.state)) return 'release';
      if (row.attach_state === 'detaching') return 'detach';
      // A launch not placed yet has no node to attach on: wait for it.
      if (row.attach_state === 'attaching') return instance.node_id ? 'attach' : undefined;
    }
    return modifying ? 'resize' : undefined;
  }

  #begin(row: VolumesTable, action: Action, now: number): void {
    if (!this.#actions.ready(row.id, action, now)) return;
    const cluster = this.#directory.forZone(row.zone);
    if (!cluster && action !== 'release') return;
    this.#actions.start(row.id, action, () => this.#act(row, action, cluster!), (e) => {
      this.#log.warn({ volumeId: row.id, action, zone: row.zone, err: errorMessage(e) }, 'volume action failed; will try again');
    });
  }


  async #act(row: VolumesTable, action: Action, cluster: ClusterApi): Promise<void> {
    const now = () => new Date().toISOString();
    const db = this.#store.db;
    switch (action) {
      case 'create': {
        try {
          if (row.snapshot_id) await need(cluster, 'createVolumeFromSnapshot').call(cluster, row.id, row.snapshot_id, row.size_gib);
          else await need(cluster, 'createVolume').call(cluster, row.id, row.size_gib);
        } catch (e) {
          // A size, id or snapshot the storage refuses will not do better the next time.
          if (e instanceof Ec2Error && (e.code === 'InvalidParameterValue' || e.code === 'InvalidSnapshot.NotFound')) {
            await db.updateTable('volumes').set({ state: 'error', state_changed_at: now() }).where('id', '=', row.id).where('state', '=', 'creating').execute();
            this.#log.error({ volumeId: row.id, err: e.message }, 'the zone storage refused the volume');
            return;
          }
          throw e;
        }
        // A launch's volume is already attached to its instance (attach_state attaching): in-use.
        await db.updateTable('volumes').set({ state: row.instance_id ? 'in-use' : 'available', state_changed_at: now() })
          .where('id', '=', row.id).where('state', '=', 'creating').execute();
        this.#log.info({ volumeId: row.id, zone: row.zone, sizeGiB: row.size_gib }, 'volume created');
        return;
      }
      case 'delete':
        await need(cluster, 'deleteVolume').call(cluster, row.id);
        await this.#store.transaction(async (tx) => {
          await tx.updateTable('volumes').set({ state: 'deleted', state_changed_at: now() }).where('id', '=', row.id).where('state', '=', 'deleting').execute();
          await tx.deleteFrom('tags').where('resource_id', '=', row.id).execute();
          await tx.deleteFrom('volume_modifications').where('volume_id', '=', row.id).execute();
        });
        this.#log.info({ volumeId: row.id }, 'volume deleted');
        return;
      case 'attach':
        await need(cluster, 'attachVolume').call(cluster, row.instance_id!, row.id, row.device!);
        await db.updateTable('volumes').set({ attach_state: 'attached' })
          .where('id', '=', row.id).where('instance_id', '=', row.instance_id).where('attach_state', '=', 'attaching').execute();
        this.#log.info({ volumeId: row.id, instanceId: row.instance_id, device: row.device }, 'volume attached');
        return;
      case 'detach':
        await need(cluster, 'detachVolume').call(cluster, row.instance_id!, row.id, row.detach_force === 1);
        await this.#release(row, false);
        this.#log.info({ volumeId: row.id, instanceId: row.instance_id, force: row.detach_force === 1 }, 'volume detached');
        return;
      case 'release':
        await this.#release(row, row.delete_on_termination === 1);
        this.#log.info({ volumeId: row.id, instanceId: row.instance_id }, 'volume let go by its terminated instance');
        return;
      case 'resize': {
        const mod = await db.selectFrom('volume_modifications').selectAll().where('volume_id', '=', row.id).where('state', '=', 'modifying').executeTakeFirst();
        if (!mod) return;
        try {
          await need(cluster, 'resizeVolume').call(cluster, row.id, mod.target_size);
        } catch (e) {
          if (e instanceof Ec2Error && e.code === 'IncorrectState') {
            // Attached: the storage grows it once it is detached (an NBD client keeps its size).
            await db.updateTable('volume_modifications').set({ status_message: 'The new size takes effect once the volume is detached.' })
              .where('volume_id', '=', row.id).where('state', '=', 'modifying').execute();
          }
          throw e;
        }
        await this.#store.transaction(async (tx) => {
          await tx.updateTable('volumes').set({ size_gib: mod.target_size }).where('id', '=', row.id).execute();
          await tx.updateTable('volume_modifications').set({ state: 'completed', progress: 100, end_time: now(), status_message: null })
            .where('volume_id', '=', row.id).where('state', '=', 'modifying').execute();
        });
        this.#log.info({ volumeId: row.id, sizeGiB: mod.target_size }, 'volume grown');
        return;
      }
    }
  }

  /** Ends the attachment recorded in the row (unless another call changed it meanwhile). */
  async #release(row: VolumesTable, andDelete: boolean): Promise<void> {
    const stamp = new Date().toISOString();
    await this.#store.db.updateTable('volumes')
      .set({ instance_id: null, device: null, attach_state: null, attach_time: null, detach_force: 0, delete_on_termination: 0, state: andDelete ? 'deleting' : 'available', state_changed_at: stamp })
      .where('id', '=', row.id).where('instance_id', '=', row.instance_id).execute();
  }

  async #forgetDeleted(now: number): Promise<void> {
    const cutoff = new Date(now - this.#retentionMs).toISOString();
    await this.#store.db.deleteFrom('volumes').where('state', '=', 'deleted').where('state_changed_at', '<', cutoff).execute();
  }
}

/** The cluster's volume method, or EC2's error for a cluster that keeps no volumes. */
function need<K extends 'createVolume' | 'createVolumeFromSnapshot' | 'deleteVolume' | 'resizeVolume' | 'attachVolume' | 'detachVolume'>(cluster: ClusterApi, method: K): NonNullable<ClusterApi[K]> {
  const fn = cluster[method];
  if (typeof fn !== 'function') throw new Ec2Error('UnsupportedOperation', `The cluster of zone ${cluster.zone} keeps no volumes.`);
  return fn as NonNullable<ClusterApi[K]>;
}
