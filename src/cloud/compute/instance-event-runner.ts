// Carries out scheduled events when their time comes (instance-events.ts): records the change on
// the instance as StopInstances and RebootInstances do, marks the event completed in the same
// transaction, then hands the command to the zone's cluster. A cluster that misses it is covered
// by the instance reconciler, which sends a stop again while the row says stopping and a reboot
// again while it is unacknowledged — so the API and this runner never wait on a guest.
// Events of instances that ended meanwhile are canceled; events nobody needs to act on
// (system-maintenance, or an instance already stopped) complete once their window has passed.
import type { Store } from '../../store/store.ts';
import type { ComputeDirectory } from '../compute-directory.ts';
import { acknowledgeReboot } from '../instance-reconciler.ts';
import { ENDED_EVENTS_KEPT_MS, EVENT_ACTIONS, type EventCode } from './instance-events.ts';
import { errorMessage, PeriodicPass } from '../periodic-pass.ts';

/** The state reason EC2 gives an instance it stopped for a scheduled event. */
export const SCHEDULED_STOP_REASON = 'Server.ScheduledStop: Stopped due to scheduled retirement';

export interface EventRunnerLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface InstanceEventRunnerOptions {
  store: Store;
  directory: ComputeDirectory;
  log: EventRunnerLog;
  intervalMs?: number;
}

interface Due { eventId: string; instanceId: string; zone: string; action: 'reboot' | 'stop'; requestedAt: string }

export class InstanceEventRunner {
  readonly #store: Store;
  readonly #directory: ComputeDirectory;
  readonly #log: EventRunnerLog;
  readonly #intervalMs: number;
  readonly #loop: PeriodicPass;

  constructor(opts: InstanceEventRunnerOptions) {
    this.#store = opts.store;
    this.#directory = opts.directory;
    this.#log = opts.log;
    this.#intervalMs = opts.intervalMs ?? 5000;
    this.#loop = new PeriodicPass({
      intervalMs: this.#intervalMs, pass: () => this.runDue(),
      onError: (e) => this.#log.error({ err: errorMessage(e) }, 'scheduled events could not be carried out'),
    });
  }

  start(): void {
    this.#loop.start();
  }

  async stop(): Promise<void> {
    await this.#loop.stop();
  }

  /** One pass: every event whose time has come, then events to forget. */
  async runDue(now = new Date()): Promise<void> {
    const stamp = now.toISOString();
    const due: Due[] = await this.#store.transaction(async (tx) => {
      const events = await tx.selectFrom('instance_events')
        .innerJoin('instances', 'instances.id', 'instance_events.instance_id')
        .select(['instance_events.id as eventId', 'instance_events.code', 'instance_events.not_after', 'instances.id as instanceId',
          'instances.state', 'instances.zone', 'instances.reboot_requested_at'])
        .where('instance_events.state', '=', 'scheduled').where('instance_events.not_before', '<=', stamp).execute();
      const orphans = await tx.selectFrom('instance_events').select('id').where('state', '=', 'scheduled')
        .where(({ not, exists, selectFrom }) => not(exists(selectFrom('instances').select('instances.id')
          .whereRef('instances.id', '=', 'instance_events.instance_id')))).execute();
      const acts: Due[] = [];
      const completed: string[] = [];
      const canceled: string[] = orphans.map((o) => o.id);
      for (const e of events) {
        if (e.state === 'terminated' || e.state === 'shutting-down') { canceled.push(e.eventId); continue; }
        const action = EVENT_ACTIONS[e.code as EventCode];
        if (action && e.state === 'running') {
          if (action === 'stop') {
            const moved = await tx.updateTable('instances')
              .set({ state: 'stopping', state_reason: SCHEDULED_STOP_REASON, state_changed_at: stamp })
              .where('id', '=', e.instanceId).where('state', '=', 'running').executeTakeFirst();
            if (Number(moved.numUpdatedRows) === 0) continue; // changed meanwhile: looked at again next pass
          } else {
            await tx.updateTable('instances').set({ reboot_requested_at: stamp }).where('id', '=', e.instanceId).execute();
          }
          acts.push({ eventId: e.eventId, instanceId: e.instanceId, zone: e.zone, action, requestedAt: stamp });
          completed.push(e.eventId);
        } else if (action && (e.state === 'pending' || e.state === 'stopping')) {
          // Acted on once the instance settles (a launch or stop under way).
          continue;
        } else if (!action && e.not_after && e.not_after > stamp) {
          // Maintenance under way: completed when its window ends.
          continue;
        } else {
          completed.push(e.eventId);
        }
      }
      if (completed.length > 0) {
        await tx.updateTable('instance_events').set({ state: 'completed', ended_at: stamp }).where('id', 'in', completed).where('state', '=', 'scheduled').execute();
      }
      if (canceled.length > 0) {
        await tx.updateTable('instance_events').set({ state: 'canceled', ended_at: stamp }).where('id', 'in', canceled).where('state', '=', 'scheduled').execute();
      }
      await tx.deleteFrom('instance_events').where('state', '!=', 'scheduled')
        .where('ended_at', '<', new Date(now.getTime() - ENDED_EVENTS_KEPT_MS).toISOString()).execute();
      return acts;
    });
    await Promise.all(due.map((d) => this.#carryOut(d)));
  }

  async #carryOut(d: Due): Promise<void> {
    this.#log.info({ instanceId: d.instanceId, eventId: d.eventId, action: d.action }, 'carrying out a scheduled event');
    const cluster = this.#directory.forZone(d.zone);
    if (!cluster) return; // the reconciler sends it once the zone's cluster is back
    try {
      if (d.action === 'stop') {
        await cluster.stopInstance(d.instanceId, false);
      } else {
        await cluster.rebootInstance(d.instanceId);
        await acknowledgeReboot(this.#store, d.instanceId, d.requestedAt);
      }
    } catch (e) {
      this.#log.warn({ instanceId: d.instanceId, eventId: d.eventId, err: (e as Error)?.message ?? String(e) },
        'the cluster did not take a scheduled event\'s command; the reconciler sends it again');
    }
  }
}
