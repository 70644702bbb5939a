// ClusterApi and NodeApi over loopback HTTP, signed with shared secrets: in-memory fakes behind the
// servers for the transport itself (errors keep their codes, refusals are logged), node joining
// with good/expired/reused/wrong tokens and revocation, the image relay URLs, the cloud's admin
// routes for clusters and nodes, and one launch through the real cluster controller and node agent.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { Hono } from 'hono';
import pino from 'pino';
import type { AddressInfo } from 'node:net';
import type { ImageRef, InstanceSpec, NodeApi, NodeInstanceStatus, NodeResources } from '../../src/node/node-api.ts';
import type { ClusterApi, ClusterInstanceStatus, ClusterNodeStatus, Placement } from '../../src/cluster/cluster-api.ts';
import type { NodeRegistration } from '../../src/cluster/node-registry.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';
import { newPeerSecret } from '../../src/auth/peer-auth.ts';
import { createNodeHttpApp } from '../../src/node/node-http-server.ts';
import { NodeHttpClient } from '../../src/node/node-http-client.ts';
import { createClusterHttpServer } from '../../src/cluster/cluster-http-server.ts';
import { ClusterHttpClient } from '../../src/cluster/cluster-http-client.ts';
import { JoinedNodes } from '../../src/cluster/joined-nodes.ts';
import { mintJoinToken } from '../../src/cluster/join-tokens.ts';
import { joinCluster, loadMembership, saveMembership, sayHello, MEMBERSHIP_FILE } from '../../src/node/cluster-membership.ts';
import { ClusterController } from '../../src/cluster/cluster-controller.ts';
import { expandPowerCommand } from '../../src/cluster/power.ts';
import { NodeAgent } from '../../src/node/node-agent.ts';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { ImageCache } from '../../src/node/image-cache.ts';
import { openStore, type Store } from '../../src/store/store.ts';
import { createKeyResolver } from '../../src/auth/key-cache.ts';
import { ensureAdminAccount, type AdminCredentials } from '../../src/cloud/bootstrap.ts';
import { ComputeDirectory } from '../../src/cloud/compute-directory.ts';
import { ClusterConnections } from '../../src/cloud/clusters.ts';
import { createClusterAdminApi } from '../../src/cloud/admin-clusters.ts';
import { adminNotFound } from '../../src/cloud/admin-api.ts';
import { signAdminRequest } from '../../src/cli/admin-client.ts';

// ---- helpers ----------------------------------------------------------------------------------

interface LogLine { level: string; fields: Record<string, unknown>; msg: string }

function recordingLog() {
  const lines: LogLine[] = [];
  const at = (level: string) => (fields: object, msg = '') => { lines.push({ level, fields: fields as Record<string, unknown>, msg }); };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

const servers: Array<{ close(): Promise<void> }> = [];
let root = '';

async function serveApp(app: Hono): Promise<string> {
  const server = await new Promise<ServerType>((ok) => { const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => ok(s)); });
  servers.push({ close: () => new Promise((done) => { server.close(() => done()); (server as http.Server).closeAllConnections(); }) });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function serveListener(listener: http.RequestListener): Promise<string> {
  const server = http.createServer(listener);
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  servers.push({ close: () => new Promise((done) => { server.close(() => done()); server.closeAllConnections(); }) });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function rejectsWithCode(p: Promise<unknown>, code: string): Promise<Ec2Error> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof Ec2Error, `expected an Ec2Error, got ${err}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

const status = (instanceId: string, state: NodeInstanceStatus['state']): NodeInstanceStatus => ({ instanceId, state, since: new Date(0).toISOString() });

/** A node that keeps instances in a map and answers like a node agent. */
class FakeNode implements NodeApi {
  readonly instances = new Map<string, NodeInstanceStatus>();
  hang = false;
  async describeResources(): Promise<NodeResources> {
    if (this.hang) await new Promise(() => undefined);
    return {
      nodeId: 'nd-fake', hypervisor: 'fake', accelerator: 'none',
      capacity: { cores: 4, memoryMiB: 4096, diskGiB: 40 }, free: { cores: 4 - this.instances.size, memoryMiB: 4096, diskGiB: 40 },
      instanceCount: this.instances.size,
    };
  }
  async describeInstances() { return [...this.instances.values()]; }
  async runInstance(spec: InstanceSpec) {
    const s = status(spec.instanceId, 'pending');
    this.instances.set(spec.instanceId, s);
    return s;
  }
  async startInstance(id: string) { return this.set(id, 'running'); }
  async stopInstance(id: string, force?: boolean) { return this.set(id, force ? 'stopped' : 'stopping'); }
  async rebootInstance(id: string) { this.get(id); }
  async terminateInstance(id: string) { this.instances.delete(id); }
  async consoleOutput(id: string) { this.get(id); return `console of ${id}\n`; }
  private get(id: string): NodeInstanceStatus {
    const s = this.instances.get(id);
    if (!s) throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${id}' does not exist`);
    return s;
  }
  private set(id: string, state: NodeInstanceStatus['state']) {
    this.get(id);
    const s = status(id, state);
    this.instances.set(id, s);
    return s;
  }
}

