// Issue 9, items 1 and 2, on real VMs: `ironbark up --driver qemu` in a network namespace of the
// test's own, driven with the AWS SDK by two accounts, and ssh/nc inside the guests (busybox nc
// against the guests' dropbear on port 22; the host reaches the guests from inside the namespace).
// Account A runs `server` and `client`: server's group lets tcp/22 in from client's group only (and
// from the node itself, which stands for the operator's bastion and lets the test into each guest).
// So client reaches server's sshd and not the other way; revoking the rule cuts new connections,
// authorizing it again lets them in, and ModifyInstanceAttribute GroupId moves the client out of the
// group and back. Account B's instance, in the same zone range with a wide-open group, reaches
// neither of A's instances, even when A's group lets everyone in. Every address is inside the
// namespace; everything is removed at the end, also after a failure.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AuthorizeSecurityGroupIngressCommand, CreateKeyPairCommand, CreateSecurityGroupCommand, DescribeImagesCommand, DescribeInstancesCommand,
  ModifyInstanceAttributeCommand, RevokeSecurityGroupIngressCommand, RunInstancesCommand, type EC2Client, type IpPermission,
} from '@aws-sdk/client-ec2';
import { dnsmasqRuntimeDir } from '../../src/node/dhcp.ts';
import { ensureDefaultGuestImage } from '../../src/node/guest-image.ts';
import { multiHostSkipReason, TestHosts } from '../helpers/multi-host.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const REGION = 'ibs-1';
const PORT = 8773;
const GATEWAY = '10.1.0.1'; // the zone bridge's address on the node: where the test's ssh comes from

const hosts = new TestHosts({ prefix: 'ibs', startTimeoutMs: 15 * 60_000, pollMs: 1000 });
const NS = `${hosts.tag}-up`;
const waitFor = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 3 * 60_000) => hosts.waitFor(what, probe, timeoutMs);

const skip = skipUnlessPresent(multiHostSkipReason(['qemu-system-x86_64', 'ssh', 'dnsmasq', 'nft']));

const ssh22 = (cidr: string): IpPermission => ({ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: cidr }] });
const ssh22From = (groupId: string): IpPermission => ({ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, UserIdGroupPairs: [{ GroupId: groupId }] });
const everything: IpPermission = { IpProtocol: '-1', IpRanges: [{ CidrIp: '0.0.0.0/0' }] };

interface Vm { id: string; ip: string; key: string }

