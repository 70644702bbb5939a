// Issue 9, items 3, 5 and 6 on real VMs: one zone network across two QEMU nodes. Network namespaces
// made here (names start with `ibz`) play the hosts: the cloud reaches the cluster over a /30; the
// cluster has a private bridge (172.30.0.0/24) with two `--driver qemu` nodes on it (round-robin
// placement, so account A's two instances land on different nodes). The cluster tells each node the
// other as its peer and the nodes join their zone bridges with VXLAN.
//
// Checked from inside the guests (ssh from a node, busybox in the guest): A's instance on node 1
// reaches A's instance on node 2 (sshd banner through the tunnel) and resolves its private DNS name
// and back; account B's instance reaches neither and gets NXDOMAIN for the name; each reads its own
// metadata; a guest that takes the other's address gets nothing through and not the other's metadata;
// a group that admits tcp/22 only from another group lets a1 (in that group) reach a2 across the
// nodes and not a2 reach a1, and revoking the rule cuts new connections; `ironbark admin node
// diagnose` lists everything ok, then a deleted tap as missing; node 1's agent restarted keeps an
// established connection to node 2. Everything is removed at the end, also after
// a failure. Needs root, qemu-system-x86_64, ssh, dnsmasq, nft and bridge; skipped otherwise.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AuthorizeSecurityGroupIngressCommand, CreateKeyPairCommand, CreateSecurityGroupCommand, DescribeInstancesCommand, ModifyInstanceAttributeCommand,
  RevokeSecurityGroupIngressCommand, RunInstancesCommand, type EC2Client,
} from '@aws-sdk/client-ec2';
import { readCredentialsEnv } from '../../src/auth/credentials-file.ts';
import { openStore } from '../../src/store/store.ts';
import { ensureDefaultImageRegistered } from '../../src/cloud/images/default-image.ts';
import { ensureDefaultGuestImage } from '../../src/node/guest-image.ts';
import { tapNameForInstance } from '../../src/node/network-addressing.ts';
import { IRONBARK, multiHostSkipReason, run, TestHosts } from '../helpers/multi-host.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const REGION = 'ibz-1';
const ZONE = `${REGION}a`;
const ZONE_CIDR = '10.1.0.0/16';
const CLOUD_PORT = 8773;
const CLUSTER_PORT = 8774;
const NODE_PORT = 8775;
const NODE_IPS = { n1: '172.30.0.11', n2: '172.30.0.12' } as const;

const hosts = new TestHosts({ prefix: 'ibz', startTimeoutMs: 180_000, pollMs: 1000 });
const tag = hosts.tag;
const NS = { cloud: `${tag}-cloud`, cluster: `${tag}-cl`, n1: `${tag}-n1`, n2: `${tag}-n2` };
const waitFor = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 5 * 60_000) => hosts.waitFor(what, probe, timeoutMs);
const everything = { IpProtocol: '-1', IpRanges: [{ CidrIp: '0.0.0.0/0' }] };

interface Vm { id: string; ip: string; key: string; node: 'n1' | 'n2' }

const skip = skipUnlessPresent(multiHostSkipReason(['qemu-system-x86_64', 'ssh', 'dnsmasq', 'nft', 'bridge']));

