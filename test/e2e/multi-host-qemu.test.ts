// The issue's multi-host promise on a real VM: "two node controllers only on that private network
// (real QEMU VMs on at least one); an instance launched through the cloud controller runs on a node
// the cloud controller has no route to."
//
// Network namespaces made here (names start with `ibq`) play the hosts: the cloud reaches the
// cluster over a /30 link; the cluster has a private bridge (172.30.0.0/24) with two nodes on it,
// `n1-qemu` (`--driver qemu`, TCG unless IRONBARK_ACCEL says otherwise) and `n2-fake`. The qemu
// node's zone bridge, DHCP server and metadata service live in its own namespace. The default
// guest image (built once, cached under ~/.cache/ironbark/images) is registered in the cloud's
// store and travels cloud → cluster → node over HTTP. The AWS SDK in this process reaches the EC2
// endpoint through a unix-socket forwarder inside the cloud namespace; ssh runs inside the qemu
// node's namespace. Everything (processes, QEMU, dnsmasq, namespaces, files) is removed in `after`,
// also when a step failed. Needs root and qemu-system-x86_64; skipped otherwise.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  CreateKeyPairCommand, DescribeInstancesCommand, EC2Client, GetConsoleOutputCommand, RunInstancesCommand, TerminateInstancesCommand,
} from '@aws-sdk/client-ec2';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { readCredentialsEnv } from '../../src/auth/credentials-file.ts';
import { openStore } from '../../src/store/store.ts';
import { ensureDefaultImageRegistered } from '../../src/cloud/default-image.ts';
import { dnsmasqRuntimeDir } from '../../src/node/dhcp.ts';

const REPO = resolve(import.meta.dirname, '../..');
const IRONBARK = join(REPO, 'bin/ironbark');
const REGION = 'ibq-1';
const ZONE = `${REGION}a`;
const ZONE_CIDR = '10.1.0.0/16';
const CLOUD_PORT = 8773;
const CLUSTER_PORT = 8774;
const NODE_PORT = 8775;
const QEMU_NODE_IP = '172.30.0.11';
const FAKE_NODE_IP = '172.30.0.12';

function onPath(tool: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').some((dir) => existsSync(join(dir, tool)));
}

function skipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  for (const tool of ['ip', 'qemu-system-x86_64', 'ssh', 'dnsmasq']) if (!onPath(tool)) return `${tool} is not installed`;
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
const NS = { cloud: `ibq${tag}-cloud`, cluster: `ibq${tag}-cl`, qemu: `ibq${tag}-nq`, fake: `ibq${tag}-nf` };
const made: string[] = [];
const children: Array<{ name: string; child: ChildProcess; output: () => string }> = [];
let work = '';

