// A damaged or unreadable instance record on a node: the agent that restarts over it quarantines
// the record (moved aside with a note of why), keeps the VM the record named running, and reports
// the record in describeResources (which the cluster passes to the admin API's node list). A VM
// that no record names at all is still a leftover and goes, as before.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { ImageCache } from '../../src/node/image-cache.ts';
import { NodeAgent, type AgentLogger } from '../../src/node/node-agent.ts';
import type { ImageRef, InstanceSpec } from '../../src/node/node-api.ts';
import { NodeStateStore } from '../../src/node/node-state.ts';

let root = '';
let kernel: ImageRef;
let rootImage: ImageRef;
let counter = 0;

async function imageFile(id: string, bytes: number): Promise<ImageRef> {
  const data = randomBytes(bytes);
  const path = join(root, `${id}.img`);
  await writeFile(path, data);
  return { id, url: path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes, format: 'raw' };
}

function spec(): InstanceSpec {
  counter++;
  return {
    instanceId: `i-${counter.toString(16).padStart(17, '0')}`, reservationId: 'r-0000000000000000a', accountId: '111122223333',
    imageId: rootImage.id, kernel, root: rootImage, kernelCmdline: 'console=ttyS0',
    vmType: { name: 't.small', cores: 1, memoryMiB: 512, diskGiB: 5 },
    zone: 'test-1a', region: 'test-1', subnetCidr: '10.9.0.0/16', subnetId: 'subnet-0000000000000000a', vpcId: 'vpc-0000000000000000a',
    privateIp: `10.9.0.${10 + counter}`, privateDnsName: `ip-10-9-0-${10 + counter}.test-1.compute.internal`,
    mac: `d2:0d:00:00:01:${(counter % 256).toString(16).padStart(2, '0')}`,
    publicKeys: [], securityGroups: [{ id: 'sg-0000000000000000a', name: 'default' }], launchIndex: 0, launchTime: new Date().toISOString(),
  };
}

/** An agent over `stateDir`; the same FakeDriver across agents plays VMs that outlive the node process, as QEMU does. */
function agentOver(stateDir: string, driver: FakeDriver, lines: string[] = []) {
  const log: AgentLogger = {
    debug() {}, info() {},
    warn: (fields, msg) => { lines.push(`${msg} ${JSON.stringify(fields)}`); },
    error: (fields, msg) => { lines.push(`${msg} ${JSON.stringify(fields)}`); },
  };
  return new NodeAgent({
    nodeId: 'n1', stateDir, driver, imageCache: new ImageCache(join(stateDir, 'images')),
    capacity: { cores: 8, memoryMiB: 8192, diskGiB: 100 }, log,
  });
}

async function runningInstances(stateDir: string, driver: FakeDriver, n: number): Promise<string[]> {
  const agent = agentOver(stateDir, driver);
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const s = spec();
    await agent.runInstance(s);
    assert.equal((await agent.settled(s.instanceId))?.state, 'running');
    ids.push(s.instanceId);
  }
  return ids;
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'ib-quarantine-'));
  kernel = await imageFile('aki-00000001', 4096);
  rootImage = await imageFile('ami-00000001', 65536);
});

