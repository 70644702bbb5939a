// Hosts for the multi-host e2e tests: network namespaces made by the test, veth links and bridges
// between them, `bin/ironbark` roles started inside them, `ironbark admin` run in the cloud's
// namespace, and an EC2 client that reaches the cloud through a unix-socket forwarder so no traffic
// leaves the namespaces. `dispose` removes everything the test made (processes, whatever still runs
// in its namespaces such as daemonized QEMU and dnsmasq, the namespaces, the nodes' /run/ironbark
// DHCP dirs, the work dir), also after a failed step; it touches nothing it did not make.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { EC2Client } from '@aws-sdk/client-ec2';
import { readCredentialsEnv } from '../../src/auth/credentials-file.ts';
import { dnsmasqRuntimeDir } from '../../src/node/dhcp.ts';
import { ec2ClientOverSocket, forwardPortToSocket } from './netns-ec2-client.ts';

export const IRONBARK = join(resolve(import.meta.dirname, '../..'), 'bin/ironbark');

export function onPath(tool: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').some((dir) => existsSync(join(dir, tool)));
}

/** Why a multi-host test cannot run here (root, iproute2, ping and `tools`), or false. */
export function multiHostSkipReason(tools: string[] = []): string | false {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  if (!onPath('ip')) return 'iproute2 (ip) is not installed';
  for (const tool of tools) if (!onPath(tool)) return `${tool} is not installed`;
  if (!onPath('ping') && !onPath('busybox')) return 'neither ping nor busybox is installed';
  return false;
}

