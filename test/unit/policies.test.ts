import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Scheduler, type PlacementResult } from '../../src/cluster/scheduler.ts';
import { createPolicy } from '../../src/cluster/policies/index.ts';
import { GreedyPolicy } from '../../src/cluster/policies/greedy.ts';
import { RoundRobinPolicy } from '../../src/cluster/policies/round-robin.ts';
import { PowerSavePolicy } from '../../src/cluster/policies/power-save.ts';
import { expandPowerCommand, PowerManager, type CommandOutcome } from '../../src/cluster/power.ts';
import type { AllocationPolicy, NodeView } from '../../src/cluster/policy.ts';
import { applyPlacements, node, request, SMALL } from '../fixtures/cluster-nodes.ts';

/** Places `count` one-instance requests one after another, committing each into the node views. */
async function placeOneByOne(scheduler: Scheduler, nodes: NodeView[], count: number): Promise<string[]> {
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    const result = await scheduler.place(request(SMALL), nodes);
    if (!result.ok) { names.push('-'); continue; }
    applyPlacements(nodes, result.placements, SMALL);
    scheduler.commit(result.reservationId);
    names.push(result.placements[0]!.nodeName);
  }
  return names;
}

function fakeShell(outcome: Partial<CommandOutcome> = {}) {
  const commands: string[] = [];
  const run = async (command: string) => {
    commands.push(command);
    return { exitCode: 0, stdout: '', stderr: '', timedOut: false, ...outcome };
  };
  return { commands, run };
}

function fakeClock(start = 1_000_000) {
  const clock = { t: start, now: () => clock.t };
  return clock;
}

test('greedy fills node-a first, then node-b', async () => {
  const nodes = [node('node-a', { cores: 3 }), node('node-b', { cores: 3 }), node('node-c', { cores: 3 })];
  const scheduler = new Scheduler({ policy: new GreedyPolicy() });
  assert.deepEqual(await placeOneByOne(scheduler, nodes, 7), ['node-a', 'node-a', 'node-a', 'node-b', 'node-b', 'node-b', 'node-c']);
});

test('round-robin spreads a, b, c, a and skips a full node', async () => {
  const nodes = [node('node-a', { cores: 2 }), node('node-b', { cores: 1 }), node('node-c', { cores: 2 })];
  const scheduler = new Scheduler({ policy: new RoundRobinPolicy() });
  assert.deepEqual(await placeOneByOne(scheduler, nodes, 6), ['node-a', 'node-b', 'node-c', 'node-a', 'node-c', '-']);
});

test('round-robin keeps its place when nodes join or leave', async () => {
  const nodes = [node('node-a'), node('node-c')];
  const scheduler = new Scheduler({ policy: new RoundRobinPolicy() });
  assert.deepEqual(await placeOneByOne(scheduler, nodes, 1), ['node-a']);
  nodes.push(node('node-b'));
  assert.deepEqual(await placeOneByOne(scheduler, nodes, 3), ['node-b', 'node-c', 'node-a']);
  nodes[0]!.state = 'down';
  assert.deepEqual(await placeOneByOne(scheduler, nodes, 2), ['node-b', 'node-c']);
});

test('round-robin spreads the instances of one request too', async () => {
  const scheduler = new Scheduler({ policy: new RoundRobinPolicy() });
  const result = await scheduler.place(request(SMALL, 4), [node('node-a'), node('node-b'), node('node-c')]);
  assert.ok(result.ok);
  assert.deepEqual(result.placements.map((p) => p.nodeName), ['node-a', 'node-b', 'node-c', 'node-a']);
});

test('power-save places like greedy', async () => {
  const nodes = [node('node-a', { cores: 2 }), node('node-b', { cores: 2 })];
  const scheduler = new Scheduler({ policy: new PowerSavePolicy() });
  assert.deepEqual(await placeOneByOne(scheduler, nodes, 4), ['node-a', 'node-a', 'node-b', 'node-b']);
});

test('power-save sleeps nodes idle past the threshold, using a fake clock', async () => {
  const clock = fakeClock();
  const shell = fakeShell();
  const power = new PowerManager({ idleThresholdS: 300, sleepCommand: 'ssh root@{address} systemctl suspend # {node}', wakeCommand: 'wakeonlan {mac}', now: clock.now, run: shell.run });
  const scheduler = new Scheduler({ policy: new PowerSavePolicy(), power });
  const idle = node('node-a', { idleSince: clock.t, address: '10.1.0.1' });
  const busy = { ...node('node-b', { idleSince: undefined }), instanceCount: 2 };
  const recentlyIdle = node('node-c');
  const nodes = [idle, busy, recentlyIdle];

  clock.t += 200_000;
  recentlyIdle.idleSince = clock.t;
  assert.deepEqual(await scheduler.sleepIdleNodes(nodes), []);

  clock.t += 101_000;
  const actions = await scheduler.sleepIdleNodes(nodes);
  assert.deepEqual(actions.map((a) => [a.nodeId, a.action, a.ok]), [['id-node-a', 'sleep', true]]);
  assert.deepEqual(shell.commands, ["ssh root@'10.1.0.1' systemctl suspend # 'node-a'"]);

  // Until node-a's own report says so, it counts as asleep: not slept twice, not given work.
  assert.equal(power.effectiveState(idle), 'asleep');
  assert.deepEqual(await scheduler.sleepIdleNodes(nodes), []);
  const placed = await scheduler.place(request(SMALL), nodes);
  assert.ok(placed.ok);
  assert.equal(placed.placements[0]!.nodeName, 'node-b');

  // Greedy and round-robin do not sleep nodes even with a power manager.
  assert.deepEqual(await new Scheduler({ policy: new GreedyPolicy(), power }).sleepIdleNodes([node('node-x', { idleSince: 0 })]), []);
});

