import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Scheduler, type PlacementResult } from '../../src/cluster/scheduler.ts';
import { createPolicy } from '../../src/cluster/policies/index.ts';
import type { AllocationPolicy } from '../../src/cluster/policy.ts';
import { node, request, SMALL } from '../fixtures/cluster-nodes.ts';

const MODULE_FIXTURE = resolve('test/fixtures/policy-plugin.ts');
const EXEC_FIXTURE = resolve('test/fixtures/policy-exec.sh');

const dir = await mkdtemp(join(tmpdir(), 'ironbark-policy-plugins-'));
after(() => rm(dir, { recursive: true, force: true }));

async function script(name: string, body: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

function cluster() {
  return [node('node-a', { memoryMiB: 2048 }), node('node-b', { memoryMiB: 8192 }), node('node-c', { memoryMiB: 4096 }), node('node-d', { state: 'down', memoryMiB: 65536 })];
}

function placedOn(result: PlacementResult): string[] {
  if (!result.ok) assert.fail(`expected a placement, got: ${result.reason}`);
  return result.placements.map((p) => p.nodeName);
}

function failure(result: PlacementResult): string {
  if (result.ok) assert.fail('expected the placement to fail');
  assert.equal(result.error.code, 'InsufficientInstanceCapacity');
  return result.reason;
}

test('a module plugin chooses the node with the most free memory', async () => {
  const policy = await createPolicy(`module:${MODULE_FIXTURE}`);
  assert.equal(policy.name, 'most-free-memory');
  const scheduler = new Scheduler({ policy });
  const result = await scheduler.place(request(SMALL, 3), cluster());
  // 8192 on b, then b (7168) again, then b (6144) again, c has 4096.
  assert.deepEqual(placedOn(result), ['node-b', 'node-b', 'node-b']);
  assert.ok(result.ok);
  assert.match(result.decisions[0]!.chosenBecause, /most free memory \(8192 MiB on node-b\)/);
});

test('a path ending in .ts is taken as a module; a class export is constructed with the plugin options', async () => {
  assert.equal((await createPolicy(MODULE_FIXTURE)).name, 'most-free-memory');
  const classModule = await file('by-label.mjs', `
    export class ByLabel {
      constructor(options) { this.name = 'by-label'; this.label = options.label; }
      choose(_req, candidates) {
        const hit = candidates.find((c) => c.labels && c.labels[this.label]);
        return hit ? { nodeId: hit.id, reason: 'labelled ' + this.label } : { nodeId: undefined, reason: 'no node labelled ' + this.label };
      }
    }
    export { ByLabel as policy };
  `);
  const policy = await createPolicy(`module:${classModule}`, { pluginOptions: { label: 'gpu' } });
  const nodes = cluster();
  nodes[2]!.labels = { gpu: 'yes' };
  assert.deepEqual(placedOn(await new Scheduler({ policy }).place(request(SMALL), nodes)), ['node-c']);
  assert.match(failure(await new Scheduler({ policy }).place(request(SMALL), cluster())), /by-label chose no node: no node labelled gpu/);
});

test('a module that does not export a policy is refused with a clear error', async () => {
  const wrongShape = await file('wrong.mjs', 'export default { name: "half", pick() {} };');
  await assert.rejects(createPolicy(`module:${wrongShape}`), (e: Error) => {
    assert.equal(e.name, 'PolicyPluginError');
    assert.match(e.message, /policy module .*wrong\.mjs must export an allocation policy: .*`choose\(request, candidates, state\)` method; found an object with keys \[name, pick\]/);
    return true;
  });
  const noExport = await file('none.mjs', 'export const other = 1;');
  await assert.rejects(createPolicy(`module:${noExport}`), /has neither a default export nor an export named `policy`/);
  await assert.rejects(createPolicy(`module:${join(dir, 'missing.mjs')}`), /policy module .*missing\.mjs could not be loaded/);
});

test('a module plugin that throws fails the placement, naming the policy', async () => {
  const throwing = await file('throws.mjs', 'export default { name: "throws", choose() { throw new Error("database unreachable"); } };');
  const errors: string[] = [];
  const scheduler = new Scheduler({ policy: await createPolicy(throwing), log: (level, msg) => { if (level === 'error') errors.push(msg); } });
  assert.match(failure(await scheduler.place(request(SMALL), cluster())), /allocation policy throws failed: database unreachable/);
  assert.equal(errors.length, 1);
});

test('an executable plugin answers with a node id on stdout', async () => {
  const policy = await createPolicy(`exec:${EXEC_FIXTURE}`);
  assert.equal(policy.name, `exec:${EXEC_FIXTURE}`);
  const scheduler = new Scheduler({ policy });
  const result = await scheduler.place(request(SMALL, 2), cluster());
  // The fixture takes the last candidate; node-d is down so it is never offered.
  assert.deepEqual(placedOn(result), ['node-c', 'node-c']);
  assert.ok(result.ok);
  assert.equal(result.decisions[0]!.chosenBecause, 'last candidate in name order');
});

test('an executable plugin may answer with a bare id, and is found by path alone', async () => {
  const bare = await script('bare-id', 'cat >/dev/null; echo id-node-b');
  const policy = await createPolicy(bare);
  assert.equal(policy.name, `exec:${bare}`);
  assert.deepEqual(placedOn(await new Scheduler({ policy }).place(request(SMALL), cluster())), ['node-b']);
});

test('the executable plugin receives the request, the candidates and the earlier placements as JSON', async () => {
  const copy = join(dir, 'seen.json');
  const recorder = await script('recorder', `cat > ${copy}; echo id-node-a`);
  const scheduler = new Scheduler({ policy: await createPolicy(`exec:${recorder}`) });
  const req = request(SMALL, 2);
  await scheduler.place(req, cluster());
  const { readFile } = await import('node:fs/promises');
  const seen = JSON.parse(await readFile(copy, 'utf8'));
  assert.equal(seen.request.instanceId, req.instances[1]!.instanceId);
  assert.equal(seen.request.index, 1);
  assert.equal(seen.request.count, 2);
  assert.deepEqual(seen.request.vmType, SMALL);
  assert.deepEqual(seen.candidates.map((c: { name: string }) => c.name), ['node-a', 'node-b', 'node-c']);
  assert.equal(seen.candidates[0].free.cores, 3, 'candidates show capacity net of the first instance');
  assert.deepEqual(seen.placed.map((p: { instanceId: string; nodeId: string }) => [p.instanceId, p.nodeId]), [[req.instances[0]!.instanceId, 'id-node-a']]);
});

test('executable plugin failures fail the placement with a reason naming the plugin, and are logged', async () => {
  const cases: [string, string, RegExp][] = [
    ['exit-3', 'cat >/dev/null; echo "cannot decide" >&2; exit 3', /exited with code 3: cannot decide/],
    ['slow', 'sleep 600; echo id-node-a', /did not answer within 1000 ms/],
    ['unknown-node', 'cat >/dev/null; echo \'{"nodeId": "id-node-z"}\'', /chose node "id-node-z", which is not a node of this cluster/],
    ['down-node', 'cat >/dev/null; echo id-node-d', /chose node "id-node-d", which is not a candidate \(down\)/],
    ['silent', 'cat >/dev/null', /printed no node id/],
    ['garbage', 'cat >/dev/null; echo "{not json"', /printed malformed JSON/],
    ['declines', 'cat >/dev/null; echo \'{"nodeId": null, "reason": "maintenance window"}\'', /chose no node: maintenance window/],
    ['no-stdin', 'echo id-node-a; exit 0', /^$/],
  ];
  for (const [name, body, expected] of cases) {
    const path = await script(name, body);
    const errors: string[] = [];
    // Only the plugin that never answers meets its deadline; the others have all the time they need.
    const timeoutMs = name === 'slow' ? 1000 : 60_000;
    const scheduler = new Scheduler({ policy: await createPolicy(`exec:${path}`, { timeoutMs }),
      log: (level, msg) => { if (level === 'error') errors.push(msg); } });
    const result = await scheduler.place(request(SMALL), cluster());
    if (name === 'no-stdin') {
      // A plugin that never reads its input still works.
      assert.deepEqual(placedOn(result), ['node-a']);
      continue;
    }
    const reason = failure(result);
    assert.match(reason, expected, name);
    assert.ok(reason.includes(path), `${name}: the reason names the plugin`);
    if (name !== 'declines') assert.equal(errors.length, 1, `${name}: logged once`);
    assert.equal(scheduler.reservedOn('id-node-a'), undefined);
  }
});

test('createPolicy refuses a path that is not an executable file', async () => {
  const notExecutable = await file('plain.txt', 'id-node-a');
  await assert.rejects(createPolicy(`exec:${notExecutable}`), /policy plugin .*plain\.txt cannot be used: not executable/);
  await assert.rejects(createPolicy(`exec:${join(dir, 'nope')}`), /cannot be used: no such file/);
  await assert.rejects(createPolicy(dir), /cannot be used: not a regular file/);
});

test('plugins and built-ins share the AllocationPolicy shape', async () => {
  const policies: AllocationPolicy[] = [await createPolicy('greedy'), await createPolicy(MODULE_FIXTURE), await createPolicy(EXEC_FIXTURE)];
  for (const policy of policies) {
    assert.equal(typeof policy.name, 'string');
    const result = await new Scheduler({ policy }).place(request(SMALL), cluster());
    assert.equal(result.ok, true, policy.name);
  }
});
