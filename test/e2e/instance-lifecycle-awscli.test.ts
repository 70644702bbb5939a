// Issue 3's promise end to end, on a real VM: `ironbark up` with the qemu driver inside a network
// namespace of the test's own, driven by the real aws CLI and ssh from inside that namespace.
// The same instance then meets a fault (issue 11, item 5): its QEMU process is killed (SIGKILL, as
// the OOM killer or a crash would end it). The API stays honest: the instance is not shown running
// once its VM is gone but stopped, with EC2's Server.InternalError reason, and no VM runs for it;
// recovery needs no operator: StartInstances boots it again from its kept disk, on a new QEMU
// process, and it runs. (One cloud and one boot serve both stories; they used to be two files.)
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { canUseNetns } from '../helpers/netns.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';
import { startUpInNamespace, type UpInNamespace } from '../helpers/up-in-namespace.ts';

const skip = skipUnlessPresent(canUseNetns() ?? (spawnSync('qemu-system-x86_64', ['--version']).status !== 0 ? 'qemu-system-x86_64 (Debian qemu-system-x86)' : undefined));
/** Every wait is bounded generously: TCG on a busy two-core machine. */
const WAIT_MS = 300_000;

describe('an instance on a real VM through the aws CLI', { skip, timeout: 30 * 60_000 }, () => {
  let up: UpInNamespace;
  let dataDir: string;
  let work: string;
  /** The instance of the first test, left running for the fault test. */
  let lifecycleId = '';

  const aws = (...args: string[]) => up.aws(up.env, ...args);
  const ok = (...args: string[]) => up.ok(up.env, ...args);
  const ssh = (ip: string, command: string) => {
    const r = up.ssh(join(work, 'key.pem'), `root@${ip}`, command);
    return { code: r.code, out: r.out + r.err };
  };
  const waitFor = <T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = WAIT_MS) => up.waitFor(what, probe, timeoutMs);
  const state = (id: string) => up.state(id);
  /** Process ids of the QEMU processes in the namespace that run `id`. */
  function qemuPids(id: string): number[] {
    const pids = spawnSync('ip', ['netns', 'pids', up.ns.name], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean);
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
    up = await startUpInNamespace({ prefix: 'ibt-e2e', upArgs: ['--driver', 'qemu', '--node-disk', '64'], startTimeoutMs: 15 * 60_000 });
    ({ dataDir, work } = up);
  });

  after(async () => { await up?.stop(); });

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
    await waitFor('running', async () => (await state(id)) === 'running');
    const described = ok('ec2', 'describe-instances', '--filters', 'Name=tag:Name,Values=e2e', 'Name=instance-state-name,Values=running').json;
    const ip: string = described.Reservations[0].Instances[0].PrivateIpAddress;
    assert.match(ip, /^10\.1\.\d+\.\d+$/);

    await waitFor('console output', async () => {
      const out = await up.consoleText(id);
      return out.includes(`ironbark-guest: instance-id=${id}`) && out.includes('user-data-ran-42');
    });
    const consoleText = aws('ec2', 'get-console-output', '--instance-id', id, '--output', 'json').json?.Output ?? '';
    assert.match(consoleText, /user-data-ran-42/, 'the aws CLI shows the console too');

    await waitFor('ssh', () => ssh(ip, 'true').code === 0 || undefined);
    assert.equal(ssh(ip, 'echo kept > /root/kept.txt && sync').code, 0);
    assert.match(ssh(ip, 'cat /root/kept.txt').out, /kept/);

    ok('ec2', 'stop-instances', '--instance-ids', id);
    await waitFor('stopped', async () => (await state(id)) === 'stopped');
    ok('ec2', 'modify-instance-attribute', '--instance-id', id, '--instance-type', 'Value=c1.medium');
    ok('ec2', 'start-instances', '--instance-ids', id);
    await waitFor('running again', async () => (await state(id)) === 'running');
    await waitFor('ssh after start', () => ssh(ip, 'true').code === 0 || undefined);
    assert.match(ssh(ip, 'cat /root/kept.txt').out, /kept/, 'the root disk survives stop and start');
    // The type changed while stopped applies to the new boot: c1.medium has two cores.
    assert.equal(ok('ec2', 'describe-instance-attribute', '--instance-id', id, '--attribute', 'instanceType').json.InstanceType.Value, 'c1.medium');
    assert.equal(ssh(ip, 'nproc').out.trim(), '2');
    lifecycleId = id;
  });

  it('a QEMU process dying under the running instance: reported as a stop with the reason, no VM left, and StartInstances boots it again', async () => {
    const id = lifecycleId;
    assert.ok(id, 'the instance of the test before runs');
    assert.equal(aws('ec2', 'describe-instances', '--instance-ids', id).json?.Reservations?.[0]?.Instances?.[0]?.State?.Name, 'running');
    const [pid] = await waitFor(`the QEMU process of ${id}`, () => { const p = qemuPids(id); return p.length === 1 ? p : undefined; });

    process.kill(pid!, 'SIGKILL');
    await waitFor(`${id} stopped after its VM died`, async () => (await state(id)) === 'stopped');
    const stopped = ok('ec2', 'describe-instances', '--instance-ids', id).json.Reservations[0].Instances[0];
    assert.equal(stopped.State.Name, 'stopped');
    assert.equal(stopped.StateReason.Code, 'Server.InternalError');
    assert.match(stopped.StateReason.Message, /stopped unexpectedly/);
    assert.deepEqual(qemuPids(id), [], 'no VM runs for a stopped instance');
    // A stopped instance has no status checks; asked for all, it is listed as stopped.
    const status = ok('ec2', 'describe-instance-status', '--instance-ids', id, '--include-all-instances').json.InstanceStatuses[0];
    assert.equal(status.InstanceState.Name, 'stopped');
    assert.equal(status.SystemStatus.Status, 'not-applicable');

    ok('ec2', 'start-instances', '--instance-ids', id);
    await waitFor(`${id} running again`, async () => (await state(id)) === 'running');
    const [again] = await waitFor(`a new QEMU process for ${id}`, () => { const p = qemuPids(id); return p.length === 1 ? p : undefined; });
    assert.notEqual(again, pid);
    const checks = ok('ec2', 'describe-instance-status', '--instance-ids', id).json.InstanceStatuses[0];
    assert.notEqual(checks.SystemStatus.Status, 'impaired');

    ok('ec2', 'terminate-instances', '--instance-ids', id);
    await waitFor('terminated', async () => (await state(id)) === 'terminated');
    assert.equal(aws('ec2', 'describe-instances', '--instance-ids', id).json?.Reservations?.[0]?.Instances?.[0]?.State?.Name, 'terminated');
    // Every host-side piece of the instance is gone: its tap, its QEMU process, its disk.
    const links = up.ns.exec('ip', ['-o', 'link', 'show']);
    assert.doesNotMatch(links, /ibtap-/);
    const qemu = spawnSync('pgrep', ['-f', `qemu-system-x86_64.*${id}`], { encoding: 'utf8' }).stdout.trim();
    assert.equal(qemu, '');
    assert.deepEqual(qemuPids(id), [], 'no VM is left once it is terminated');
    const leftovers = findFiles(dataDir, (name) => name.includes(id) && /\.(qcow2|img)$/.test(name));
    assert.deepEqual(leftovers, []);
  });

  // The two stories below each boot two VMs and mostly wait (for a guest to power itself off, for
  // the node's 30 s stop timeout): they run side by side.
  describe('guests that power off or ignore the power-down', { concurrency: true }, () => {
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

      await waitFor('the default behaviour stops', async () => (await state(stops)) === 'stopped');
      await waitFor('terminate behaviour terminates', async () => (await state(terminates)) === 'terminated');
      const reason = (id: string) => ok('ec2', 'describe-instances', '--instance-ids', id).json.Reservations[0].Instances[0].StateReason?.Code;
      assert.equal(reason(stops), 'Client.InstanceInitiatedShutdown');
      assert.equal(reason(terminates), 'Client.InstanceInitiatedShutdown');
      assert.match(aws('ec2', 'get-console-output', '--instance-id', stops, '--output', 'json').json?.Output ?? '', /powering-off-now/);
      // The terminated one leaves nothing behind; the stopped one keeps its disk for a start.
      await waitFor('the terminated instance\'s disk is gone', () => findFiles(dataDir, (name) => name.includes(terminates) && /\.(qcow2|img)$/.test(name)).length === 0);
      assert.equal(spawnSync('pgrep', ['-f', `qemu-system-x86_64.*${terminates}`], { encoding: 'utf8' }).stdout.trim(), '');
      assert.ok(findFiles(dataDir, (name) => name.includes(stops) && name.endsWith('.qcow2')).length > 0, 'the stopped instance keeps its disk');
      ok('ec2', 'terminate-instances', '--instance-ids', stops);
      await waitFor('terminated', async () => (await state(stops)) === 'terminated');
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
      await waitFor('running', async () => (await state(booting)) === 'running');
      assert.deepEqual(ok('ec2', 'stop-instances', '--instance-ids', booting).json.StoppingInstances, expected(booting));

      // A guest that ignores the power-down: the answer comes while its VM still runs, and the node
      // ends the VM after its stop timeout.
      await waitFor('the guest to stop listening to ACPI', async () => (await up.consoleText(deaf)).includes('acpi-ignored-now'));
      const qemuOf = (id: string) => spawnSync('pgrep', ['-f', `qemu-system-x86_64.*${id}`], { encoding: 'utf8' }).stdout.trim();
      assert.notEqual(qemuOf(deaf), '');
      assert.deepEqual(ok('ec2', 'stop-instances', '--instance-ids', deaf).json.StoppingInstances, expected(deaf));
      assert.notEqual(qemuOf(deaf), '', 'answered before the node ended the VM');
      assert.equal(aws('ec2', 'describe-instances', '--instance-ids', deaf).json.Reservations[0].Instances[0].State.Name, 'stopping');

      await waitFor('the booting one stopped', async () => (await state(booting)) === 'stopped');
      await waitFor('the deaf one stopped', async () => (await state(deaf)) === 'stopped');
      assert.equal(qemuOf(deaf), '');
      ok('ec2', 'terminate-instances', '--instance-ids', deaf, booting);
      await waitFor('terminated', async () => (await state(deaf)) === 'terminated' && (await state(booting)) === 'terminated');
    });
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