describe('one zone network across two QEMU nodes (network namespaces)', { skip, timeout: 30 * 60_000 }, () => {
  let a: EC2Client;
  let b: EC2Client;
  const nodeIds: Record<'n1' | 'n2', string> = { n1: '', n2: '' };
  const vms: Record<'a1' | 'a2' | 'b', Vm> = {} as never;

  /** Runs `command` in a guest over ssh from the node it runs on; code 255 is ssh's own failure. */
  function ssh(vm: Vm, command: string, timeout = 60_000): { code: number; out: string } {
    const r = spawnSync('ip', ['netns', 'exec', NS[vm.node], 'ssh', '-i', vm.key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5', '-o', 'BatchMode=yes', `root@${vm.ip}`, command], { encoding: 'utf8', timeout });
    return { code: r.status ?? 1, out: r.stdout + r.stderr };
  }

  function reachesSshd(from: Vm, to: Vm): boolean {
    const r = ssh(from, `echo | nc -w 3 ${to.ip} 22 | head -c 64`);
    if (r.code === 255) throw new Error(`cannot ssh into ${from.id}: ${r.out}`);
    return r.out.includes('SSH-2.0');
  }

  /** `ironbark admin --json node diagnose NODE` in the cloud's namespace: its answer and exit status. */
  async function diagnose(nodeId: string): Promise<{ code: number; summary: { ok: number; missing: number; extra: number }; items: { kind: string; name: string; status: string }[] }> {
    const r = await run('ip', ['netns', 'exec', NS.cloud, IRONBARK, 'admin', '--data-dir', hosts.cloudDir, '--json', 'node', 'diagnose', nodeId, '--zone', ZONE]);
    return { code: r.code, ...JSON.parse(r.stdout) };
  }

  const nameOf = (vm: Vm) => `ip-${vm.ip.replace(/\./g, '-')}.${REGION}.compute.internal`;

  async function nodeArgs(name: 'n1' | 'n2'): Promise<string[]> {
    return ['node', '--data-dir', join(hosts.work, `node-${name}`), '--listen', `${NODE_IPS[name]}:${NODE_PORT}`, '--driver', 'qemu', '--name', name];
  }

  before(async () => {
    // Built (or found in the cache) out here: the namespaces have no route to the package mirrors.
    await ensureDefaultGuestImage({ onProgress: (p) => process.stderr.write(`guest image: ${p.step}/${p.total} ${p.message}\n`) });
    await hosts.init('ibz-zone-network-', Object.values(NS));
    const work = hosts.work;
    await hosts.link({ ns: NS.cloud, dev: `${tag}c`, addr: '192.168.250.1/30' }, { ns: NS.cluster, dev: `${tag}k`, addr: '192.168.250.2/30' });
    await hosts.bridge(NS.cluster, `${tag}br`, '172.30.0.1/24');
    for (const name of ['n1', 'n2'] as const) {
      await hosts.link({ ns: NS[name], dev: `ul${name}`, addr: `${NODE_IPS[name]}/24` }, { ns: NS.cluster, dev: `${tag}${name}p`, master: `${tag}br` });
    }
    await hosts.startCloud(NS.cloud, ['--data-dir', hosts.cloudDir, '--listen', `0.0.0.0:${CLOUD_PORT}`, '--region', REGION,
      '--images-url', `http://192.168.250.1:${CLOUD_PORT}`]);
    a = await hosts.ec2Client(REGION, CLOUD_PORT);
    const creds = readCredentialsEnv(hosts.cloudDir);
    await hosts.addCluster('cluster', NS.cluster, {
      zone: ZONE, cidr: ZONE_CIDR, url: `http://192.168.250.2:${CLUSTER_PORT}`, dir: join(work, 'cluster'),
      listen: `0.0.0.0:${CLUSTER_PORT}`, nodeUrl: `http://172.30.0.1:${CLUSTER_PORT}`, policy: ['--policy', 'round-robin'],
    });
    for (const name of ['n1', 'n2'] as const) {
      nodeIds[name] = await hosts.joinNode(name, NS[name], {
        zone: ZONE, clusterUrl: `http://172.30.0.1:${CLUSTER_PORT}`, dataDir: join(work, `node-${name}`), listen: `${NODE_IPS[name]}:${NODE_PORT}`, driver: 'qemu',
      }, { IRONBARK_ACCEL: process.env.IRONBARK_ACCEL ?? 'tcg' });
    }
    const store = await openStore({ url: join(hosts.cloudDir, 'ironbark.sqlite') });
    let imageId: string;
    try {
      imageId = (await ensureDefaultImageRegistered(store, { ownerAccountId: creds.IRONBARK_ACCOUNT_ID! })).imageId; // public
    } finally {
      await store.close();
    }
    const tenant = await hosts.admin('account', 'create', 'tenant-b');
    b = await hosts.ec2Client(REGION, CLOUD_PORT, { accessKeyId: tenant.accessKey.accessKeyId, secretAccessKey: tenant.accessKey.secretAccessKey });
    for (const ec2 of [a, b]) await ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupName: 'default', IpPermissions: [everything] }));

    const keys: Record<'a' | 'b', string> = { a: join(work, 'a.pem'), b: join(work, 'b.pem') };
    for (const [who, ec2] of [['a', a], ['b', b]] as const) {
      const made = await ec2.send(new CreateKeyPairCommand({ KeyName: `key-${who}` }));
      await writeFile(keys[who], `${made.KeyMaterial!.trim()}\n`, { mode: 0o600 });
    }
    // One at a time: round-robin alternates the nodes (where each runs is read from its tap below).
    for (const [role, ec2, who] of [['a1', a, 'a'], ['a2', a, 'a'], ['b', b, 'b']] as const) {
      const ran = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, InstanceType: 'm1.small', KeyName: `key-${who}` }));
      const id = ran.Instances![0]!.InstanceId!;
      const ip = await waitFor(`${role} ${id} running`, async () => {
        const i = (await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }))).Reservations![0]!.Instances![0]!;
        if (i.State!.Name === 'terminated') throw new Error(`${id} terminated: ${i.StateReason?.Message}`);
        return i.State!.Name === 'running' ? i.PrivateIpAddress! : undefined;
      });
      // Where it runs: the node whose namespace holds its tap.
      const onN2 = spawnSync('ip', ['netns', 'exec', NS.n2, 'ip', 'link', 'show', tapNameForInstance(id)]).status === 0;
      vms[role] = { id, ip, key: keys[who], node: onN2 ? 'n2' : 'n1' };
    }
    for (const [name, vm] of Object.entries(vms)) {
      await waitFor(`ssh into ${name} from its node`, async () => (ssh(vm, 'true').code === 0 ? true : undefined));
    }
  });

  after(async () => {
    await hosts.dispose();
  });

  it('places account A\'s two instances on the two nodes', async () => {
    const nodes = (await hosts.admin('node', 'list', '--zone', ZONE)).nodes as { id: string; instanceCount: number }[];
    assert.deepEqual(nodes.map((n) => n.instanceCount).sort(), [1, 2], JSON.stringify(nodes));
    assert.notEqual(vms.a1.node, vms.a2.node, JSON.stringify(vms));
  });

  it('lets A\'s instances reach each other across the nodes, and keeps B\'s out, with wide-open groups', () => {
    assert.equal(reachesSshd(vms.a1, vms.a2), true, 'a1 → a2 (the other node)');
    assert.equal(reachesSshd(vms.a2, vms.a1), true, 'a2 → a1 (the other node)');
    assert.equal(reachesSshd(vms.b, vms.a1), false, 'b → a1');
    assert.equal(reachesSshd(vms.b, vms.a2), false, 'b → a2');
    assert.equal(reachesSshd(vms.a1, vms.b), false, 'a1 → b');
    assert.equal(reachesSshd(vms.a2, vms.b), false, 'a2 → b');
  });

  it('resolves A\'s private names inside A\'s VPC only', () => {
    const forward = ssh(vms.a1, `nslookup ${nameOf(vms.a2)}`);
    assert.match(forward.out, new RegExp(`Address:?\\s+${vms.a2.ip.replace(/\./g, '\\.')}`), forward.out);
    const reverse = ssh(vms.a1, `nslookup ${vms.a2.ip}`);
    assert.match(reverse.out, new RegExp(nameOf(vms.a2).replace(/\./g, '\\.')), reverse.out);
    const foreign = ssh(vms.b, `nslookup ${nameOf(vms.a2)}`);
    assert.doesNotMatch(foreign.out, new RegExp(`Address:?\\s+${vms.a2.ip.replace(/\./g, '\\.')}`), foreign.out);
  });

  it('serves each instance its own metadata, and a guest that takes another\'s address gets nothing', () => {
    for (const vm of Object.values(vms)) {
      const r = ssh(vm, 'wget -q -O - http://169.254.169.254/latest/meta-data/instance-id');
      assert.equal(r.out.trim(), vm.id);
    }
    // b takes a1's address as a second one and sends from it (routes with that source), keeping its
    // own so the test's ssh session stays up: no metadata, no way to a2, whatever b writes as source.
    const gw = '10.1.0.1';
    const script = [
      `ip addr add ${vms.a1.ip}/32 dev eth0`,
      `ip route add 169.254.169.254/32 via ${gw} dev eth0 src ${vms.a1.ip}`,
      `ip route add ${vms.a2.ip}/32 dev eth0 src ${vms.a1.ip}`,
      `(timeout 20 wget -q -O - http://169.254.169.254/latest/meta-data/instance-id || echo no-metadata)`,
      `(echo | timeout 20 nc -w 3 ${vms.a2.ip} 22 | head -c 64; echo nc-done)`,
      `ip route del 169.254.169.254/32`, `ip route del ${vms.a2.ip}/32`, `ip addr del ${vms.a1.ip}/32 dev eth0`,
    ].join('; ');
    const r = ssh(vms.b, script, 120_000);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /nc-done/, r.out);
    assert.doesNotMatch(r.out, new RegExp(vms.a1.id), 'never a1\'s metadata');
    assert.doesNotMatch(r.out, new RegExp(vms.b.id), 'nor its own: the packets are dropped, not answered');
    assert.match(r.out, /no-metadata/);
    assert.doesNotMatch(r.out, /SSH-2\.0/, 'nothing through to another instance');
    assert.equal(ssh(vms.b, 'wget -q -O - http://169.254.169.254/latest/meta-data/instance-id').out.trim(), vms.b.id, 'from its own address, its own again');
  });

  it('keeps an established cross-node connection while the sender\'s node agent restarts', async () => {
    // Started in sessions of their own (busybox setsid; its busybox has no nohup), so they outlive
    // the ssh session that started them; their own stdin, as busybox nc ends at end of input.
    ssh(vms.a2, 'setsid sh -c "sleep 100000 | nc -l -p 7777 > /tmp/recv" </dev/null >/dev/null 2>&1 &');
    // The sender connects once: it must find the listener up (a guest under TCG starts it slowly).
    await waitFor('the listener on a2', async () => (ssh(vms.a2, 'netstat -ltn').out.includes(':7777') ? true : undefined), 2 * 60_000);
    ssh(vms.a1, `setsid sh -c "while true; do echo tick; sleep 1; done | nc ${vms.a2.ip} 7777" </dev/null >/dev/null 2>&1 &`);
    const lines = () => Number(ssh(vms.a2, 'wc -l < /tmp/recv').out.trim()) || 0;
    await waitFor('ticks arriving on a2', async () => (lines() >= 3 ? true : undefined), 2 * 60_000);

    const name = vms.a1.node;
    const node = hosts.role(`node ${name}`);
    node.child.kill('SIGTERM');
    await new Promise((resolve) => node.child.once('exit', resolve));
    await hosts.startRole(`node ${name} (restarted)`, NS[name], await nodeArgs(name), /Ironbark node nd-[0-9a-f]+ of zone/, { IRONBARK_ACCEL: process.env.IRONBARK_ACCEL ?? 'tcg' });
    const after = lines();
    await waitFor('ticks still arriving after the restart', async () => (lines() >= after + 5 ? true : undefined), 2 * 60_000);
    assert.equal(ssh(vms.a1, 'pidof nc >/dev/null && echo alive').out.includes('alive'), true, 'the sender\'s connection never broke');
  });

  it('enforces a group that admits tcp/22 only from another group across the nodes, and a revoke cuts new connections', async () => {
    // a2 goes into SERVER (tcp/22 from CLIENT), a1 into CLIENT (nothing from instances); both also
    // let in tcp/22 from the node host's gateway address, which is where this test's ssh comes from.
    const harness = { IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '10.1.0.1/32' }] };
    const server = (await a.send(new CreateSecurityGroupCommand({ GroupName: 'zone-server', Description: 'tcp/22 from zone-client' }))).GroupId!;
    const client = (await a.send(new CreateSecurityGroupCommand({ GroupName: 'zone-client', Description: 'nothing in from instances' }))).GroupId!;
    const fromClient = { IpProtocol: 'tcp', FromPort: 22, ToPort: 22, UserIdGroupPairs: [{ GroupId: client }] };
    await a.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: server, IpPermissions: [fromClient, harness] }));
    await a.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: client, IpPermissions: [harness] }));
    await a.send(new ModifyInstanceAttributeCommand({ InstanceId: vms.a2.id, Groups: [server] }));
    await a.send(new ModifyInstanceAttributeCommand({ InstanceId: vms.a1.id, Groups: [client] }));
    // The cloud pushes the change within seconds: wait for the closed direction to close first.
    await waitFor('a2 → a1 closed (CLIENT admits no instance)', async () => (reachesSshd(vms.a2, vms.a1) ? undefined : true), 2 * 60_000);
    assert.equal(reachesSshd(vms.a1, vms.a2), true, 'a1 (CLIENT, node ' + vms.a1.node + ') → a2 (SERVER, node ' + vms.a2.node + ')');
    assert.equal(reachesSshd(vms.a2, vms.a1), false, 'a2 → a1');

    await a.send(new RevokeSecurityGroupIngressCommand({ GroupId: server, IpPermissions: [fromClient] }));
    await waitFor('a1 → a2 cut by the revoke', async () => (reachesSshd(vms.a1, vms.a2) ? undefined : true), 2 * 60_000);
    assert.equal(reachesSshd(vms.a1, vms.a2), false, 'no new connection after the revoke');
    assert.equal(ssh(vms.a2, 'true').code, 0, 'the harness rule still holds');
  });

  it('diagnoses a node through the admin API: all ok, then a deleted tap missing', async () => {
    const node = vms.a2.node;
    const first = await diagnose(nodeIds[node]);
    assert.equal(first.code, 0, 'exit status 0 when all is ok');
    assert.equal(first.summary.missing, 0, JSON.stringify(first.items));
    assert.equal(first.summary.extra, 0, JSON.stringify(first.items));
    assert.ok(first.items.some((i: { kind: string }) => i.kind === 'tunnel'));
    const tap = tapNameForInstance(vms.a2.id);
    spawnSync('ip', ['netns', 'exec', NS[node], 'ip', 'link', 'del', tap]);
    const second = await diagnose(nodeIds[node]);
    assert.equal(second.code, 1, 'exit status 1 when something is off');
    assert.deepEqual(second.items.filter((i: { status: string }) => i.status === 'missing').map((i: { name: string }) => i.name), [tap]);
  });
});
