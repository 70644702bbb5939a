// `ironbark up` (real VMs through the qemu driver) inside a network namespace of the test's own,
// driven from inside it by the real aws CLI and ssh, as a user on that host would. What a test
// only waits on (an instance's state, a console line) is read through the AWS SDK in this process
// instead, over a unix-socket forwarder into the namespace: each aws CLI process costs about a
// second of CPU, which a TCG guest on a two-core machine would lose on every poll.
// `stop` ends everything the test made (the cloud, its VMs, the namespace, the files), also after
// a failed step.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DescribeInstancesCommand, GetConsoleOutputCommand, type EC2Client, type Instance } from '@aws-sdk/client-ec2';
import { readCredentialsEnv } from '../../src/auth/credentials-file.ts';
import { awsInNetns } from './aws-cli.ts';
import { REPO_ROOT } from './cloud.ts';
import { TestNetns } from './netns.ts';
import { ec2ClientOverSocket, forwardPortToSocket } from './netns-ec2-client.ts';

export type AwsEnv = Record<string, string>;
export interface SshResult { code: number; out: string; err: string }

const PORT = 8773;

export interface UpInNamespace {
  ns: TestNetns;
  dataDir: string;
  /** Scratch files of the test (keys, user data); also the aws CLI's HOME. */
  work: string;
  /** The cloud admin's credentials, as the aws CLI takes them. */
  env: AwsEnv;
  log(): string;
  /** The aws CLI inside the namespace, as `as` (default: the admin). */
  aws(as: AwsEnv, ...args: string[]): ReturnType<typeof awsInNetns>;
  /** The same, asserting exit status 0. */
  ok(as: AwsEnv, ...args: string[]): ReturnType<typeof awsInNetns>;
  /** An SDK client in this process (the admin's unless other credentials are given). */
  ec2(as?: AwsEnv): EC2Client;
  /** undefined once the cloud no longer lists it. */
  instance(id: string, as?: AwsEnv): Promise<Instance | undefined>;
  state(id: string, as?: AwsEnv): Promise<string | undefined>;
  /** The decoded console output ('' before there is any). */
  consoleText(id: string, as?: AwsEnv): Promise<string>;
  /** Probes every `pollMs` until it gives a value other than undefined or false; a timeout names `what` and shows the cloud's last lines. */
  waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs: number, pollMs?: number): Promise<T>;
  /** ssh into `target` (user@ip) from inside the namespace with `key`; a connection that did not get through is tried again (`attempts`). */
  ssh(key: string, target: string, command: string, opts?: { timeoutMs?: number; connectTimeoutS?: number; attempts?: number }): SshResult;
  stop(): Promise<void>;
}

/**
 * Starts `ironbark up --listen 127.0.0.1:8773 upArgs…` in a new namespace named `prefix`-…;
 * resolves once it says it is up. `describeFailure` adds to a timed-out wait's message (consoles, say).
 */
