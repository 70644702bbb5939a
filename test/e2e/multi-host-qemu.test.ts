// The issue's multi-host promise on a real VM: "two node controllers only on that private network
// (real QEMU VMs on at least one); an instance launched through the cloud controller runs on a node
// the cloud controller has no route to."
//
// Network namespaces made here (names start with `ibq`) play the hosts: the cloud reaches the
// cluster over a /30 link; the cluster has a private bridge (172.30.0.0/24) with two nodes on it,
// `n1-qemu` (`--driver qemu`, TCG unless IRONBARK_ACCEL says otherwise) and `n2-fake`. The qemu
// node's zone bridge, DHCP server and metadata service live in its own namespace. The default
// guest image (built once, cached under ~/.cache/ironbark/images) is registered in the cloud's
// store and travels cloud → cluster → node over HTTP. The AWS SDK in this process reaches the EC2
// endpoint through a unix-socket forwarder inside the cloud namespace; ssh runs inside the qemu
// node's namespace. Everything (processes, QEMU, dnsmasq, namespaces, files) is removed in `after`,
// also when a step failed. Needs root and qemu-system-x86_64; skipped otherwise.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AuthorizeSecurityGroupIngressCommand, CreateKeyPairCommand, DescribeInstancesCommand, EC2Client, GetConsoleOutputCommand, RunInstancesCommand, TerminateInstancesCommand,
} from '@aws-sdk/client-ec2';
import { readCredentialsEnv } from '../../src/auth/credentials-file.ts';
import { openStore } from '../../src/store/store.ts';
import { ensureDefaultImageRegistered } from '../../src/cloud/images/default-image.ts';
import { multiHostSkipReason, namespacePids, pings, TestHosts } from '../helpers/multi-host.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const REGION = 'ibq-1';
const ZONE = `${REGION}a`;
const ZONE_CIDR = '10.1.0.0/16';
const CLOUD_PORT = 8773;
const CLUSTER_PORT = 8774;
const NODE_PORT = 8775;
const QEMU_NODE_IP = '172.30.0.11';
const FAKE_NODE_IP = '172.30.0.12';

const hosts = new TestHosts({ prefix: 'ibq', startTimeoutMs: 120_000, pollMs: 1000 });
const tag = hosts.tag;
const NS = { cloud: `${tag}-cloud`, cluster: `${tag}-cl`, qemu: `${tag}-nq`, fake: `${tag}-nf` };
const admin = (...args: string[]) => hosts.admin(...args);
const waitFor = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number) => hosts.waitFor(what, probe, timeoutMs);

