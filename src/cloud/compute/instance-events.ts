// Scheduled events (DescribeInstanceStatus `Events`, ModifyInstanceEventStartTime): what EC2 tells
// a user before it reboots, stops or retires an instance because of its host. In Ironbark the
// operator schedules them for every instance on a node that needs maintenance
// (`ironbark admin event schedule`); users see them, may move the ones that carry a deadline,
// and at their time the event runner (instance-event-runner.ts) carries them out: a reboot
// event reboots, a stop or retirement event stops (instances keep their disks when stopped, so a
// retired instance can be started again on another node), system-maintenance only informs.
// An event ends as completed (its time passed or its action ran) or canceled (by the operator,
// or because its instance was terminated); ended events stay listed, prefixed as EC2 does
// ("[Completed] …"), for a week.
import type { Db, Tx } from '../../store/store.ts';
import type { InstanceEventsTable } from '../../store/schema.ts';
import type { OperationTable, RequestContext } from '../context.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { newId } from '../ids.ts';

export const EVENT_CODES = ['instance-reboot', 'system-reboot', 'system-maintenance', 'instance-retirement', 'instance-stop'] as const;
export type EventCode = (typeof EVENT_CODES)[number];

const DEFAULT_DESCRIPTIONS: Record<EventCode, string> = {
  'instance-reboot': 'The instance is scheduled for a reboot',
  'system-reboot': 'The instance is scheduled for a reboot of its host',
  'system-maintenance': 'The host of the instance is scheduled for maintenance',
  'instance-retirement': 'The instance is scheduled for retirement: its host is being taken out of service',
  'instance-stop': 'The instance is scheduled to be stopped',
};

/** What the event does at its time: the instance action, or nothing (the user is only told). */
export const EVENT_ACTIONS: Record<EventCode, 'reboot' | 'stop' | undefined> = {
  'instance-reboot': 'reboot',
  'system-reboot': 'reboot',
  'system-maintenance': undefined,
  'instance-retirement': 'stop',
  'instance-stop': 'stop',
};

/** How long ended events are still listed. */
export const ENDED_EVENTS_KEPT_MS = 7 * 24 * 3600_000;

/** Instance states an event can still concern (a terminated instance has no status at all). */
const LIVE_STATES = ['pending', 'running', 'stopping', 'stopped'];

export interface HostEventRequest {
  zone: string;
  nodeId: string;
  code: string;
  notBefore: Date;
  notAfter?: Date;
  /** Latest time users may move the event to; without it they cannot move it. */
  notBeforeDeadline?: Date;
  description?: string;
}

export function isEventCode(code: string): code is EventCode {
  return (EVENT_CODES as readonly string[]).includes(code);
}

/**
 * One event for every instance on the node that is not ending. Checked as a whole: a bad code or
 * time schedules nothing. Answers the events made (none when nothing runs on the node).
 */
export async function scheduleHostEvents(tx: Tx, req: HostEventRequest, now = new Date()): Promise<InstanceEventsTable[]> {
  if (!isEventCode(req.code)) {
    throw new Ec2Error('InvalidParameterValue', `Event code ${JSON.stringify(req.code)} is not one of ${EVENT_CODES.join(', ')}.`);
  }
  checkTimes(req.notBefore, req.notAfter, req.notBeforeDeadline, now);
  const instances = await tx.selectFrom('instances').select(['id', 'account_id'])
    .where('zone', '=', req.zone).where('node_id', '=', req.nodeId).where('state', 'in', LIVE_STATES).execute();
  const created = now.toISOString();
  const rows: InstanceEventsTable[] = instances.map((i) => ({
    id: newId('instance-event'),
    instance_id: i.id,
    account_id: i.account_id,
    zone: req.zone,
    node_id: req.nodeId,
    code: req.code,
    description: req.description?.trim() || DEFAULT_DESCRIPTIONS[req.code as EventCode],
    not_before: req.notBefore.toISOString(),
    not_after: req.notAfter?.toISOString() ?? null,
    not_before_deadline: req.notBeforeDeadline?.toISOString() ?? null,
    state: 'scheduled',
    created_at: created,
    ended_at: null,
  }));
  for (let i = 0; i < rows.length; i += 200) await tx.insertInto('instance_events').values(rows.slice(i, i + 200)).execute();
  return rows;
}

function checkTimes(notBefore: Date, notAfter: Date | undefined, deadline: Date | undefined, now: Date): void {
  for (const [name, value] of [['notBefore', notBefore], ['notAfter', notAfter], ['notBeforeDeadline', deadline]] as const) {
    if (value !== undefined && Number.isNaN(value.getTime())) throw new Ec2Error('InvalidParameterValue', `${name} is not a valid time.`);
  }
  if (notBefore.getTime() <= now.getTime()) throw new Ec2Error('InvalidParameterValue', 'notBefore must be in the future.');
  if (notAfter && notAfter.getTime() <= notBefore.getTime()) throw new Ec2Error('InvalidParameterValue', 'notAfter must be later than notBefore.');
  if (deadline && deadline.getTime() < notBefore.getTime()) throw new Ec2Error('InvalidParameterValue', 'notBeforeDeadline must not be earlier than notBefore.');
}

