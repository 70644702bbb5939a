// Scheduled events end to end (issue 11, item 5): the operator announces a node's maintenance with
// `ironbark admin event schedule` (a child process) against `ironbark up --driver fake`; users see
// the events in DescribeInstanceStatus through the AWS SDK (filters included), move one within its
// deadline with ModifyInstanceEventStartTime, and the one brought forward is carried out at its time
// (the instance stops, with EC2's state reason, and the event reads "[Completed]"); a canceled event
// reads "[Canceled]". Bad input gets a clear refusal and schedules nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  DescribeImagesCommand, DescribeInstanceStatusCommand, DescribeInstancesCommand, EC2Client, ModifyInstanceEventStartTimeCommand,
  RunInstancesCommand, type InstanceStatus,
} from '@aws-sdk/client-ec2';
import { startCloudProcess, REGION } from '../helpers/cloud.ts';
import { adminCli } from '../helpers/admin-cli.ts';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

let cloud: Awaited<ReturnType<typeof startCloudProcess>>;
let ec2: EC2Client;

before(async () => {
  cloud = await startCloudProcess(['--driver', 'fake']);
  ec2 = new EC2Client({ endpoint: cloud.url, region: REGION, credentials: { accessKeyId: cloud.accessKeyId, secretAccessKey: cloud.secretAccessKey } });
});

after(async () => {
  ec2?.destroy();
  await cloud?.stop();
});

const admin = (args: string[]) => adminCli(cloud).admin(args);
const ok = (args: string[]) => adminCli(cloud).ok(args);

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function statuses(filters?: { Name: string; Values: string[] }[]): Promise<Map<string, InstanceStatus>> {
  const answer = await ec2.send(new DescribeInstanceStatusCommand({ IncludeAllInstances: true, Filters: filters }));
  return new Map((answer.InstanceStatuses ?? []).map((s) => [s.InstanceId!, s]));
}