export function run(file: string, args: string[], timeout = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(file, args, { timeout, env: { ...process.env, IRONBARK_LOG_LEVEL: 'warn' } }, (error, stdout, stderr) => {
      done({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

export async function must(file: string, args: string[]): Promise<string> {
  const r = await run(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Can `ns` ping `ip`? (busybox ping when iputils is absent) */
export async function pings(ns: string, ip: string): Promise<boolean> {
  const args = onPath('ping') ? ['ping', '-c1', '-W1', ip] : ['busybox', 'ping', '-c1', '-W1', ip];
  return (await run('ip', ['netns', 'exec', ns, ...args], 10_000)).code === 0;
}

/** Process ids running inside namespace `ns`. */
export async function namespacePids(ns: string): Promise<string[]> {
  return (await run('ip', ['netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean);
}

export interface Role { name: string; child: ChildProcess; output: () => string }
interface LinkEnd { ns: string; dev: string; addr?: string; master?: string }

export interface TestHostsOptions {
  /** Start of every namespace and device name (`ibt`, `ibq`): a random tag follows it. */
  prefix: string;
  /** How long a role may take to print its ready line. */
  startTimeoutMs: number;
  /** How often `waitFor` probes. */
  pollMs: number;
}

export class TestHosts {
  /** `prefix` plus a random tag: the start of every namespace and device name this test makes. */
  readonly tag: string;
  /** The test's temporary directory (set by `init`). */
  work = '';
  /** Namespace whose `ironbark cloud` owns `<work>/cloud`: where `admin` runs. */
  cloudNs = '';
  readonly roles: Role[] = [];
  private readonly namespaces: string[] = [];
  private readonly nodeDataDirs: string[] = [];

  constructor(private readonly opts: TestHostsOptions) {
    this.tag = `${opts.prefix}${randomBytes(2).toString('hex')}`;
  }

  get cloudDir(): string { return join(this.work, 'cloud'); }

  /** Makes the work dir and the namespaces (loopback up in each). */
  async init(workPrefix: string, namespaces: string[]): Promise<void> {
    this.work = await mkdtemp(join(tmpdir(), workPrefix));
    for (const ns of namespaces) {
      await must('ip', ['netns', 'add', ns]);
      this.namespaces.push(ns);
      await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
  }

  /** A veth pair between two namespaces with an address on each end (undefined: no address). */
  async link(a: { ns: string; dev: string; addr?: string }, b: LinkEnd): Promise<void> {
    await must('ip', ['link', 'add', a.dev, 'type', 'veth', 'peer', 'name', b.dev]);
    await must('ip', ['link', 'set', a.dev, 'netns', a.ns]);
    await must('ip', ['link', 'set', b.dev, 'netns', b.ns]);
    for (const end of [a, b] as LinkEnd[]) {
      if (end.addr) await must('ip', ['-n', end.ns, 'addr', 'add', end.addr, 'dev', end.dev]);
      if (end.master) await must('ip', ['-n', end.ns, 'link', 'set', end.dev, 'master', end.master]);
      await must('ip', ['-n', end.ns, 'link', 'set', end.dev, 'up']);
    }
  }

  async bridge(ns: string, dev: string, addr: string): Promise<void> {
    await must('ip', ['-n', ns, 'link', 'add', dev, 'type', 'bridge']);
    await must('ip', ['-n', ns, 'addr', 'add', addr, 'dev', dev]);
    await must('ip', ['-n', ns, 'link', 'set', dev, 'up']);
  }

  /** Starts `bin/ironbark args` in a namespace; resolves once its output matches `ready`. */
  async startRole(name: string, ns: string, args: string[], ready: RegExp, env: Record<string, string> = {}): Promise<Role> {
    const child = spawn('ip', ['netns', 'exec', ns, IRONBARK, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IRONBARK_LOG_LEVEL: 'info', ...env },
    });
    let output = '';
    child.stdout!.on('data', (d) => { output += d; });
    child.stderr!.on('data', (d) => { output += d; });
    const role = { name, child, output: () => output };
    this.roles.push(role);
    const deadline = Date.now() + this.opts.startTimeoutMs;
    while (!ready.test(output)) {
      if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}:\n${output}`);
      if (Date.now() > deadline) throw new Error(`${name} did not start:\n${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return role;
  }

  role(name: string): Role {
    const found = this.roles.find((r) => r.name === name);
    if (!found) throw new Error(`no role named ${name}`);
    return found;
  }

  /** `ironbark cloud args…` in `ns` (give it `--data-dir` `cloudDir`); the cloud is up when this resolves. */
  async startCloud(ns: string, args: string[]): Promise<void> {
    this.cloudNs = ns;
    await this.startRole('cloud', ns, ['cloud', ...args], /cloud controller is up/);
  }

  /** `ironbark admin --data-dir <cloud> args…` in the cloud's namespace: its stdout. */
  async adminText(...args: string[]): Promise<string> {
    return must('ip', ['netns', 'exec', this.cloudNs, IRONBARK, 'admin', '--data-dir', this.cloudDir, ...args]);
  }

  /** `ironbark admin … --json args…`, parsed. */
  async admin(...args: string[]): Promise<any> {
    return JSON.parse(await this.adminText('--json', ...args));
  }

  /**
   * The operator adds a cluster (`admin cluster add`) and starts it in `ns` with the secret the
   * cloud printed; resolves with what `cluster add` answered once the cluster is up. Without
   * `nodeUrl` the cluster gets no --node-url (nodes fetch images at the URL they joined with).
   */
  async addCluster(name: string, ns: string, c: { zone: string; cidr: string; url: string; dir: string; nodeUrl?: string; listen: string; policy: readonly string[] }): Promise<any> {
    const added = await this.admin('cluster', 'add', '--zone', c.zone, '--url', c.url, '--cidr', c.cidr);
    await mkdir(c.dir, { recursive: true, mode: 0o700 });
    await writeFile(join(c.dir, 'cloud-secret'), `${added.secret}\n`, { mode: 0o600 });
    await this.startRole(name, ns, ['cluster', '--zone', c.zone, '--cidr', c.cidr, '--data-dir', c.dir, '--listen', c.listen,
      '--cloud-secret-file', join(c.dir, 'cloud-secret'), ...(c.nodeUrl ? ['--node-url', c.nodeUrl] : []), ...c.policy], /cluster controller of zone/);
    return added;
  }

  /** A node joins `zone` at `clusterUrl` with a one-time token from the cloud (`args`: more flags); resolves with its node id. */
  async joinNode(name: string, ns: string, n: { zone: string; clusterUrl: string; dataDir: string; listen: string; driver: string; args?: string[] },
    env: Record<string, string> = {}): Promise<string> {
    const { token } = await this.admin('node', 'token', '--zone', n.zone, '--ttl', '600');
    this.nodeDataDirs.push(n.dataDir);
    const node = await this.startRole(`node ${name}`, ns, ['node', '--join', n.clusterUrl, '--token', token, '--data-dir', n.dataDir,
      '--listen', n.listen, '--driver', n.driver, '--name', name, ...(n.args ?? [])], /Ironbark node nd-[0-9a-f]+ of zone/, env);
    return /Ironbark node (nd-[0-9a-f]+)/.exec(node.output())![1]!;
  }

  /**
   * An EC2 client in this process for the cloud listening on 127.0.0.1:`port` inside its namespace,
   * reached through a unix socket served by a forwarder running in that namespace (one per port,
   * shared by the clients). With the cloud admin's credentials unless `credentials` are given (another account's).
   */
  async ec2Client(region: string, port: number, credentials?: { accessKeyId: string; secretAccessKey: string }): Promise<EC2Client> {
    const socket = join(this.work, `cloud-ec2-${port}.sock`);
    if (!existsSync(socket)) this.roles.push({ name: 'forwarder', child: await forwardPortToSocket(this.cloudNs, port, socket), output: () => '' });
    const creds = readCredentialsEnv(this.cloudDir);
    return ec2ClientOverSocket(socket, port, region, credentials ?? { accessKeyId: creds.AWS_ACCESS_KEY_ID!, secretAccessKey: creds.AWS_SECRET_ACCESS_KEY! });
  }

  /** The last lines each role wrote, for a failure message. */
  roleLogs(): string {
    return this.roles.filter((r) => r.name !== 'forwarder').map((r) => `--- ${r.name} ---\n${r.output().slice(-3000)}`).join('\n');
  }

  /** Probes until it gives a value; a probe that throws counts as "not yet" (its message is kept for the failure). */
  async waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let lastError = '';
    for (;;) {
      const value = await probe().catch((err: Error) => { lastError = err.message; return undefined; });
      if (value !== undefined) return value;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastError ? ` (last error: ${lastError})` : ''}\n${this.roleLogs()}`);
      await new Promise((r) => setTimeout(r, this.opts.pollMs));
    }
  }

  /** Ends every role (SIGTERM, SIGKILL after 10 s) and whatever else runs in our namespaces, then removes them and all files. */
  async dispose(): Promise<void> {
    for (const { child } of this.roles.splice(0).reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    // QEMU (daemonized) and dnsmasq outlive the node process: end whatever still runs in our namespaces.
    for (const ns of this.namespaces) {
      for (const pid of await namespacePids(ns)) { try { process.kill(Number(pid), 'SIGKILL'); } catch { /* already gone */ } }
    }
    for (const ns of this.namespaces.splice(0).reverse()) await run('ip', ['netns', 'del', ns]);
    for (const dir of this.nodeDataDirs.splice(0)) await rm(dnsmasqRuntimeDir(join(dir, 'node', 'network')), { recursive: true, force: true });
    if (this.work) await rm(this.work, { recursive: true, force: true });
  }
}