test('power-save never sleeps a node with a reservation in flight', async () => {
  const clock = fakeClock();
  const shell = fakeShell();
  const power = new PowerManager({ idleThresholdS: 300, sleepCommand: 'sleep-node {node}', now: clock.now, run: shell.run });
  const scheduler = new Scheduler({ policy: new PowerSavePolicy(), power });
  const nodes = [node('node-a', { idleSince: clock.t })];
  const placed = await scheduler.place(request(SMALL), nodes);
  assert.ok(placed.ok);
  clock.t += 600_000;
  assert.deepEqual(await scheduler.sleepIdleNodes(nodes), []);
  scheduler.release(placed.reservationId);
  assert.equal((await scheduler.sleepIdleNodes(nodes)).length, 1);
});

test('power-save wakes an asleep node before using it, only when no awake node has room', async () => {
  const clock = fakeClock();
  const shell = fakeShell();
  const power = new PowerManager({ wakeCommand: 'wakeonlan {mac}', now: clock.now, run: shell.run });
  const scheduler = new Scheduler({ policy: new PowerSavePolicy(), power });
  const nodes = [node('node-a', { state: 'asleep', mac: '52:54:00:12:34:56' }), node('node-b', { cores: 1 })];

  const first = await scheduler.place(request(SMALL), nodes);
  assert.ok(first.ok);
  assert.equal(first.placements[0]!.nodeName, 'node-b');
  assert.deepEqual(first.woken, []);
  assert.deepEqual(shell.commands, []);

  const second = await scheduler.place(request(SMALL), nodes);
  assert.ok(second.ok);
  assert.equal(second.placements[0]!.nodeName, 'node-a');
  assert.deepEqual(second.woken, ['id-node-a']);
  assert.match(second.decisions[0]!.chosenBecause, /no awake node has room; waking node-a/);
  assert.deepEqual(shell.commands, ["wakeonlan '52:54:00:12:34:56'"]);
  assert.equal(power.effectiveState(nodes[0]!), 'waking');

  // Already waking: used again without a second wake command.
  const third = await scheduler.place(request(SMALL), nodes);
  assert.ok(third.ok);
  assert.equal(third.placements[0]!.nodeName, 'node-a');
  assert.equal(shell.commands.length, 1);
});

test('a node whose wake fails is left out and the request placed elsewhere or refused', async () => {
  const shell = fakeShell({ exitCode: 1, stderr: 'no route to host\n' });
  const power = new PowerManager({ wakeCommand: 'wake {node}', run: shell.run });
  const scheduler = new Scheduler({ policy: new PowerSavePolicy(), power });
  const nodes = [node('node-a', { state: 'asleep' }), node('node-b', { state: 'asleep' })];
  const result: PlacementResult = await scheduler.place(request(SMALL), nodes);
  assert.equal(result.ok, false);
  assert.ok(!result.ok);
  assert.equal(result.error.code, 'InsufficientInstanceCapacity');
  assert.match(result.reason, /node-a: asleep, and waking it failed: wake command exited with 1: no route to host/);
  assert.match(result.reason, /node-b: asleep, and waking it failed/);
  assert.deepEqual(shell.commands, ["wake 'node-a'", "wake 'node-b'"]);
  assert.equal(scheduler.reservedOn('id-node-a'), undefined);
});

test('power commands quote what they substitute and need the values they name', () => {
  const n = node('evil; rm -rf /', { address: '10.0.0.9' });
  assert.equal(expandPowerCommand('echo {node} {address}', n), "echo 'evil; rm -rf /' '10.0.0.9'");
  assert.throws(() => expandPowerCommand('wakeonlan {mac}', n), /has no MAC address/);
  assert.throws(() => new PowerManager({ idleThresholdS: 0 }), /positive/);
});

test('the default power runner runs the command through /bin/sh with a timeout', async () => {
  const { runShellCommand } = await import('../../src/cluster/power.ts');
  assert.deepEqual(await runShellCommand("printf '%s' hi; echo oops >&2; exit 3", 5000), { exitCode: 3, stdout: 'hi', stderr: 'oops\n', timedOut: false });
  const slow = await runShellCommand('sleep 5', 100);
  assert.equal(slow.timedOut, true);
});

test('createPolicy knows the built-in policies by their names and Eucalyptus names', async () => {
  const names = async (spec: string) => (await createPolicy(spec)).name;
  assert.equal(await names('greedy'), 'greedy');
  assert.equal(await names('round-robin'), 'round-robin');
  assert.equal(await names('power-save'), 'power-save');
  assert.equal(await names('ROUNDROBIN'), 'round-robin');
  assert.equal(await names('POWERSAVE'), 'power-save');
  const powerSave: AllocationPolicy = await createPolicy('power-save');
  assert.equal(powerSave.sleepsIdleNodes, true);
  await assert.rejects(createPolicy('fastest'), /unknown allocation policy "fastest": use one of greedy, round-robin, power-save/);
  // Each call gets its own round-robin cursor.
  const a = await createPolicy('round-robin');
  const b = await createPolicy('round-robin');
  assert.notEqual(a, b);
});

test('every built-in policy uses only usable nodes with room and stops when they are full', async () => {
  for (const spec of ['greedy', 'round-robin', 'power-save']) {
    const scheduler = new Scheduler({ policy: await createPolicy(spec) });
    const nodes = [node('node-b', { cores: 1 }), node('node-a', { cores: 1 }), node('node-c', { state: 'down' })];
    const placed = await placeOneByOne(scheduler, nodes, 3);
    assert.deepEqual([...placed].sort(), ['-', 'node-a', 'node-b'], spec);
    assert.equal(nodes.reduce((sum, n) => sum + n.free.cores, 0), 6 - 2, spec);
  }
});
