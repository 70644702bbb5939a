// ClusterController over several in-process node agents (fake driver): placement, all-or-nothing
// capacity, node loss and return, controller restart, idempotent terminate and rollback.
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterController } from '../../src/cluster/cluster-controller.ts';
import { startImageRelay } from '../../src/cluster/image-relay.ts';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { ImageCache } from '../../src/node/image-cache.ts';
import { NodeAgent } from '../../src/node/node-agent.ts';
import type { ImageRef, InstanceSpec, NodeInstanceStatus, VmTypeSpec } from '../../src/node/node-api.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';
import { GatedNode } from '../helpers/gated-node.ts';

let root = '';
let kernel: ImageRef;
let rootImage: ImageRef;
const ZONE = 'test-1a';
const ONE_CORE: VmTypeSpec = { name: 't.small', cores: 1, memoryMiB: 512, diskGiB: 5 };

/** A node as the cluster reaches it: can stop answering, or fail launches. */
class TestNode extends GatedNode {
  unresponsive = false;
  failRuns = false;
  protected gate<T>(call: () => Promise<T>): Promise<T> {
    return this.unresponsive ? new Promise<T>(() => {}) : call();
  }
  override runInstance(spec: InstanceSpec): Promise<NodeInstanceStatus> {
    return this.failRuns ? this.gate(() => Promise.reject(new Error('disk full'))) : super.runInstance(spec);
  }
}

async function imageFile(id: string, bytes: number): Promise<ImageRef> {
  const data = randomBytes(bytes);
  const path = join(root, 'images-src', `${id}.img`);
  await writeFile(path, data);
  return { id, url: path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes, format: 'raw' };
}

let counter = 0;
function specs(count: number, vmType = ONE_CORE): InstanceSpec[] {
  const reservationId = `r-${(++counter).toString(16).padStart(17, '0')}`;
  return Array.from({ length: count }, (_, i) => {
    const n = ++counter;
    return {
      instanceId: `i-${n.toString(16).padStart(17, '0')}`,
      reservationId, accountId: '111122223333', imageId: rootImage.id, kernel, root: rootImage,
      kernelCmdline: 'console=ttyS0', vmType, zone: ZONE, region: 'test-1',
      subnetCidr: '10.9.0.0/16', subnetId: 'subnet-0000000000000000a', vpcId: 'vpc-0000000000000000a',
      privateIp: `10.9.${n >> 8}.${n & 255}`, privateDnsName: `ip-${n}`,
      mac: `d2:0d:00:00:${((n >> 8) & 255).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`,
      publicKeys: [], securityGroups: [{ id: 'sg-0000000000000000a', name: 'default' }],
      launchIndex: i, launchTime: new Date().toISOString(),
    };
  });
}

let clock = 0;
let nodes: Map<string, TestNode>;

async function makeNodes(names: string[], cores = 4): Promise<Map<string, TestNode>> {
  const out = new Map<string, TestNode>();
  for (const name of names) {
    const stateDir = await mkdtemp(join(root, `${name}-`));
    const agent = new NodeAgent({
      nodeId: `node-${name}`, stateDir, driver: new FakeDriver(),
      imageCache: new ImageCache(join(stateDir, 'images')),
      capacity: { cores, memoryMiB: cores * 1024, diskGiB: 100 },
    });
    out.set(`node-${name}`, new TestNode(agent));
  }
  return out;
}

async function makeController(policy = 'round-robin'): Promise<ClusterController> {
  // Time that decides "down" is the injected clock; the call timeouts are real and only need to end
  // the calls to an unresponsive node: generous, so that a busy machine never times out a live one.
  const cluster = new ClusterController({
    zone: ZONE, cidr: '10.9.0.0/16', policy, pollIntervalMs: 0, downAfterMs: 1000, callTimeoutMs: 2000, commandTimeoutMs: 2000,
    now: () => clock,
  });
  for (const [id, node] of nodes) await cluster.addNode(id, { name: id.replace('node-', ''), address: 'local', client: node });
  return cluster;
}

async function settleAll(): Promise<void> {
  for (const node of nodes.values()) for (const s of await node.agent.describeInstances()) await node.agent.settled(s.instanceId);
}

async function onNodes(): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const [id, node] of nodes) out.set(id, (await node.agent.describeInstances()).map((s) => s.instanceId));
  return out;
}

function ids(list: { instanceId: string }[]): string[] {
  return list.map((s) => s.instanceId).sort();
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'ib-cluster-'));
  await mkdir(join(root, 'images-src'));
  kernel = await imageFile('aki-00000001', 1024);
  rootImage = await imageFile('ami-00000001', 8192);
});