/** The operator cancels a scheduled event; an ended one cannot be. */
export async function cancelEvent(tx: Tx, eventId: string, now = new Date()): Promise<InstanceEventsTable> {
  const row = await tx.selectFrom('instance_events').selectAll().where('id', '=', eventId).executeTakeFirst();
  if (!row) throw new Ec2Error('InvalidInstanceEventID.NotFound', `No event ${eventId}.`, 404);
  if (row.state !== 'scheduled') throw new Ec2Error('IncorrectState', `The event ${eventId} has already ${row.state === 'completed' ? 'completed' : 'been canceled'}.`);
  const ended = now.toISOString();
  await tx.updateTable('instance_events').set({ state: 'canceled', ended_at: ended }).where('id', '=', eventId).execute();
  return { ...row, state: 'canceled', ended_at: ended };
}

export async function listEvents(db: Db, where: { zone?: string; nodeId?: string } = {}, now = new Date()): Promise<InstanceEventsTable[]> {
  let q = db.selectFrom('instance_events').selectAll()
    .where((eb) => eb.or([eb('state', '=', 'scheduled'), eb('ended_at', '>=', new Date(now.getTime() - ENDED_EVENTS_KEPT_MS).toISOString())]));
  if (where.zone) q = q.where('zone', '=', where.zone);
  if (where.nodeId) q = q.where('node_id', '=', where.nodeId);
  return q.orderBy('not_before').orderBy('id').execute();
}

/** The listed events of these instances of the account, by instance, in time order. */
export async function eventsOfInstances(db: Db | Tx, accountId: string, instanceIds: string[], now = Date.now()): Promise<Map<string, InstanceEventsTable[]>> {
  const out = new Map<string, InstanceEventsTable[]>();
  const since = new Date(now - ENDED_EVENTS_KEPT_MS).toISOString();
  for (let i = 0; i < instanceIds.length; i += 500) {
    const rows = await db.selectFrom('instance_events').selectAll()
      .where('account_id', '=', accountId).where('instance_id', 'in', instanceIds.slice(i, i + 500))
      .where((eb) => eb.or([eb('state', '=', 'scheduled'), eb('ended_at', '>=', since)]))
      .orderBy('not_before').orderBy('id').execute();
    for (const row of rows) {
      const list = out.get(row.instance_id);
      if (list) list.push(row); else out.set(row.instance_id, [row]);
    }
  }
  return out;
}

/** The model's InstanceStatusEvent. */
export function eventView(row: InstanceEventsTable) {
  const prefix = row.state === 'completed' ? '[Completed] ' : row.state === 'canceled' ? '[Canceled] ' : '';
  return {
    InstanceEventId: row.id,
    Code: row.code,
    Description: `${prefix}${row.description}`,
    NotBefore: new Date(row.not_before),
    ...(row.not_after ? { NotAfter: new Date(row.not_after) } : {}),
    ...(row.not_before_deadline ? { NotBeforeDeadline: new Date(row.not_before_deadline) } : {}),
  };
}

/** DescribeInstanceStatus' event.* filters, over an instance's listed events. */
export const EVENT_FILTERS = {
  'event.code': (events: InstanceEventsTable[]) => events.map((e) => e.code),
  'event.description': (events: InstanceEventsTable[]) => events.map((e) => eventView(e).Description),
  'event.instance-event-id': (events: InstanceEventsTable[]) => events.map((e) => e.id),
  'event.not-after': (events: InstanceEventsTable[]) => events.flatMap((e) => (e.not_after ? [e.not_after] : [])),
  'event.not-before': (events: InstanceEventsTable[]) => events.map((e) => e.not_before),
  'event.not-before-deadline': (events: InstanceEventsTable[]) => events.flatMap((e) => (e.not_before_deadline ? [e.not_before_deadline] : [])),
};

async function ModifyInstanceEventStartTime(ctx: RequestContext, input: { InstanceId: string; InstanceEventId: string; NotBefore: Date }) {
  return ctx.store.transaction(async (tx) => {
    const instance = await tx.selectFrom('instances').select('id')
      .where('id', '=', input.InstanceId).where('account_id', '=', ctx.caller.accountId).executeTakeFirst();
    if (!instance) throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${input.InstanceId}' does not exist`);
    const row = await tx.selectFrom('instance_events').selectAll()
      .where('id', '=', input.InstanceEventId).where('instance_id', '=', input.InstanceId).executeTakeFirst();
    if (!row) throw new Ec2Error('InvalidInstanceEventID.NotFound', `The event ID '${input.InstanceEventId}' does not exist for instance ${input.InstanceId}`);
    if (row.state !== 'scheduled') throw new Ec2Error('IncorrectState', `The event ${row.id} has ended (${row.state}) and cannot be rescheduled.`);
    if (!row.not_before_deadline) throw new Ec2Error('InvalidParameterValue', `The event ${row.id} has no deadline and cannot be rescheduled.`);
    const notBefore = input.NotBefore;
    if (notBefore.getTime() <= Date.now()) throw new Ec2Error('InvalidParameterValue', 'NotBefore must be in the future.');
    if (notBefore.getTime() > Date.parse(row.not_before_deadline)) {
      throw new Ec2Error('InvalidParameterValue', `NotBefore must not be later than the event's deadline, ${row.not_before_deadline}.`);
    }
    // The event's window keeps its length when it moves.
    const notAfter = row.not_after ? new Date(notBefore.getTime() + (Date.parse(row.not_after) - Date.parse(row.not_before))).toISOString() : null;
    await tx.updateTable('instance_events').set({ not_before: notBefore.toISOString(), not_after: notAfter })
      .where('id', '=', row.id).where('state', '=', 'scheduled').execute();
    return { Event: eventView({ ...row, not_before: notBefore.toISOString(), not_after: notAfter }) };
  });
}

export const instanceEventOperations: OperationTable = { ModifyInstanceEventStartTime };
