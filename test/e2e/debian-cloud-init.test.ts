// Issue 12 end to end on a real VM: `ironbark up --image debian-12` (qemu driver) inside a network
// namespace of the test's own, driven by the real aws CLI and ssh from inside that namespace. A
// Debian 12 instance launched with a key pair, HttpTokens=required and MIME user data (a
// #cloud-config with write_files, users and runcmd, and a #! script) is configured by cloud-init
// through IMDSv2 alone: ssh as `admin` works, the files and the command's output are there,
// `cloud-init status --long` says done with no errors, an IMDSv1 request from inside is refused,
// the metadata the instance reads matches DescribeInstances, and the console shows cloud-init's
// host key fingerprints. After ModifyInstanceMetadataOptions and a stop and start, the configured
// state is kept, the script has run once, and the new options are in force.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { canUseNetns } from '../helpers/netns.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';
import { startUpInNamespace, type UpInNamespace } from '../helpers/up-in-namespace.ts';

const awsCli = process.env.IRONBARK_AWS_CLI ?? 'aws';
const skip = skipUnlessPresent(canUseNetns()
  ?? (spawnSync('qemu-system-x86_64', ['--version']).status !== 0 ? 'qemu-system-x86_64 (Debian qemu-system-x86)' : undefined)
  ?? (spawnSync(awsCli, ['--version']).status !== 0 ? 'the aws CLI (Debian awscli)' : undefined)
  ?? (spawnSync('sh', ['-c', 'command -v mmdebstrap']).status !== 0 ? 'mmdebstrap (builds the Debian 12 image)' : undefined));

/** Generous bounds: a first boot under TCG on a busy machine takes a few minutes. */
const BOOT_MS = 12 * 60_000;

