// EBS volumes on real VMs (issue 10, items 1 and 2): `ironbark up --driver qemu` in a network
// namespace of the test's own, driven with the AWS SDK. A volume is created, attached to a running
// instance (hot-plugged over NBD with the zone's TLS key, from the zone's storage to the VM),
// written from inside the guest, detached by VolumeId alone, attached to a second instance and
// read back there. The guests are the default busybox image; the disk is found by its serial (the
// volume id without its dash) and written raw. Every address is inside the namespace; everything
// is removed at the end, also after a failure.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AttachVolumeCommand, AuthorizeSecurityGroupIngressCommand, CreateKeyPairCommand, CreateVolumeCommand, DeleteVolumeCommand, DescribeImagesCommand, DescribeInstancesCommand,
  DescribeVolumesCommand, DetachVolumeCommand, RunInstancesCommand, type EC2Client,
} from '@aws-sdk/client-ec2';
import { dnsmasqRuntimeDir } from '../../src/node/dhcp.ts';
import { ensureDefaultGuestImage } from '../../src/node/guest-image.ts';
import { multiHostSkipReason, TestHosts } from '../helpers/multi-host.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const REGION = 'ibv-1';
const ZONE = `${REGION}a`;
const PORT = 8773;
const GATEWAY = '10.1.0.1'; // the zone bridge's address on the node: where the test's ssh comes from

const hosts = new TestHosts({ prefix: 'ibv', startTimeoutMs: 15 * 60_000, pollMs: 1000 });
const NS = `${hosts.tag}-up`;
const waitFor = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 5 * 60_000) => hosts.waitFor(what, probe, timeoutMs);

const skip = skipUnlessPresent(multiHostSkipReason(['qemu-system-x86_64', 'qemu-storage-daemon', 'qemu-img', 'ssh', 'dnsmasq', 'nft']));

interface Vm { id: string; ip: string; key: string }

