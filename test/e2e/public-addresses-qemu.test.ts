// Issue 9, item 4, on a real VM: `ironbark up --driver qemu --public-range` in a network namespace
// of the test's own that plays the node, and a second namespace that plays the outside: linked to
// the node, with the zone's public range routed to it (as an operator routes it) and a service that
// answers each connection with the address it came from. Driven with the AWS SDK. The instance
// launches into the default subnet (MapPublicIpOnLaunch) and gets a public address; an elastic IP
// associated with it then reaches its sshd from the outside, its outbound connections arrive
// outside with the elastic IP, its metadata says so, and disassociating stops the elastic IP
// answering (the instance is back on a launch-time address); a stop gives that address back (the
// next AllocateAddress takes it) and the start brings a new one that answers. Every address is inside the
// namespaces; everything is removed at the end, also after a failure.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AllocateAddressCommand, AssociateAddressCommand, AuthorizeSecurityGroupIngressCommand, CreateKeyPairCommand, DescribeImagesCommand,
  DescribeInstancesCommand, DisassociateAddressCommand, RunInstancesCommand, StartInstancesCommand, StopInstancesCommand, type EC2Client, type Instance,
} from '@aws-sdk/client-ec2';
import { dnsmasqRuntimeDir } from '../../src/node/dhcp.ts';
import { ensureDefaultGuestImage } from '../../src/node/guest-image.ts';
import { multiHostSkipReason, TestHosts } from '../helpers/multi-host.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const REGION = 'ibp-1';
const PORT = 8773;
const PUBLIC_RANGE = '198.51.100.0/28';
const NODE_UPLINK = '192.0.2.1';
const OUTSIDE = '192.0.2.2';

const hosts = new TestHosts({ prefix: 'ibp', startTimeoutMs: 15 * 60_000, pollMs: 1000 });
const NODE = `${hosts.tag}-up`;
const OUT = `${hosts.tag}-out`;
const waitFor = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 5 * 60_000) => hosts.waitFor(what, probe, timeoutMs);

const skip = skipUnlessPresent(multiHostSkipReason(['qemu-system-x86_64', 'ssh', 'dnsmasq', 'nft', 'busybox']));

