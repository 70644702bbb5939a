// Issue 3's promise end to end, on a real VM: `ironbark up` with the qemu driver inside a network
// namespace of the test's own, driven by the real aws CLI and ssh from inside that namespace.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canUseNetns, TestNetns } from '../helpers/netns.ts';
import { REPO_ROOT } from '../helpers/cloud.ts';
import { readCredentialsEnv } from '../../src/auth/credentials-file.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';
import { awsInNetns } from '../helpers/aws-cli.ts';

const skip = skipUnlessPresent(canUseNetns() ?? (spawnSync('qemu-system-x86_64', ['--version']).status !== 0 ? 'qemu-system-x86_64 (Debian qemu-system-x86)' : undefined));

describe('an instance on a real VM through the aws CLI', { skip, timeout: 20 * 60_000 }, () => {
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
  function ssh(ip: string, command: string): { code: number; out: string } {
    const r = spawnSync('ip', ['netns', 'exec', ns.name, 'ssh', '-i', join(work, 'key.pem'), '-o', 'StrictHostKeyChecking=no',
      '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5', '-o', 'BatchMode=yes', `root@${ip}`, command], { encoding: 'utf8', timeout: 60_000 });
    return { code: r.status ?? 1, out: r.stdout + r.stderr };
  }
  async function waitFor<T>(what: string, fn: () => T | undefined, timeoutMs = 180_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = fn();
      if (v !== undefined && v !== false) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n--- ironbark up output ---\n${upLog.slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  function state(id: string): string {
    return aws('ec2', 'describe-instances', '--instance-ids', id).json?.Reservations?.[0]?.Instances?.[0]?.State?.Name;
  }

  before(async () => {
    ns = new TestNetns('ibt-e2e');
    dataDir = mkdtempSync(join(tmpdir(), 'ironbark-e2e-'));
    work = mkdtempSync(join(tmpdir(), 'ironbark-e2e-work-'));
    up = spawn('ip', ['netns', 'exec', ns.name, join(REPO_ROOT, 'bin/ironbark'), 'up', '--data-dir', dataDir, '--listen', '127.0.0.1:8773', '--driver', 'qemu'], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IRONBARK_LOG_LEVEL: 'info' },
    });
    up.stdout!.on('data', (d) => { upLog += d; });
    up.stderr!.on('data', (d) => { upLog += d; });
    // The first run builds the default guest image, which takes a few minutes.
    await waitFor('ironbark up', () => (up.exitCode !== null ? (() => { throw new Error(`ironbark up exited:\n${upLog}`); })() : upLog.includes('Ironbark is up')), 15 * 60_000);
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

  it('runs, reaches, stops, starts and terminates an instance', async () => {
    const key = ok('ec2', 'create-key-pair', '--key-name', 'e2e', '--query', 'KeyMaterial', '--output', 'text');
    writeFileSync(join(work, 'key.pem'), key.out.trim() + '\n', { mode: 0o600 });
    const images = ok('ec2', 'describe-images', '--filters', 'Name=image-type,Values=machine');
    const amiId = images.json.Images[0].ImageId;
    assert.match(amiId, /^ami-[0-9a-f]{17}$/);
    writeFileSync(join(work, 'user-data.sh'), '#!/bin/sh\necho "user-data-ran-$((6*7))"\n');

    // Security groups are enforced: the default group lets in only its own members, so open ssh as a user would.
    ok('ec2', 'authorize-security-group-ingress', '--group-name', 'default', '--protocol', 'tcp', '--port', '22', '--cidr', '0.0.0.0/0');
    const run = ok('ec2', 'run-instances', '--image-id', amiId, '--instance-type', 'm1.small', '--key-name', 'e2e',
      '--user-data', `file://${join(work, 'user-data.sh')}`, '--tag-specifications', 'ResourceType=instance,Tags=[{Key=Name,Value=e2e}]');
    const instance = run.json.Instances[0];
    const id: string = instance.InstanceId;
    assert.equal(instance.State.Name, 'pending');
    await waitFor('running', () => state(id) === 'running');
    const described = ok('ec2', 'describe-instances', '--filters', 'Name=tag:Name,Values=e2e', 'Name=instance-state-name,Values=running').json;
    const ip: string = described.Reservations[0].Instances[0].PrivateIpAddress;
    assert.match(ip, /^10\.1\.\d+\.\d+$/);

    const consoleText = await waitFor('console output', () => {
      const out = aws('ec2', 'get-console-output', '--instance-id', id, '--output', 'json').json?.Output ?? '';
      return out.includes(`ironbark-guest: instance-id=${id}`) && out.includes('user-data-ran-42') ? out : undefined;
    });
    assert.match(consoleText, /user-data-ran-42/);

    await waitFor('ssh', () => ssh(ip, 'true').code === 0 || undefined);
    assert.equal(ssh(ip, 'echo kept > /root/kept.txt && sync').code, 0);
    assert.match(ssh(ip, 'cat /root/kept.txt').out, /kept/);

    ok('ec2', 'stop-instances', '--instance-ids', id);
    await waitFor('stopped', () => state(id) === 'stopped');
    ok('ec2', 'modify-instance-attribute', '--instance-id', id, '--instance-type', 'Value=c1.medium');
    ok('ec2', 'start-instances', '--instance-ids', id);
    await waitFor('running again', () => state(id) === 'running');
    await waitFor('ssh after start', () => ssh(ip, 'true').code === 0 || undefined);
    assert.match(ssh(ip, 'cat /root/kept.txt').out, /kept/, 'the root disk survives stop and start');
    // The type changed while stopped applies to the new boot: c1.medium has two cores.
    assert.equal(ok('ec2', 'describe-instance-attribute', '--instance-id', id, '--attribute', 'instanceType').json.InstanceType.Value, 'c1.medium');
    assert.equal(ssh(ip, 'nproc').out.trim(), '2');

    ok('ec2', 'terminate-instances', '--instance-ids', id);
    await waitFor('terminated', () => state(id) === 'terminated');
    // Every host-side piece of the instance is gone: its tap, its QEMU process, its disk.
    const links = ns.exec('ip', ['-o', 'link', 'show']);
    assert.doesNotMatch(links, /ibtap-/);
    const qemu = spawnSync('pgrep', ['-f', `qemu-system-x86_64.*${id}`], { encoding: 'utf8' }).stdout.trim();
    assert.equal(qemu, '');
    const leftovers = findFiles(dataDir, (name) => name.includes(id) && /\.(qcow2|img)$/.test(name));
    assert.deepEqual(leftovers, []);
  });

  it('a guest that powers itself off stops, or is terminated when its shutdown behaviour says so', async () => {
    const amiId = ok('ec2', 'describe-images', '--filters', 'Name=image-type,Values=machine').json.Images[0].ImageId;
    // A job this short may power the guest off before the cloud has seen it running: either way ends the same.
    writeFileSync(join(work, 'poweroff.sh'), '#!/bin/sh\necho "powering-off-now"\npoweroff\n');
    const launch = (...extra: string[]) => ok('ec2', 'run-instances', '--image-id', amiId, '--instance-type', 'm1.small',
      '--user-data', `file://${join(work, 'poweroff.sh')}`, ...extra).json.Instances[0].InstanceId as string;
    const stops = launch();
    const terminates = launch('--instance-initiated-shutdown-behavior', 'terminate');
    assert.equal(ok('ec2', 'describe-instance-attribute', '--instance-id', terminates, '--attribute', 'instanceInitiatedShutdownBehavior')
      .json.InstanceInitiatedShutdownBehavior.Value, 'terminate');

    await waitFor('the default behaviour stops', () => state(stops) === 'stopped');
    await waitFor('terminate behaviour terminates', () => state(terminates) === 'terminated');
    const reason = (id: string) => ok('ec2', 'describe-instances', '--instance-ids', id).json.Reservations[0].Instances[0].StateReason?.Code;
    assert.equal(reason(stops), 'Client.InstanceInitiatedShutdown');
    assert.equal(reason(terminates), 'Client.InstanceInitiatedShutdown');
    assert.match(aws('ec2', 'get-console-output', '--instance-id', stops, '--output', 'json').json?.Output ?? '', /powering-off-now/);
    // The terminated one leaves nothing behind; the stopped one keeps its disk for a start.
    await waitFor('the terminated instance\'s disk is gone', () => findFiles(dataDir, (name) => name.includes(terminates) && /\.(qcow2|img)$/.test(name)).length === 0);
    assert.equal(spawnSync('pgrep', ['-f', `qemu-system-x86_64.*${terminates}`], { encoding: 'utf8' }).stdout.trim(), '');
    assert.ok(findFiles(dataDir, (name) => name.includes(stops) && name.endsWith('.qcow2')).length > 0, 'the stopped instance keeps its disk');
    ok('ec2', 'terminate-instances', '--instance-ids', stops);
    await waitFor('terminated', () => state(stops) === 'terminated');
  });

  // Issue 8, item 3: StopInstances waited for the node to shut the guest down (31.6 s for a guest
  // that ignored the ACPI request, past boto3's 30 s read timeout). EC2 answers `stopping` at once.
  it('StopInstances answers stopping at once, whether the guest is still booting or ignores the power-down, and it reaches stopped', async () => {
    const amiId = ok('ec2', 'describe-images', '--filters', 'Name=image-type,Values=machine').json.Images[0].ImageId;
    writeFileSync(join(work, 'deaf.sh'), '#!/bin/sh\nkillall acpid\necho "acpi-ignored-now"\n');
    const launch = (...extra: string[]) => ok('ec2', 'run-instances', '--image-id', amiId, '--instance-type', 'm1.small', ...extra)
      .json.Instances[0].InstanceId as string;
    const deaf = launch('--user-data', `file://${join(work, 'deaf.sh')}`);
    const booting = launch();
    const expected = (id: string) => [{ InstanceId: id, CurrentState: { Code: 64, Name: 'stopping' }, PreviousState: { Code: 16, Name: 'running' } }];

    // Right after the cloud says running, the guest is still booting.
    await waitFor('running', () => state(booting) === 'running');
    assert.deepEqual(ok('ec2', 'stop-instances', '--instance-ids', booting).json.StoppingInstances, expected(booting));

    // A guest that ignores the power-down: the answer comes while its VM still runs, and the node
    // ends the VM after its stop timeout.
    await waitFor('the guest to stop listening to ACPI', () =>
      (aws('ec2', 'get-console-output', '--instance-id', deaf, '--output', 'json').json?.Output ?? '').includes('acpi-ignored-now') || undefined);
    const qemuOf = (id: string) => spawnSync('pgrep', ['-f', `qemu-system-x86_64.*${id}`], { encoding: 'utf8' }).stdout.trim();
    assert.notEqual(qemuOf(deaf), '');
    assert.deepEqual(ok('ec2', 'stop-instances', '--instance-ids', deaf).json.StoppingInstances, expected(deaf));
    assert.notEqual(qemuOf(deaf), '', 'answered before the node ended the VM');
    assert.equal(state(deaf), 'stopping');

    await waitFor('the booting one stopped', () => state(booting) === 'stopped');
    await waitFor('the deaf one stopped', () => state(deaf) === 'stopped');
    assert.equal(qemuOf(deaf), '');
    ok('ec2', 'terminate-instances', '--instance-ids', deaf, booting);
    await waitFor('terminated', () => state(deaf) === 'terminated' && state(booting) === 'terminated');
  });
});

function findFiles(dir: string, match: (name: string) => boolean): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...findFiles(p, match));
    else if (match(e.name)) out.push(p);
  }
  return out;
}