describe('EBS volumes on real VMs (ironbark up in a network namespace)', { skip, timeout: 25 * 60_000 }, () => {
  let ec2: EC2Client;
  const vms: Vm[] = [];
  let volumeId = '';
  const marker = `ironbark-volume-${process.pid}-${Date.now()}`;

  function ssh(vm: Vm, command: string): { code: number; out: string } {
    const r = spawnSync('ip', ['netns', 'exec', NS, 'ssh', '-i', vm.key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5', '-o', 'BatchMode=yes', `root@${vm.ip}`, command], { encoding: 'utf8', timeout: 60_000 });
    return { code: r.status ?? 1, out: r.stdout + r.stderr };
  }

  /** The guest's disk whose serial is the volume's id without its dash (e.g. vdb), once the guest sees it. */
  function guestDisk(vm: Vm): string | undefined {
    const serial = volumeId.replace('-', '');
    const r = ssh(vm, `for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = "${serial}" ] && echo "disk=\${d##*/}"; done; true`);
    return /disk=(vd[a-z]+)/.exec(r.out)?.[1];
  }

  const volume = async () => (await ec2.send(new DescribeVolumesCommand({ VolumeIds: [volumeId] }))).Volumes![0]!;

  before(async () => {
    // Built (or found in the cache) out here: the namespace has no route to the package mirrors.
    await ensureDefaultGuestImage({ onProgress: (p) => process.stderr.write(`guest image: ${p.step}/${p.total} ${p.message}\n`) });
    await hosts.init('ibv-vol-', [NS]);
    hosts.cloudNs = NS;
    await hosts.startRole('up', NS, ['up', '--data-dir', hosts.cloudDir, '--listen', `127.0.0.1:${PORT}`, '--region', REGION, '--driver', 'qemu',
      '--node-disk', '64'], /Ironbark is up/);
    ec2 = await hosts.ec2Client(REGION, PORT);
    const imageId = (await ec2.send(new DescribeImagesCommand({ Filters: [{ Name: 'image-type', Values: ['machine'] }] }))).Images![0]!.ImageId!;
    // Security groups are enforced: the default group lets the node's ssh in.
    await ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupName: 'default', IpPermissions: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: `${GATEWAY}/32` }] }] }));
    const made = await ec2.send(new CreateKeyPairCommand({ KeyName: 'volumes' }));
    const key = join(hosts.work, 'volumes.pem');
    await writeFile(key, `${made.KeyMaterial!.trim()}\n`, { mode: 0o600 });
    const ran = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 2, MaxCount: 2, InstanceType: 'm1.small', KeyName: 'volumes' }));
    for (const i of ran.Instances!) vms.push({ id: i.InstanceId!, ip: i.PrivateIpAddress!, key });
    for (const vm of vms) {
      await waitFor(`${vm.id} running`, async () => {
        const i = (await ec2.send(new DescribeInstancesCommand({ InstanceIds: [vm.id] }))).Reservations![0]!.Instances![0]!;
        if (i.State!.Name === 'terminated') throw new Error(`${vm.id} terminated: ${i.StateReason?.Message}`);
        return i.State!.Name === 'running' ? true : undefined;
      });
    }
    for (const vm of vms) await waitFor(`ssh into ${vm.id}`, async () => (ssh(vm, 'true').code === 0 ? true : undefined));
  });

  after(async () => {
    await hosts.dispose();
    if (hosts.work) await rm(dnsmasqRuntimeDir(join(hosts.cloudDir, 'node', 'network')), { recursive: true, force: true });
  });

  it('creates a volume that becomes available', async () => {
    const created = await ec2.send(new CreateVolumeCommand({ AvailabilityZone: ZONE, Size: 1, VolumeType: 'gp3' }));
    volumeId = created.VolumeId!;
    assert.equal(created.State, 'creating');
    await waitFor('the volume available', async () => ((await volume()).State === 'available' ? true : undefined));
  });

  it('attaches it to a running instance, where the guest sees a new disk and writes to it', async () => {
    const [first] = vms;
    const answer = await ec2.send(new AttachVolumeCommand({ VolumeId: volumeId, InstanceId: first!.id, Device: '/dev/sdf' }));
    assert.equal(answer.State, 'attaching');
    await waitFor('the attachment attached', async () => ((await volume()).Attachments?.[0]?.State === 'attached' ? true : undefined));
    const disk = await waitFor('the guest to see the disk', async () => guestDisk(first!));
    const wrote = ssh(first!, `printf '%s' '${marker}' | dd of=/dev/${disk} bs=512 count=1 conv=sync 2>/dev/null && sync && echo written`);
    assert.match(wrote.out, /written/, wrote.out);
    const mapping = (await ec2.send(new DescribeInstancesCommand({ InstanceIds: [first!.id] }))).Reservations![0]!.Instances![0]!.BlockDeviceMappings!;
    assert.deepEqual(mapping.map((m) => [m.DeviceName, m.Ebs?.VolumeId, m.Ebs?.Status]), [['/dev/sdf', volumeId, 'attached']]);
  });

  it('detaches by VolumeId alone: the disk leaves the guest and the volume is available', async () => {
    const [first] = vms;
    const answer = await ec2.send(new DetachVolumeCommand({ VolumeId: volumeId }));
    assert.equal(answer.State, 'detaching');
    await waitFor('the volume available again', async () => ((await volume()).State === 'available' ? true : undefined));
    assert.equal(guestDisk(first!), undefined, 'the guest no longer has the disk');
  });

  it('attaches it to a second instance, which reads back what the first wrote', async () => {
    const second = vms[1]!;
    await ec2.send(new AttachVolumeCommand({ VolumeId: volumeId, InstanceId: second.id, Device: '/dev/sdg' }));
    await waitFor('the attachment attached', async () => ((await volume()).Attachments?.[0]?.State === 'attached' ? true : undefined));
    const disk = await waitFor('the second guest to see the disk', async () => guestDisk(second));
    const read = ssh(second, `dd if=/dev/${disk} bs=512 count=1 2>/dev/null | head -c ${marker.length}`);
    assert.equal(read.out, marker);
  });

  it('detaches and deletes it', async () => {
    await ec2.send(new DetachVolumeCommand({ VolumeId: volumeId }));
    await waitFor('the volume available again', async () => ((await volume()).State === 'available' ? true : undefined));
    await ec2.send(new DeleteVolumeCommand({ VolumeId: volumeId }));
    await waitFor('the volume gone', async () => {
      try {
        await volume();
        return undefined;
      } catch (err) {
        return (err as { name?: string }).name === 'InvalidVolume.NotFound' ? true : undefined;
      }
    });
  });
});