function ssh(ip: string, command: string): { code: number; out: string } {
  const r = spawnSync('ip', ['netns', 'exec', NS.qemu, 'ssh', '-i', join(hosts.work, 'key.pem'), '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5', '-o', 'BatchMode=yes', `root@${ip}`, command],
  { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? 1, out: r.stdout + r.stderr };
}

const skip = skipUnlessPresent(multiHostSkipReason(['qemu-system-x86_64', 'ssh', 'dnsmasq']));

describe('a real VM on a node the cloud controller has no route to (network namespaces)', { skip, timeout: 20 * 60_000 }, () => {
  let ec2: EC2Client;
  let imageId = '';
  let qemuNodeId = '';
  let instanceId = '';
  let work = '';

  before(async () => {
    await hosts.init('ibq-multi-host-', Object.values(NS));
    work = hosts.work;
    await hosts.link({ ns: NS.cloud, dev: `${tag}c`, addr: '192.168.250.1/30' }, { ns: NS.cluster, dev: `${tag}k`, addr: '192.168.250.2/30' });
    // The cluster's private host network; the nodes live only there.
    await hosts.bridge(NS.cluster, `${tag}br`, '172.30.0.1/24');
    await hosts.link({ ns: NS.qemu, dev: `${tag}q`, addr: `${QEMU_NODE_IP}/24` }, { ns: NS.cluster, dev: `${tag}qp`, master: `${tag}br` });
    await hosts.link({ ns: NS.fake, dev: `${tag}f`, addr: `${FAKE_NODE_IP}/24` }, { ns: NS.cluster, dev: `${tag}fp`, master: `${tag}br` });

    const cloudDir = hosts.cloudDir;
    await hosts.startCloud(NS.cloud, ['--data-dir', cloudDir, '--listen', `0.0.0.0:${CLOUD_PORT}`, '--region', REGION,
      '--images-url', `http://192.168.250.1:${CLOUD_PORT}`]);
    ec2 = await hosts.ec2Client(REGION, CLOUD_PORT);
    const creds = readCredentialsEnv(cloudDir);

    await hosts.addCluster('cluster', NS.cluster, {
      zone: ZONE, cidr: ZONE_CIDR, url: `http://192.168.250.2:${CLUSTER_PORT}`, dir: join(work, 'cluster'),
      listen: `0.0.0.0:${CLUSTER_PORT}`, nodeUrl: `http://172.30.0.1:${CLUSTER_PORT}`, policy: ['--policy', 'greedy'],
    });

    // Greedy takes the first node in name order with room: n1-qemu.
    for (const [name, ns, ip, driver] of [['n1-qemu', NS.qemu, QEMU_NODE_IP, 'qemu'], ['n2-fake', NS.fake, FAKE_NODE_IP, 'fake']] as const) {
      const nodeId = await hosts.joinNode(name, ns, {
        zone: ZONE, clusterUrl: `http://172.30.0.1:${CLUSTER_PORT}`, dataDir: join(work, `node-${name}`), listen: `${ip}:${NODE_PORT}`, driver,
      }, { IRONBARK_ACCEL: process.env.IRONBARK_ACCEL ?? 'tcg' });
      if (driver === 'qemu') qemuNodeId = nodeId;
    }

    // The default guest image, registered in the cloud's store (built first if it is not cached).
    const store = await openStore({ url: join(cloudDir, 'ironbark.sqlite') });
    try {
      imageId = (await ensureDefaultImageRegistered(store, { ownerAccountId: creds.IRONBARK_ACCOUNT_ID! })).imageId;
    } finally {
      await store.close();
    }
  });

  after(async () => {
    if (instanceId) await ec2.send(new TerminateInstancesCommand({ InstanceIds: [instanceId] })).catch(() => undefined);
    await hosts.dispose();
  });

  it('runs an instance on the QEMU node behind the cluster, reachable by ssh from that node only', async () => {
    const key = await ec2.send(new CreateKeyPairCommand({ KeyName: 'ibq' }));
    await writeFile(join(work, 'key.pem'), `${key.KeyMaterial!.trim()}\n`, { mode: 0o600 });

    // Security groups are enforced on the node: the default group lets in only its own members.
    await ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupName: 'default', IpPermissions: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }] }));
    const ran = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, InstanceType: 'm1.small', KeyName: 'ibq' }));
    instanceId = ran.Instances![0]!.InstanceId!;
    const id = instanceId;
    const instance = await waitFor(`${id} running`, async () => {
      const d = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
      const i = d.Reservations![0]!.Instances![0]!;
      if (i.State!.Name === 'terminated') throw new Error(`${id} terminated: ${i.StateReason?.Message}`);
      return i.State!.Name === 'running' ? i : undefined;
    }, 5 * 60_000);
    const ip = instance.PrivateIpAddress!;
    assert.match(ip, /^10\.1\.\d+\.\d+$/);

    // It runs on the qemu node, which (like the instance) the cloud cannot reach.
    const nodes = (await admin('node', 'list', '--zone', ZONE)).nodes as any[];
    const qemuNode = nodes.find((n) => n.id === qemuNodeId);
    assert.equal(qemuNode?.instanceCount, 1, JSON.stringify(nodes));
    assert.equal(qemuNode.hypervisor, 'qemu');
    assert.equal(qemuNode.accelerator, process.env.IRONBARK_ACCEL ?? 'tcg');
    assert.equal(await pings(NS.cluster, QEMU_NODE_IP), true, 'the cluster reaches its node');
    assert.equal(await pings(NS.cloud, QEMU_NODE_IP), false, 'the cloud has no route to the node');
    assert.equal(await pings(NS.cloud, ip), false, 'nor to the instance');
    // The image came over HTTP: the cluster relay cached it, fetched from the cloud.
    assert.ok(existsSync(join(work, 'cluster', 'images', `${imageId}.img`)), "the image is in the cluster relay's cache");

    const consoleText = await waitFor('the guest to report its instance id on the console', async () => {
      const out = await ec2.send(new GetConsoleOutputCommand({ InstanceId: id }));
      const text = Buffer.from(out.Output ?? '', 'base64').toString('utf8');
      return text.includes(`ironbark-guest: instance-id=${id}`) ? text : undefined;
    }, 5 * 60_000);
    assert.match(consoleText, new RegExp(`ironbark-guest: instance-id=${id}`));

    await waitFor('ssh into the guest from the node', async () => (ssh(ip, 'true').code === 0 ? true : undefined), 3 * 60_000);
    const answer = ssh(ip, 'echo "guest-says-$((6*7))"; hostname');
    assert.equal(answer.code, 0, answer.out);
    assert.match(answer.out, /guest-says-42/);

    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    await waitFor('termination', async () => {
      const d = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
      return d.Reservations![0]!.Instances![0]!.State!.Name === 'terminated' ? true : undefined;
    }, 2 * 60_000);
    const qemuLeft = (await namespacePids(NS.qemu))
      .filter((pid) => { try { return /qemu-system/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8')); } catch { return false; } });
    assert.deepEqual(qemuLeft, [], 'no QEMU left running for the instance');
    instanceId = '';
  });
});
