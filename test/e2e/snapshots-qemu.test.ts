// EBS snapshots on real VMs (issue 10, item 3): `ironbark up --driver qemu` in a network namespace
// of the test's own, driven with the AWS SDK, one instance. A volume is attached to the running
// instance, the guest makes a file system on it and writes a file; CreateSnapshot is taken while
// the volume is attached and mounted (the zone's storage swaps a new top under the NBD export,
// crash-consistent); the guest then writes a second file and lets the volume go. A volume made
// from the snapshot, larger than it, is attached to the same instance and mounted: it holds the
// first file and not the second. Reuses the helpers of volumes-qemu.test.ts (TestHosts); every address is inside the
// namespace and everything is removed at the end, also after a failure.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AttachVolumeCommand, AuthorizeSecurityGroupIngressCommand, CreateKeyPairCommand, CreateSnapshotCommand, CreateVolumeCommand, DeleteSnapshotCommand,
  DeleteVolumeCommand, DescribeImagesCommand, DescribeInstancesCommand, DescribeSnapshotsCommand, DescribeVolumesCommand, DetachVolumeCommand,
  RunInstancesCommand, type EC2Client,
} from '@aws-sdk/client-ec2';
import { dnsmasqRuntimeDir } from '../../src/node/dhcp.ts';
import { ensureDefaultGuestImage } from '../../src/node/guest-image.ts';
import { multiHostSkipReason, TestHosts } from '../helpers/multi-host.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const REGION = 'ibs-1';
const ZONE = `${REGION}a`;
const PORT = 8773;
const GATEWAY = '10.1.0.1'; // the zone bridge's address on the node: where the test's ssh comes from

const hosts = new TestHosts({ prefix: 'ibs', startTimeoutMs: 15 * 60_000, pollMs: 1000 });
const NS = `${hosts.tag}-up`;
const waitFor = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 5 * 60_000) => hosts.waitFor(what, probe, timeoutMs);

const skip = skipUnlessPresent(multiHostSkipReason(['qemu-system-x86_64', 'qemu-storage-daemon', 'qemu-img', 'ssh', 'dnsmasq', 'nft']));

interface Vm { id: string; ip: string; key: string }