after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('instance records a node cannot trust', () => {
  it('are quarantined and reported; their VMs keep running, over more than one restart', async () => {
    const stateDir = await mkdtemp(join(root, 'node-'));
    const driver = new FakeDriver();
    const [garbled, renamed, wrongState, unreadable, healthy] = await runningInstances(stateDir, driver, 5);
    const dir = join(stateDir, 'instances');
    await writeFile(join(dir, `${garbled}.json`), '{"spec": {"instanceId": "i-');
    const other = JSON.parse(await readFile(join(dir, `${renamed}.json`), 'utf8'));
    other.spec.instanceId = 'i-ffffffffffffffff0';
    await writeFile(join(dir, `${renamed}.json`), JSON.stringify(other));
    const bad = JSON.parse(await readFile(join(dir, `${wrongState}.json`), 'utf8'));
    bad.state = 'exploded';
    await writeFile(join(dir, `${wrongState}.json`), JSON.stringify(bad));
    // A directory where the file should be: reading it fails (EISDIR), as an I/O error would.
    await rm(join(dir, `${unreadable}.json`));
    await mkdir(join(dir, `${unreadable}.json`));

    const lines: string[] = [];
    const restarted = agentOver(stateDir, driver, lines);
    const resources = await restarted.describeResources();
    const damaged = [garbled!, renamed!, wrongState!, unreadable!];
    assert.deepEqual(resources.quarantined?.map((q) => q.instanceId).sort(), [...damaged].sort());
    const reasons = new Map(resources.quarantined!.map((q) => [q.instanceId, q.reason]));
    assert.match(reasons.get(garbled!)!, /unreadable: .*JSON/);
    assert.match(reasons.get(renamed!)!, /names instance "i-ffffffffffffffff0"/);
    assert.match(reasons.get(wrongState!)!, /unknown state "exploded"/);
    assert.match(reasons.get(unreadable!)!, /unreadable: .*EISDIR/);
    for (const q of resources.quarantined!) {
      assert.ok(q.file.startsWith(join(stateDir, 'quarantine')), `${q.file} is in the quarantine`);
      assert.ok(existsSync(q.file));
      assert.ok(!existsSync(join(dir, `${q.instanceId}.json`)), 'moved out of the instance records');
    }
    // Every VM still runs: nothing was taken for a leftover.
    for (const id of [...damaged, healthy!]) assert.equal((await driver.info(id))?.state, 'running', `${id} still runs`);
    assert.deepEqual((await restarted.describeInstances()).map((i) => i.instanceId), [healthy]);
    for (const id of damaged) {
      assert.ok(lines.some((l) => l.includes('instance record quarantined') && l.includes(id)), `the quarantine of ${id} is logged`);
      assert.ok(lines.some((l) => l.includes('keeping a VM whose instance record is quarantined') && l.includes(id)));
    }

    // A later restart still reports them (with their reasons) and still keeps their VMs.
    const again = agentOver(stateDir, driver);
    const later = await again.describeResources();
    assert.deepEqual(later.quarantined?.map((q) => q.instanceId).sort(), [...damaged].sort());
    assert.match(later.quarantined!.find((q) => q.instanceId === wrongState)!.reason, /unknown state "exploded"/);
    for (const id of damaged) assert.equal((await driver.info(id))?.state, 'running');

    // The operator deals with one (removes its quarantined record): it is no longer reported.
    const q = later.quarantined!.find((x) => x.instanceId === garbled)!;
    await rm(q.file, { recursive: true });
    await rm(q.file.replace(/\.json$/, '.reason'));
    const third = await agentOver(stateDir, driver).describeResources();
    assert.equal(third.quarantined?.some((x) => x.instanceId === garbled), false);
  });

  it('the VM of a quarantined record keeps its cores and memory held until it ends', async () => {
    const stateDir = await mkdtemp(join(root, 'node-'));
    const driver = new FakeDriver();
    const [damaged] = await runningInstances(stateDir, driver, 1);
    await writeFile(join(stateDir, 'instances', `${damaged}.json`), 'not json');
    const restarted = agentOver(stateDir, driver);
    const resources = await restarted.describeResources();
    assert.deepEqual(resources.quarantined?.map((q) => q.instanceId), [damaged]);
    // Capacity 8 cores / 8192 MiB; the kept VM is a t.small (1 core, 512 MiB).
    assert.equal(resources.free.cores, 7);
    assert.equal(resources.free.memoryMiB, 8192 - 512);
    // The operator ends that VM: its room comes back at the next look.
    await driver.stop(damaged!, { force: true });
    const after = await restarted.describeResources();
    assert.equal(after.free.cores, 8);
    assert.equal(after.free.memoryMiB, 8192);
  });

  it('a VM that no record names at all is still destroyed as a leftover', async () => {
    const stateDir = await mkdtemp(join(root, 'node-'));
    const driver = new FakeDriver();
    const [kept, leftover] = await runningInstances(stateDir, driver, 2);
    // An interrupted terminate removed the record but not yet the VM.
    await rm(join(stateDir, 'instances', `${leftover}.json`));
    const restarted = agentOver(stateDir, driver);
    const resources = await restarted.describeResources();
    assert.equal(resources.quarantined, undefined);
    assert.equal((await driver.info(kept!))?.state, 'running');
    const gone = await driver.info(leftover!);
    assert.ok(!gone || gone.state === 'destroyed', `the leftover VM is gone (${gone?.state})`);
  });

  it('the store alone: load reports what it set aside, and keeps what it can read', async () => {
    const stateDir = await mkdtemp(join(root, 'store-'));
    const store = new NodeStateStore(stateDir);
    await store.load();
    const good = spec();
    await store.save({ spec: good, state: 'running', since: new Date().toISOString() });
    await writeFile(join(store.dir, 'i-00000000000000bad.json'), 'null');
    const { records, quarantined } = await store.load();
    assert.deepEqual(records.map((r) => r.spec.instanceId), [good.instanceId]);
    assert.deepEqual(quarantined.map((q) => [q.instanceId, q.reason]), [['i-00000000000000bad', 'not an instance record']]);
    assert.deepEqual((await readdir(store.quarantineDir)).sort().map((n) => n.replace(/\.\d{8}T\d{9}Z/, '')), ['i-00000000000000bad.json', 'i-00000000000000bad.reason']);
  });
});
