// Launch latency on real VMs: `ironbark up --driver qemu --image debian-12` runs inside a network
// namespace the bench makes (its bridge, taps and DHCP server live there and go with it), and for
// one and then four instances at once of the default image the bench measures the seconds from
// RunInstances to `running`, to the guest's `ironbark-guest: instance-id=<id>` console line, and to
// sshd sending its banner to a TCP connection made from inside the namespace. For the Debian 12
// image (cloud-init), one instance cold (image not yet in the node's cache) and one warm: seconds to
// `running`, to the SSH banner and to cloud-init's "finished" line on the console. It also times
// making an instance disk over a 100 MiB and over a 10 GiB sparse raw base image.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { truncate, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  AuthorizeSecurityGroupIngressCommand, DescribeImagesCommand, DescribeInstancesCommand, type _InstanceType, EC2Client, GetConsoleOutputCommand, RunInstancesCommand, TerminateInstancesCommand,
} from '@aws-sdk/client-ec2';
import { canUseNetns, TestNetns } from '../test/helpers/netns.ts';
import { REGION, REPO_ROOT } from '../test/helpers/cloud.ts';
import { readCredentialsEnv } from '../src/auth/credentials-file.ts';
import { createInstanceDisk } from '../src/node/instance-disk.ts';

const ENDPOINT_PORT = 8773;
const POLL_MS = 200;
const BOOT_TIMEOUT_MS = 15 * 60_000;

interface LaunchTimes { running_s: number; console_s: number; ssh_s: number }

/** What a round launches, and the console line that says the guest has finished booting. */
interface LaunchKind { imageId: string; instanceType: string; booted: (console: string, instanceId: string) => boolean }

/**
 * Forwards connections on a Unix socket to the endpoint inside the namespace, so this process
 * (outside it) can reach an endpoint that listens on the namespace's own loopback.
 */
const FORWARDER = `
const net = require('node:net');
const [socketPath, host, port] = process.argv.slice(1);
net.createServer((client) => {
  const upstream = net.connect(Number(port), host);
  client.pipe(upstream).pipe(client);
  const end = () => { client.destroy(); upstream.destroy(); };
  client.on('error', end); upstream.on('error', end);
}).listen(socketPath, () => process.stdout.write('ready\\n'));
`;

