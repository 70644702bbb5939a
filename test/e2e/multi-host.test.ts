// The roles on separate "hosts": network namespaces made here (names start with `ibt`). The cloud
// namespace reaches each cluster over a /30 link; each cluster has a private bridge network
// (172.30.0.0/24 in both zones) its nodes sit on, which the cloud has no route to. Every process is
// `bin/ironbark …` inside its namespace: the cloud, two clusters, three nodes (fake driver) that
// join with tokens from `ironbark admin node token`. The AWS SDK, in this process, reaches the
// cloud's EC2 endpoint through a unix-socket forwarder running inside the cloud namespace, so all
// traffic stays inside the namespaces. Image files travel cloud → cluster → node over HTTP: the
// cloud serves them to clusters at 192.168.250.1 (cluster b routes there through its own link).
// Cluster a listens on a wildcard with no --node-url (its nodes fetch images at the cluster URL
// they joined with); cluster b is given its --node-url. Nodes report their MAC (na2 is told it
// with --mac). Zone b runs the power-save policy: its operator's sleep and wake commands take the
// node's link down and up (a suspended host does not answer either), and the wake command gets
// the node's MAC. Needs root; skipped otherwise.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DescribeAvailabilityZonesCommand, DescribeInstancesCommand, EC2Client, RunInstancesCommand, TerminateInstancesCommand, type Instance } from '@aws-sdk/client-ec2';
import { readCredentialsEnv } from '../../src/auth/credentials-file.ts';
import { openStore } from '../../src/store/store.ts';
import { registerImageFiles } from '../../src/cloud/images/images.ts';
import { multiHostSkipReason, must, pings, TestHosts } from '../helpers/multi-host.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const REGION = 'ibt-1';
const ZONE_CIDR = '10.1.0.0/16'; // both zones use the same instance range
const CLUSTER_PORT = 8774;
const NODE_PORT = 8775;
const CLOUD_PORT = 8773;
const NA2_MAC = '02:00:00:00:0a:02';

const hosts = new TestHosts({ prefix: 'ibt', startTimeoutMs: 90_000, pollMs: 250 });
const tag = hosts.tag;
const NS = {
  cloud: `${tag}-cloud`,
  clusterA: `${tag}-cla`,
  clusterB: `${tag}-clb`,
  nodeA1: `${tag}-na1`,
  nodeA2: `${tag}-na2`,
  nodeB1: `${tag}-nb1`,
};
const admin = (...args: string[]) => hosts.admin(...args);
const waitFor = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs?: number) => hosts.waitFor(what, probe, timeoutMs);

/** The MAC of a device in a namespace, as the kernel has it. */
async function deviceMac(ns: string, dev: string): Promise<string> {
  return (JSON.parse(await must('ip', ['-n', ns, '-j', 'link', 'show', 'dev', dev])) as Array<{ address: string }>)[0]!.address;
}

async function imageFile(name: string, bytes: number) {
  const data = randomBytes(bytes);
  const path = join(hosts.work, 'images', name);
  await writeFile(path, data);
  return { path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes };
}

const skip = skipUnlessPresent(multiHostSkipReason());

