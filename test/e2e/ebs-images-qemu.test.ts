// EBS-backed images and launch-time volumes on real VMs (issue 10, item 4): `ironbark up --driver
// qemu` in a network namespace of the test's own, driven with the AWS SDK. One instance of the
// default image is launched with a BlockDeviceMappings volume (DeleteOnTermination false); the
// guest finds the disk by its serial. A file is written in the root and the root's files copied
// onto a new file system on the volume, which is snapshotted (unmounted, after a sync); RegisterImage
// makes an EBS-backed image of the snapshot; a second instance boots from a volume made of it (over
// NBD, RootDeviceType ebs) and finds the file; terminated, its root volume (DeleteOnTermination by
// the image) is deleted. Terminating the first instance leaves its volume available. Two VMs in all;
// the network is the test's own:
// every address is inside the namespace; everything is removed at the end, also after a failure.
//
// Not covered here: CreateImage of an instance with a local (instance-store) root, which this
// cloud refuses as EC2 does; CreateImage of an EBS-rooted instance is covered by the unit test.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AuthorizeSecurityGroupIngressCommand, CreateKeyPairCommand, CreateSnapshotCommand, DescribeImagesCommand, DescribeInstancesCommand,
  DescribeSnapshotsCommand, DescribeVolumesCommand, RegisterImageCommand, RunInstancesCommand, TerminateInstancesCommand, type EC2Client,
  type RunInstancesCommandInput,
} from '@aws-sdk/client-ec2';
import { dnsmasqRuntimeDir } from '../../src/node/dhcp.ts';
import { ensureDefaultGuestImage } from '../../src/node/guest-image.ts';
import { multiHostSkipReason, TestHosts } from '../helpers/multi-host.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const REGION = 'ibe-1';
const PORT = 8773;
const GATEWAY = '10.1.0.1'; // the zone bridge's address on the node: where the test's ssh comes from
/** The default image's root filesystem (rootfs.img): what is copied onto the volume. */

const hosts = new TestHosts({ prefix: 'ibe', startTimeoutMs: 15 * 60_000, pollMs: 1000 });
const NS = `${hosts.tag}-up`;
const waitFor = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 6 * 60_000) => hosts.waitFor(what, probe, timeoutMs);

const skip = skipUnlessPresent(multiHostSkipReason(['qemu-system-x86_64', 'qemu-storage-daemon', 'qemu-img', 'ssh', 'dnsmasq', 'nft']));

interface Vm { id: string; ip: string }

