// The roles on separate "hosts": network namespaces made here (names start with `ibt`). The cloud
// namespace reaches each cluster over a /30 link; each cluster has a private bridge network
// (172.30.0.0/24 in both zones) its nodes sit on, which the cloud has no route to. Every process is
// `bin/ironbark …` inside its namespace: the cloud, two clusters, three nodes (fake driver) that
// join with tokens from `ironbark admin node token`. The AWS SDK, in this process, reaches the
// cloud's EC2 endpoint through a unix-socket forwarder running inside the cloud namespace, so all
// traffic stays inside the namespaces. Image files travel cloud → cluster → node over HTTP: the
// cloud serves them to clusters at 192.168.250.1 (cluster b routes there through its own link).
// Zone b runs the power-save policy: its operator's sleep and wake commands take the node's link
// down and up (a suspended host does not answer either). Needs root; skipped otherwise.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DescribeAvailabilityZonesCommand, DescribeInstancesCommand, EC2Client, RunInstancesCommand, TerminateInstancesCommand, type Instance } from '@aws-sdk/client-ec2';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { readCredentialsEnv } from '../../src/auth/credentials-file.ts';
import { openStore } from '../../src/store/store.ts';
import { registerImageFiles } from '../../src/cloud/images.ts';

const REPO = resolve(import.meta.dirname, '../..');
const IRONBARK = join(REPO, 'bin/ironbark');
const REGION = 'ibt-1';
const ZONE_CIDR = '10.1.0.0/16'; // both zones use the same instance range
const CLUSTER_PORT = 8774;
const NODE_PORT = 8775;
const CLOUD_PORT = 8773;

function onPath(tool: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').some((dir) => existsSync(join(dir, tool)));
}

function skipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  if (!onPath('ip')) return 'iproute2 (ip) is not installed';
  if (!onPath('ping') && !onPath('busybox')) return 'neither ping nor busybox is installed';
  return false;
}