describe('a Debian 12 instance configured by cloud-init through the EC2 metadata service', { skip, timeout: 45 * 60_000 }, () => {
  let up: UpInNamespace;
  let work = '';
  let env: Record<string, string> = {};
  let id = '';
  let ip = '';

  const aws = (...args: string[]) => up.aws(env, ...args);
  const ok = (...args: string[]) => up.ok(env, ...args);
  // A TCG guest on a loaded host can be slow to send its banner: a connection that did not get
  // through is tried again (the command's own status is what the tests assert, never sshd's speed).
  const ssh = (user: string, command: string, timeoutMs = 60_000) =>
    up.ssh(join(work, 'key.pem'), `${user}@${ip}`, command, { timeoutMs, connectTimeoutS: 20, attempts: 4 });
  function must(user: string, command: string): string {
    const r = ssh(user, command);
    assert.equal(r.code, 0, `ssh ${user}: ${command}\n${r.out}${r.err}`);
    return r.out;
  }
  const consoleText = () => up.consoleText(id);
  const waitFor = <T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs: number) =>
    up.waitFor(what, probe, timeoutMs, 1000);
  const describeInstance = () => ok('ec2', 'describe-instances', '--instance-ids', id).json.Reservations[0];
  const state = () => up.state(id);
  /** cloud-init's own verdict once it has finished this boot (status done or error). */
  async function cloudInitFinished(): Promise<string> {
    return waitFor('cloud-init to finish', () => {
      const r = ssh('admin', 'cloud-init status --long');
      return /status: (done|error|disabled)/.test(r.out) ? r.out : undefined;
    }, BOOT_MS);
  }

  before(async () => {
    // npm test builds the image first; run alone, `up` builds it here (a few minutes).
    up = await startUpInNamespace({
      prefix: 'ibt-deb', upArgs: ['--driver', 'qemu', '--image', 'debian-12'], startTimeoutMs: 25 * 60_000,
      describeFailure: async () => (id ? `\n--- console ---\n${(await consoleText()).slice(-4000)}` : ''),
    });
    work = up.work;
    env = up.env;
  });

  after(async () => { await up?.stop(); });

  it('boots with the key pair for admin, runs the #cloud-config and the script, over IMDSv2 only', async () => {
    const key = ok('ec2', 'create-key-pair', '--key-name', 'deb', '--query', 'KeyMaterial', '--output', 'text');
    writeFileSync(join(work, 'key.pem'), key.out.trim() + '\n', { mode: 0o600 });
    const pub = spawnSync('ssh-keygen', ['-y', '-f', join(work, 'key.pem')], { encoding: 'utf8' }).stdout.trim();
    assert.match(pub, /^ssh-/);
    ok('ec2', 'authorize-security-group-ingress', '--group-name', 'default', '--protocol', 'tcp', '--port', '22', '--cidr', '0.0.0.0/0');
    const images = ok('ec2', 'describe-images', '--filters', 'Name=name,Values=debian-12-*', 'Name=image-type,Values=machine').json.Images;
    assert.equal(images.length, 1, JSON.stringify(images));
    assert.equal(images[0].Public, true);
    const amiId: string = images[0].ImageId;

    // MIME multipart, as cloud-init reads it: a #cloud-config part and a #! script part.
    const userData = [
      'Content-Type: multipart/mixed; boundary="==IRONBARK-E2E=="',
      'MIME-Version: 1.0',
      '',
      '--==IRONBARK-E2E==',
      'Content-Type: text/cloud-config; charset="us-ascii"',
      '',
      '#cloud-config',
      'write_files:',
      '  - path: /etc/ironbark-e2e.txt',
      '    content: |',
      '      written by cloud-init',
      'users:',
      '  - default',
      '  - name: deploy',
      '    shell: /bin/bash',
      '    ssh_authorized_keys:',
      `      - ${pub}`,
      'hostname: ironbark-e2e',
      'runcmd:',
      '  - echo "runcmd-$((6 * 7))" > /var/tmp/runcmd.out',
      '',
      '--==IRONBARK-E2E==',
      'Content-Type: text/x-shellscript; charset="us-ascii"',
      '',
      '#!/bin/sh',
      'echo "script ran" >> /var/tmp/script-runs',
      '',
      '--==IRONBARK-E2E==--',
      '',
    ].join('\n');
    // Sent gzip-compressed, as users fit larger configurations into EC2's 16 KiB: the metadata
    // service hands the bytes back as given and cloud-init gunzips them itself.
    writeFileSync(join(work, 'user-data.mime.gz'), gzipSync(Buffer.from(userData)));

    const run = ok('ec2', 'run-instances', '--image-id', amiId, '--instance-type', 't3.micro', '--key-name', 'deb',
      '--user-data', `fileb://${join(work, 'user-data.mime.gz')}`,
      '--metadata-options', 'HttpTokens=required,HttpPutResponseHopLimit=1,HttpEndpoint=enabled');
    id = run.json.Instances[0].InstanceId;
    assert.equal(run.json.Instances[0].MetadataOptions.HttpTokens, 'required');
    await waitFor('running', async () => (await state()) === 'running', BOOT_MS);
    ip = describeInstance().Instances[0].PrivateIpAddress;

    await waitFor('ssh as admin', () => ssh('admin', 'true', 30_000).code === 0, BOOT_MS);
    const status = await cloudInitFinished();
    assert.match(status, /status: done/, status);
    assert.equal(ssh('admin', 'cloud-init status --long').code, 0, 'cloud-init reports success');
    const result = JSON.parse(must('admin', 'cat /run/cloud-init/result.json')) as { v1: { errors: unknown[]; datasource: string } };
    assert.deepEqual(result.v1.errors, [], 'no cloud-init errors');
    assert.match(result.v1.datasource, /Ec2/);

    assert.equal(must('admin', 'cat /etc/ironbark-e2e.txt').trim(), 'written by cloud-init');
    assert.equal(must('admin', 'cat /var/tmp/runcmd.out').trim(), 'runcmd-42');
    assert.equal(must('admin', 'cat /var/tmp/script-runs').trim(), 'script ran');
    assert.equal(must('deploy', 'id -un').trim(), 'deploy', 'the user from cloud-config logs in with its key');
    assert.equal(must('admin', 'sudo -n id -u').trim(), '0', 'admin has passwordless sudo');
    // cloud-init spoke IMDSv2 (nothing else works with HttpTokens=required) and knew the platform.
    assert.match(must('admin', 'sudo grep -c "Fetching Ec2 IMDSv2 API Token" /var/log/cloud-init.log'), /^[1-9]/m);
    // The root filesystem was grown to the instance's disk (t3.micro: 10 GiB; the image is 2 GiB).
    const rootBytes = Number(must('admin', "df -B1 --output=size / | tail -n 1").trim());
    assert.ok(rootBytes > 8 * 1024 ** 3, `root filesystem grown: ${rootBytes} bytes`);
  });

  it('refuses IMDSv1 from inside, and what the instance reads with a token matches DescribeInstances', async () => {
    const reservation = describeInstance();
    const inst = reservation.Instances[0];
    assert.equal(inst.MetadataOptions.HttpTokens, 'required');
    assert.equal(inst.MetadataOptions.HttpPutResponseHopLimit, 1);
    const imds = [
      'T=$(curl -s -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" http://169.254.169.254/latest/api/token)',
      'echo "v1=$(curl -s -o /dev/null -w "%{http_code}" http://169.254.169.254/latest/meta-data/instance-id)"',
      'for p in instance-id ami-id instance-type local-ipv4 local-hostname mac placement/availability-zone placement/region reservation-id security-groups; do',
      '  echo "$p=$(curl -s -H "X-aws-ec2-metadata-token: $T" http://169.254.169.254/latest/meta-data/$p)"',
      'done',
    ].join('\n');
    const seen = Object.fromEntries(must('admin', imds).trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    assert.equal(seen.v1, '401', 'IMDSv1 is refused');
    assert.equal(seen['instance-id'], inst.InstanceId);
    assert.equal(seen['ami-id'], inst.ImageId);
    assert.equal(seen['instance-type'], inst.InstanceType);
    assert.equal(seen['local-ipv4'], inst.PrivateIpAddress);
    assert.equal(seen['local-hostname'], inst.PrivateDnsName);
    assert.equal(seen.mac, inst.NetworkInterfaces[0].MacAddress);
    assert.equal(seen['placement/availability-zone'], inst.Placement.AvailabilityZone);
    assert.equal(seen['placement/region'], env.AWS_DEFAULT_REGION);
    assert.equal(seen['reservation-id'], reservation.ReservationId);
    assert.deepEqual(seen['security-groups']!.split(' '), inst.SecurityGroups.map((g: { GroupName: string }) => g.GroupName));
    // EC2's host names: ip-10-1-0-5.<region>.compute.internal in the metadata; the cloud-config's
    // `hostname:` is what the instance takes as its own name.
    assert.match(seen['local-hostname']!, /^ip-\d+-\d+-\d+-\d+\./);
    assert.equal(must('admin', 'hostname').trim(), 'ironbark-e2e', 'the hostname from the cloud-config');
  });

  it("shows cloud-init's SSH host key fingerprints on the console", async () => {
    const fingerprint = must('admin', 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub').split(' ')[1]!;
    await waitFor('the fingerprints on the console', async () => (await consoleText()).includes('-----END SSH HOST KEY FINGERPRINTS-----'), 120_000);
    const text: string = ok('ec2', 'get-console-output', '--instance-id', id).json?.Output ?? '';
    assert.match(text, /-----BEGIN SSH HOST KEY FINGERPRINTS-----/);
    assert.ok(text.includes(fingerprint), `console shows ${fingerprint}`);
  });

  it('keeps its configuration across stop and start, runs the script once, and honours changed metadata options', async () => {
    const modified = ok('ec2', 'modify-instance-metadata-options', '--instance-id', id, '--http-tokens', 'optional').json;
    assert.equal(modified.InstanceMetadataOptions.HttpTokens, 'optional');
    assert.equal(must('admin', 'curl -s http://169.254.169.254/latest/meta-data/instance-id'), id, 'IMDSv1 answers once tokens are optional');
    const hostname = must('admin', 'hostname').trim();

    ok('ec2', 'stop-instances', '--instance-ids', id);
    await waitFor('stopped', async () => (await state()) === 'stopped', 5 * 60_000);
    ok('ec2', 'start-instances', '--instance-ids', id);
    await waitFor('running again', async () => (await state()) === 'running', BOOT_MS);
    await waitFor('ssh after start', () => ssh('admin', 'true', 30_000).code === 0, BOOT_MS);
    const status = await cloudInitFinished();
    assert.match(status, /status: done/, status);
    assert.deepEqual((JSON.parse(must('admin', 'cat /run/cloud-init/result.json')) as { v1: { errors: unknown[] } }).v1.errors, []);
    assert.equal(must('admin', 'cat /etc/ironbark-e2e.txt').trim(), 'written by cloud-init');
    assert.equal(must('admin', 'cat /var/tmp/script-runs').trim(), 'script ran', 'the #! script ran once per instance, not per boot');
    assert.equal(must('admin', 'hostname').trim(), hostname);
    assert.equal(must('deploy', 'id -un').trim(), 'deploy');
    assert.equal(must('admin', 'curl -s -o /dev/null -w "%{http_code}" http://169.254.169.254/latest/meta-data/instance-id'), '200');
    assert.equal(describeInstance().Instances[0].MetadataOptions.HttpTokens, 'optional');

    ok('ec2', 'terminate-instances', '--instance-ids', id);
    await waitFor('terminated', async () => { const s = await state(); return s === 'terminated' || s === undefined; }, 5 * 60_000);
  });
});