describe('elastic IPs and public addresses on a real VM (ironbark up and an outside in network namespaces)', { skip, timeout: 40 * 60_000 }, () => {
  let ec2: EC2Client;
  let instanceId = '';
  let privateIp = '';
  let key = '';
  let eip = { PublicIp: '', AllocationId: '' };
  let associationId = '';

  /** Runs `command` in the guest over ssh from the node (its private address); code 255 is ssh's own failure. */
  function ssh(command: string): { code: number; out: string } {
    const r = spawnSync('ip', ['netns', 'exec', NODE, 'ssh', '-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5', '-o', 'BatchMode=yes', `root@${privateIp}`, command], { encoding: 'utf8', timeout: 60_000 });
    return { code: r.status ?? 1, out: r.stdout + r.stderr };
  }

  /** What the outside reads from `ip`:22 on a new connection (the sshd banner when it reaches the instance). */
  function bannerFromOutside(ip: string): string {
    return spawnSync('ip', ['netns', 'exec', OUT, 'busybox', 'nc', '-w', '3', ip, '22'], { encoding: 'utf8', input: '', timeout: 15_000 }).stdout;
  }

  /** The address the outside service saw the guest's connection come from. */
  function outboundAddress(): string {
    const r = ssh(`echo | nc -w 3 ${OUTSIDE} 80`);
    if (r.code === 255) throw new Error(`cannot ssh into ${instanceId}: ${r.out}`);
    return r.out.trim();
  }

  async function describe(): Promise<Instance> {
    return (await ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }))).Reservations![0]!.Instances![0]!;
  }

  before(async () => {
    // Built (or found in the cache) out here: the namespaces have no route to the package mirrors.
    await ensureDefaultGuestImage({ onProgress: (p) => process.stderr.write(`guest image: ${p.step}/${p.total} ${p.message}\n`) });
    await hosts.init('ibp-pub-', [NODE, OUT]);
    hosts.cloudNs = NODE;
    // (The pair is made in the root namespace before it moves: its names are the test's own.)
    await hosts.link({ ns: NODE, dev: `${hosts.tag}u`, addr: `${NODE_UPLINK}/24` }, { ns: OUT, dev: `${hosts.tag}o`, addr: `${OUTSIDE}/24` });
    // The outside knows only that the public range is behind the node; the node's way out is the outside.
    spawnSync('ip', ['-n', OUT, 'route', 'add', PUBLIC_RANGE, 'via', NODE_UPLINK], { stdio: 'inherit' });
    spawnSync('ip', ['-n', NODE, 'route', 'add', 'default', 'via', OUTSIDE], { stdio: 'inherit' });
    // The outside's service answers with the address each connection came from.
    const service = spawn('ip', ['netns', 'exec', OUT, process.execPath, '-e',
      "require('net').createServer((s) => s.end(s.remoteAddress + '\\n')).listen(80, '0.0.0.0')"], { stdio: 'ignore' });
    hosts.roles.push({ name: 'outside service', child: service, output: () => '' });

    await hosts.startRole('up', NODE, ['up', '--data-dir', hosts.cloudDir, '--listen', `127.0.0.1:${PORT}`, '--region', REGION, '--driver', 'qemu',
      '--node-disk', '64', '--public-range', PUBLIC_RANGE], /Ironbark is up/);
    ec2 = await hosts.ec2Client(REGION, PORT);

    const imageId = (await ec2.send(new DescribeImagesCommand({ Filters: [{ Name: 'image-type', Values: ['machine'] }] }))).Images![0]!.ImageId!;
    await ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupName: 'default', IpPermissions: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }] }));
    const made = await ec2.send(new CreateKeyPairCommand({ KeyName: 'pub' }));
    key = join(hosts.work, 'pub.pem');
    await writeFile(key, `${made.KeyMaterial!.trim()}\n`, { mode: 0o600 });
    const ran = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, InstanceType: 'm1.small', KeyName: 'pub' }));
    instanceId = ran.Instances![0]!.InstanceId!;
    privateIp = ran.Instances![0]!.PrivateIpAddress!;
    await waitFor(`${instanceId} running`, async () => {
      const i = await describe();
      if (i.State!.Name === 'terminated') throw new Error(`${instanceId} terminated: ${i.StateReason?.Message}`);
      return i.State!.Name === 'running' ? true : undefined;
    });
    await waitFor('ssh into the instance from the node', async () => (ssh('true').code === 0 ? true : undefined));
  });

  after(async () => {
    await hosts.dispose();
    if (hosts.work) await rm(dnsmasqRuntimeDir(join(hosts.cloudDir, 'node', 'network')), { recursive: true, force: true });
  });

  it('gives the launch a public address from the range, which reaches the instance from outside', async () => {
    const launched = await describe();
    assert.equal(launched.PublicIpAddress, '198.51.100.1');
    assert.equal(launched.PublicDnsName, `ec2-198-51-100-1.${REGION}.compute.amazonaws.com`);
    await waitFor('the launch-time address answering from outside', async () => (bannerFromOutside('198.51.100.1').includes('SSH-2.0') ? true : undefined));
  });

  it('reaches the instance at its elastic IP from outside, and its outbound traffic leaves with it', async () => {
    eip = await ec2.send(new AllocateAddressCommand({ Domain: 'vpc' })) as typeof eip;
    assert.equal(eip.PublicIp, '198.51.100.2');
    associationId = (await ec2.send(new AssociateAddressCommand({ AllocationId: eip.AllocationId, InstanceId: instanceId }))).AssociationId!;
    assert.equal((await describe()).PublicIpAddress, eip.PublicIp);
    await waitFor('the elastic IP answering from outside', async () => (bannerFromOutside(eip.PublicIp).includes('SSH-2.0') ? true : undefined));
    await waitFor('the launch-time address no longer answering', async () => (bannerFromOutside('198.51.100.1') === '' ? true : undefined));
    await waitFor('outbound traffic leaving with the elastic IP', async () => (outboundAddress() === eip.PublicIp ? true : undefined));
    await waitFor('the metadata service reporting it', async () => {
      const r = ssh('/usr/libexec/ironbark/imds meta-data/public-ipv4');
      return r.out.trim() === eip.PublicIp ? true : undefined;
    });
  });

  it('stops answering at the elastic IP once it is disassociated', async () => {
    await ec2.send(new DisassociateAddressCommand({ AssociationId: associationId }));
    await waitFor('the elastic IP no longer answering', async () => (bannerFromOutside(eip.PublicIp) === '' ? true : undefined));
    // Launched with a public address, the instance gets a launch-time one again, as on EC2.
    const now = (await describe()).PublicIpAddress!;
    assert.match(now, /^198\.51\.100\.\d+$/);
    assert.notEqual(now, eip.PublicIp);
    await waitFor('outbound traffic leaving with the new launch-time address', async () => (outboundAddress() === now ? true : undefined));
  });

  it('gives the launch-time address back at a stop and a new one at the start', async () => {
    const before = (await describe()).PublicIpAddress!;
    await ec2.send(new StopInstancesCommand({ InstanceIds: [instanceId] }));
    await waitFor(`${instanceId} stopped`, async () => ((await describe()).State!.Name === 'stopped' ? true : undefined));
    assert.equal((await describe()).PublicIpAddress, undefined, 'a stopped instance has no launch-time address');
    // Back in the range: the next allocation takes it, so the start must find another.
    const taken = await ec2.send(new AllocateAddressCommand({ Domain: 'vpc' }));
    assert.equal(taken.PublicIp, before);
    await ec2.send(new StartInstancesCommand({ InstanceIds: [instanceId] }));
    const fresh = (await describe()).PublicIpAddress!;
    assert.match(fresh, /^198\.51\.100\.\d+$/);
    assert.notEqual(fresh, before);
    await waitFor(`${instanceId} running again`, async () => ((await describe()).State!.Name === 'running' ? true : undefined), 10 * 60_000);
    await waitFor('the new address answering from outside', async () => (bannerFromOutside(fresh).includes('SSH-2.0') ? true : undefined), 10 * 60_000);
    assert.equal(bannerFromOutside(before), '', 'the old one (an unassociated elastic IP now) answers nothing');
  });
});