describe('roles on separate hosts (network namespaces)', { skip }, () => {
  let ec2: EC2Client;
  let imageId = '';
  let work = '';
  const nodeIds: Record<string, string> = {};

  before(async () => {
    await hosts.init('ibt-multi-host-', Object.values(NS));
    work = hosts.work;
    await mkdir(join(work, 'images'));
    // cloud <-> clusters: point-to-point links that exist only inside the namespaces.
    await hosts.link({ ns: NS.cloud, dev: `${tag}ca`, addr: '192.168.250.1/30' }, { ns: NS.clusterA, dev: `${tag}ac`, addr: '192.168.250.2/30' });
    await hosts.link({ ns: NS.cloud, dev: `${tag}cb`, addr: '192.168.250.5/30' }, { ns: NS.clusterB, dev: `${tag}bc`, addr: '192.168.250.6/30' });
    // One address clusters fetch images from (--images-url), reached by cluster b over its own link.
    await must('ip', ['-n', NS.clusterB, 'route', 'add', '192.168.250.0/30', 'via', '192.168.250.5']);
    // Each cluster's private host network, the same range in both zones; nodes live only there.
    await hosts.bridge(NS.clusterA, `${tag}bra`, '172.30.0.1/24');
    await hosts.bridge(NS.clusterB, `${tag}brb`, '172.30.0.1/24');
    await hosts.link({ ns: NS.nodeA1, dev: `${tag}a1`, addr: '172.30.0.11/24' }, { ns: NS.clusterA, dev: `${tag}a1p`, master: `${tag}bra` });
    await hosts.link({ ns: NS.nodeA2, dev: `${tag}a2`, addr: '172.30.0.12/24' }, { ns: NS.clusterA, dev: `${tag}a2p`, master: `${tag}bra` });
    await hosts.link({ ns: NS.nodeB1, dev: `${tag}b1`, addr: '172.30.0.11/24' }, { ns: NS.clusterB, dev: `${tag}b1p`, master: `${tag}brb` });

    const cloudDir = hosts.cloudDir;
    await hosts.startCloud(NS.cloud, ['--no-default-image', '--data-dir', cloudDir, '--listen', `0.0.0.0:${CLOUD_PORT}`, '--region', REGION,
      '--images-url', `http://192.168.250.1:${CLOUD_PORT}`]);
    // This process reaches the EC2 endpoint (127.0.0.1 inside the cloud namespace) through a unix socket.
    ec2 = await hosts.ec2Client(REGION, CLOUD_PORT);
    const creds = readCredentialsEnv(cloudDir);

    // The operator adds the two clusters; each starts with the secret the cloud printed.
    // Zone b's power commands: log, then "suspend" or "resume" node nb1 by taking its link down or up.
    const powerScript = join(work, 'power.sh');
    await writeFile(powerScript, [
      '#!/bin/sh',
      `echo "$*" >> ${join(work, 'power.log')}`,
      `if [ "$1" = sleep ]; then state=down; else state=up; fi`,
      `exec ip netns exec ${NS.nodeB1} ip link set ${tag}b1 "$state"`,
      '',
    ].join('\n'), { mode: 0o755 });
    const powerSave = ['--policy', 'power-save', '--idle-threshold', '2', '--sleep-command', `sh ${powerScript} sleep {node}`, '--wake-command', `sh ${powerScript} wake {node} {mac}`];
    for (const [zone, ns, url, policy, nodeUrl] of [
      [`${REGION}a`, NS.clusterA, 'http://192.168.250.2', ['--policy', 'greedy'], undefined],
      [`${REGION}b`, NS.clusterB, 'http://192.168.250.6', powerSave, `http://172.30.0.1:${CLUSTER_PORT}`],
    ] as const) {
      const added = await hosts.addCluster(`cluster ${zone}`, ns, {
        zone, cidr: ZONE_CIDR, url: `${url}:${CLUSTER_PORT}`, dir: join(work, `cluster-${zone}`),
        listen: `0.0.0.0:${CLUSTER_PORT}`, nodeUrl, policy,
      });
      assert.equal(added.cluster.zone, zone);
    }

    // Nodes join with one-time tokens from the cloud.
    for (const [name, ns, zone, ip, args] of [
      ['na1', NS.nodeA1, `${REGION}a`, '172.30.0.11', []], ['na2', NS.nodeA2, `${REGION}a`, '172.30.0.12', ['--mac', NA2_MAC.toUpperCase()]],
      ['nb1', NS.nodeB1, `${REGION}b`, '172.30.0.11', []],
    ] as const) {
      nodeIds[name] = await hosts.joinNode(name, ns, {
        zone, clusterUrl: `http://172.30.0.1:${CLUSTER_PORT}`, dataDir: join(work, `node-${name}`), listen: `${ip}:${NODE_PORT}`, driver: 'fake', args: [...args],
      });
    }

    // A small machine image (fake files: the fake driver boots nothing).
    const store = await openStore({ url: join(cloudDir, 'ironbark.sqlite') });
    try {
      const registered = await registerImageFiles(store, {
        name: 'ibt-tiny', kernel: await imageFile('vmlinuz', 4096), rootfs: { ...(await imageFile('rootfs.img', 65536)), format: 'raw' },
        kernelCmdline: 'console=ttyS0', public: true, ownerAccountId: creds.IRONBARK_ACCOUNT_ID!,
      });
      imageId = registered.imageId;
    } finally {
      await store.close();
    }
  });

  after(() => hosts.dispose());

  it('lists both clusters and their joined nodes, all up (or, in power-save zone b, already asleep)', async () => {
    const clusters = await admin('cluster', 'list');
    assert.deepEqual(clusters.clusters.map((c: any) => [c.zone, c.cidr]), [[`${REGION}a`, ZONE_CIDR], [`${REGION}b`, ZONE_CIDR]]);
    const nodes = await waitFor('all nodes up', async () => {
      const list = (await admin('node', 'list')).nodes as any[];
      return list.length === 3 && list.every((n) => n.state === 'up' || (n.name === 'nb1' && n.state === 'asleep')) ? list : undefined;
    });
    assert.deepEqual(nodes.map((n) => [n.zone, n.name]).sort(), [[`${REGION}a`, 'na1'], [`${REGION}a`, 'na2'], [`${REGION}b`, 'nb1']]);
    // Each node's MAC: that of the link carrying its advertised address, or the one it was given.
    const macOf = (name: string) => nodes.find((n) => n.name === name)!.mac;
    assert.equal(macOf('na1'), await deviceMac(NS.nodeA1, `${tag}a1`));
    assert.equal(macOf('nb1'), await deviceMac(NS.nodeB1, `${tag}b1`));
    assert.equal(macOf('na2'), NA2_MAC);
    assert.match(await hosts.adminText('node', 'list', '--zone', `${REGION}a`), new RegExp(`${nodeIds.na2}.*${NA2_MAC}`));
    const zones = await ec2.send(new DescribeAvailabilityZonesCommand({}));
    assert.deepEqual(zones.AvailabilityZones!.map((z) => z.ZoneName).sort(), [`${REGION}a`, `${REGION}b`]);
  });

  async function launchAndWait(zone: string): Promise<Instance> {
    const run = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, InstanceType: 'm1.small', Placement: { AvailabilityZone: zone } }));
    const id = run.Instances![0]!.InstanceId!;
    return waitFor(`${id} running`, async () => {
      const d = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
      const instance = d.Reservations![0]!.Instances![0]!;
      return instance.State!.Name === 'running' ? instance : undefined;
    });
  }

  /** The node of `zone` that reports one instance, as the cluster tells the cloud. */
  async function busyNode(zone: string): Promise<{ id: string; url: string }> {
    return waitFor(`the node running an instance in ${zone}`, async () => {
      const nodes = (await admin('node', 'list', '--zone', zone)).nodes as any[];
      const busy = nodes.filter((n) => n.instanceCount > 0);
      return busy.length === 1 ? busy[0] : undefined;
    });
  }

  it('launches through the EC2 API onto a node of zone a that the cloud cannot reach', async () => {
    const instance = await launchAndWait(`${REGION}a`);
    assert.equal(instance.Placement!.AvailabilityZone, `${REGION}a`);
    assert.match(instance.PrivateIpAddress!, /^10\.1\./);
    const node = await busyNode(`${REGION}a`);
    const nodeIp = new URL(node.url).hostname;
    assert.ok(['172.30.0.11', '172.30.0.12'].includes(nodeIp), nodeIp);
    assert.equal(await pings(NS.clusterA, nodeIp), true, 'the cluster reaches its node');
    assert.equal(await pings(NS.cloud, nodeIp), false, 'the cloud has no route to the node');
    // The cluster fetched the image from the cloud over HTTP (a copy in its relay cache), not from a shared disk.
    assert.ok(existsSync(join(work, `cluster-${REGION}a`, 'images', `${imageId}.img`)), 'the image is in the relay cache of cluster a');
    // Cluster a has no --node-url: the node fetched it from the relay at the cluster URL it joined with.
    const nodeName = nodeIp === '172.30.0.11' ? 'na1' : 'na2';
    const cached = JSON.parse(await readFile(join(work, `node-${nodeName}`, 'node', 'images', `${imageId}.json`), 'utf8'));
    assert.ok(cached.url.startsWith(`http://172.30.0.1:${CLUSTER_PORT}/images/${imageId}?`), cached.url);
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [instance.InstanceId!] }));
    await waitFor('termination', async () => {
      const d = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [instance.InstanceId!] }));
      return d.Reservations![0]!.Instances![0]!.State!.Name === 'terminated' ? true : undefined;
    });
  });

  it('launches into zone b, whose cluster and node reuse the same ranges', async () => {
    const instance = await launchAndWait(`${REGION}b`);
    assert.equal(instance.Placement!.AvailabilityZone, `${REGION}b`);
    assert.match(instance.PrivateIpAddress!, /^10\.1\./);
    const node = await busyNode(`${REGION}b`);
    assert.equal(node.id, nodeIds.nb1);
    assert.equal(await pings(NS.clusterB, '172.30.0.11'), true);
    assert.equal(await pings(NS.cloud, '172.30.0.11'), false);
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [instance.InstanceId!] }));
  });

  it('power-save in zone b: the idle node is put to sleep, listed as asleep (not down) with the reason, and woken for a launch', async () => {
    const nodeB = async () => ((await admin('node', 'list', '--zone', `${REGION}b`)).nodes as any[])[0];
    const asleep = await waitFor('nb1 asleep', async () => { const n = await nodeB(); return n.state === 'asleep' ? n : undefined; });
    assert.match(asleep.stateReason, /^put to sleep by power-save at .*: no instances for \d+ s \(threshold 2 s\)$/);
    assert.equal(await pings(NS.clusterB, '172.30.0.11'), false, 'the asleep node does not answer');
    const table = await hosts.adminText('node', 'list', '--zone', `${REGION}b`);
    assert.match(table, /asleep.*put to sleep by power-save/);
    // Once silent for longer than a node may be before it counts as down (10 s): still asleep.
    const silent = await waitFor('nb1 silent past the down threshold', async () => {
      const n = await nodeB();
      return n.state !== 'asleep' || (n.lastSeen && Date.now() - Date.parse(n.lastSeen) > 11_000) ? n : undefined;
    }, 120_000);
    assert.equal(silent.state, 'asleep');

    const instance = await launchAndWait(`${REGION}b`);
    assert.equal((await busyNode(`${REGION}b`)).id, nodeIds.nb1);
    const log = (await readFile(join(work, 'power.log'), 'utf8')).trim().split('\n');
    assert.deepEqual(log.slice(-2), ['sleep nb1', `wake nb1 ${await deviceMac(NS.nodeB1, `${tag}b1`)}`]);
    assert.equal((await nodeB()).state, 'up');
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [instance.InstanceId!] }));
  });

  it('revokes a node: its cluster forgets it and refuses its calls', async () => {
    const revoked = await admin('node', 'revoke', nodeIds.na2!);
    assert.deepEqual([revoked.deleted, revoked.zone], [nodeIds.na2, `${REGION}a`]);
    const nodes = (await admin('node', 'list', '--zone', `${REGION}a`)).nodes as any[];
    assert.deepEqual(nodes.map((n) => n.id), [nodeIds.na1]);
    // The revoked node restarting says hello with its old secret: refused, and the cluster logs it.
    const cluster = hosts.role(`cluster ${REGION}a`);
    const na2 = hosts.role('node na2');
    na2.child.kill('SIGTERM');
    await new Promise((r) => na2.child.once('exit', r));
    const again = await hosts.startRole('node na2 again', NS.nodeA2, ['node', '--data-dir', join(work, 'node-na2'), '--listen', `172.30.0.12:${NODE_PORT}`, '--driver', 'fake'], /Ironbark node nd-/);
    assert.match(again.output(), /did not accept our hello/);
    await waitFor('the refusal in the cluster log', async () => (cluster.output().includes(nodeIds.na2!) && /refused node request/.test(cluster.output()) ? true : undefined), 10_000);
  });
});
