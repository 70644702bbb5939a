// Bring your own image on real VMs (issue 10, items 4 and 5): `ironbark up` (qemu driver) in a
// network namespace of the test's own; the operator imports two whole disks that carry their own
// boot loader with `ironbark admin image import` — one booting through SeaBIOS and SYSLINUX
// (legacy-bios), one through OVMF and systemd-boot (uefi) — and an oversized one is refused by the
// same command. The BIOS image, private to the cloud's account, is shared with a second account
// (aws ec2 modify-image-attribute), which launches it and logs in over SSH: the kernel command line
// is the disk's own boot loader's, not one the cloud gave. A third account is refused the image.
// The UEFI image boots for its owner and prints the guest's console lines.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { canUseNetns } from '../helpers/netns.ts';
import { REPO_ROOT } from '../helpers/cloud.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';
import { bootableDiskPrerequisite, ensureBootableDisk } from '../helpers/bootable-disk.ts';
import { startUpInNamespace, type UpInNamespace } from '../helpers/up-in-namespace.ts';
import { OVMF_CODE } from '../../src/node/hypervisor/uefi-firmware.ts';

const awsCli = process.env.IRONBARK_AWS_CLI ?? 'aws';
const skip = skipUnlessPresent(canUseNetns()
  ?? (spawnSync('qemu-system-x86_64', ['--version']).status !== 0 ? 'qemu-system-x86_64 (Debian qemu-system-x86)' : undefined)
  ?? (spawnSync(awsCli, ['--version']).status !== 0 ? 'the aws CLI (Debian awscli)' : undefined)
  ?? (spawnSync('test', ['-r', OVMF_CODE]).status !== 0 ? `${OVMF_CODE} (Debian ovmf)` : undefined)
  ?? bootableDiskPrerequisite());

/** Generous bounds: boots under TCG on a loaded machine. */
const BOOT_MS = 5 * 60_000;
/** Each step waits on several boots; above the runner's default of 10 minutes on a loaded host. */
const IT_TIMEOUT_MS = 20 * 60_000;

type Env = Record<string, string>;