after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('ClusterController', () => {
  beforeEach(async () => {
    clock = 1_000_000;
    nodes = await makeNodes(['a', 'b', 'c']);
  });

  it('places a request across nodes and reports its instances by node', async () => {
    const cluster = await makeController('round-robin');
    const request = specs(3);
    const placements = await cluster.runInstances(request);
    assert.equal(new Set(placements.map((p) => p.nodeId)).size, 3, 'round-robin spreads over all three nodes');
    for (const p of placements) assert.deepEqual((await onNodes()).get(p.nodeId), [p.instanceId]);

    await settleAll();
    await cluster.pollOnce();
    const described = await cluster.describeInstances();
    assert.deepEqual(ids(described), ids(request));
    for (const s of described) {
      assert.equal(s.state, 'running');
      assert.equal(s.nodeId, placements.find((p) => p.instanceId === s.instanceId)?.nodeId);
      assert.equal(s.nodeDown, undefined);
    }
    const nodeStatus = await cluster.describeNodes();
    assert.deepEqual(nodeStatus.map((n) => [n.name, n.state, n.free.cores]), [['a', 'up', 3], ['b', 'up', 3], ['c', 'up', 3]]);
    assert.match(nodeStatus[0]!.lastPlacementReason ?? '', /chose it for i-/);
    assert.ok(nodeStatus.every((n) => n.policy === 'round-robin'), 'each node shows the policy that placed on it');
    assert.match(await cluster.consoleOutput(request[0]!.instanceId), /instance-id=/);
    await cluster.close();
  });

  it('places all instances of a request or none of them', async () => {
    const cluster = await makeController('greedy');
    // Tenants read EC2's words without the nodes; the operator sees why in the node list.
    await assert.rejects(cluster.runInstances(specs(13)), (e: Ec2Error) =>
      e.code === 'InsufficientInstanceCapacity' && /^We currently do not have sufficient \S+ capacity in the Availability Zone you requested/.test(e.message)
      && !/node|free|cores/.test(e.message));
    assert.ok((await cluster.describeNodes()).some((n) => /needs 1 cores, 0 free/.test(n.lastPlacementReason ?? '')));
    for (const list of (await onNodes()).values()) assert.deepEqual(list, []);
    const placements = await cluster.runInstances(specs(12));
    assert.equal(placements.length, 12);
    await assert.rejects(cluster.runInstances(specs(1)), (e: Ec2Error) => e.code === 'InsufficientInstanceCapacity');
    await cluster.close();
  });

  it('marks a silent node down, places elsewhere, and reconciles it without duplicates when it returns', async () => {
    const cluster = await makeController('round-robin');
    const first = specs(3);
    const placements = await cluster.runInstances(first);
    await settleAll();
    const lostNode = nodes.get('node-b')!;
    const onB = placements.find((p) => p.nodeId === 'node-b')!.instanceId;
    const onA = placements.find((p) => p.nodeId === 'node-a')!.instanceId;

    lostNode.unresponsive = true;
    await cluster.pollOnce();
    assert.equal((await cluster.describeNodes()).find((n) => n.nodeId === 'node-b')?.state, 'up', 'not down before downAfterMs');
    clock += 1000;
    await cluster.pollOnce();
    const b = (await cluster.describeNodes()).find((n) => n.nodeId === 'node-b')!;
    assert.equal(b.state, 'down');
    const reported = await cluster.describeInstances();
    assert.equal(reported.find((s) => s.instanceId === onB)?.nodeDown, true);
    assert.equal(reported.find((s) => s.instanceId === onA)?.nodeDown, undefined);

    const more = await cluster.runInstances(specs(4));
    assert.ok(more.every((p) => p.nodeId !== 'node-b'), 'no placement on a down node');
    assert.match((await cluster.describeNodes()).find((n) => n.nodeId === 'node-b')?.lastPlacementReason ?? '', /down/);
    await assert.rejects(cluster.stopInstance(onB), (e: Ec2Error) => e.code === 'Unavailable');

    // Terminating an instance of the down node is queued, and done when the node answers again.
    await cluster.terminateInstance(onB);
    assert.equal((await cluster.describeInstances()).find((s) => s.instanceId === onB)?.state, 'shutting-down');

    lostNode.unresponsive = false;
    clock += 1000;
    await cluster.pollOnce();
    assert.equal((await cluster.describeNodes()).find((n) => n.nodeId === 'node-b')?.state, 'up');
    const after = await cluster.describeInstances();
    const all = ids(after);
    assert.equal(new Set(all).size, all.length, 'every instance reported once');
    assert.ok(!all.includes(onB), 'the queued termination was carried out');
    assert.deepEqual((await onNodes()).get('node-b'), []);
    assert.equal(all.length, 2 + 4);
    await cluster.close();
  });

  it('rebuilds its instance map from the nodes after a restart', async () => {
    const cluster = await makeController('round-robin');
    const placements = await cluster.runInstances(specs(5));
    await settleAll();
    await cluster.close();

    const restarted = await makeController('round-robin');
    const described = await restarted.describeInstances();
    assert.deepEqual(ids(described), ids(placements));
    for (const p of placements) assert.equal(restarted.nodeOf(p.instanceId), p.nodeId);
    await restarted.stopInstance(placements[0]!.instanceId);
    await nodes.get(placements[0]!.nodeId)!.agent.settled(placements[0]!.instanceId);
    assert.equal((await nodes.get(placements[0]!.nodeId)!.agent.describeInstances()).find((s) => s.instanceId === placements[0]!.instanceId)?.state, 'stopped');
    await restarted.terminateInstance(placements[1]!.instanceId);
    assert.ok(!(await nodes.get(placements[1]!.nodeId)!.agent.describeInstances()).some((s) => s.instanceId === placements[1]!.instanceId));
    await restarted.close();
  });

  it('terminates idempotently', async () => {
    const cluster = await makeController();
    const [p] = await cluster.runInstances(specs(1));
    await cluster.terminateInstance(p!.instanceId);
    await cluster.terminateInstance(p!.instanceId);
    await cluster.terminateInstance('i-000000000000dead0');
    assert.deepEqual(await cluster.describeInstances(), []);
    for (const list of (await onNodes()).values()) assert.deepEqual(list, []);
    await assert.rejects(cluster.startInstance(p!.instanceId), (e: Ec2Error) => e.code === 'InvalidInstanceID.NotFound');
    await cluster.close();
  });

  it('rolls the whole request back when one node fails its launch', async () => {
    const cluster = await makeController('round-robin');
    nodes.get('node-c')!.failRuns = true;
    await assert.rejects(cluster.runInstances(specs(3)), (e: Ec2Error) => e.code === 'InternalError' && /node c: disk full.*rolled back/.test(e.message));
    for (const list of (await onNodes()).values()) assert.deepEqual(list, []);
    assert.deepEqual(await cluster.describeInstances(), []);

    // The capacity held for the failed request was given back: all 12 cores can be placed.
    nodes.get('node-c')!.failRuns = false;
    await cluster.pollOnce();
    assert.equal((await cluster.runInstances(specs(12))).length, 12);
    await cluster.close();
  });

  it('rolls back a launch behind a node that stopped answering, once it answers again', async () => {
    const cluster = await makeController('round-robin');
    const request = specs(3);
    // Node c takes the launch but its answer never arrives.
    const c = nodes.get('node-c')!;
    const realRun = c.runInstance.bind(c);
    c.runInstance = (spec) => { void realRun(spec); c.unresponsive = true; return new Promise(() => {}); };
    await assert.rejects(cluster.runInstances(request), (e: Ec2Error) => /did not answer runInstance/.test(e.message));
    assert.equal((await onNodes()).get('node-c')!.length, 1, 'the node did start it');

    c.unresponsive = false;
    await cluster.pollOnce();
    for (const list of (await onNodes()).values()) assert.deepEqual(list, []);
    assert.deepEqual(await cluster.describeInstances(), []);
    await cluster.close();
  });
});

