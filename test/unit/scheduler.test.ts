import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Scheduler, type PlacementResult } from '../../src/cluster/scheduler.ts';
import { GreedyPolicy } from '../../src/cluster/policies/greedy.ts';
import { RoundRobinPolicy } from '../../src/cluster/policies/round-robin.ts';
import type { AllocationPolicy, LogLevel, NodeView } from '../../src/cluster/policy.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';
import { applyPlacements, MEDIUM, node, request, SMALL, vmType } from '../fixtures/cluster-nodes.ts';

function assertPlaced(result: PlacementResult): asserts result is Extract<PlacementResult, { ok: true }> {
  if (!result.ok) assert.fail(`expected a placement, got: ${result.reason}`);
}

function assertFailed(result: PlacementResult): asserts result is Extract<PlacementResult, { ok: false }> {
  if (result.ok) assert.fail(`expected no placement, got ${result.placements.map((p) => p.nodeName).join(',')}`);
}

function nodeNames(result: PlacementResult): string[] {
  assertPlaced(result);
  return result.placements.map((p) => p.nodeName);
}

test('a down node is skipped with its reason and a full node with its shortfall', async () => {
  const nodes = [node('node-a', { state: 'down' }), node('node-b', { cores: 1 }), node('node-c', { state: 'disabled' }), node('node-d')];
  const scheduler = new Scheduler({ policy: new GreedyPolicy() });
  const result = await scheduler.place(request(MEDIUM), nodes);
  assertPlaced(result);
  assert.equal(result.placements[0]!.nodeName, 'node-d');
  assert.deepEqual(result.decisions[0]!.skipped, [
    { nodeId: 'id-node-a', reason: 'down' },
    { nodeId: 'id-node-b', reason: 'needs 2 cores, 1 free and needs 2048 MiB memory, 1024 MiB free and needs 20 GiB disk, 10 GiB free' },
    { nodeId: 'id-node-c', reason: 'disabled' },
  ]);
  assert.equal(result.decisions[0]!.policy, 'greedy');
  assert.match(result.decisions[0]!.chosenBecause, /node-d/);
});

test('no node with room answers InsufficientInstanceCapacity with a reason per node', async () => {
  const nodes = [node('node-3', { cores: 1, memoryMiB: 8192, diskGiB: 100 }), node('node-5', { state: 'down' })];
  const result = await new Scheduler({ policy: new GreedyPolicy(), zone: 'zone-1a' }).place(request(MEDIUM), nodes);
  assertFailed(result);
  assert.ok(result.error instanceof Ec2Error);
  assert.equal(result.error.code, 'InsufficientInstanceCapacity');
  // The error is what a tenant reads: EC2's words, no node names or free capacity.
  assert.match(result.error.message, new RegExp(`^We currently do not have sufficient ${MEDIUM.name.replace('.', '\\.')} capacity in the Availability Zone you requested \\(zone-1a\\)\\.`));
  assert.doesNotMatch(result.error.message, /node|free|down/);
  // The reasons per node are the operator's.
  assert.match(result.reason, /node-3: needs 2 cores, 1 free/);
  assert.match(result.reason, /node-5: down/);
  assert.deepEqual(result.skipped, [{ nodeId: 'id-node-3', reason: 'needs 2 cores, 1 free' }, { nodeId: 'id-node-5', reason: 'down' }]);
});

test('the instances of one request are reserved against each other', async () => {
  const nodes = [node('node-a', { cores: 4 }), node('node-b', { cores: 4 })];
  const result = await new Scheduler({ policy: new GreedyPolicy() }).place(request(MEDIUM, 3), nodes);
  assert.deepEqual(nodeNames(result), ['node-a', 'node-a', 'node-b']);
  assertPlaced(result);
  assert.equal(result.decisions.length, 3);
  assert.deepEqual(result.decisions[2]!.skipped, [{ nodeId: 'id-node-a', reason: 'needs 2 cores, 0 free and needs 2048 MiB memory, 0 MiB free and needs 20 GiB disk, 0 GiB free' }]);
});