/** A cluster that places one instance per call at most, and records nodes it is given. */
class FakeCluster implements ClusterApi {
  readonly zone: string;
  readonly cidr = '172.30.0.0/24';
  readonly nodes = new Map<string, NodeRegistration>();
  readonly runs: InstanceSpec[][] = [];
  constructor(zone: string) { this.zone = zone; }
  addNode(id: string, reg: NodeRegistration) { this.nodes.set(id, reg); return true; }
  removeNode(id: string) { return this.nodes.delete(id); }
  async runInstances(specs: InstanceSpec[]): Promise<Placement[]> {
    if (specs.length > 1) {
      throw new Ec2Error('InsufficientInstanceCapacity', `We currently do not have sufficient capacity for ${specs.length} instances in ${this.zone}: node nd-1: not enough cores.`);
    }
    this.runs.push(specs);
    return specs.map((s) => ({ instanceId: s.instanceId, nodeId: 'nd-1' }));
  }
  async startInstance() {}
  async stopInstance(id: string) { if (id === 'i-00000000000000bad') throw new Ec2Error('IncorrectInstanceState', `The instance '${id}' is not in a state from which it can be stopped.`); }
  async rebootInstance() {}
  async terminateInstance() {}
  async consoleOutput(id: string) { return `console of ${id}\nline 2\n`; }
  async describeInstances(): Promise<ClusterInstanceStatus[]> { return [{ ...status('i-0000000000000000a', 'running'), nodeId: 'nd-1' }]; }
  async describeNodes(): Promise<ClusterNodeStatus[]> {
    return [...this.nodes.entries()].map(([id, n]) => ({
      nodeId: id, name: n.name, address: n.address, state: 'up', hypervisor: 'fake', accelerator: 'none',
      capacity: { cores: 4, memoryMiB: 4096, diskGiB: 40 }, free: { cores: 4, memoryMiB: 4096, diskGiB: 40 }, instanceCount: 0,
    }));
  }
}

let imageCounter = 0;
async function imageFile(prefix: string, bytes: number): Promise<ImageRef> {
  const data = randomBytes(bytes);
  const id = `${prefix}-${(++imageCounter).toString(16).padStart(8, '0')}`;
  const path = join(root, `${id}.img`);
  await writeFile(path, data);
  return { id, url: path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes, format: 'raw' };
}

let instanceCounter = 0;
function spec(zone: string, kernel: ImageRef, image: ImageRef): InstanceSpec {
  const n = ++instanceCounter;
  return {
    instanceId: `i-${n.toString(16).padStart(17, '0')}`, reservationId: 'r-0000000000000000a', accountId: '111122223333',
    imageId: image.id, kernel, root: image, kernelCmdline: 'console=ttyS0',
    vmType: { name: 't.small', cores: 1, memoryMiB: 256, diskGiB: 1 },
    zone, region: 'test-1', subnetCidr: '172.30.0.0/24', subnetId: 'subnet-0000000000000000a', vpcId: 'vpc-0000000000000000a',
    privateIp: `172.30.0.${10 + n}`, privateDnsName: `ip-172-30-0-${10 + n}.test-1.compute.internal`, mac: `d2:0d:00:00:01:${(n % 256).toString(16).padStart(2, '0')}`,
    publicKeys: [], securityGroups: [{ id: 'sg-0000000000000000a', name: 'default' }], launchIndex: 0, launchTime: new Date().toISOString(),
  };
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'ib-role-transports-'));
});

after(async () => {
  for (const s of servers.splice(0)) await s.close();
  if (root) await rm(root, { recursive: true, force: true });
});

// ---- NodeApi over HTTP --------------------------------------------------------------------------