describe('image relay', () => {
  it('serves a local image, relays a remote one from a copy fetched once, and 404s unknown ids', async () => {
    const source = rootImage.url;
    const cloud = await startImageRelay({ host: '127.0.0.1', port: 0,
      resolveImage: async (id) => (id === rootImage.id ? { path: source, sha256: rootImage.sha256, size: rootImage.sizeBytes } : undefined) });
    const relayed = await startImageRelay({ host: '127.0.0.1', port: 0, cacheDir: join(root, 'relay-cache'),
      resolveImage: async (id) => (id === rootImage.id ? { url: `${cloud.baseUrl}/images/${id}`, sha256: rootImage.sha256, size: rootImage.sizeBytes } : undefined) });
    try {
      const direct = await fetch(`${cloud.baseUrl}/images/${rootImage.id}`);
      assert.equal(direct.status, 200);
      assert.equal(createHash('sha256').update(Buffer.from(await direct.arrayBuffer())).digest('hex'), rootImage.sha256);
      assert.equal((await fetch(`${cloud.baseUrl}/images/ami-00000bad`)).status, 404);
      assert.equal((await fetch(`${cloud.baseUrl}/images/..%2Fetc%2Fpasswd`)).status, 404);

      // A node's cache fetches through the cluster's relay, which fetched from the cloud once.
      const nodeCache = new ImageCache(join(root, 'node-cache'));
      const ref = relayed.imageRef(rootImage.id, { sha256: rootImage.sha256, sizeBytes: rootImage.sizeBytes, format: 'raw' });
      const path = await nodeCache.ensure({ id: ref.id, url: ref.url, sha256: ref.sha256, size: ref.sizeBytes });
      assert.equal(createHash('sha256').update(await readFile(path)).digest('hex'), rootImage.sha256);
      await cloud.close();
      const again = await fetch(ref.url);
      assert.equal(again.status, 200, 'served from the relay cache with the cloud gone');
      assert.equal(Number(again.headers.get('content-length')), rootImage.sizeBytes);
      await again.arrayBuffer();
    } finally {
      await cloud.close();
      await relayed.close();
    }
  });
});