test('MaxCount is all or nothing: a request that does not fit reserves nothing', async () => {
  const nodes = [node('node-a', { cores: 2 }), node('node-b', { cores: 2 })];
  const scheduler = new Scheduler({ policy: new GreedyPolicy() });
  const tooBig = await scheduler.place(request(MEDIUM, 3), nodes);
  assertFailed(tooBig);
  assert.equal(tooBig.error.code, 'InsufficientInstanceCapacity');
  assert.match(tooBig.reason, /after placing 2 of 3/);
  assert.equal(scheduler.reservedOn('id-node-a'), undefined);
  assert.equal(scheduler.reservedOn('id-node-b'), undefined);
  // The whole capacity is still there for a request that fits.
  assert.deepEqual(nodeNames(await scheduler.place(request(MEDIUM, 2), nodes)), ['node-a', 'node-b']);
});

test('a node that comes back up is used again', async () => {
  const nodes = [node('node-a', { state: 'down' }), node('node-b')];
  const scheduler = new Scheduler({ policy: new GreedyPolicy() });
  const first = await scheduler.place(request(SMALL), nodes);
  assert.deepEqual(nodeNames(first), ['node-b']);
  assertPlaced(first);
  scheduler.commit(first.reservationId);
  applyPlacements(nodes, first.placements, SMALL);
  nodes[0]!.state = 'up';
  assert.deepEqual(nodeNames(await scheduler.place(request(SMALL), nodes)), ['node-a']);
});

test('concurrent place() calls never oversubscribe a node; release gives the capacity back', async () => {
  const nodes = [node('node-a', { cores: 4 })];
  const scheduler = new Scheduler({ policy: new RoundRobinPolicy() });
  const big = vmType('t.large', 3);
  const [one, two] = await Promise.all([scheduler.place(request(big), nodes), scheduler.place(request(big), nodes)]);
  assert.equal([one, two].filter((r) => r.ok).length, 1);
  const winner = one.ok ? one : two;
  const loser = one.ok ? two : one;
  assertPlaced(winner);
  assertFailed(loser);
  assert.match(loser.reason, /node-a: needs 3 cores, 1 free/);
  assert.deepEqual(scheduler.reservedOn('id-node-a'), { cores: 3, memoryMiB: 3072, diskGiB: 30 });

  assert.equal(scheduler.release(winner.reservationId), true);
  assert.equal(scheduler.reservedOn('id-node-a'), undefined);
  assert.deepEqual(nodeNames(await scheduler.place(request(big), nodes)), ['node-a']);
});

test('commit hands the capacity over to the node views; partial release frees single instances', async () => {
  const nodes = [node('node-a', { cores: 4 })];
  const scheduler = new Scheduler({ policy: new GreedyPolicy() });
  const placed = await scheduler.place(request(SMALL, 3), nodes);
  assertPlaced(placed);
  assert.deepEqual(scheduler.reservedOn('id-node-a'), { cores: 3, memoryMiB: 3072, diskGiB: 30 });

  // One instance failed to launch: only its share comes back.
  scheduler.release(placed.reservationId, [placed.placements[0]!.instanceId]);
  assert.deepEqual(scheduler.reservedOn('id-node-a'), { cores: 2, memoryMiB: 2048, diskGiB: 20 });
  assertFailed(await scheduler.place(request(MEDIUM, 2), nodes));

  // The other two are now in the node's report.
  applyPlacements(nodes, placed.placements.slice(1), SMALL);
  scheduler.commit(placed.reservationId);
  assert.equal(scheduler.reservedOn('id-node-a'), undefined);
  assert.equal(scheduler.commit(placed.reservationId), false);
  assert.deepEqual(nodeNames(await scheduler.place(request(MEDIUM), nodes)), ['node-a']);
  assertFailed(await scheduler.place(request(SMALL), nodes));
});

test('every placement is logged once at debug level with its decision', async () => {
  const lines: { level: LogLevel; msg: string; fields: Record<string, unknown> }[] = [];
  const scheduler = new Scheduler({ policy: new GreedyPolicy(), log: (level, msg, fields) => lines.push({ level, msg, fields }) });
  const req = request(SMALL, 2);
  await scheduler.place(req, [node('node-a', { state: 'down' }), node('node-b')]);
  assert.equal(lines.length, 2);
  assert.ok(lines.every((l) => l.level === 'debug'));
  assert.equal(lines[0]!.fields.instanceId, req.instances[0]!.instanceId);
  assert.equal(lines[0]!.fields.nodeId, 'id-node-b');
  assert.equal(lines[0]!.fields.policy, 'greedy');
  assert.equal(lines[0]!.fields.skipped, 1);
  assert.match(lines[1]!.msg, /placed .* on node-b/);
});