/** Connects to HOST:22 from inside the namespace every 0.2 s; prints the epoch ms when a banner arrives. */
const SSH_PROBE = `
const net = require('node:net');
const [host, deadline] = [process.argv[1], Number(process.argv[2])];
function attempt() {
  if (Date.now() > deadline) { process.stdout.write('timeout\\n'); process.exit(1); }
  const s = net.connect({ host, port: 22, timeout: 2000 });
  let got = '';
  // One next attempt per connection, whichever of timeout, error and close comes first (error and
  // close both fire for a refused connection: two retries each time would double the probes).
  let retried = false;
  const retry = () => { if (retried) return; retried = true; s.destroy(); setTimeout(attempt, 200); };
  s.on('data', (d) => {
    got += d;
    if (got.startsWith('SSH-')) { process.stdout.write(Date.now() + ' ' + got.split('\\n')[0].trim() + '\\n'); process.exit(0); }
  });
  s.on('timeout', retry);
  s.on('error', retry);
  s.on('close', () => { if (!got.startsWith('SSH-')) retry(); });
}
attempt();
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;

async function diskCreationMs(work: string, name: string, bytes: number): Promise<number> {
  const base = join(work, `${name}.raw`);
  await writeFile(base, '');
  await truncate(base, bytes); // sparse, like `truncate -s`
  const t0 = performance.now();
  await createInstanceDisk(base, join(work, `${name}.qcow2`), { baseFormat: 'raw' });
  return round(performance.now() - t0, 1);
}

function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs: number, output: () => string): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error(`timed out waiting for ${pattern}:\n${output().slice(-4000)}`)); }, timeoutMs);
    const check = () => {
      const m = output().match(pattern);
      if (m) { cleanup(); resolve(m); }
    };
    const exited = (code: number | null) => { cleanup(); reject(new Error(`process exited with ${code} before ${pattern}:\n${output().slice(-4000)}`)); };
    const cleanup = () => { clearTimeout(timer); child.stdout?.off('data', check); child.stderr?.off('data', check); child.off('exit', exited); };
    child.stdout?.on('data', check);
    child.stderr?.on('data', check);
    child.once('exit', exited);
    check();
  });
}

function collect(child: ChildProcess): () => string {
  let text = '';
  child.stdout?.on('data', (d) => { text += d; });
  child.stderr?.on('data', (d) => { text += d; });
  return () => text;
}

async function stopChild(child: ChildProcess | undefined, graceMs: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

export async function benchLaunch(): Promise<Record<string, unknown>> {
  const skip = canUseNetns() ?? (spawnSync('qemu-system-x86_64', ['--version']).status !== 0 ? 'needs qemu-system-x86_64' : undefined);
  if (skip) throw new Error(`the launch bench ${skip}`);

  const work = mkdtempSync(join(tmpdir(), 'ironbark-bench-launch-'));
  const dataDir = join(work, 'data');
  const result: Record<string, unknown> = {};
  let ns: TestNetns | undefined;
  let up: ChildProcess | undefined;
  let forwarder: ChildProcess | undefined;
  const probes = new Set<ChildProcess>();
  try {
    result.disk_100mib_ms = await diskCreationMs(work, 'base-100mib', 100 * 1024 ** 2);
    result.disk_10gib_ms = await diskCreationMs(work, 'base-10gib', 10 * 1024 ** 3);

    ns = new TestNetns('ibb-launch');
    const netns = ns.name;
    up = spawn('ip', ['netns', 'exec', netns, join(REPO_ROOT, 'bin/ironbark'), 'up', '--data-dir', dataDir,
      '--listen', `127.0.0.1:${ENDPOINT_PORT}`, '--driver', 'qemu', '--node-cores', '8', '--image', 'debian-12'], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IRONBARK_LOG_LEVEL: 'warn' },
    });
    const upOutput = collect(up);
    // A first run builds the guest images (default and Debian 12), which takes minutes.
    const upLine = await waitForLine(up, /Ironbark is up: .*accelerator (\w+)\)/, 20 * 60_000, upOutput);
    result.accelerator = upLine[1];

    const socketPath = join(work, 'ec2.sock');
    forwarder = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', FORWARDER, socketPath, '127.0.0.1', String(ENDPOINT_PORT)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    await waitForLine(forwarder, /ready/, 30_000, collect(forwarder));
    class ForwardingAgent extends http.Agent {
      override createConnection(): net.Socket { return net.connect(socketPath); }
    }
    const creds = readCredentialsEnv(dataDir);
    const ec2 = new EC2Client({
      endpoint: `http://127.0.0.1:${ENDPOINT_PORT}`, region: REGION, maxAttempts: 1,
      credentials: { accessKeyId: creds.AWS_ACCESS_KEY_ID!, secretAccessKey: creds.AWS_SECRET_ACCESS_KEY! },
      requestHandler: { httpAgent: new ForwardingAgent({ keepAlive: true }) },
    });
    const imageNamed = async (name: string) => {
      const images = await ec2.send(new DescribeImagesCommand({ Filters: [{ Name: 'image-type', Values: ['machine'] }, { Name: 'name', Values: [name] }] }));
      const id = images.Images?.[0]?.ImageId;
      if (!id) throw new Error(`no image named ${name}`);
      return id;
    };
    // Security groups are enforced: the probes connect to port 22 from the namespace.
    await ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupName: 'default', IpProtocol: 'tcp', FromPort: 22, ToPort: 22, CidrIp: '0.0.0.0/0' }));
    const defaultImage: LaunchKind = {
      imageId: await imageNamed('ironbark-default'), instanceType: 'm1.small',
      booted: (text, id) => text.includes(`ironbark-guest: instance-id=${id}`),
    };
    const debianImage: LaunchKind = {
      imageId: await imageNamed('debian-12-amd64'), instanceType: 't3.micro',
      booted: (text) => /Cloud-init v\. \S+ finished at/.test(text),
    };

    /** Starts `count` instances in one request and follows each until sshd answers. */
    async function launchRound(count: number, kind: LaunchKind = defaultImage): Promise<LaunchTimes[]> {
      const t0 = performance.now();
      const epoch0 = Date.now();
      const run = await ec2.send(new RunInstancesCommand({ ImageId: kind.imageId, InstanceType: kind.instanceType as _InstanceType, MinCount: count, MaxCount: count }));
      const instances = run.Instances!;
      try {
        return await Promise.all(instances.map(async (inst) => {
          const id = inst.InstanceId!;
          const ip = inst.PrivateIpAddress!;
          const deadline = Date.now() + BOOT_TIMEOUT_MS;
          const probe = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', SSH_PROBE, ip, String(deadline)], { stdio: ['ignore', 'pipe', 'pipe'] });
          probes.add(probe);
          const probeOutput = collect(probe);
          const ssh = waitForLine(probe, /^(\d+) SSH-/m, BOOT_TIMEOUT_MS + 10_000, probeOutput)
            .then((m) => (Number(m[1]) - epoch0) / 1000)
            .finally(() => probes.delete(probe));
          ssh.catch(() => undefined); // awaited below; a failed boot must not leave it unhandled meanwhile

          let running: number | undefined;
          let consoleAt: number | undefined;
          while (running === undefined || consoleAt === undefined) {
            if (Date.now() > deadline) throw new Error(`instance ${id} did not boot within ${BOOT_TIMEOUT_MS / 60_000} minutes`);
            if (running === undefined) {
              const d = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
              const state = d.Reservations?.[0]?.Instances?.[0]?.State?.Name;
              if (state === 'running') running = (performance.now() - t0) / 1000;
              else if (state !== 'pending') throw new Error(`instance ${id} went ${state}: ${d.Reservations?.[0]?.Instances?.[0]?.StateReason?.Message}`);
            }
            if (consoleAt === undefined) {
              const c = await ec2.send(new GetConsoleOutputCommand({ InstanceId: id }));
              const text = c.Output ? Buffer.from(c.Output, 'base64').toString('utf8') : '';
              if (kind.booted(text, id)) consoleAt = (performance.now() - t0) / 1000;
            }
            if (running === undefined || consoleAt === undefined) await sleep(POLL_MS);
          }
          return { running_s: round(running), console_s: round(consoleAt), ssh_s: round(await ssh) };
        }));
      } finally {
        const ids = instances.map((i) => i.InstanceId!);
        await ec2.send(new TerminateInstancesCommand({ InstanceIds: ids }));
        const deadline = Date.now() + 120_000;
        while (Date.now() < deadline) {
          const d = await ec2.send(new DescribeInstancesCommand({ InstanceIds: ids }));
          if ((d.Reservations ?? []).flatMap((r) => r.Instances ?? []).every((i) => i.State?.Name === 'terminated')) break;
          await sleep(500);
        }
      }
    }

    const summary = (times: LaunchTimes[]) => {
      const out: Record<string, number> = {};
      for (const key of ['running_s', 'console_s', 'ssh_s'] as const) {
        const values = times.map((t) => t[key]);
        out[`${key.slice(0, -2)}_max_s`] = round(Math.max(...values));
        out[`${key.slice(0, -2)}_mean_s`] = round(values.reduce((a, b) => a + b, 0) / values.length);
      }
      return out;
    };

    // The first launch also copies the base images into the node's cache; later ones find them there.
    result.one_cold = (await launchRound(1))[0];
    result.one = (await launchRound(1))[0];
    result.four = summary(await launchRound(4));
    // Debian 12 with cloud-init: seconds to running, to the SSH banner, and to cloud-init done.
    const debian = (t: LaunchTimes) => ({ running_s: t.running_s, ssh_s: t.ssh_s, cloud_init_done_s: t.console_s });
    result.debian_cold = debian((await launchRound(1, debianImage))[0]!);
    result.debian = debian((await launchRound(1, debianImage))[0]!);
    return result;
  } finally {
    for (const probe of probes) probe.kill('SIGKILL');
    await stopChild(forwarder, 5000);
    // Stopping the cloud leaves no VM behind only once every instance is terminated (done above);
    // the namespace's removal kills whatever is still in it and takes its links with it.
    await stopChild(up, 30_000);
    ns?.dispose();
    if (existsSync(work)) rmSync(work, { recursive: true, force: true });
  }
}
