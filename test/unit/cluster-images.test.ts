// Image files travelling cloud → cluster over HTTP: the cloud's `GET /cluster-images/<id>` answers
// clusters of its table only (peer-auth signature with the cluster's secret), 404s images that are
// unknown or not available, and a cluster's image relay fetches through it with its own signature.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Hono } from 'hono';
import { serve, type ServerType } from '@hono/node-server';
import { openStore, type Store } from '../../src/store/store.ts';
import { registerImageFiles } from '../../src/cloud/images/images.ts';
import { clusterImageUrl, mountClusterImages } from '../../src/cloud/images/cluster-images.ts';
import { newPeerSecret, signPeerRequest } from '../../src/auth/peer-auth.ts';
import { createClusterHttpServer } from '../../src/cluster/cluster-http-server.ts';
import { ClusterHttpClient } from '../../src/cluster/cluster-http-client.ts';
import { JoinedNodes } from '../../src/cluster/joined-nodes.ts';
import type { ClusterApi, ClusterInstanceStatus, ClusterNodeStatus, Placement } from '../../src/cluster/cluster-api.ts';
import type { InstanceSpec } from '../../src/node/node-api.ts';

const ZONE = 'test-1a';
const SECRET = newPeerSecret();
let root = '';
let store: Store;
let cloudUrl = '';
let imageIds: { imageId: string; kernelId: string };
const files = new Map<string, { path: string; sha256: string; size: number }>();
const refused: string[] = [];
const closers: Array<() => Promise<void>> = [];

async function imageFile(name: string, bytes: number) {
  const data = randomBytes(bytes);
  const path = join(root, name);
  await writeFile(path, data);
  return { path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes };
}

function listen(listener: http.RequestListener): Promise<string> {
  const server = http.createServer(listener);
  closers.push(() => new Promise((done) => { server.close(() => done()); server.closeAllConnections(); }));
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

function signed(path: string, creds = { keyId: ZONE, secret: SECRET }): Record<string, string> {
  return signPeerRequest(creds, { method: 'GET', path, body: '' });
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'ib-cluster-images-'));
  store = await openStore({ url: ':memory:' });
  const kernel = await imageFile('vmlinuz', 5000);
  const rootfs = await imageFile('rootfs.img', 300_000);
  imageIds = await registerImageFiles(store, {
    name: 'tiny', kernel, rootfs: { ...rootfs, format: 'raw' }, kernelCmdline: 'console=ttyS0', public: true, ownerAccountId: '111122223333',
  });
  files.set(imageIds.kernelId, { path: kernel.path, sha256: kernel.sha256, size: kernel.sizeBytes });
  files.set(imageIds.imageId, { path: rootfs.path, sha256: rootfs.sha256, size: rootfs.sizeBytes });
  await store.db.insertInto('clusters').values({ zone: ZONE, url: 'http://127.0.0.1:1', secret: SECRET, created_at: new Date().toISOString() }).execute();
  const app = new Hono();
  mountClusterImages(app, { store, log: { warn: (_f: object, msg: string) => { refused.push(msg); }, error: () => {} } });
  const server = await new Promise<ServerType>((ok) => { const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => ok(s)); });
  closers.push(() => new Promise((done) => { server.close(() => done()); (server as http.Server).closeAllConnections(); }));
  cloudUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  for (const close of closers.reverse()) await close();
  await store?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('the cloud serves image files to its clusters', () => {
  it('streams an available image to a request signed with the cluster secret', async () => {
    const url = clusterImageUrl(cloudUrl, imageIds.imageId);
    const res = await fetch(url, { headers: signed(new URL(url).pathname) });
    assert.equal(res.status, 200);
    const file = files.get(imageIds.imageId)!;
    assert.equal(res.headers.get('content-length'), String(file.size));
    assert.equal(res.headers.get('x-ironbark-sha256'), file.sha256);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), await readFile(file.path));
  });

  it('refuses unsigned, wrongly signed, replayed and unknown-cluster requests with 403, before looking at the image', async () => {
    const path = new URL(clusterImageUrl(cloudUrl, imageIds.imageId)).pathname;
    const before = refused.length;
    assert.equal((await fetch(`${cloudUrl}${path}`)).status, 403);
    assert.equal((await fetch(`${cloudUrl}${path}`, { headers: signed(path, { keyId: ZONE, secret: newPeerSecret() }) })).status, 403);
    assert.equal((await fetch(`${cloudUrl}${path}`, { headers: signed(path, { keyId: 'test-1z', secret: SECRET }) })).status, 403);
    // A signature is for one path: another image's path with it is refused.
    const otherPath = new URL(clusterImageUrl(cloudUrl, imageIds.kernelId)).pathname;
    assert.equal((await fetch(`${cloudUrl}${otherPath}`, { headers: signed(path) })).status, 403);
    const once = signed(path);
    assert.equal((await fetch(`${cloudUrl}${path}`, { headers: once })).status, 200);
    const replay = await fetch(`${cloudUrl}${path}`, { headers: once });
    assert.equal(replay.status, 403);
    assert.match((await replay.json() as { message: string }).message, /replay/);
    // Unknown images are not told apart from known ones without a signature.
    assert.equal((await fetch(`${cloudUrl}/cluster-images/ami-00000000000000000`)).status, 403);
    assert.equal(refused.length - before, 6);
  });

  it('answers 404 for an unknown image and for one that is no longer available', async () => {
    const unknown = '/cluster-images/ami-0123456789abcdef0';
    const res = await fetch(`${cloudUrl}${unknown}`, { headers: signed(unknown) });
    assert.equal(res.status, 404);
    assert.equal((await res.json() as { code: string }).code, 'InvalidAMIID.NotFound');
    const kernel = await imageFile('old-kernel', 100);
    const { kernelId } = await registerImageFiles(store, {
      name: 'retired', kernel, rootfs: { ...(await imageFile('old-root', 100)), format: 'raw' }, kernelCmdline: '', public: true, ownerAccountId: '111122223333',
    });
    await store.db.updateTable('images').set({ state: 'deregistered' }).where('id', '=', kernelId).execute();
    const path = `/cluster-images/${kernelId}`;
    assert.equal((await fetch(`${cloudUrl}${path}`, { headers: signed(path) })).status, 404);
  });
});

