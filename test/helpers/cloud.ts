// Running clouds for integration tests: in-process (fast, for SDK scenarios) or as a real
// `ironbark up` process (for the aws CLI and the start/stop interface).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pino from 'pino';
import { EC2Client } from '@aws-sdk/client-ec2';
import { startCloudController, type RunningCloud } from '../../src/cloud/cloud-controller.ts';
import { ensureZone } from '../../src/cloud/provision.ts';
import { readCredentialsEnv } from '../../src/auth/credentials-file.ts';

export const REPO_ROOT = resolve(import.meta.dirname, '../..');
export const REGION = 'ironbark-1';

export interface TestCloud {
  url: string;
  dataDir: string;
  accessKeyId: string;
  secretAccessKey: string;
  accountId: string;
  cloud?: RunningCloud;
  stop(): Promise<void>;
}

export async function startInProcessCloud(opts: { zones?: { name: string; cidr: string }[]; storeUrl?: string } = {}): Promise<TestCloud> {
  const dataDir = mkdtempSync(join(tmpdir(), 'ironbark-cloud-'));
  const cloud = await startCloudController({
    dataDir, host: '127.0.0.1', port: 0, region: REGION, storeUrl: opts.storeUrl, log: pino({ level: 'silent' }),
  });
  for (const z of opts.zones ?? [{ name: `${REGION}a`, cidr: '10.1.0.0/16' }]) {
    await ensureZone(cloud.store, { ...z, region: REGION });
  }
  return {
    url: cloud.url, dataDir, cloud,
    accessKeyId: cloud.admin.accessKeyId, secretAccessKey: cloud.admin.secretAccessKey, accountId: cloud.admin.accountId,
    async stop() { await cloud.close(); rmSync(dataDir, { recursive: true, force: true }); },
  };
}

/**
 * `bin/ironbark up` as a child process (simulated VMs unless the caller asks otherwise: a real
 * bridge belongs in a test's own network namespace); resolves once it says it is up.
 */
export async function startCloudProcess(extraArgs: string[] = ['--driver', 'fake']): Promise<TestCloud & { process: ChildProcess; output: () => string }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'ironbark-up-'));
  const port = await freePort();
  const child = spawn(join(REPO_ROOT, 'bin/ironbark'), ['up', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IRONBARK_LOG_LEVEL: 'warn' },
  });
  let output = '';
  child.stdout!.on('data', (d) => { output += d; });
  child.stderr!.on('data', (d) => { output += d; });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const deadline = Date.now() + 600_000; // a first run builds the default guest image
  const credFile = join(dataDir, 'credentials.env');
  for (;;) {
    if (child.exitCode !== null) throw new Error(`ironbark up exited with ${child.exitCode}:\n${output}`);
    if (existsSync(credFile) && output.includes('Ironbark is up')) break;
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`ironbark up did not come up:\n${output}`); }
    await new Promise((r) => setTimeout(r, 100));
  }
  const env = readCredentialsEnv(dataDir);
  return {
    url: env.AWS_ENDPOINT_URL_EC2!, dataDir, process: child, output: () => output,
    accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY!, accountId: '',
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs `bin/ironbark up --driver fake` on a free loopback port with its output piped (not a
 * terminal) until `ready` says so, then `body`, then stops it, whatever happened.
 */
export async function withUpProcess<T>(
  dataDir: string,
  ready: (output: string) => boolean,
  body: (output: () => string) => Promise<T>,
  opts: { logLevel?: string } = {},
): Promise<T> {
  const port = await freePort();
  const child = spawn(join(REPO_ROOT, 'bin/ironbark'), ['up', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`, '--driver', 'fake'], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IRONBARK_LOG_LEVEL: opts.logLevel ?? 'warn' },
  });
  let output = '';
  child.stdout!.on('data', (d) => { output += d; });
  child.stderr!.on('data', (d) => { output += d; });
  const exited = new Promise((r) => child.once('exit', r));
  try {
    const deadline = Date.now() + 10 * 60_000; // a first run builds the default guest image
    while (!ready(output)) {
      if (child.exitCode !== null) throw new Error(`ironbark up exited early with ${child.exitCode}:\n${output}`);
      if (Date.now() > deadline) throw new Error(`ironbark up did not come up:\n${output}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return await body(() => output);
  } finally {
    if (child.exitCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
}

export function ec2Client(cloud: { url: string }, creds: { accessKeyId: string; secretAccessKey: string }): EC2Client {
  return new EC2Client({ endpoint: cloud.url, region: REGION, credentials: creds, maxAttempts: 1 });
}

export async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolvePort, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolvePort(port));
    });
    srv.once('error', reject);
  });
}

export function readText(path: string): string { return readFileSync(path, 'utf8'); }
