// A fault on a real VM (issue 11, item 5): the QEMU process of a running instance is killed
// (SIGKILL, as the OOM killer or a crash would end it). `ironbark up --driver qemu` runs in a
// network namespace of the test's own, driven by the real aws CLI from inside it. The API stays
// honest: the instance is not shown running once its VM is gone but stopped, with EC2's
// Server.InternalError reason, and no VM runs for it; recovery needs no operator: StartInstances
// boots it again from its kept disk, on a new QEMU process, and it runs.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canUseNetns, TestNetns } from '../helpers/netns.ts';
import { REPO_ROOT } from '../helpers/cloud.ts';
import { readCredentialsEnv } from '../../src/auth/credentials-file.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';
import { awsInNetns } from '../helpers/aws-cli.ts';

const skip = skipUnlessPresent(canUseNetns() ?? (spawnSync('qemu-system-x86_64', ['--version']).status !== 0 ? 'qemu-system-x86_64 (Debian qemu-system-x86)' : undefined));
/** Every wait is bounded generously: TCG on a busy two-core machine. */
const WAIT_MS = 300_000;

describe('a QEMU process dying under a running instance', { skip, timeout: 30 * 60_000 }, () => {
  let ns: TestNetns;
  let dataDir: string;
  let work: string;
  let up: ChildProcess;
  let upLog = '';
  let env: Record<string, string>;
  const endpoint = 'http://127.0.0.1:8773';

  const aws = (...args: string[]) => awsInNetns(ns.name, endpoint, work, env, args);
  function ok(...args: string[]) {
    const r = aws(...args);
    assert.equal(r.code, 0, `aws ${args.join(' ')} failed: ${r.err}`);
    return r;
  }
  async function waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs = WAIT_MS): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = fn();
      if (v !== undefined && v !== false) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n--- ironbark up output ---\n${upLog.slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  function instance(id: string): any {
    return aws('ec2', 'describe-instances', '--instance-ids', id).json?.Reservations?.[0]?.Instances?.[0];
  }
  /** Process ids of the QEMU processes in the namespace that run `id`. */
  function qemuPids(id: string): number[] {
    const pids = spawnSync('ip', ['netns', 'pids', ns.name], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean);
    return pids.map(Number).filter((pid) => {
      try {
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        return cmdline.split('\0')[0]!.includes('qemu-system') && cmdline.includes(id);
      } catch {
        return false; // exited meanwhile
      }
    });
  }

  before(async () => {
    ns = new TestNetns('ibt-fq');
    dataDir = mkdtempSync(join(tmpdir(), 'ironbark-faults-qemu-'));
    work = mkdtempSync(join(tmpdir(), 'ironbark-faults-qemu-work-'));
    up = spawn('ip', ['netns', 'exec', ns.name, join(REPO_ROOT, 'bin/ironbark'), 'up', '--data-dir', dataDir, '--listen', '127.0.0.1:8773',
      '--driver', 'qemu', '--node-disk', '64'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IRONBARK_LOG_LEVEL: 'info' } });
    up.stdout!.on('data', (d) => { upLog += d; });
    up.stderr!.on('data', (d) => { upLog += d; });
    // The first run builds the default guest image, which takes a few minutes.
    await waitFor('ironbark up', () => {
      if (up.exitCode !== null) throw new Error(`ironbark up exited:\n${upLog}`);
      return upLog.includes('Ironbark is up');
    }, 15 * 60_000);
    const creds = readCredentialsEnv(dataDir);
    env = { AWS_ACCESS_KEY_ID: creds.AWS_ACCESS_KEY_ID!, AWS_SECRET_ACCESS_KEY: creds.AWS_SECRET_ACCESS_KEY!, AWS_DEFAULT_REGION: creds.AWS_DEFAULT_REGION! };
  });

  after(async () => {
    if (up && up.exitCode === null) {
      up.kill('SIGTERM');
      await Promise.race([new Promise((r) => up.once('exit', r)), new Promise((r) => setTimeout(r, 30_000))]);
    }
    ns?.dispose();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('is reported as a stop with the reason, leaves no VM behind, and StartInstances boots it again', async () => {
    const amiId = ok('ec2', 'describe-images', '--filters', 'Name=image-type,Values=machine').json.Images[0].ImageId;
    const id: string = ok('ec2', 'run-instances', '--image-id', amiId, '--instance-type', 'm1.small').json.Instances[0].InstanceId;
    await waitFor(`${id} running`, () => instance(id)?.State?.Name === 'running');
    const [pid] = await waitFor(`the QEMU process of ${id}`, () => { const p = qemuPids(id); return p.length === 1 ? p : undefined; });

    process.kill(pid!, 'SIGKILL');
    const stopped = await waitFor(`${id} stopped after its VM died`, () => {
      const i = instance(id);
      return i?.State?.Name === 'stopped' ? i : undefined;
    });
    assert.equal(stopped.StateReason.Code, 'Server.InternalError');
    assert.match(stopped.StateReason.Message, /stopped unexpectedly/);
    assert.deepEqual(qemuPids(id), [], 'no VM runs for a stopped instance');
    // A stopped instance has no status checks; asked for all, it is listed as stopped.
    const status = ok('ec2', 'describe-instance-status', '--instance-ids', id, '--include-all-instances').json.InstanceStatuses[0];
    assert.equal(status.InstanceState.Name, 'stopped');
    assert.equal(status.SystemStatus.Status, 'not-applicable');

    ok('ec2', 'start-instances', '--instance-ids', id);
    await waitFor(`${id} running again`, () => instance(id)?.State?.Name === 'running');
    const [again] = await waitFor(`a new QEMU process for ${id}`, () => { const p = qemuPids(id); return p.length === 1 ? p : undefined; });
    assert.notEqual(again, pid);
    const checks = ok('ec2', 'describe-instance-status', '--instance-ids', id).json.InstanceStatuses[0];
    assert.notEqual(checks.SystemStatus.Status, 'impaired');
    ok('ec2', 'terminate-instances', '--instance-ids', id);
    await waitFor(`${id} terminated`, () => instance(id)?.State?.Name === 'terminated');
    assert.deepEqual(qemuPids(id), [], 'no VM is left once it is terminated');
  });
});
