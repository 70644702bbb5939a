// `ironbark admin event schedule|list|cancel`: a node's maintenance, told to the users of every
// instance on it as EC2 scheduled events (DescribeInstanceStatus) and carried out at its time:
// reboot codes reboot the instances, instance-stop and instance-retirement stop them,
// system-maintenance only informs.
import type { Command } from 'commander';
import { adminClientFor, formatTable, printResult } from './admin.ts';

interface EventJson {
  id: string; instanceId: string; accountId: string; zone: string; node: string; code: string; state: string;
  description: string; notBefore: string; notAfter: string | null; notBeforeDeadline: string | null; endedAt: string | null;
}

const CODES = ['instance-reboot', 'system-reboot', 'system-maintenance', 'instance-retirement', 'instance-stop'];

const eventsTable = (events: EventJson[]) => formatTable(['EVENT', 'INSTANCE', 'ACCOUNT', 'ZONE', 'NODE', 'CODE', 'STATE', 'NOT BEFORE', 'DEADLINE'],
  events.map((e) => [e.id, e.instanceId, e.accountId, e.zone, e.node, e.code, e.state, e.notBefore, e.notBeforeDeadline]), '(no events)');

/** A time as the operator types it: ISO 8601, or "+2h" / "+30m" / "+1d" from now. */
function parseWhen(value: string): string {
  const relative = /^\+(\d+)([mhd])$/.exec(value.trim());
  if (relative) {
    const unit = { m: 60_000, h: 3_600_000, d: 86_400_000 }[relative[2] as 'm' | 'h' | 'd'];
    return new Date(Date.now() + Number(relative[1]) * unit).toISOString();
  }
  const time = new Date(value);
  if (Number.isNaN(time.getTime())) throw new Error(`"${value}" is not a time: give one such as 2027-01-15T02:00:00Z, or +2h, +30m, +1d.`);
  return time.toISOString();
}

export function registerEventAdminCommands(adminCommand: Command): void {
  const event = adminCommand.command('event').description("scheduled events: announce a node's maintenance to its instances' users");

  event.command('schedule')
    .description('schedule an event for every instance on a node (users see it in DescribeInstanceStatus)')
    .requiredOption('--zone <zone>', 'availability zone of the node')
    .requiredOption('--node <node>', 'node id (nd-…, see `ironbark admin node list`)')
    .requiredOption('--code <code>', `what happens: ${CODES.join(', ')}`)
    .requiredOption('--not-before <time>', 'when it starts (ISO 8601, or +2h, +1d from now)')
    .option('--not-after <time>', 'when it ends (maintenance windows)')
    .option('--deadline <time>', 'latest time users may move it to (without one they cannot move it)')
    .option('--description <text>', "what users read (by default EC2's wording for the code)")
    .action(async (opts: { zone: string; node: string; code: string; notBefore: string; notAfter?: string; deadline?: string; description?: string }, cmd: Command) => {
      if (!CODES.includes(opts.code)) throw new Error(`--code must be one of ${CODES.join(', ')}.`);
      const body = {
        zone: opts.zone, node: opts.node, code: opts.code, notBefore: parseWhen(opts.notBefore),
        ...(opts.notAfter ? { notAfter: parseWhen(opts.notAfter) } : {}),
        ...(opts.deadline ? { notBeforeDeadline: parseWhen(opts.deadline) } : {}),
        ...(opts.description ? { description: opts.description } : {}),
      };
      const answer = await adminClientFor(cmd).request<{ events: EventJson[] }>('POST', '/events', { body });
      printResult(cmd, answer, (a) => (a.events.length === 0
        ? `No instance is on node ${opts.node} of zone ${opts.zone}: nothing was scheduled.`
        : `${a.events.length} event(s) scheduled:\n${eventsTable(a.events)}`));
    });

  event.command('list')
    .description('list scheduled events, and those that ended in the last week')
    .option('--zone <zone>', 'only this zone')
    .option('--node <node>', 'only this node')
    .action(async (opts: { zone?: string; node?: string }, cmd: Command) => {
      const answer = await adminClientFor(cmd).request<{ events: EventJson[] }>('GET', '/events', { query: { zone: opts.zone, node: opts.node } });
      printResult(cmd, answer, (a) => eventsTable(a.events));
    });

  event.command('cancel')
    .description('cancel a scheduled event (users then see it as canceled)')
    .argument('<event>', 'event id (instance-event-…)')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      const answer = await adminClientFor(cmd).request<{ event: EventJson }>('DELETE', `/events/${encodeURIComponent(id)}`);
      printResult(cmd, answer, (a) => `Event ${a.event.id} of ${a.event.instanceId} canceled.`);
    });
}