test('the operator schedules a node maintenance; users see it, move it, and it is carried out', async () => {
  const image = (await ec2.send(new DescribeImagesCommand({ Filters: [{ Name: 'image-type', Values: ['machine'] }] }))).Images![0]!;
  const run = await ec2.send(new RunInstancesCommand({ ImageId: image.ImageId, MinCount: 2, MaxCount: 2, InstanceType: 't3.micro' }));
  const [moved, kept] = run.Instances!.map((i) => i.InstanceId!) as [string, string];
  await waitFor('both instances running', async () => {
    const r = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [moved, kept] }));
    const states = r.Reservations!.flatMap((x) => x.Instances!).map((i) => i.State?.Name);
    return states.every((s) => s === 'running') ? true : undefined;
  });
  const nodes = JSON.parse(await ok(['node', 'list', '--json'])).nodes as Array<{ id: string; zone: string }>;
  assert.equal(nodes.length, 1);
  const { id: node, zone } = nodes[0]!;

  // Bad input: a clear refusal, nothing scheduled.
  const badCode = await admin(['event', 'schedule', '--zone', zone, '--node', node, '--code', 'host-explodes', '--not-before', '+1h']);
  assert.equal(badCode.code, 1);
  assert.match(badCode.stderr, /--code must be one of instance-reboot, system-reboot/);
  const past = await admin(['event', 'schedule', '--zone', zone, '--node', node, '--code', 'instance-stop', '--not-before', '2020-01-01T00:00:00Z']);
  assert.equal(past.code, 1);
  assert.match(past.stderr, /notBefore must be in the future/);
  const noZone = await admin(['event', 'schedule', '--zone', 'nowhere-1a', '--node', node, '--code', 'instance-stop', '--not-before', '+1h']);
  assert.equal(noZone.code, 1);
  assert.match(noZone.stderr, /No zone nowhere-1a/);
  assert.match(await ok(['event', 'list']), /\(no events\)/);

  // A maintenance window without a deadline, and a stop soon with one.
  const maintenance = JSON.parse(await ok(['event', 'schedule', '--zone', zone, '--node', node, '--code', 'system-maintenance',
    '--not-before', '+2h', '--not-after', '+4h', '--json'])).events as Array<{ id: string; instanceId: string }>;
  assert.deepEqual(maintenance.map((e) => e.instanceId).sort(), [moved, kept].sort());
  const stopText = await ok(['event', 'schedule', '--zone', zone, '--node', node, '--code', 'instance-stop', '--not-before', '+1h', '--deadline', '+1d']);
  assert.match(stopText, /2 event\(s\) scheduled/);

  const seen = await statuses();
  for (const id of [moved, kept]) {
    const events = seen.get(id)!.Events!;
    assert.deepEqual(events.map((e) => e.Code).sort(), ['instance-stop', 'system-maintenance']);
    const stop = events.find((e) => e.Code === 'instance-stop')!;
    assert.match(stop.InstanceEventId!, /^instance-event-[0-9a-f]{17}$/);
    assert.equal(stop.Description, 'The instance is scheduled to be stopped');
    assert.ok(stop.NotBefore!.getTime() > Date.now() + 1_800_000, 'an hour from now');
    assert.ok(stop.NotBeforeDeadline, 'the stop event carries its deadline');
    assert.ok(events.find((e) => e.Code === 'system-maintenance')!.NotAfter, 'the maintenance window has an end');
  }
  assert.equal((await statuses([{ Name: 'event.code', Values: ['instance-stop'] }])).size, 2);
  assert.equal((await statuses([{ Name: 'event.code', Values: ['system-reboot'] }])).size, 0);
  const stopOf = (id: string) => seen.get(id)!.Events!.find((e) => e.Code === 'instance-stop')!;
  assert.deepEqual([...(await statuses([{ Name: 'event.instance-event-id', Values: [stopOf(kept).InstanceEventId!] }])).keys()], [kept]);

  // Users move events within their deadline (one to a few seconds from now); not past the
  // deadline, and not an event that has none.
  const later = new Date(Date.now() + 7_200_000);
  const answer = await ec2.send(new ModifyInstanceEventStartTimeCommand({ InstanceId: moved, InstanceEventId: stopOf(moved).InstanceEventId, NotBefore: later }));
  assert.equal(answer.Event?.InstanceEventId, stopOf(moved).InstanceEventId);
  assert.equal(answer.Event?.NotBefore?.getTime(), later.getTime());
  await assert.rejects(ec2.send(new ModifyInstanceEventStartTimeCommand({
    InstanceId: moved, InstanceEventId: stopOf(moved).InstanceEventId, NotBefore: new Date(Date.now() + 3 * 86_400_000),
  })), (e: Error) => e.name === 'InvalidParameterValue' && /deadline/.test(e.message));
  const windowOf = seen.get(moved)!.Events!.find((e) => e.Code === 'system-maintenance')!;
  await assert.rejects(ec2.send(new ModifyInstanceEventStartTimeCommand({ InstanceId: moved, InstanceEventId: windowOf.InstanceEventId, NotBefore: later })),
    (e: Error) => e.name === 'InvalidParameterValue' && /no deadline/.test(e.message));
  await assert.rejects(ec2.send(new ModifyInstanceEventStartTimeCommand({ InstanceId: moved, InstanceEventId: 'instance-event-0123456789abcdef0', NotBefore: later })),
    (e: Error) => e.name === 'InvalidInstanceEventID.NotFound');
  await ec2.send(new ModifyInstanceEventStartTimeCommand({ InstanceId: kept, InstanceEventId: stopOf(kept).InstanceEventId, NotBefore: new Date(Date.now() + 8000) }));

  // The stop brought forward is carried out at its time.
  const stopped = await waitFor('the scheduled stop', async () => {
    const r = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [kept] }));
    const i = r.Reservations![0]!.Instances![0]!;
    return i.State?.Name === 'stopped' ? i : undefined;
  });
  assert.equal(stopped.StateReason?.Code, 'Server.ScheduledStop');
  const after = await statuses();
  assert.equal(after.get(kept)!.Events!.find((e) => e.Code === 'instance-stop')!.Description, '[Completed] The instance is scheduled to be stopped');
  assert.equal(after.get(moved)!.InstanceState?.Name, 'running', 'the moved event has not come yet');
  assert.equal(after.get(moved)!.Events!.find((e) => e.Code === 'instance-stop')!.Description, 'The instance is scheduled to be stopped');

  // The operator cancels the moved one; canceling it again is refused.
  const eventId = stopOf(moved).InstanceEventId!;
  assert.match(await ok(['event', 'cancel', eventId]), new RegExp(`Event ${eventId} of ${moved} canceled`));
  assert.equal((await statuses()).get(moved)!.Events!.find((e) => e.Code === 'instance-stop')!.Description, '[Canceled] The instance is scheduled to be stopped');
  const again = await admin(['event', 'cancel', eventId]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already been canceled/);
  const listed = JSON.parse(await ok(['event', 'list', '--node', node, '--json'])).events as Array<{ code: string; state: string }>;
  assert.deepEqual(listed.map((e) => `${e.code}:${e.state}`).sort(),
    ['instance-stop:canceled', 'instance-stop:completed', 'system-maintenance:scheduled', 'system-maintenance:scheduled']);
});