describe('EBS-backed images and launch volumes on real VMs (ironbark up in a network namespace)', { skip, timeout: 40 * 60_000 }, () => {
  let ec2: EC2Client;
  let key = '';
  let first: Vm;
  let kernelId = '';
  let ramdiskId: string | undefined;
  let kept = '';
  let snapshotId = '';
  let imageId = '';
  const marker = `ironbark-ebs-${process.pid}-${Date.now()}`;

  function ssh(vm: Vm, command: string, timeout = 60_000): { code: number; out: string } {
    const r = spawnSync('ip', ['netns', 'exec', NS, 'ssh', '-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5', '-o', 'BatchMode=yes', `root@${vm.ip}`, command], { encoding: 'utf8', timeout });
    return { code: r.status ?? 1, out: (r.stdout ?? '') + (r.stderr ?? '') };
  }

  /** The guest's disk whose serial is the volume id without its dash (e.g. vdb), once the guest sees it. */
  function guestDisk(vm: Vm, volumeId: string): string | undefined {
    const serial = volumeId.replace('-', '');
    const r = ssh(vm, `for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = "${serial}" ] && echo "disk=\${d##*/}"; done; true`);
    return /disk=(vd[a-z]+)/.exec(r.out)?.[1];
  }

  const instance = async (id: string) => (await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }))).Reservations![0]!.Instances![0]!;
  const volumeState = async (id: string) => {
    try {
      return (await ec2.send(new DescribeVolumesCommand({ VolumeIds: [id] }))).Volumes![0]!.State;
    } catch (err) {
      if ((err as { name?: string }).name === 'InvalidVolume.NotFound') return 'gone';
      throw err;
    }
  };

  async function launched(input: Omit<RunInstancesCommandInput, 'MinCount' | 'MaxCount'>): Promise<Vm> {
    const ran = await ec2.send(new RunInstancesCommand({ MinCount: 1, MaxCount: 1, InstanceType: 'm1.small', KeyName: 'ebs', ...input }));
    const vm = { id: ran.Instances![0]!.InstanceId!, ip: ran.Instances![0]!.PrivateIpAddress! };
    await waitFor(`${vm.id} running`, async () => {
      const i = await instance(vm.id);
      if (i.State!.Name === 'terminated') throw new Error(`${vm.id} terminated: ${i.StateReason?.Message}`);
      return i.State!.Name === 'running' ? true : undefined;
    });
    await waitFor(`ssh into ${vm.id}`, async () => (ssh(vm, 'true').code === 0 ? true : undefined));
    return vm;
  }

  before(async () => {
    // Built (or found in the cache) out here: the namespace has no route to the package mirrors.
    await ensureDefaultGuestImage({ onProgress: (p) => process.stderr.write(`guest image: ${p.step}/${p.total} ${p.message}\n`) });
    await hosts.init('ibe-img-', [NS]);
    hosts.cloudNs = NS;
    await hosts.startRole('up', NS, ['up', '--data-dir', hosts.cloudDir, '--listen', `127.0.0.1:${PORT}`, '--region', REGION, '--driver', 'qemu',
      '--node-disk', '64'], /Ironbark is up/);
    ec2 = await hosts.ec2Client(REGION, PORT);
    await ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupName: 'default', IpPermissions: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: `${GATEWAY}/32` }] }] }));
    const made = await ec2.send(new CreateKeyPairCommand({ KeyName: 'ebs' }));
    key = join(hosts.work, 'ebs.pem');
    await writeFile(key, `${made.KeyMaterial!.trim()}\n`, { mode: 0o600 });
  });

  after(async () => {
    await hosts.dispose();
    if (hosts.work) await rm(dnsmasqRuntimeDir(join(hosts.cloudDir, 'node', 'network')), { recursive: true, force: true });
  });

  it('launches with a BlockDeviceMappings volume, which the guest sees as a disk', async () => {
    const image = (await ec2.send(new DescribeImagesCommand({ Filters: [{ Name: 'image-type', Values: ['machine'] }] }))).Images![0]!;
    kernelId = image.KernelId!;
    ramdiskId = image.RamdiskId;
    first = await launched({
      ImageId: image.ImageId!,
      BlockDeviceMappings: [{ DeviceName: '/dev/sdf', Ebs: { VolumeSize: 1, DeleteOnTermination: false } }],
    });
    const mappings = await waitFor('the volume attached', async () => {
      const m = (await instance(first.id)).BlockDeviceMappings ?? [];
      return m.length === 1 && m[0]!.Ebs?.Status === 'attached' ? m : undefined;
    });
    kept = mappings[0]!.Ebs!.VolumeId!;
    assert.deepEqual(mappings.map((m) => [m.DeviceName, m.Ebs?.DeleteOnTermination]), [['/dev/sdf', false]]);
    await waitFor('the guest to see the disk', async () => guestDisk(first, kept));
  });

  it('a file written in the root, copied onto the kept volume, is snapshotted and registered as an EBS image', async () => {
    const disk = guestDisk(first, kept)!;
    // The root's files, not its blocks: the guest grew its root filesystem to the instance's 5 GiB
    // disk at boot (and it is mounted and journalled), so a block copy onto a 1 GiB volume would not
    // mount. A fresh file system with a copy of every directory boots as the image's root does.
    const dirs = 'bin etc home lib lib64 linuxrc root sbin usr var';
    const wrote = ssh(first, [
      `echo '${marker}' > /root/ebs-marker && sync`,
      `busybox mke2fs -q /dev/${disk} && mkdir -p /mnt/ebs && mount -t ext2 /dev/${disk} /mnt/ebs`,
      `for d in ${dirs}; do if [ -e /$d ]; then cp -a /$d /mnt/ebs/ || exit 1; fi; done`,
      'mkdir -p /mnt/ebs/dev /mnt/ebs/mnt /mnt/ebs/proc /mnt/ebs/run /mnt/ebs/sys /mnt/ebs/tmp',
      'umount /mnt/ebs && sync && echo copied',
    ].join(' && '), 10 * 60_000);
    assert.match(wrote.out, /copied/, wrote.out);
    snapshotId = (await ec2.send(new CreateSnapshotCommand({ VolumeId: kept, Description: 'root of an instance' }))).SnapshotId!;
    await waitFor('the snapshot completed', async () => {
      const s = (await ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [snapshotId] }))).Snapshots![0]!;
      if (s.State === 'error') throw new Error(`snapshot ${snapshotId} failed: ${s.StateMessage}`);
      return s.State === 'completed' ? true : undefined;
    });
    imageId = (await ec2.send(new RegisterImageCommand({
      Name: 'ebs-root-of-an-instance', RootDeviceName: '/dev/vda', VirtualizationType: 'paravirtual', KernelId: kernelId,
      ...(ramdiskId ? { RamdiskId: ramdiskId } : {}), BlockDeviceMappings: [{ DeviceName: '/dev/vda', Ebs: { SnapshotId: snapshotId } }],
    }))).ImageId!;
    const image = (await ec2.send(new DescribeImagesCommand({ ImageIds: [imageId] }))).Images![0]!;
    assert.deepEqual([image.State, image.RootDeviceType, image.BlockDeviceMappings?.[0]?.Ebs?.SnapshotId], ['available', 'ebs', snapshotId]);
  });

  it('a new instance boots from a volume made of the image and finds the file', async () => {
    const second = await launched({ ImageId: imageId });
    const described = await instance(second.id);
    assert.equal(described.RootDeviceType, 'ebs');
    const root = described.BlockDeviceMappings!.find((m) => m.DeviceName === '/dev/vda')!;
    assert.equal(root.Ebs?.Status, 'attached');
    assert.equal(ssh(second, 'cat /root/ebs-marker').out.trim(), marker);
    assert.match(ssh(second, 'cat /sys/block/vda/serial').out, new RegExp(root.Ebs!.VolumeId!.replace('-', '')), 'the root disk is the volume');
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [second.id] }));
    await waitFor('its root volume deleted with it', async () => ((await volumeState(root.Ebs!.VolumeId!)) === 'gone' ? true : undefined));
  });

  it('terminating the first instance leaves its volume (not DeleteOnTermination) available', async () => {
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [first.id] }));
    await waitFor('the kept volume available', async () => ((await volumeState(kept)) === 'available' ? true : undefined));
  });
});