describe('EBS snapshots on real VMs (ironbark up in a network namespace)', { skip, timeout: 25 * 60_000 }, () => {
  let ec2: EC2Client;
  let vm: Vm;
  let source = '';
  let snapshotId = '';
  let restored = '';
  const marker = `ironbark-snapshot-${process.pid}-${Date.now()}`;

  function ssh(command: string): { code: number; out: string } {
    const r = spawnSync('ip', ['netns', 'exec', NS, 'ssh', '-i', vm.key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5', '-o', 'BatchMode=yes', `root@${vm.ip}`, command], { encoding: 'utf8', timeout: 120_000 });
    return { code: r.status ?? 1, out: r.stdout + r.stderr };
  }

  /** The guest's disk whose serial is the volume's id without its dash (e.g. vdb), once the guest sees it. */
  function guestDisk(volumeId: string): string | undefined {
    const serial = volumeId.replace('-', '');
    const r = ssh(`for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = "${serial}" ] && echo "disk=\${d##*/}"; done; true`);
    return /disk=(vd[a-z]+)/.exec(r.out)?.[1];
  }

  const volume = async (id: string) => (await ec2.send(new DescribeVolumesCommand({ VolumeIds: [id] }))).Volumes![0]!;
  const attached = async (id: string, device: string) => {
    await ec2.send(new AttachVolumeCommand({ VolumeId: id, InstanceId: vm.id, Device: device }));
    await waitFor(`${id} attached`, async () => ((await volume(id)).Attachments?.[0]?.State === 'attached' ? true : undefined));
    try {
      return await waitFor(`the guest to see ${id}`, async () => guestDisk(id));
    } catch (err) {
      // What the guest has instead, for the report.
      throw new Error(`${(err as Error).message}\n--- guest ---\n${ssh('ls /sys/block; for d in /sys/block/vd*; do echo $d $(cat $d/serial); done; dmesg | tail -25').out}`);
    }
  };

  before(async () => {
    await ensureDefaultGuestImage({ onProgress: (p) => process.stderr.write(`guest image: ${p.step}/${p.total} ${p.message}\n`) });
    await hosts.init('ibs-snap-', [NS]);
    hosts.cloudNs = NS;
    await hosts.startRole('up', NS, ['up', '--data-dir', hosts.cloudDir, '--listen', `127.0.0.1:${PORT}`, '--region', REGION, '--driver', 'qemu',
      '--node-disk', '64'], /Ironbark is up/);
    ec2 = await hosts.ec2Client(REGION, PORT);
    const imageId = (await ec2.send(new DescribeImagesCommand({ Filters: [{ Name: 'image-type', Values: ['machine'] }] }))).Images![0]!.ImageId!;
    await ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupName: 'default', IpPermissions: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: `${GATEWAY}/32` }] }] }));
    const made = await ec2.send(new CreateKeyPairCommand({ KeyName: 'snapshots' }));
    const key = join(hosts.work, 'snapshots.pem');
    await writeFile(key, `${made.KeyMaterial!.trim()}\n`, { mode: 0o600 });
    const ran = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, InstanceType: 'm1.small', KeyName: 'snapshots' }));
    const i = ran.Instances![0]!;
    vm = { id: i.InstanceId!, ip: i.PrivateIpAddress!, key };
    await waitFor(`${vm.id} running`, async () => {
      const now = (await ec2.send(new DescribeInstancesCommand({ InstanceIds: [vm.id] }))).Reservations![0]!.Instances![0]!;
      if (now.State!.Name === 'terminated') throw new Error(`${vm.id} terminated: ${now.StateReason?.Message}`);
      return now.State!.Name === 'running' ? true : undefined;
    });
    await waitFor(`ssh into ${vm.id}`, async () => (ssh('true').code === 0 ? true : undefined));
  });

  after(async () => {
    await hosts.dispose();
    if (hosts.work) await rm(dnsmasqRuntimeDir(join(hosts.cloudDir, 'node', 'network')), { recursive: true, force: true });
  });

  it('a volume attached to the running instance gets a file system and a file', async () => {
    source = (await ec2.send(new CreateVolumeCommand({ AvailabilityZone: ZONE, Size: 1 }))).VolumeId!;
    await waitFor('the volume available', async () => ((await volume(source)).State === 'available' ? true : undefined));
    const disk = await attached(source, '/dev/sdf');
    const r = ssh(`busybox mke2fs -q /dev/${disk} && mkdir -p /mnt/src && mount -t ext2 /dev/${disk} /mnt/src && echo '${marker}' > /mnt/src/before.txt && sync && echo made`);
    assert.match(r.out, /made/, r.out);
  });

  it('CreateSnapshot while it is attached and mounted completes; a file written after is not in it', async () => {
    const answer = await ec2.send(new CreateSnapshotCommand({ VolumeId: source, Description: 'while mounted' }));
    snapshotId = answer.SnapshotId!;
    assert.equal(answer.State, 'pending');
    const done = await waitFor('the snapshot completed', async () => {
      const s = (await ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [snapshotId] }))).Snapshots![0]!;
      if (s.State === 'error') throw new Error(`snapshot failed: ${s.StateMessage}`);
      return s.State === 'completed' ? s : undefined;
    });
    assert.deepEqual([done.Progress, done.VolumeId, done.VolumeSize], ['100%', source, 1]);
    const r = ssh(`echo later > /mnt/src/after.txt && sync && cat /mnt/src/before.txt`);
    assert.equal(r.out.trim(), marker, 'the source volume keeps working after the snapshot');
    // One hot-plugged disk at a time in this guest: the source leaves before the copy comes.
    assert.equal(ssh('umount /mnt/src && echo unmounted').out.trim(), 'unmounted');
    await ec2.send(new DetachVolumeCommand({ VolumeId: source }));
    await waitFor('the source volume available again', async () => ((await volume(source)).State === 'available' ? true : undefined));
  });

  it('a larger volume made from the snapshot, attached to the same instance, holds the data of the moment it was taken', async () => {
    restored = (await ec2.send(new CreateVolumeCommand({ AvailabilityZone: ZONE, SnapshotId: snapshotId, Size: 2 }))).VolumeId!;
    await waitFor('the restored volume available', async () => ((await volume(restored)).State === 'available' ? true : undefined));
    assert.deepEqual([(await volume(restored)).SnapshotId, (await volume(restored)).Size], [snapshotId, 2]);
    const disk = await attached(restored, '/dev/sdf');
    const r = ssh(`mkdir -p /mnt/copy && mount -t ext2 -o ro /dev/${disk} /mnt/copy && cat /mnt/copy/before.txt && ls /mnt/copy`);
    assert.ok(r.out.includes(marker), r.out);
    assert.ok(!r.out.includes('after.txt'), `the file written after the snapshot is not there: ${r.out}`);
    assert.ok(ssh(`blockdev --getsize64 /dev/${disk} 2>/dev/null || cat /sys/block/${disk}/size`).out.trim() !== '', 'the guest sees the disk size');
  });

  it('detaches it, deletes the snapshot (the volume made from it keeps working until deleted) and the volumes', async () => {
    assert.equal(ssh('umount /mnt/copy && echo unmounted').out.trim(), 'unmounted');
    await ec2.send(new DeleteSnapshotCommand({ SnapshotId: snapshotId }));
    await ec2.send(new DetachVolumeCommand({ VolumeId: restored }));
    await waitFor('the restored volume available again', async () => ((await volume(restored)).State === 'available' ? true : undefined));
    for (const id of [restored, source]) await ec2.send(new DeleteVolumeCommand({ VolumeId: id }));
    await waitFor('the volumes gone', async () => {
      const left = (await ec2.send(new DescribeVolumesCommand({}))).Volumes!.filter((v) => v.VolumeId === source || v.VolumeId === restored);
      return left.length === 0 ? true : undefined;
    });
    assert.deepEqual((await ec2.send(new DescribeSnapshotsCommand({ OwnerIds: ['self'] }))).Snapshots, []);
  });
});