/** A cluster that records what it was asked to launch (with the URLs it rewrote for nodes). */
class RecordingCluster implements ClusterApi {
  readonly cidr = '10.9.0.0/16';
  readonly runs: InstanceSpec[][] = [];
  constructor(readonly zone: string) {}
  async runInstances(specs: InstanceSpec[]): Promise<Placement[]> {
    this.runs.push(specs);
    return specs.map((s) => ({ instanceId: s.instanceId, nodeId: 'nd-1' }));
  }
  async startInstance(): Promise<void> {}
  async stopInstance(): Promise<void> {}
  async rebootInstance(): Promise<void> {}
  async terminateInstance(): Promise<void> {}
  async consoleOutput(): Promise<string> { return ''; }
  async describeInstances(): Promise<ClusterInstanceStatus[]> { return []; }
  async describeNodes(): Promise<ClusterNodeStatus[]> { return []; }
  addNode(): void {}
  removeNode(): boolean { return false; }
}

function specWith(kernelId: string, imageId: string, instanceId: string): InstanceSpec {
  const ref = (id: string) => ({ id, url: clusterImageUrl(cloudUrl, id), sha256: files.get(id)!.sha256, sizeBytes: files.get(id)!.size, format: 'raw' as const });
  return {
    instanceId, reservationId: 'r-00000000000000001', accountId: '111122223333', imageId,
    kernel: ref(kernelId), root: ref(imageId), kernelCmdline: 'console=ttyS0',
    vmType: { name: 'm1.small', cores: 1, memoryMiB: 256, diskGiB: 1 }, zone: ZONE, region: 'test-1',
    subnetCidr: '10.9.0.0/16', subnetId: 'subnet-0000000000000000a', vpcId: 'vpc-0000000000000000a',
    privateIp: '10.9.0.5', privateDnsName: 'ip-10-9-0-5', mac: 'd0:0d:00:00:00:05',
    publicKeys: [], securityGroups: [], launchIndex: 0, launchTime: new Date().toISOString(),
  } as InstanceSpec;
}

async function clusterWith(secret: string, dir: string) {
  const cluster = new RecordingCluster(ZONE);
  const joined = await JoinedNodes.open(join(root, dir, 'nodes.json'));
  const holder: { listener?: http.RequestListener } = {};
  const url = await listen((req, res) => holder.listener!(req, res));
  holder.listener = createClusterHttpServer({
    cluster, cloudSecret: secret, joined, nodeFacingUrl: url, imageCacheDir: join(root, dir, 'images'),
    log: { info() {}, warn() {}, error() {} },
  }).listener;
  return { cluster, client: new ClusterHttpClient({ zone: ZONE, url, secret }) };
}

describe("a cluster's image relay fetches from the cloud with its signature", () => {
  it('serves nodes the bytes it fetched from the cloud, checksum-verified', async () => {
    const { cluster, client } = await clusterWith(SECRET, 'cluster-ok');
    await client.runInstances([specWith(imageIds.kernelId, imageIds.imageId, 'i-00000000000000001')]);
    const relayed = cluster.runs.at(-1)![0]!;
    assert.notEqual(relayed.root.url, clusterImageUrl(cloudUrl, imageIds.imageId), 'nodes get the relay URL, not the cloud one');
    for (const ref of [relayed.root, relayed.kernel!]) {
      const res = await fetch(ref.url);
      assert.equal(res.status, 200, ref.url);
      assert.equal(createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex'), ref.sha256);
    }
    // Served again from the relay's cache.
    assert.equal((await fetch(relayed.root.url)).status, 200);
  });

  it('a cluster whose secret the cloud does not know gets nothing', async () => {
    // The cloud's RPC to this cluster works (same secret on both ends of that link), but its
    // fetch from the cloud is refused: the clusters table holds another secret for the zone.
    const { cluster, client } = await clusterWith(newPeerSecret(), 'cluster-stranger');
    await client.runInstances([specWith(imageIds.kernelId, imageIds.imageId, 'i-00000000000000002')]);
    const res = await fetch(cluster.runs.at(-1)![0]!.root.url);
    assert.equal(res.status, 502);
    assert.match(await res.text(), /HTTP 403/);
  });
});