test('nodes are considered in name order whatever order they arrive in', async () => {
  const nodes = [node('node-c'), node('node-a'), node('node-b')];
  assert.deepEqual(nodeNames(await new Scheduler({ policy: new GreedyPolicy() }).place(request(SMALL), nodes)), ['node-a']);
});

test('a policy that throws fails the placement with its name and is logged, without crashing', async () => {
  const errors: string[] = [];
  const broken: AllocationPolicy = { name: 'broken', choose() { throw new Error('out of ideas'); } };
  const scheduler = new Scheduler({ policy: broken, log: (level, msg) => { if (level === 'error') errors.push(msg); } });
  const result = await scheduler.place(request(SMALL), [node('node-a')]);
  assertFailed(result);
  assert.equal(result.error.code, 'InsufficientInstanceCapacity');
  assert.match(result.reason, /allocation policy broken failed: out of ideas/);
  assert.equal(errors.length, 1);
  assert.equal(scheduler.reservedOn('id-node-a'), undefined);
});

test('a policy that names an unknown node or a node without room is refused', async () => {
  const nodes = [node('node-a', { cores: 1 }), node('node-b', { cores: 4 })];
  const pick = (nodeId: string): AllocationPolicy => ({ name: 'picky', choose: () => ({ nodeId, reason: 'because' }) });

  const unknown = await new Scheduler({ policy: pick('id-node-z') }).place(request(MEDIUM), nodes);
  assertFailed(unknown);
  assert.match(unknown.reason, /picky chose node "id-node-z", which is not a node of this cluster/);

  const full = await new Scheduler({ policy: pick('id-node-a') }).place(request(MEDIUM), nodes);
  assertFailed(full);
  assert.match(full.reason, /which is not a candidate \(needs 2 cores, 1 free/);

  const declined = await new Scheduler({ policy: { name: 'shy', choose: () => ({ nodeId: undefined, reason: 'not today' }) } }).place(request(MEDIUM), nodes);
  assertFailed(declined);
  assert.match(declined.reason, /shy chose no node: not today/);
});

test('policies see free capacity net of reservations', async () => {
  const seen: NodeView[][] = [];
  const spy: AllocationPolicy = { name: 'spy', choose: (_req, candidates) => { seen.push(candidates.map((c) => ({ ...c, free: { ...c.free } }))); return { nodeId: candidates[0]!.id, reason: 'first' }; } };
  const scheduler = new Scheduler({ policy: spy });
  const nodes = [node('node-a', { cores: 4 })];
  await scheduler.place(request(SMALL, 2), nodes);
  await scheduler.place(request(SMALL), nodes);
  assert.deepEqual(seen.map((c) => c[0]!.free.cores), [4, 3, 2]);
  assert.equal(nodes[0]!.free.cores, 4, 'the caller\'s node views are not modified');
});

test('asleep nodes are not used when nothing can wake them', async () => {
  const result = await new Scheduler({ policy: new GreedyPolicy() }).place(request(SMALL), [node('node-a', { state: 'asleep' })]);
  assertFailed(result);
  assert.deepEqual(result.skipped, [{ nodeId: 'id-node-a', reason: 'asleep, and no wake command is configured' }]);
  const rr = await new Scheduler({ policy: new RoundRobinPolicy() }).place(request(SMALL), [node('node-a', { state: 'asleep' })]);
  assertFailed(rr);
  assert.deepEqual(rr.skipped, [{ nodeId: 'id-node-a', reason: 'asleep' }]);
});

test('a malformed request is rejected before anything is placed', async () => {
  const scheduler = new Scheduler({ policy: new GreedyPolicy() });
  await assert.rejects(scheduler.place({ requestId: 'r-x', instances: [] }, [node('node-a')]), { code: 'InvalidParameterValue' });
  await assert.rejects(scheduler.place({ requestId: 'r-y', instances: [{ instanceId: 'i-1', vmType: vmType('bad', -1) }] }, [node('node-a')]),
    { code: 'InvalidParameterValue' });
});