describe('NodeApi over HTTP', () => {
  const node = new FakeNode();
  const secret = newPeerSecret();
  const log = recordingLog();
  let url = '';
  let client: NodeHttpClient;

  before(async () => {
    url = await serveApp(createNodeHttpApp({ agent: node, identity: () => ({ nodeId: 'nd-1', secret }), log }));
    client = new NodeHttpClient({ nodeId: 'nd-1', url, secret: () => secret, timeoutMs: 2000 });
  });

  it('carries every method and its answer', async () => {
    const kernel = { id: 'aki-00000001', url: '/x', sha256: '0'.repeat(64), sizeBytes: 1, format: 'raw' as const };
    const s = spec('test-1a', kernel, { ...kernel, id: 'ami-00000001' });
    assert.deepEqual(await client.runInstance(s), status(s.instanceId, 'pending'));
    assert.equal((await client.describeResources()).instanceCount, 1);
    assert.deepEqual((await client.describeInstances()).map((i) => i.instanceId), [s.instanceId]);
    assert.equal((await client.stopInstance(s.instanceId, true)).state, 'stopped');
    assert.equal((await client.startInstance(s.instanceId)).state, 'running');
    assert.equal(await client.rebootInstance(s.instanceId), undefined);
    assert.equal(await client.consoleOutput(s.instanceId), `console of ${s.instanceId}\n`);
    await client.terminateInstance(s.instanceId);
    assert.deepEqual(await client.describeInstances(), []);
  });

  it('rethrows the node\'s error with its code', async () => {
    const err = await rejectsWithCode(client.stopInstance('i-0000000000000dead'), 'InvalidInstanceID.NotFound');
    assert.match(err.message, /i-0000000000000dead/);
    assert.equal(err.status, 400);
  });

  it('refuses a caller with the wrong secret or key id and logs the peer', async () => {
    const wrong = new NodeHttpClient({ nodeId: 'nd-1', url, secret: () => newPeerSecret() });
    await rejectsWithCode(wrong.describeResources(), 'AuthFailure');
    const other = new NodeHttpClient({ nodeId: 'nd-2', url, secret: () => secret });
    await rejectsWithCode(other.describeInstances(), 'AuthFailure');
    const refusals = log.lines.filter((l) => l.level === 'warn');
    assert.deepEqual(refusals.map((l) => [l.fields.peer, l.fields.reason]), [['nd-1', 'bad-signature'], ['nd-2', 'unknown-key']]);
    assert.match(refusals[0]!.msg, /refused cluster request/);
  });

  it('refuses an unsigned request', async () => {
    const res = await fetch(`${url}/v1/describeResources`, { method: 'POST', body: '{}' });
    assert.equal(res.status, 401);
    assert.equal((await res.json()).code, 'AuthFailure');
  });

  it('fails with Unavailable when the node does not answer in time or at all', async () => {
    node.hang = true;
    try {
      const impatient = new NodeHttpClient({ nodeId: 'nd-1', url, secret: () => secret, timeoutMs: 150 });
      const err = await rejectsWithCode(impatient.describeResources(), 'Unavailable');
      assert.match(err.message, /did not answer describeResources/);
    } finally {
      node.hang = false;
    }
    const closed = new NodeHttpClient({ nodeId: 'nd-1', url: 'http://127.0.0.1:9', secret: () => secret });
    await rejectsWithCode(closed.describeResources(), 'Unavailable');
  });

  it('refuses to call without a secret (a revoked node)', async () => {
    const revoked = new NodeHttpClient({ nodeId: 'nd-1', url, secret: () => undefined });
    await rejectsWithCode(revoked.describeResources(), 'AuthFailure');
  });
});

// ---- ClusterApi over HTTP, joining, revoking ----------------------------------------------------

