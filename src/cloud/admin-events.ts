// Admin API for scheduled events (conventions in admin-api.ts; the events in
// compute/instance-events.ts): the operator announces a node's maintenance to the users of every
// instance on it, who see it in DescribeInstanceStatus and may move it up to its deadline.
//
//   GET    /v1/events?zone=&node=              scheduled events and those ended in the last week
//   POST   /v1/events {zone, node, code, notBefore, notAfter?, notBeforeDeadline?, description?}
//                                               one event per instance on the node -> events
//   DELETE /v1/events/:id                       cancels a scheduled event
import type { Hono } from 'hono';
import type { Logger } from 'pino';
import type { Store } from '../store/store.ts';
import type { KeyResolver } from '../auth/authenticate.ts';
import type { InstanceEventsTable } from '../store/schema.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { newAdminApp, readJsonObject, requiredString, type AdminEnv } from './admin-api.ts';
import { cancelEvent, eventView, listEvents, scheduleHostEvents } from './compute/instance-events.ts';

export interface EventAdminDeps {
  store: Store;
  keys: KeyResolver;
  log: Pick<Logger, 'info' | 'warn' | 'error'>;
}

function adminEventView(row: InstanceEventsTable) {
  const view = eventView(row);
  return {
    id: row.id, instanceId: row.instance_id, accountId: row.account_id, zone: row.zone, node: row.node_id,
    code: row.code, state: row.state, description: view.Description,
    notBefore: row.not_before, notAfter: row.not_after, notBeforeDeadline: row.not_before_deadline, endedAt: row.ended_at,
  };
}

function optionalTime(body: Record<string, unknown>, name: string): Date | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  const time = typeof value === 'string' ? new Date(value) : new Date(NaN);
  if (Number.isNaN(time.getTime())) throw new Ec2Error('InvalidParameterValue', `${name} must be a time such as 2027-01-15T02:00:00Z.`);
  return time;
}

export function createEventAdminApi(deps: EventAdminDeps): Hono<AdminEnv> {
  const { store, log } = deps;
  const app = newAdminApp(deps);

  app.get('/v1/events', async (c) => {
    const events = await listEvents(store.db, { zone: c.req.query('zone') || undefined, nodeId: c.req.query('node') || undefined });
    return c.json({ events: events.map(adminEventView) });
  });

  app.post('/v1/events', async (c) => {
    const body = await readJsonObject(c);
    const zone = requiredString(body, 'zone');
    const nodeId = requiredString(body, 'node');
    const description = body.description === undefined ? undefined : requiredString(body, 'description');
    if (!(await store.db.selectFrom('zones').select('name').where('name', '=', zone).executeTakeFirst())) {
      throw new Ec2Error('InvalidZone.NotFound', `No zone ${zone}.`, 404);
    }
    const notBefore = optionalTime(body, 'notBefore');
    if (!notBefore) throw new Ec2Error('MissingParameter', 'notBefore (when the event starts) is required.');
    const rows = await store.transaction((tx) => scheduleHostEvents(tx, {
      zone, nodeId, code: requiredString(body, 'code'), notBefore,
      notAfter: optionalTime(body, 'notAfter'), notBeforeDeadline: optionalTime(body, 'notBeforeDeadline'), description,
    }));
    log.info({ zone, node: nodeId, code: body.code, count: rows.length }, 'events scheduled');
    return c.json({ events: rows.map(adminEventView) });
  });

  app.delete('/v1/events/:id', async (c) => {
    const row = await store.transaction((tx) => cancelEvent(tx, c.req.param('id')));
    log.info({ eventId: row.id, instanceId: row.instance_id }, 'event canceled');
    return c.json({ event: adminEventView(row) });
  });

  return app;
}