describe('security groups and account isolation on real VMs (ironbark up in a network namespace)', { skip, timeout: 20 * 60_000 }, () => {
  let a: EC2Client;
  let b: EC2Client;
  let serverGroup = '';
  let clientGroup = '';
  const vms: Record<'server' | 'client' | 'foreign', Vm> = {} as never;

  /** Runs `command` in a guest over ssh from the node; code 255 is ssh's own failure. */
  function ssh(vm: Vm, command: string): { code: number; out: string } {
    const r = spawnSync('ip', ['netns', 'exec', NS, 'ssh', '-i', vm.key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5', '-o', 'BatchMode=yes', `root@${vm.ip}`, command], { encoding: 'utf8', timeout: 60_000 });
    return { code: r.status ?? 1, out: r.stdout + r.stderr };
  }

  /** Whether `from` gets `to`'s sshd banner on a new connection (busybox nc inside the guest). */
  function reachesSshd(from: Vm, to: Vm): boolean {
    const r = ssh(from, `echo | nc -w 3 ${to.ip} 22 | head -c 64`);
    if (r.code === 255) throw new Error(`cannot ssh into ${from.id}: ${r.out}`);
    return r.out.includes('SSH-2.0');
  }

  function pings(from: Vm, to: Vm): boolean {
    return ssh(from, `ping -c 1 -W 2 ${to.ip} >/dev/null && echo ping-ok`).out.includes('ping-ok');
  }

  async function launch(ec2: EC2Client, imageId: string, keyName: string, key: string, groups?: string[]): Promise<Vm> {
    const ran = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, InstanceType: 'm1.small', KeyName: keyName, SecurityGroupIds: groups }));
    return { id: ran.Instances![0]!.InstanceId!, ip: ran.Instances![0]!.PrivateIpAddress!, key };
  }

  async function keyPair(ec2: EC2Client, name: string): Promise<string> {
    const made = await ec2.send(new CreateKeyPairCommand({ KeyName: name }));
    const path = join(hosts.work, `${name}.pem`);
    await writeFile(path, `${made.KeyMaterial!.trim()}\n`, { mode: 0o600 });
    return path;
  }

  before(async () => {
    // Built (or found in the cache) out here: the namespace has no route to the package mirrors.
    await ensureDefaultGuestImage({ onProgress: (p) => process.stderr.write(`guest image: ${p.step}/${p.total} ${p.message}\n`) });
    await hosts.init('ibs-sg-', [NS]);
    hosts.cloudNs = NS;
    // The node's disk capacity is the size of the file system its data directory is on; a /tmp on
    // tmpfs (half the memory) holds fewer than three m1.small disks of 5 GiB, which are copy-on-write
    // files that stay small here.
    await hosts.startRole('up', NS, ['up', '--data-dir', hosts.cloudDir, '--listen', `127.0.0.1:${PORT}`, '--region', REGION, '--driver', 'qemu',
      '--node-disk', '64'],
      /Ironbark is up/);
    a = await hosts.ec2Client(REGION, PORT);
    const tenant = await hosts.admin('account', 'create', 'tenant-b');
    b = await hosts.ec2Client(REGION, PORT, { accessKeyId: tenant.accessKey.accessKeyId, secretAccessKey: tenant.accessKey.secretAccessKey });

    const imageId = (await a.send(new DescribeImagesCommand({ Filters: [{ Name: 'image-type', Values: ['machine'] }] }))).Images![0]!.ImageId!;
    serverGroup = (await a.send(new CreateSecurityGroupCommand({ GroupName: 'server', Description: 'sshd for clients' }))).GroupId!;
    clientGroup = (await a.send(new CreateSecurityGroupCommand({ GroupName: 'client', Description: 'clients' }))).GroupId!;
    await a.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: serverGroup, IpPermissions: [ssh22From(clientGroup), ssh22(`${GATEWAY}/32`)] }));
    await a.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: clientGroup, IpPermissions: [ssh22(`${GATEWAY}/32`)] }));
    // Account B opens its default group to everything.
    await b.send(new AuthorizeSecurityGroupIngressCommand({ GroupName: 'default', IpPermissions: [everything] }));

    const keyA = await keyPair(a, 'tenant-a');
    const keyB = await keyPair(b, 'tenant-b');
    vms.server = await launch(a, imageId, 'tenant-a', keyA, [serverGroup]);
    vms.client = await launch(a, imageId, 'tenant-a', keyA, [clientGroup]);
    vms.foreign = await launch(b, imageId, 'tenant-b', keyB);
    for (const [name, vm] of Object.entries(vms)) {
      const ec2 = name === 'foreign' ? b : a;
      await waitFor(`${name} ${vm.id} running`, async () => {
        const i = (await ec2.send(new DescribeInstancesCommand({ InstanceIds: [vm.id] }))).Reservations![0]!.Instances![0]!;
        if (i.State!.Name === 'terminated') throw new Error(`${vm.id} terminated: ${i.StateReason?.Message}`);
        return i.State!.Name === 'running' ? true : undefined;
      }, 5 * 60_000);
    }
    for (const [name, vm] of Object.entries(vms)) {
      await waitFor(`ssh into ${name} from the node`, async () => (ssh(vm, 'true').code === 0 ? true : undefined), 5 * 60_000);
    }
  });

  after(async () => {
    await hosts.dispose();
    // The dnsmasq files of `up`'s node live under /run, keyed by its state directory.
    if (hosts.work) await rm(dnsmasqRuntimeDir(join(hosts.cloudDir, 'node', 'network')), { recursive: true, force: true });
  });

  it('puts both accounts in the one zone range, at different addresses', () => {
    for (const vm of Object.values(vms)) assert.match(vm.ip, /^10\.1\.\d+\.\d+$/);
    assert.equal(new Set(Object.values(vms).map((v) => v.ip)).size, 3);
  });

  it('lets the client group reach the server\'s sshd, and not the other way', async () => {
    await waitFor('client → server:22', async () => (reachesSshd(vms.client, vms.server) ? true : undefined));
    assert.equal(reachesSshd(vms.server, vms.client), false, 'client\'s group lets only the node in');
    assert.equal(pings(vms.client, vms.server), false, 'only tcp/22 is open');
  });

  it('cuts new connections when the rule is revoked, and lets them in again when it is back', async () => {
    await a.send(new RevokeSecurityGroupIngressCommand({ GroupId: serverGroup, IpPermissions: [ssh22From(clientGroup)] }));
    await waitFor('client → server:22 refused after the revoke', async () => (reachesSshd(vms.client, vms.server) ? undefined : true));
    await a.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: serverGroup, IpPermissions: [ssh22From(clientGroup)] }));
    await waitFor('client → server:22 again', async () => (reachesSshd(vms.client, vms.server) ? true : undefined));
  });

  it('follows ModifyInstanceAttribute GroupId on the running client', async () => {
    await a.send(new ModifyInstanceAttributeCommand({ InstanceId: vms.client.id, Groups: [serverGroup] }));
    await waitFor('the client, now only in server\'s group, refused', async () => (reachesSshd(vms.client, vms.server) ? undefined : true));
    await a.send(new ModifyInstanceAttributeCommand({ InstanceId: vms.client.id, Groups: [clientGroup] }));
    await waitFor('the client back in its group', async () => (reachesSshd(vms.client, vms.server) ? true : undefined));
  });

  it('keeps the other account out, even when the server lets everyone in', async () => {
    await a.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: serverGroup, IpPermissions: [everything] }));
    // Pings from the client only pass once the open rule is on the node.
    await waitFor('the open rule on the node', async () => (pings(vms.client, vms.server) ? true : undefined));
    assert.equal(reachesSshd(vms.foreign, vms.server), false, 'B cannot reach A\'s server');
    assert.equal(pings(vms.foreign, vms.server), false);
    assert.equal(reachesSshd(vms.server, vms.foreign), false, 'A cannot reach B, whose group is open to all');
    assert.equal(pings(vms.client, vms.foreign), false);
  });
});