describe('ClusterApi over HTTP', () => {
  const zone = 'test-1a';
  const cloudSecret = newPeerSecret();
  const cluster = new FakeCluster(zone);
  const log = recordingLog();
  let url = '';
  let client: ClusterHttpClient;
  let joined: JoinedNodes;

  before(async () => {
    joined = await JoinedNodes.open(join(root, 'cluster-a', 'nodes.json'));
    // The relay URL is only known once listening; the server reads it per launch.
    const options = { cluster, cloudSecret, joined, log, nodeFacingUrl: undefined as string | undefined };
    const server = createClusterHttpServer(options);
    url = await serveListener(server.listener);
    client = new ClusterHttpClient({ zone, url, secret: cloudSecret, timeoutMs: 5000 });
  });

  it('carries every method and its answer', async () => {
    const kernel = await imageFile('aki', 128);
    const image = await imageFile('ami', 256);
    const s = spec(zone, kernel, image);
    assert.deepEqual(await client.runInstances([s]), [{ instanceId: s.instanceId, nodeId: 'nd-1' }]);
    // No node-facing URL: the images are relayed at locations relative to the cluster's URL.
    const relayed = cluster.runs.at(-1)![0]!;
    assert.deepEqual({ ...relayed, kernel: { ...relayed.kernel!, url: kernel.url }, root: { ...relayed.root, url: image.url } }, s);
    assert.match(relayed.root.url, new RegExp(`^images/${image.id}\\?src=`));
    assert.match(relayed.kernel!.url, new RegExp(`^images/${kernel.id}\\?src=`));
    const res = await fetch(new URL(relayed.root.url, `${url}/`));
    assert.equal(res.status, 200);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), await readFile(image.url));
    assert.equal(await client.consoleOutput('i-0000000000000000a'), 'console of i-0000000000000000a\nline 2\n');
    assert.deepEqual((await client.describeInstances()).map((i) => [i.instanceId, i.state, i.nodeId]), [['i-0000000000000000a', 'running', 'nd-1']]);
    await client.startInstance('i-0000000000000000a');
    await client.stopInstance('i-0000000000000000a', true);
    await client.rebootInstance('i-0000000000000000a');
    await client.terminateInstance('i-0000000000000000a');
    assert.deepEqual(await client.describeNodes(), []);
  });

  it('lets InsufficientInstanceCapacity and other EC2 errors cross intact', async () => {
    const kernel = await imageFile('aki', 64);
    const image = await imageFile('ami', 64);
    const err = await rejectsWithCode(client.runInstances([spec(zone, kernel, image), spec(zone, kernel, image)]), 'InsufficientInstanceCapacity');
    assert.equal(err.status, 500);
    assert.match(err.message, /not enough cores/);
    await rejectsWithCode(client.stopInstance('i-00000000000000bad'), 'IncorrectInstanceState');
    await rejectsWithCode(client.runInstances([]), 'MissingParameter');
  });

  it('refuses the wrong secret, a key id of another zone, and logs the peer', async () => {
    const before = log.lines.length;
    await rejectsWithCode(new ClusterHttpClient({ zone, url, secret: newPeerSecret() }).describeNodes(), 'AuthFailure');
    await rejectsWithCode(new ClusterHttpClient({ zone: 'test-1b', url, secret: cloudSecret }).describeNodes(), 'AuthFailure');
    const refusals = log.lines.slice(before).filter((l) => l.level === 'warn');
    assert.deepEqual(refusals.map((l) => [l.fields.peer, l.fields.reason]), [[zone, 'bad-signature'], ['test-1b', 'unknown-key']]);
  });

  describe('joining and revoking nodes', () => {
    const nodeSecretOf = () => joined.secretOf(nodeId);
    let nodeId = '';
    const nodeUrl = 'http://127.0.0.1:1/';
    const nodeDir = () => join(root, 'node-a');

    it('admits a node with a good token, persists it privately and hands it to the cluster', async () => {
      const { token } = mintJoinToken(cloudSecret, zone, 600);
      const m = await joinCluster({ clusterUrl: url, token, url: nodeUrl, name: 'host-a', mac: '52:54:00:AB:CD:01' });
      nodeId = m.nodeId;
      assert.match(m.nodeId, /^nd-[0-9a-f]{12}$/);
      assert.equal(m.zone, zone);
      assert.equal(m.cidr, cluster.cidr);
      assert.equal(m.secret, nodeSecretOf());
      assert.equal(m.name, 'host-a');
      // The cluster got the node, with an HTTP client that signs with its secret.
      await waitFor(() => cluster.nodes.has(m.nodeId));
      const reg = cluster.nodes.get(m.nodeId)!;
      assert.equal(reg.address, 'http://127.0.0.1:1');
      assert.equal(reg.mac, '52:54:00:ab:cd:01', 'the MAC the node told, canonical');
      assert.ok(reg.client instanceof NodeHttpClient);
      // Persisted 0600, and found again by a restarted cluster.
      assert.equal((await stat(joined.file)).mode & 0o777, 0o600);
      const reopened = await JoinedNodes.open(joined.file);
      assert.equal(reopened.secretOf(m.nodeId), m.secret);
      assert.equal(reopened.get(m.nodeId)!.mac, '52:54:00:ab:cd:01');
      // The node keeps its membership 0600 too.
      await saveMembership(nodeDir(), m);
      assert.equal((await stat(join(nodeDir(), MEMBERSHIP_FILE))).mode & 0o777, 0o600);
      assert.deepEqual(await loadMembership(nodeDir()), m);
    });

    it('refuses a token used before, an expired one, one of another cluster or zone, and garbage — and logs each', async () => {
      const { token } = mintJoinToken(cloudSecret, zone, 600);
      await joinCluster({ clusterUrl: url, token, url: 'http://127.0.0.1:2' });
      const count = joined.list().length;
      const before = log.lines.length;
      const reused = await rejectsWithCode(joinCluster({ clusterUrl: url, token, url: 'http://127.0.0.1:3' }), 'AuthFailure');
      assert.match(reused.message, /already used/);
      const expired = mintJoinToken(cloudSecret, zone, 1, Date.now() - 10_000).token;
      assert.match((await rejectsWithCode(joinCluster({ clusterUrl: url, token: expired, url: 'http://127.0.0.1:3' }), 'AuthFailure')).message, /expired/);
      const foreign = mintJoinToken(newPeerSecret(), zone, 600).token;
      assert.match((await rejectsWithCode(joinCluster({ clusterUrl: url, token: foreign, url: 'http://127.0.0.1:3' }), 'AuthFailure')).message, /not made for this cluster/);
      const otherZone = mintJoinToken(cloudSecret, 'test-1b', 600).token;
      assert.match((await rejectsWithCode(joinCluster({ clusterUrl: url, token: otherZone, url: 'http://127.0.0.1:3' }), 'AuthFailure')).message, /zone test-1b/);
      await rejectsWithCode(joinCluster({ clusterUrl: url, token: 'not-a-token', url: 'http://127.0.0.1:3' }), 'AuthFailure');
      // A tampered claim (longer expiry) breaks the signature.
      const [p, claims, sig] = mintJoinToken(cloudSecret, zone, 1, Date.now() - 10_000).token.split('.');
      const stretched = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(claims!, 'base64url').toString()), e: Date.now() + 60_000 })).toString('base64url');
      await rejectsWithCode(joinCluster({ clusterUrl: url, token: `${p}.${stretched}.${sig}`, url: 'http://127.0.0.1:3' }), 'AuthFailure');
      await rejectsWithCode(joinCluster({ clusterUrl: url, token: mintJoinToken(cloudSecret, zone).token, url: 'ftp://x' }), 'InvalidParameterValue');
      const badMac = await rejectsWithCode(joinCluster({ clusterUrl: url, token: mintJoinToken(cloudSecret, zone).token, url: 'http://127.0.0.1:3', mac: '52:54:00:ab:cd' }), 'InvalidParameterValue');
      assert.match(badMac.message, /six hex pairs/);
      assert.equal(joined.list().length, count, 'no refused join added a node');
      const refusals = log.lines.slice(before).filter((l) => l.level === 'warn' && l.msg.startsWith('refused node join'));
      assert.deepEqual(refusals.map((l) => l.fields.reason), ['reused', 'expired', 'bad-signature', 'wrong-zone', 'malformed', 'bad-signature']);
    });

    it('lets a member say hello with its secret to update its address and MAC', async () => {
      const m = (await loadMembership(nodeDir()))!;
      await sayHello(m, 'http://127.0.0.1:4');
      assert.equal(joined.get(m.nodeId)!.url, 'http://127.0.0.1:4');
      assert.equal(cluster.nodes.get(m.nodeId)!.address, 'http://127.0.0.1:4');
      assert.equal(cluster.nodes.get(m.nodeId)!.mac, '52:54:00:ab:cd:01', 'a hello without a MAC keeps the last one');
      await sayHello(m, 'http://127.0.0.1:4', '52-54-00-ab-cd-02');
      assert.equal(joined.get(m.nodeId)!.mac, '52:54:00:ab:cd:02');
      assert.equal(cluster.nodes.get(m.nodeId)!.mac, '52:54:00:ab:cd:02');
      assert.equal((await JoinedNodes.open(joined.file)).get(m.nodeId)!.mac, '52:54:00:ab:cd:02');
      await rejectsWithCode(sayHello(m, 'http://127.0.0.1:4', 'not-a-mac'), 'InvalidParameterValue');
      await rejectsWithCode(sayHello({ ...m, secret: newPeerSecret() }, 'http://127.0.0.1:5'), 'AuthFailure');
    });

    it('lists joined nodes to the cloud without their secrets', async () => {
      const nodes = await client.listJoinedNodes();
      assert.ok(nodes.some((n) => n.id === nodeId && n.name === 'host-a' && n.mac === '52:54:00:ab:cd:02'));
      assert.ok(nodes.every((n) => !('secret' in n)));
      // A node that told no MAC, or loopback's all-zero one, has none.
      const loopback = await joinCluster({ clusterUrl: url, token: mintJoinToken(cloudSecret, zone).token, url: 'http://127.0.0.1:6', mac: '00:00:00:00:00:00' });
      const listed = (await client.listJoinedNodes()).find((n) => n.id === loopback.nodeId)!;
      assert.equal('mac' in listed, false);
    });

    it('revokes a node: the cluster forgets its secret and the node, and its calls fail', async () => {
      const m = (await loadMembership(nodeDir()))!;
      const reg = cluster.nodes.get(nodeId)!;
      await client.revokeNode(nodeId);
      assert.equal(joined.secretOf(nodeId), undefined);
      assert.equal(cluster.nodes.has(nodeId), false);
      assert.equal((await JoinedNodes.open(joined.file)).get(nodeId), undefined);
      await rejectsWithCode(sayHello(m, 'http://127.0.0.1:4'), 'AuthFailure');
      await rejectsWithCode(reg.client.describeResources(), 'AuthFailure');
      await rejectsWithCode(client.revokeNode(nodeId), 'InvalidNodeID.NotFound');
      assert.ok(log.lines.some((l) => l.level === 'warn' && l.fields.peer === nodeId && l.fields.reason === 'unknown-key'));
    });
  });
});