async function netns(name: string): Promise<void> {
  await must('ip', ['netns', 'add', name]);
  made.push(name);
  await must('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

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

/** Starts `bin/ironbark args` in a namespace; resolves once its output matches `ready`. */
async function startRole(name: string, ns: string, args: string[], ready: RegExp, env: Record<string, string> = {}) {
  const child = spawn('ip', ['netns', 'exec', ns, IRONBARK, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IRONBARK_LOG_LEVEL: 'info', ...env },
  });
  let output = '';
  child.stdout!.on('data', (d) => { output += d; });
  child.stderr!.on('data', (d) => { output += d; });
  const entry = { name, child, output: () => output };
  children.push(entry);
  const deadline = Date.now() + 120_000;
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

/** The last lines each role wrote, for a failure message. */
function roleLogs(): string {
  return children.filter((c) => c.name !== 'forwarder').map((c) => `--- ${c.name} ---\n${c.output().slice(-3000)}`).join('\n');
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  for (;;) {
    const value = await probe().catch((err: Error) => { lastError = err.message; return undefined; });
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastError ? ` (last error: ${lastError})` : ''}\n${roleLogs()}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function pings(ns: string, ip: string): Promise<boolean> {
  const args = onPath('ping') ? ['ping', '-c1', '-W1', ip] : ['busybox', 'ping', '-c1', '-W1', ip];
  return (await run('ip', ['netns', 'exec', ns, ...args], 10_000)).code === 0;
}

function ssh(ip: string, command: string): { code: number; out: string } {
  const r = spawnSync('ip', ['netns', 'exec', NS.qemu, 'ssh', '-i', join(work, 'key.pem'), '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5', '-o', 'BatchMode=yes', `root@${ip}`, command],
  { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? 1, out: r.stdout + r.stderr };
}

const skip = skipReason();

describe('a real VM on a node the cloud controller has no route to (network namespaces)', { skip, timeout: 20 * 60_000 }, () => {
  let ec2: EC2Client;
  let imageId = '';
  let qemuNodeId = '';
  let instanceId = '';

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'ibq-multi-host-'));
    for (const ns of Object.values(NS)) await netns(ns);
    await link({ ns: NS.cloud, dev: `ibq${tag}c`, addr: '192.168.250.1/30' }, { ns: NS.cluster, dev: `ibq${tag}k`, addr: '192.168.250.2/30' });
    // The cluster's private host network; the nodes live only there.
    await must('ip', ['-n', NS.cluster, 'link', 'add', `ibq${tag}br`, 'type', 'bridge']);
    await must('ip', ['-n', NS.cluster, 'addr', 'add', '172.30.0.1/24', 'dev', `ibq${tag}br`]);
    await must('ip', ['-n', NS.cluster, 'link', 'set', `ibq${tag}br`, 'up']);
    await link({ ns: NS.qemu, dev: `ibq${tag}q`, addr: `${QEMU_NODE_IP}/24` }, { ns: NS.cluster, dev: `ibq${tag}qp`, master: `ibq${tag}br` });
    await link({ ns: NS.fake, dev: `ibq${tag}f`, addr: `${FAKE_NODE_IP}/24` }, { ns: NS.cluster, dev: `ibq${tag}fp`, master: `ibq${tag}br` });

    const cloudDir = join(work, 'cloud');
    await startRole('cloud', NS.cloud, ['cloud', '--data-dir', cloudDir, '--listen', `0.0.0.0:${CLOUD_PORT}`, '--region', REGION,
      '--images-url', `http://192.168.250.1:${CLOUD_PORT}`], /cloud controller is up/);

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

    const added = await admin('cluster', 'add', '--zone', ZONE, '--url', `http://192.168.250.2:${CLUSTER_PORT}`, '--cidr', ZONE_CIDR);
    const clusterDir = join(work, 'cluster');
    await mkdir(clusterDir, { recursive: true, mode: 0o700 });
    await writeFile(join(clusterDir, 'cloud-secret'), `${added.secret}\n`, { mode: 0o600 });
    await startRole('cluster', NS.cluster, ['cluster', '--zone', ZONE, '--cidr', ZONE_CIDR, '--data-dir', clusterDir, '--listen', `0.0.0.0:${CLUSTER_PORT}`,
      '--cloud-secret-file', join(clusterDir, 'cloud-secret'), '--node-url', `http://172.30.0.1:${CLUSTER_PORT}`, '--policy', 'greedy'], /cluster controller of zone/);

    // Greedy takes the first node in name order with room: n1-qemu.
    for (const [name, ns, ip, driver] of [['n1-qemu', NS.qemu, QEMU_NODE_IP, 'qemu'], ['n2-fake', NS.fake, FAKE_NODE_IP, 'fake']] as const) {
      const { token } = await admin('node', 'token', '--zone', ZONE, '--ttl', '600');
      const node = await startRole(`node ${name}`, ns, ['node', '--join', `http://172.30.0.1:${CLUSTER_PORT}`, '--token', token,
        '--data-dir', join(work, `node-${name}`), '--listen', `${ip}:${NODE_PORT}`, '--driver', driver, '--name', name],
      /Ironbark node nd-[0-9a-f]+ of zone/, { IRONBARK_ACCEL: process.env.IRONBARK_ACCEL ?? 'tcg' });
      if (driver === 'qemu') qemuNodeId = /Ironbark node (nd-[0-9a-f]+)/.exec(node.output())![1]!;
    }

    // The default guest image, registered in the cloud's store (built first if it is not cached).
    const store = await openStore({ url: join(cloudDir, 'ironbark.sqlite') });
    try {
      imageId = (await ensureDefaultImageRegistered(store, { ownerAccountId: creds.IRONBARK_ACCOUNT_ID! })).imageId;
    } finally {
      await store.close();
    }
  });

  after(async () => {
    if (instanceId) await ec2.send(new TerminateInstancesCommand({ InstanceIds: [instanceId] })).catch(() => undefined);
    for (const { child } of children.splice(0).reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    // QEMU (daemonized) and dnsmasq outlive the node process: end whatever still runs in our namespaces.
    for (const ns of made) {
      const pids = (await run('ip', ['netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean);
      for (const pid of pids) { try { process.kill(Number(pid), 'SIGKILL'); } catch { /* already gone */ } }
    }
    for (const ns of made.splice(0).reverse()) await run('ip', ['netns', 'del', ns]);
    if (work) {
      for (const name of ['n1-qemu', 'n2-fake']) await rm(dnsmasqRuntimeDir(join(work, `node-${name}`, 'node', 'network')), { recursive: true, force: true });
      await rm(work, { recursive: true, force: true });
    }
  });

  it('runs an instance on the QEMU node behind the cluster, reachable by ssh from that node only', async () => {
    const key = await ec2.send(new CreateKeyPairCommand({ KeyName: 'ibq' }));
    await writeFile(join(work, 'key.pem'), `${key.KeyMaterial!.trim()}\n`, { mode: 0o600 });

    const ran = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, InstanceType: 'm1.small', KeyName: 'ibq' }));
    instanceId = ran.Instances![0]!.InstanceId!;
    const id = instanceId;
    const instance = await waitFor(`${id} running`, async () => {
      const d = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
      const i = d.Reservations![0]!.Instances![0]!;
      if (i.State!.Name === 'terminated') throw new Error(`${id} terminated: ${i.StateReason?.Message}`);
      return i.State!.Name === 'running' ? i : undefined;
    }, 5 * 60_000);
    const ip = instance.PrivateIpAddress!;
    assert.match(ip, /^10\.1\.\d+\.\d+$/);

    // It runs on the qemu node, which (like the instance) the cloud cannot reach.
    const nodes = (await admin('node', 'list', '--zone', ZONE)).nodes as any[];
    const qemuNode = nodes.find((n) => n.id === qemuNodeId);
    assert.equal(qemuNode?.instanceCount, 1, JSON.stringify(nodes));
    assert.equal(qemuNode.hypervisor, 'qemu');
    assert.equal(qemuNode.accelerator, process.env.IRONBARK_ACCEL ?? 'tcg');
    assert.equal(await pings(NS.cluster, QEMU_NODE_IP), true, 'the cluster reaches its node');
    assert.equal(await pings(NS.cloud, QEMU_NODE_IP), false, 'the cloud has no route to the node');
    assert.equal(await pings(NS.cloud, ip), false, 'nor to the instance');
    // The image came over HTTP: the cluster relay cached it, fetched from the cloud.
    assert.ok(existsSync(join(work, 'cluster', 'images', `${imageId}.img`)), "the image is in the cluster relay's cache");

    const consoleText = await waitFor('the guest to report its instance id on the console', async () => {
      const out = await ec2.send(new GetConsoleOutputCommand({ InstanceId: id }));
      const text = Buffer.from(out.Output ?? '', 'base64').toString('utf8');
      return text.includes(`ironbark-guest: instance-id=${id}`) ? text : undefined;
    }, 5 * 60_000);
    assert.match(consoleText, new RegExp(`ironbark-guest: instance-id=${id}`));

    await waitFor('ssh into the guest from the node', async () => (ssh(ip, 'true').code === 0 ? true : undefined), 3 * 60_000);
    const answer = ssh(ip, 'echo "guest-says-$((6*7))"; hostname');
    assert.equal(answer.code, 0, answer.out);
    assert.match(answer.out, /guest-says-42/);

    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    await waitFor('termination', async () => {
      const d = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
      return d.Reservations![0]!.Instances![0]!.State!.Name === 'terminated' ? true : undefined;
    }, 2 * 60_000);
    const qemuLeft = (await run('ip', ['netns', 'pids', NS.qemu])).stdout.split(/\s+/).filter(Boolean)
      .filter((pid) => { try { return /qemu-system/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8')); } catch { return false; } });
    assert.deepEqual(qemuLeft, [], 'no QEMU left running for the instance');
    instanceId = '';
  });
});