export async function startUpInNamespace(opts: {
  prefix: string; upArgs: string[]; startTimeoutMs: number; describeFailure?: () => Promise<string>;
}): Promise<UpInNamespace> {
  const ns = new TestNetns(opts.prefix);
  const dataDir = mkdtempSync(join(tmpdir(), `ironbark-${opts.prefix}-`));
  const work = mkdtempSync(join(tmpdir(), `ironbark-${opts.prefix}-work-`));
  let log = '';
  let up: ChildProcess | undefined;
  let forwarder: ChildProcess | undefined;
  const clients = new Map<string, EC2Client>();
  const endpoint = `http://127.0.0.1:${PORT}`;
  const socket = join(work, 'ec2.sock');
  let env: AwsEnv = {};

  async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs: number, pollMs = 500): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let lastError = '';
    for (;;) {
      const v = await Promise.resolve().then(probe).catch((e: Error) => { lastError = e.message; return undefined; });
      if (v !== undefined && v !== false) return v;
      if (Date.now() > deadline) {
        const more = opts.describeFailure ? await opts.describeFailure().catch((e: Error) => `(no more: ${e.message})`) : '';
        throw new Error(`timed out waiting for ${what}${lastError ? ` (last error: ${lastError})` : ''}\n--- ironbark up output ---\n${log.slice(-3000)}${more}`);
      }
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }

  const self: UpInNamespace = {
    ns, dataDir, work,
    get env() { return env; },
    log: () => log,
    aws: (as, ...args) => awsInNetns(ns.name, endpoint, work, as, args),
    ok(as, ...args) {
      const r = awsInNetns(ns.name, endpoint, work, as, args);
      if (r.code !== 0) throw new Error(`aws ${args.join(' ')} failed (${r.code}): ${r.err}`);
      return r;
    },
    ec2(as = env) {
      const key = as.AWS_ACCESS_KEY_ID!;
      let client = clients.get(key);
      if (!client) {
        client = ec2ClientOverSocket(socket, PORT, env.AWS_DEFAULT_REGION!, { accessKeyId: key, secretAccessKey: as.AWS_SECRET_ACCESS_KEY! });
        clients.set(key, client);
      }
      return client;
    },
    async instance(id, as) {
      try {
        const out = await self.ec2(as).send(new DescribeInstancesCommand({ InstanceIds: [id] }));
        return out.Reservations?.[0]?.Instances?.[0];
      } catch (e) {
        if ((e as Error).name === 'InvalidInstanceID.NotFound') return undefined; // gone from the listing
        throw e;
      }
    },
    async state(id, as) { return (await self.instance(id, as))?.State?.Name; },
    async consoleText(id, as) {
      const out = await self.ec2(as).send(new GetConsoleOutputCommand({ InstanceId: id }));
      return out.Output ? Buffer.from(out.Output, 'base64').toString('utf8') : '';
    },
    waitFor,
    ssh(key, target, command, o = {}) {
      const attempts = o.attempts ?? 1;
      for (let attempt = 1; ; attempt++) {
        const r = spawnSync('ip', ['netns', 'exec', ns.name, 'ssh', '-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
          '-o', 'LogLevel=ERROR', '-o', `ConnectTimeout=${o.connectTimeoutS ?? 5}`, '-o', 'BatchMode=yes', target, command],
        { encoding: 'utf8', timeout: o.timeoutMs ?? 60_000 });
        const result = { code: r.status ?? 1, out: r.stdout ?? '', err: r.stderr ?? '' };
        // A TCG guest on a loaded host can be slow to send its banner: only a connection that did
        // not get through is tried again; the command's own status is the caller's to judge.
        const notConnected = result.code === 255 && /timed out|banner exchange|Connection (reset|refused|closed)/i.test(result.err);
        if (!notConnected || attempt >= attempts) return result;
      }
    },
    async stop() {
      for (const client of clients.values()) client.destroy();
      forwarder?.kill('SIGKILL');
      if (up && up.exitCode === null && up.signalCode === null) {
        const exited = new Promise((r) => up!.once('exit', r));
        up.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
      }
      ns.dispose();
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(work, { recursive: true, force: true });
    },
  };

  try {
    up = spawn('ip', ['netns', 'exec', ns.name, join(REPO_ROOT, 'bin/ironbark'), 'up', '--data-dir', dataDir, '--listen', `127.0.0.1:${PORT}`, ...opts.upArgs], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IRONBARK_LOG_LEVEL: 'info' },
    });
    up.stdout!.on('data', (d) => { log += d; });
    up.stderr!.on('data', (d) => { log += d; });
    // Run alone, `up` may build its guest image first (a few minutes); npm test builds it before.
    const deadline = Date.now() + opts.startTimeoutMs;
    while (!log.includes('Ironbark is up')) {
      if (up.exitCode !== null) throw new Error(`ironbark up exited with ${up.exitCode}:\n${log}`);
      if (Date.now() > deadline) throw new Error(`ironbark up did not come up:\n${log.slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const creds = readCredentialsEnv(dataDir);
    env = { AWS_ACCESS_KEY_ID: creds.AWS_ACCESS_KEY_ID!, AWS_SECRET_ACCESS_KEY: creds.AWS_SECRET_ACCESS_KEY!, AWS_DEFAULT_REGION: creds.AWS_DEFAULT_REGION! };
    forwarder = await forwardPortToSocket(ns.name, PORT, socket);
    return self;
  } catch (e) {
    await self.stop();
    throw e;
  }
}