async function waitFor(check: () => boolean | Promise<boolean>, what = 'condition'): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`timed out waiting for ${what}`);
}

// ---- image URLs for nodes -----------------------------------------------------------------------

describe('image relay URLs', () => {
  it('rewrites a launch\'s images to signed URLs on the cluster and serves them; refuses altered URLs', async () => {
    const zone = 'test-1c';
    const cloudSecret = newPeerSecret();
    const cluster = new FakeCluster(zone);
    const joined = await JoinedNodes.open(join(root, 'cluster-c', 'nodes.json'));
    const options: Parameters<typeof createClusterHttpServer>[0] = { cluster, cloudSecret, joined, log: recordingLog() };
    // Listen first, then tell the server its own URL (the relay URL nodes will use).
    const holder: { listener?: http.RequestListener } = {};
    const url = await serveListener((req, res) => holder.listener!(req, res));
    holder.listener = createClusterHttpServer({ ...options, nodeFacingUrl: url, imageCacheDir: join(root, 'relay-c') }).listener;
    const client = new ClusterHttpClient({ zone, url, secret: cloudSecret });

    const kernel = await imageFile('aki', 1000);
    const image = await imageFile('ami', 3000);
    await client.runInstances([spec(zone, kernel, image)]);
    const relayed = cluster.runs.at(-1)![0]!;
    assert.ok(relayed.root.url.startsWith(`${url}/images/${image.id}?`), relayed.root.url);
    assert.equal(relayed.root.sha256, image.sha256);
    const res = await fetch(relayed.root.url);
    assert.equal(res.status, 200);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), await readFile(image.url));
    const kernelRes = await fetch(relayed.kernel!.url);
    assert.equal(createHash('sha256').update(Buffer.from(await kernelRes.arrayBuffer())).digest('hex'), kernel.sha256);

    const altered = new URL(relayed.root.url);
    altered.searchParams.set('src', '/etc/passwd');
    assert.equal((await fetch(altered)).status, 403);
    const unsigned = new URL(relayed.root.url);
    unsigned.searchParams.delete('sig');
    assert.equal((await fetch(unsigned)).status, 403);
  });
});