function run(file: string, args: string[], timeout = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(file, args, { timeout, env: { ...process.env, IRONBARK_LOG_LEVEL: 'warn' } }, (error, stdout, stderr) => {
      done({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function must(file: string, args: string[]): Promise<string> {
  const r = await run(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

const tag = randomBytes(2).toString('hex');
const NS = {
  cloud: `ibt${tag}-cloud`,
  clusterA: `ibt${tag}-cla`,
  clusterB: `ibt${tag}-clb`,
  nodeA1: `ibt${tag}-na1`,
  nodeA2: `ibt${tag}-na2`,
  nodeB1: `ibt${tag}-nb1`,
};
const made: string[] = [];
const children: Array<{ name: string; child: ChildProcess; output: () => string }> = [];
let work = '';

async function netns(name: string): Promise<void> {
  await must('ip', ['netns', 'add', name]);
  made.push(name);
  await must('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

/** A veth pair between two namespaces with an address on each end (undefined: no address). */
async function link(a: { ns: string; dev: string; addr?: string }, b: { ns: string; dev: string; addr?: string; master?: string }): Promise<void> {
  await must('ip', ['link', 'add', a.dev, 'type', 'veth', 'peer', 'name', b.dev]);
  await must('ip', ['link', 'set', a.dev, 'netns', a.ns]);
  await must('ip', ['link', 'set', b.dev, 'netns', b.ns]);
  for (const end of [a, b] as Array<{ ns: string; dev: string; addr?: string; master?: string }>) {
    if (end.addr) await must('ip', ['-n', end.ns, 'addr', 'add', end.addr, 'dev', end.dev]);
    if (end.master) await must('ip', ['-n', end.ns, 'link', 'set', end.dev, 'master', end.master]);
    await must('ip', ['-n', end.ns, 'link', 'set', end.dev, 'up']);
  }
}

async function bridge(ns: string, dev: string, addr: string): Promise<void> {
  await must('ip', ['-n', ns, 'link', 'add', dev, 'type', 'bridge']);
  await must('ip', ['-n', ns, 'addr', 'add', addr, 'dev', dev]);
  await must('ip', ['-n', ns, 'link', 'set', dev, 'up']);
}

/** Starts `bin/ironbark args` in a namespace; resolves once its output contains `ready`. */
async function startRole(name: string, ns: string, args: string[], ready: RegExp): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn('ip', ['netns', 'exec', ns, IRONBARK, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IRONBARK_LOG_LEVEL: 'info' },
  });
  let output = '';
  child.stdout!.on('data', (d) => { output += d; });
  child.stderr!.on('data', (d) => { output += d; });
  const entry = { name, child, output: () => output };
  children.push(entry);
  const deadline = Date.now() + 90_000;
  while (!ready.test(output)) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}:\n${output}`);
    if (Date.now() > deadline) throw new Error(`${name} did not start:\n${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return entry;
}

async function admin(...args: string[]): Promise<any> {
  return JSON.parse(await must('ip', ['netns', 'exec', NS.cloud, IRONBARK, 'admin', '--data-dir', join(work, 'cloud'), '--json', ...args]));
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Can `ns` ping `ip`? (busybox ping when iputils is absent) */
async function pings(ns: string, ip: string): Promise<boolean> {
  const args = onPath('ping') ? ['ping', '-c1', '-W1', ip] : ['busybox', 'ping', '-c1', '-W1', ip];
  return (await run('ip', ['netns', 'exec', ns, ...args], 10_000)).code === 0;
}

async function imageFile(name: string, bytes: number) {
  const data = randomBytes(bytes);
  const path = join(work, 'images', name);
  await writeFile(path, data);
  return { path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes };
}

const skip = skipReason();

describe('roles on separate hosts (network namespaces)', { skip }, () => {
  let ec2: EC2Client;
  let imageId = '';
  const nodeIds: Record<string, string> = {};

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'ibt-multi-host-'));
    await mkdir(join(work, 'images'));
    for (const ns of Object.values(NS)) await netns(ns);
    // cloud <-> clusters: point-to-point links that exist only inside the namespaces.
    await link({ ns: NS.cloud, dev: `ibt${tag}ca`, addr: '192.168.250.1/30' }, { ns: NS.clusterA, dev: `ibt${tag}ac`, addr: '192.168.250.2/30' });
    await link({ ns: NS.cloud, dev: `ibt${tag}cb`, addr: '192.168.250.5/30' }, { ns: NS.clusterB, dev: `ibt${tag}bc`, addr: '192.168.250.6/30' });
    // One address clusters fetch images from (--images-url), reached by cluster b over its own link.
    await must('ip', ['-n', NS.clusterB, 'route', 'add', '192.168.250.0/30', 'via', '192.168.250.5']);
    // Each cluster's private host network, the same range in both zones; nodes live only there.
    await bridge(NS.clusterA, `ibt${tag}bra`, '172.30.0.1/24');
    await bridge(NS.clusterB, `ibt${tag}brb`, '172.30.0.1/24');
    await link({ ns: NS.nodeA1, dev: `ibt${tag}a1`, addr: '172.30.0.11/24' }, { ns: NS.clusterA, dev: `ibt${tag}a1p`, master: `ibt${tag}bra` });
    await link({ ns: NS.nodeA2, dev: `ibt${tag}a2`, addr: '172.30.0.12/24' }, { ns: NS.clusterA, dev: `ibt${tag}a2p`, master: `ibt${tag}bra` });
    await link({ ns: NS.nodeB1, dev: `ibt${tag}b1`, addr: '172.30.0.11/24' }, { ns: NS.clusterB, dev: `ibt${tag}b1p`, master: `ibt${tag}brb` });

    const cloudDir = join(work, 'cloud');
    await startRole('cloud', NS.cloud, ['cloud', '--no-default-image', '--data-dir', cloudDir, '--listen', `0.0.0.0:${CLOUD_PORT}`, '--region', REGION,
      '--images-url', `http://192.168.250.1:${CLOUD_PORT}`], /cloud controller is up/);

    // This process reaches the EC2 endpoint (127.0.0.1 inside the cloud namespace) through a unix socket.
    const socket = join(work, 'cloud-ec2.sock');
    const forwarder = `require('net').createServer((c) => { const u = require('net').connect(${CLOUD_PORT}, '127.0.0.1'); c.pipe(u).pipe(c);`
      + ` c.on('error', () => u.destroy()); u.on('error', () => c.destroy()); }).listen(process.env.SOCK)`;
    const fwd = spawn('ip', ['netns', 'exec', NS.cloud, process.execPath, '-e', forwarder], { stdio: 'ignore', env: { ...process.env, SOCK: socket } });
    children.push({ name: 'forwarder', child: fwd, output: () => '' });
    await waitFor('the EC2 forwarder', async () => (existsSync(socket) ? true : undefined), 10_000);
    const agent = new http.Agent({ keepAlive: false });
    (agent as unknown as { createConnection: () => net.Socket }).createConnection = () => net.connect(socket);
    const creds = readCredentialsEnv(cloudDir);
    ec2 = new EC2Client({
      endpoint: `http://127.0.0.1:${CLOUD_PORT}`, region: REGION, maxAttempts: 1,
      credentials: { accessKeyId: creds.AWS_ACCESS_KEY_ID!, secretAccessKey: creds.AWS_SECRET_ACCESS_KEY! },
      requestHandler: new NodeHttpHandler({ httpAgent: agent }),
    });

    // The operator adds the two clusters; each starts with the secret the cloud printed.
    // Zone b's power commands: log, then "suspend" or "resume" node nb1 by taking its link down or up.
    const powerScript = join(work, 'power.sh');
    await writeFile(powerScript, [
      '#!/bin/sh',
      `echo "$1 $2" >> ${join(work, 'power.log')}`,
      `if [ "$1" = sleep ]; then state=down; else state=up; fi`,
      `exec ip netns exec ${NS.nodeB1} ip link set ibt${tag}b1 "$state"`,
      '',
    ].join('\n'), { mode: 0o755 });
    const powerSave = ['--policy', 'power-save', '--idle-threshold', '2', '--sleep-command', `sh ${powerScript} sleep {node}`, '--wake-command', `sh ${powerScript} wake {node}`];
    for (const [zone, ns, url, policy] of [
      [`${REGION}a`, NS.clusterA, 'http://192.168.250.2', ['--policy', 'greedy']], [`${REGION}b`, NS.clusterB, 'http://192.168.250.6', powerSave],
    ] as const) {
      const added = await admin('cluster', 'add', '--zone', zone, '--url', `${url}:${CLUSTER_PORT}`, '--cidr', ZONE_CIDR);
      assert.equal(added.cluster.zone, zone);
      const dir = join(work, `cluster-${zone}`);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await writeFile(join(dir, 'cloud-secret'), `${added.secret}\n`, { mode: 0o600 });
      await startRole(`cluster ${zone}`, ns, ['cluster', '--zone', zone, '--cidr', ZONE_CIDR, '--data-dir', dir, '--listen', `0.0.0.0:${CLUSTER_PORT}`,
        '--cloud-secret-file', join(dir, 'cloud-secret'), '--node-url', `http://172.30.0.1:${CLUSTER_PORT}`, ...policy], /cluster controller of zone/);
    }

    // Nodes join with one-time tokens from the cloud.
    for (const [name, ns, zone, ip] of [
      ['na1', NS.nodeA1, `${REGION}a`, '172.30.0.11'], ['na2', NS.nodeA2, `${REGION}a`, '172.30.0.12'], ['nb1', NS.nodeB1, `${REGION}b`, '172.30.0.11'],
    ] as const) {
      const { token } = await admin('node', 'token', '--zone', zone, '--ttl', '600');
      const node = await startRole(`node ${name}`, ns, ['node', '--join', `http://172.30.0.1:${CLUSTER_PORT}`, '--token', token, '--data-dir', join(work, `node-${name}`),
        '--listen', `${ip}:${NODE_PORT}`, '--driver', 'fake', '--name', name], /Ironbark node nd-[0-9a-f]+ of zone/);
      nodeIds[name] = /Ironbark node (nd-[0-9a-f]+)/.exec(node.output())![1]!;
    }

    // A small machine image (fake files: the fake driver boots nothing).
    const store = await openStore({ url: join(cloudDir, 'ironbark.sqlite') });
    try {
      const registered = await registerImageFiles(store, {
        name: 'ibt-tiny', kernel: await imageFile('vmlinuz', 4096), rootfs: { ...(await imageFile('rootfs.img', 65536)), format: 'raw' },
        kernelCmdline: 'console=ttyS0', public: true, ownerAccountId: creds.IRONBARK_ACCOUNT_ID!,
      });
      imageId = registered.imageId;
    } finally {
      await store.close();
    }
  });

  after(async () => {
    for (const { child } of children.splice(0).reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    for (const ns of made.splice(0).reverse()) await run('ip', ['netns', 'del', ns]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('lists both clusters and their joined nodes, all up (or, in power-save zone b, already asleep)', async () => {
    const clusters = await admin('cluster', 'list');
    assert.deepEqual(clusters.clusters.map((c: any) => [c.zone, c.cidr]), [[`${REGION}a`, ZONE_CIDR], [`${REGION}b`, ZONE_CIDR]]);
    const nodes = await waitFor('all nodes up', async () => {
      const list = (await admin('node', 'list')).nodes as any[];
      return list.length === 3 && list.every((n) => n.state === 'up' || (n.name === 'nb1' && n.state === 'asleep')) ? list : undefined;
    });
    assert.deepEqual(nodes.map((n) => [n.zone, n.name]).sort(), [[`${REGION}a`, 'na1'], [`${REGION}a`, 'na2'], [`${REGION}b`, 'nb1']]);
    const zones = await ec2.send(new DescribeAvailabilityZonesCommand({}));
    assert.deepEqual(zones.AvailabilityZones!.map((z) => z.ZoneName).sort(), [`${REGION}a`, `${REGION}b`]);
  });

  async function launchAndWait(zone: string): Promise<Instance> {
    const run = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, InstanceType: 'm1.small', Placement: { AvailabilityZone: zone } }));
    const id = run.Instances![0]!.InstanceId!;
    return waitFor(`${id} running`, async () => {
      const d = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
      const instance = d.Reservations![0]!.Instances![0]!;
      return instance.State!.Name === 'running' ? instance : undefined;
    });
  }

  /** The node of `zone` that reports one instance, as the cluster tells the cloud. */
  async function busyNode(zone: string): Promise<{ id: string; url: string }> {
    return waitFor(`the node running an instance in ${zone}`, async () => {
      const nodes = (await admin('node', 'list', '--zone', zone)).nodes as any[];
      const busy = nodes.filter((n) => n.instanceCount > 0);
      return busy.length === 1 ? busy[0] : undefined;
    });
  }

  it('launches through the EC2 API onto a node of zone a that the cloud cannot reach', async () => {
    const instance = await launchAndWait(`${REGION}a`);
    assert.equal(instance.Placement!.AvailabilityZone, `${REGION}a`);
    assert.match(instance.PrivateIpAddress!, /^10\.1\./);
    const node = await busyNode(`${REGION}a`);
    const nodeIp = new URL(node.url).hostname;
    assert.ok(['172.30.0.11', '172.30.0.12'].includes(nodeIp), nodeIp);
    assert.equal(await pings(NS.clusterA, nodeIp), true, 'the cluster reaches its node');
    assert.equal(await pings(NS.cloud, nodeIp), false, 'the cloud has no route to the node');
    // The cluster fetched the image from the cloud over HTTP (a copy in its relay cache), not from a shared disk.
    assert.ok(existsSync(join(work, `cluster-${REGION}a`, 'images', `${imageId}.img`)), 'the image is in the relay cache of cluster a');
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [instance.InstanceId!] }));
    await waitFor('termination', async () => {
      const d = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [instance.InstanceId!] }));
      return d.Reservations![0]!.Instances![0]!.State!.Name === 'terminated' ? true : undefined;
    });
  });

  it('launches into zone b, whose cluster and node reuse the same ranges', async () => {
    const instance = await launchAndWait(`${REGION}b`);
    assert.equal(instance.Placement!.AvailabilityZone, `${REGION}b`);
    assert.match(instance.PrivateIpAddress!, /^10\.1\./);
    const node = await busyNode(`${REGION}b`);
    assert.equal(node.id, nodeIds.nb1);
    assert.equal(await pings(NS.clusterB, '172.30.0.11'), true);
    assert.equal(await pings(NS.cloud, '172.30.0.11'), false);
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [instance.InstanceId!] }));
  });

  it('power-save in zone b: the idle node is put to sleep, listed as asleep (not down) with the reason, and woken for a launch', async () => {
    const nodeB = async () => ((await admin('node', 'list', '--zone', `${REGION}b`)).nodes as any[])[0];
    const asleep = await waitFor('nb1 asleep', async () => { const n = await nodeB(); return n.state === 'asleep' ? n : undefined; });
    assert.match(asleep.stateReason, /^put to sleep by power-save at .*: no instances for \d+ s \(threshold 2 s\)$/);
    assert.equal(await pings(NS.clusterB, '172.30.0.11'), false, 'the asleep node does not answer');
    const table = await must('ip', ['netns', 'exec', NS.cloud, IRONBARK, 'admin', '--data-dir', join(work, 'cloud'), 'node', 'list', '--zone', `${REGION}b`]);
    assert.match(table, /asleep.*put to sleep by power-save/);
    // Silent for longer than a node may be before it counts as down (10 s): still asleep.
    await new Promise((r) => setTimeout(r, 11_000));
    assert.equal((await nodeB()).state, 'asleep');

    const instance = await launchAndWait(`${REGION}b`);
    assert.equal((await busyNode(`${REGION}b`)).id, nodeIds.nb1);
    const log = (await readFile(join(work, 'power.log'), 'utf8')).trim().split('\n');
    assert.deepEqual(log.slice(-2), ['sleep nb1', 'wake nb1']);
    assert.equal((await nodeB()).state, 'up');
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [instance.InstanceId!] }));
  });

  it('revokes a node: its cluster forgets it and refuses its calls', async () => {
    const revoked = await admin('node', 'revoke', nodeIds.na2!);
    assert.deepEqual([revoked.deleted, revoked.zone], [nodeIds.na2, `${REGION}a`]);
    const nodes = (await admin('node', 'list', '--zone', `${REGION}a`)).nodes as any[];
    assert.deepEqual(nodes.map((n) => n.id), [nodeIds.na1]);
    // The revoked node restarting says hello with its old secret: refused, and the cluster logs it.
    const cluster = children.find((c) => c.name === `cluster ${REGION}a`)!;
    const na2 = children.find((c) => c.name === 'node na2')!;
    na2.child.kill('SIGTERM');
    await new Promise((r) => na2.child.once('exit', r));
    const again = await startRole('node na2 again', NS.nodeA2, ['node', '--data-dir', join(work, 'node-na2'), '--listen', `172.30.0.12:${NODE_PORT}`, '--driver', 'fake'], /Ironbark node nd-/);
    assert.match(again.output(), /did not accept our hello/);
    await waitFor('the refusal in the cluster log', async () => (cluster.output().includes(nodeIds.na2!) && /refused node request/.test(cluster.output()) ? true : undefined), 10_000);
  });
});