describe('imported images with their own boot loader, shared between accounts, on real VMs', { skip, timeout: 60 * 60_000 }, () => {
  let up: UpInNamespace;
  let dataDir = '';
  let work = '';
  let owner: Env = {};
  let biosDisk = '';
  let uefiDisk = '';
  let biosImage = '';
  let uefiImage = '';
  const consoles = new Map<string, Env>();

  const aws = (env: Env, ...args: string[]) => up.aws(env, ...args);
  const ok = (env: Env, ...args: string[]) => up.ok(env, ...args);
  function ironbark(...args: string[]) {
    const r = spawnSync('ip', ['netns', 'exec', up.ns.name, join(REPO_ROOT, 'bin/ironbark'), 'admin', '--data-dir', dataDir, ...args], {
      encoding: 'utf8', timeout: 5 * 60_000,
    });
    return { code: r.status ?? 1, out: r.stdout ?? '', err: r.stderr ?? '' };
  }
  const consoleOf = (env: Env, id: string) => up.consoleText(id, env);
  const waitFor = <T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = BOOT_MS) =>
    up.waitFor(what, probe, timeoutMs, 1000);
  const stateOf = (env: Env, id: string) => up.state(id, env);
  function newAccount(name: string): Env {
    const r = ironbark('--json', 'account', 'create', name);
    assert.equal(r.code, 0, `account create ${name}: ${r.err}`);
    const key = JSON.parse(r.out).accessKey;
    return { AWS_ACCESS_KEY_ID: key.accessKeyId, AWS_SECRET_ACCESS_KEY: key.secretAccessKey, AWS_DEFAULT_REGION: owner.AWS_DEFAULT_REGION! };
  }
  function launch(env: Env, imageId: string, extra: string[] = []): string {
    const id: string = ok(env, 'ec2', 'run-instances', '--image-id', imageId, '--instance-type', 'm1.small', ...extra).json.Instances[0].InstanceId;
    consoles.set(id, env);
    return id;
  }

  before(async () => {
    // Made (or found cached) before the cloud starts, so their build does not compete with it.
    biosDisk = await ensureBootableDisk('legacy-bios');
    uefiDisk = await ensureBootableDisk('uefi');
    up = await startUpInNamespace({
      prefix: 'ibt-img', upArgs: ['--driver', 'qemu', '--node-disk', '64'], startTimeoutMs: 15 * 60_000,
      describeFailure: async () => {
        let tails = '';
        for (const [id, env] of consoles) tails += `\n--- console of ${id} ---\n${(await consoleOf(env, id).catch(() => '')).slice(-3000)}`;
        return tails;
      },
    });
    ({ dataDir, work } = up);
    owner = up.env;
  });

  after(async () => { await up?.stop(); });

  it('imports both disks with progress, and refuses an oversized one leaving nothing behind', { timeout: IT_TIMEOUT_MS }, () => {
    const bios = ironbark('image', 'import', biosDisk, '--name', 'byo-bios', '--description', 'SYSLINUX disk');
    assert.equal(bios.code, 0, bios.err);
    assert.match(bios.err, /copying \d+%/);
    biosImage = bios.out.trim();
    assert.match(biosImage, /^ami-[0-9a-f]{17}$/);
    const uefi = ironbark('image', 'import', uefiDisk, '--name', 'byo-uefi', '--boot-mode', 'uefi');
    assert.equal(uefi.code, 0, uefi.err);
    uefiImage = uefi.out.trim();
    const images = ok(owner, 'ec2', 'describe-images', '--owners', 'self', '--filters', 'Name=name,Values=byo-*').json.Images;
    assert.deepEqual(images.map((i: any) => [i.Name, i.BootMode, i.VirtualizationType, i.Public]).sort(),
      [['byo-bios', 'legacy-bios', 'hvm', false], ['byo-uefi', 'uefi', 'hvm', false]]);

    const huge = join(work, 'huge.qcow2');
    assert.equal(spawnSync('qemu-img', ['create', '-f', 'qcow2', huge, '2T']).status, 0);
    const refused = ironbark('image', 'import', huge, '--name', 'huge');
    assert.equal(refused.code, 1);
    assert.match(refused.err, /over the import limit of 64 GiB/);
    const listed = JSON.parse(ironbark('--json', 'image', 'list').out).images;
    assert.ok(!listed.some((i: any) => i.name === 'huge'));
    const files = spawnSync('ls', ['-A', join(dataDir, 'imported-images')], { encoding: 'utf8' }).stdout.trim().split('\n').sort();
    assert.equal(files.length, 2, `only the two imported images' files: ${files.join(' ')}`);
  });

  it('shared with a second account, the BIOS image boots there from its own boot loader; a third account is refused', { timeout: IT_TIMEOUT_MS }, async () => {
    const second = newAccount('second');
    const third = newAccount('third');
    const secondId: string = ok(second, 'sts', 'get-caller-identity').json.Account;
    assert.match(aws(second, 'ec2', 'run-instances', '--image-id', biosImage, '--instance-type', 'm1.small').err, /InvalidAMIID\.NotFound/, 'not shared yet');
    ok(owner, 'ec2', 'modify-image-attribute', '--image-id', biosImage, '--launch-permission', `Add=[{UserId=${secondId}}]`);
    const perms = ok(owner, 'ec2', 'describe-image-attribute', '--image-id', biosImage, '--attribute', 'launchPermission').json.LaunchPermissions;
    assert.deepEqual(perms, [{ UserId: secondId }]);
    assert.deepEqual(ok(second, 'ec2', 'describe-images', '--executable-users', 'self').json.Images.map((i: any) => i.ImageId), [biosImage]);

    const refused = aws(third, 'ec2', 'run-instances', '--image-id', biosImage, '--instance-type', 'm1.small');
    assert.notEqual(refused.code, 0);
    assert.match(refused.err, /InvalidAMIID\.NotFound/);

    const key = ok(second, 'ec2', 'create-key-pair', '--key-name', 'byo', '--query', 'KeyMaterial', '--output', 'text');
    writeFileSync(join(work, 'key.pem'), key.out.trim() + '\n', { mode: 0o600 });
    ok(second, 'ec2', 'authorize-security-group-ingress', '--group-name', 'default', '--protocol', 'tcp', '--port', '22', '--cidr', '0.0.0.0/0');
    const id = launch(second, biosImage, ['--key-name', 'byo']);
    const inst = ok(second, 'ec2', 'describe-instances', '--instance-ids', id).json.Reservations[0].Instances[0];
    assert.equal(inst.KernelId, undefined, 'no kernel of the cloud');
    await waitFor(`${id} running`, async () => (await stateOf(second, id)) === 'running');
    await waitFor(`${id}'s guest on its console`, async () => (await consoleOf(second, id)).includes(`ironbark-guest: instance-id=${id}`));
    const ip: string = ok(second, 'ec2', 'describe-instances', '--instance-ids', id).json.Reservations[0].Instances[0].PrivateIpAddress;
    const ssh = (command: string) => up.ssh(join(work, 'key.pem'), `root@${ip}`, command);
    const cmdline = await waitFor('ssh into the shared image', () => {
      const r = ssh('cat /proc/cmdline');
      return r.code === 0 ? r.out : undefined;
    });
    assert.match(cmdline, /root=\/dev\/vda2/, 'booted with the command line of the disk\'s own SYSLINUX');
    assert.equal(ssh('if [ -d /sys/firmware/efi ]; then echo uefi; else echo bios; fi').out.trim(), 'bios', 'started by SeaBIOS, not UEFI');

    // Deregistering leaves the running instance alone; nobody can launch the image any more.
    ok(owner, 'ec2', 'deregister-image', '--image-id', biosImage);
    assert.match(aws(second, 'ec2', 'run-instances', '--image-id', biosImage, '--instance-type', 'm1.small').err, /InvalidAMIID\.NotFound/);
    assert.equal(aws(second, 'ec2', 'describe-instances', '--instance-ids', id).json.Reservations[0].Instances[0].State.Name, 'running');
    assert.equal(ssh('true').code, 0, 'the instance still answers');
    ok(second, 'ec2', 'terminate-instances', '--instance-ids', id);
  });

  it('the UEFI image boots through OVMF for its owner', { timeout: IT_TIMEOUT_MS }, async () => {
    const id = launch(owner, uefiImage);
    await waitFor(`${id} running`, async () => (await stateOf(owner, id)) === 'running');
    await waitFor(`${id}'s guest on its console`, async () => (await consoleOf(owner, id)).includes(`ironbark-guest: instance-id=${id}`));
    const text: string = ok(owner, 'ec2', 'get-console-output', '--instance-id', id).json?.Output ?? '';
    assert.ok(text.includes(`ironbark-guest: instance-id=${id}`), 'the aws CLI shows the console');
    assert.match(text, /efi: EFI v2/, 'the kernel was started by UEFI firmware');
    assert.match(text, /Command line: .*root=\/dev\/vda2/, 'with systemd-boot\'s entry');
    ok(owner, 'ec2', 'terminate-instances', '--instance-ids', id);
  });
});