// ---- the cloud's admin routes -------------------------------------------------------------------

describe('cluster admin API', () => {
  const REGION = 'test-1';
  const ENDPOINT = 'http://127.0.0.1:8773';
  let store: Store;
  let admin: AdminCredentials;
  let app: Hono;
  const directory = new ComputeDirectory();
  const cluster = new FakeCluster('test-1d');
  let clusterUrl = '';
  let joined: JoinedNodes;

  async function call(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
    const req = await signAdminRequest({ endpoint: ENDPOINT, accessKeyId: admin.accessKeyId, secretAccessKey: admin.secretAccessKey, region: REGION },
      method, path, { body });
    const res = await app.request(req.url, { method, headers: req.headers, body: req.body });
    return { status: res.status, json: await res.json() };
  }

  before(async () => {
    store = await openStore({ url: ':memory:' });
    admin = await ensureAdminAccount(store, await mkdtemp(join(root, 'cloud-')), { region: REGION, endpoint: ENDPOINT });
    app = new Hono();
    app.route('/admin', createClusterAdminApi({ store, keys: createKeyResolver(store), log: pino({ level: 'silent' }), region: REGION, connections: new ClusterConnections(directory) }));
    app.all('/admin/*', adminNotFound);
    joined = await JoinedNodes.open(join(root, 'cluster-d', 'nodes.json'));
    const placeholder: { secret?: string; listener?: http.RequestListener } = {};
    clusterUrl = await serveListener((req, res) => placeholder.listener!(req, res));
    // The operator adds the cluster first; the cluster starts with the secret the cloud printed.
    const added = await call('POST', '/clusters', { zone: 'test-1d', url: clusterUrl, cidr: '172.30.0.0/24' });
    assert.equal(added.status, 201, JSON.stringify(added.json));
    placeholder.listener = createClusterHttpServer({ cluster, cloudSecret: added.json.secret, joined, log: recordingLog() }).listener;
  });

  after(async () => { await store.close(); });

  it('adds clusters (zones may share a range), registers them in the directory, lists them without secrets', async () => {
    const second = await call('POST', '/clusters', { zone: 'test-1e', url: 'http://127.0.0.1:9/', cidr: '172.30.0.0/24', secret: 'x'.repeat(40) });
    assert.equal(second.status, 201);
    assert.equal(second.json.secret, 'x'.repeat(40));
    assert.deepEqual(directory.zones(), ['test-1d', 'test-1e']);
    const zones = await store.db.selectFrom('zones').select(['name', 'cidr']).orderBy('name').execute();
    assert.deepEqual(zones, [{ name: 'test-1d', cidr: '172.30.0.0/24' }, { name: 'test-1e', cidr: '172.30.0.0/24' }]);
    const list = await call('GET', '/clusters');
    assert.deepEqual(list.json.clusters.map((c: any) => [c.zone, c.url, c.cidr]), [['test-1d', clusterUrl, '172.30.0.0/24'], ['test-1e', 'http://127.0.0.1:9', '172.30.0.0/24']]);
    assert.ok(!JSON.stringify(list.json).includes('x'.repeat(40)));
    assert.equal((await call('POST', '/clusters', { zone: 'test-1e', url: 'http://127.0.0.1:9', cidr: '172.30.0.0/24' })).json.error.code, 'InvalidCluster.Duplicate');
    assert.equal((await call('POST', '/clusters', { zone: 'test-1f', url: 'http://127.0.0.1:9', cidr: '300.0.0.0/8' })).json.error.code, 'InvalidParameterValue');
    assert.equal((await call('POST', '/clusters', { zone: 'test-1f', url: 'http://127.0.0.1:9', cidr: '10.0.0.0/8', secret: 'short' })).json.error.code, 'InvalidParameterValue');
  });

  it('reaches the cluster through the directory as a signed HTTP client', async () => {
    const c = directory.forZone('test-1d')!;
    assert.equal(await c.consoleOutput('i-0000000000000000a'), 'console of i-0000000000000000a\nline 2\n');
    await rejectsWithCode(directory.forZone('test-1e')!.describeNodes(), 'Unavailable');
  });

  it('mints node tokens the cluster accepts once; lists and revokes nodes through the cluster', async () => {
    const minted = await call('POST', '/clusters/test-1d/node-tokens', { ttlSeconds: 120 });
    assert.equal(minted.status, 201);
    assert.match(minted.json.token, /^ibj1\./);
    const m = await joinCluster({ clusterUrl, token: minted.json.token, url: 'http://127.0.0.1:7', name: 'host-d', mac: '52:54:00:00:0d:01' });
    await rejectsWithCode(joinCluster({ clusterUrl, token: minted.json.token, url: 'http://127.0.0.1:7' }), 'AuthFailure');
    await waitFor(() => cluster.nodes.has(m.nodeId));
    const nodes = await call('GET', '/clusters/test-1d/nodes');
    assert.deepEqual(nodes.json.nodes.map((n: any) => [n.id, n.name, n.url, n.mac, n.state]), [[m.nodeId, 'host-d', 'http://127.0.0.1:7', '52:54:00:00:0d:01', 'up']]);
    assert.equal((await call('DELETE', `/clusters/test-1d/nodes/${m.nodeId}`)).json.deleted, m.nodeId);
    assert.equal(joined.secretOf(m.nodeId), undefined);
    assert.deepEqual((await call('GET', '/clusters/test-1d/nodes')).json.nodes, []);
    assert.equal((await call('DELETE', `/clusters/test-1d/nodes/${m.nodeId}`)).json.error.code, 'InvalidNodeID.NotFound');
    assert.equal((await call('POST', '/clusters/test-1d/node-tokens', { ttlSeconds: 0 })).json.error.code, 'InvalidParameterValue');
    assert.equal((await call('POST', '/clusters/nowhere/node-tokens', {})).status, 404);
  });

  it('removes a cluster and unregisters its zone', async () => {
    assert.equal((await call('DELETE', '/clusters/test-1e')).json.deleted, 'test-1e');
    assert.deepEqual(directory.zones(), ['test-1d']);
    assert.equal((await call('DELETE', '/clusters/test-1e')).status, 404);
  });

  it('refuses callers that are not cloud administrators', async () => {
    const res = await app.request('/admin/v1/clusters', { method: 'GET' });
    assert.equal(res.status, 403);
  });
});

// ---- a launch through the real cluster controller and node agent --------------------------------

describe('real cluster controller and node agent over HTTP', () => {
  it('joins a node agent with its MAC, places an instance on it and runs it from images relayed at locations relative to the cluster', async () => {
    const zone = 'test-1g';
    const cloudSecret = newPeerSecret();
    const log = pino({ level: 'silent' });
    const controller = new ClusterController({ zone, cidr: '172.30.0.0/24', policy: 'greedy', log, pollIntervalMs: 100 });
    servers.push({ close: () => controller.close() });
    const joined = await JoinedNodes.open(join(root, 'cluster-g', 'nodes.json'));
    const holder: { listener?: http.RequestListener } = {};
    const clusterUrl = await serveListener((req, res) => holder.listener!(req, res));
    // No node-facing URL: the node resolves image locations against the cluster URL it joined with.
    holder.listener = createClusterHttpServer({ cluster: controller, cloudSecret, joined, log, imageCacheDir: join(root, 'relay-g') }).listener;

    // The node listens first (the cluster polls it as soon as it joined), then joins.
    const nodeDir = join(root, 'node-g');
    const identity: { current?: { nodeId: string; secret: string } } = {};
    let agent: NodeAgent | undefined;
    const proxy = new Proxy({} as NodeApi, { get: (_t, name) => (...args: unknown[]) => (agent as any)[name](...args) });
    const nodeUrl = await serveApp(createNodeHttpApp({ agent: proxy, identity: () => identity.current, log }));
    const m = await joinCluster({ clusterUrl, token: mintJoinToken(cloudSecret, zone).token, url: nodeUrl, mac: '52:54:00:00:0a:01' });
    const imageCache = new ImageCache(join(nodeDir, 'images'), { baseUrl: m.clusterUrl });
    agent = new NodeAgent({ nodeId: m.nodeId, stateDir: nodeDir, driver: new FakeDriver(), imageCache, capacity: { cores: 2, memoryMiB: 2048, diskGiB: 20 } });
    await agent.recover();
    identity.current = { nodeId: m.nodeId, secret: m.secret };

    const cloud = new ClusterHttpClient({ zone, url: clusterUrl, secret: cloudSecret });
    await waitFor(async () => (await cloud.describeNodes()).some((n) => n.nodeId === m.nodeId && n.state === 'up'), 'the node to be up');
    const kernel = await imageFile('aki', 2048);
    const image = await imageFile('ami', 8192);
    const s = spec(zone, kernel, image);
    assert.deepEqual(await cloud.runInstances([s]), [{ instanceId: s.instanceId, nodeId: m.nodeId }]);
    await waitFor(async () => (await cloud.describeInstances()).some((i) => i.instanceId === s.instanceId && i.state === 'running'), 'the instance to run');
    // The node fetched both images from the cluster's relay, at the cluster URL it joined with.
    const cached = await imageCache.list();
    assert.deepEqual(cached.map((i) => i.id).sort(), [kernel.id, image.id].sort());
    assert.ok(cached.every((i) => i.url.startsWith(`${clusterUrl}/images/`)), JSON.stringify(cached.map((i) => i.url)));
    // The registry has the MAC the node told, and the power-save wake command gets it.
    const view = controller.registry.views().find((v) => v.id === m.nodeId)!;
    assert.equal(expandPowerCommand('wakeonlan {mac}', view), "wakeonlan '52:54:00:00:0a:01'");
    // Three more do not fit on two cores: the scheduler's refusal reaches the cloud with its code.
    await rejectsWithCode(cloud.runInstances([spec(zone, kernel, image), spec(zone, kernel, image), spec(zone, kernel, image)]), 'InsufficientInstanceCapacity');
    assert.match(await cloud.consoleOutput(s.instanceId), /./);
    await cloud.terminateInstance(s.instanceId);
  });
});
