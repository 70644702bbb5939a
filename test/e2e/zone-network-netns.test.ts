// One zone network across two nodes on a real kernel, fast (issue 9, items 3, 5 and 6): two network
// namespaces play the node hosts, joined by a veth that stands for the cluster's private network;
// each runs the zone's networks (HostNetworks, metadata redirected to the gateway) and is told the
// other as its peer, as the cluster does. Namespaces attached through veths named like taps play
// the guests: a1 (VPC A) on node 1, a2 (VPC A) and b2 (VPC B, another account) on node 2, each with a
// service that names it on port 22 and an echo on port 7. The test checks that a1 and a2 reach each
// other through the tunnel and b2 reaches neither (even with every group wide open), that each guest
// reads its own metadata through 169.254.169.254 while the node keeps no such address, that a guest
// that takes another's address gets nothing through, that diagnosis lists everything ok and then a
// deleted tap as missing and a stray prefixed link as extra, that a node's networks rebuilt from
// state (a node agent restart) keep an established connection, and that teardown leaves nothing of
// Ironbark's. Every address lives inside the test's namespaces.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { allocateMac } from '../../src/node/network.ts';
import { hostnameForIp, tapNameForInstance } from '../../src/node/network-addressing.ts';
import { MetadataService, type InstanceMetadata } from '../../src/node/metadata-service.ts';
import { makeFirewallDocument, type FirewallGroup, type FirewallInstance } from '../../src/node/network/firewall-document.ts';
import { HostNetworks } from '../../src/node/network/host-networks.ts';
import { ZoneDnsService } from '../../src/node/network/dns-service.ts';
import { canUseNetns, TestNetns } from '../helpers/netns.ts';
import { onPath } from '../helpers/multi-host.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

function skipReason(): string | undefined {
  const netns = canUseNetns();
  if (netns) return netns;
  for (const tool of ['nft', 'dnsmasq', 'busybox', 'bridge']) if (!onPath(tool)) return `${tool} is not installed`;
  return undefined;
}

const ZONE = 'ibtest-zn';
const CIDR = '10.78.0.0/24';
const GATEWAY = '10.78.0.1';
const VPC_A = 'vpc-0000000000000a001';
const VPC_B = 'vpc-0000000000000b001';
const OPEN_A = 'sg-00000000000000a01';
const OPEN_B = 'sg-00000000000000b01';
const NODE_IPS = ['172.31.78.1', '172.31.78.2'];
const everything = [{ protocol: '-1', cidr: '0.0.0.0/0' }];
const GROUPS: FirewallGroup[] = [
  { id: OPEN_A, vpcId: VPC_A, ingress: everything, egress: everything },
  { id: OPEN_B, vpcId: VPC_B, ingress: everything, egress: everything },
];

interface Guest { id: string; ns: TestNetns; ip: string; vpcId: string; groups: string[]; node: number }
interface Node { ns: TestNetns; stateDir: string; networks: HostNetworks; metadata: MetadataService; dns: ZoneDnsService }

const metadataOf = (g: Guest): InstanceMetadata => ({
  instanceId: g.id, amiId: 'ami-0123456789abcdef0', instanceType: 'm1.small', localIpv4: g.ip, localHostname: hostnameForIp(g.ip),
  availabilityZone: ZONE, region: 'ibtest', publicKeys: [], securityGroups: ['open'], reservationId: 'r-0123456789abcdef0',
  mac: allocateMac(g.id), accountId: '111111111111', launchTime: new Date(), amiLaunchIndex: 0,
});

describe('one zone network across two nodes (network namespaces)', { skip: skipUnlessPresent(skipReason()), timeout: 5 * 60_000 }, () => {
  const nodes: Node[] = [];
  const guests: Record<'a1' | 'a2' | 'b2', Guest> = {} as never;
  const document = () => makeFirewallDocument(ZONE, GROUPS, Object.values(guests).map((g): FirewallInstance => ({ id: g.id, ip: g.ip, vpcId: g.vpcId, groups: g.groups })));
  const children: ChildProcess[] = [];

  function connects(from: Guest, to: Guest): boolean {
    const r = spawnSync('ip', ['netns', 'exec', from.ns.name, 'busybox', 'nc', '-w', '2', to.ip, '22'], { encoding: 'utf8', input: '', timeout: 10_000 });
    return r.stdout.includes(`banner-${to.id}`);
  }

  /** busybox wget inside a guest (not spawnSync: the metadata service answers from this process). */
  function wget(g: Guest, url: string): Promise<{ ok: boolean; body: string }> {
    return new Promise((resolve) => {
      execFile('ip', ['netns', 'exec', g.ns.name, 'busybox', 'wget', '-q', '-O', '-', url], { timeout: 15_000 },
        (err, stdout) => resolve({ ok: !err, body: String(stdout) }));
    });
  }

  /** busybox nslookup inside a guest against the gateway (asynchronous: the name service answers from this process). */
  function lookup(g: Guest, name: string): Promise<string> {
    return new Promise((resolve) => {
      execFile('ip', ['netns', 'exec', g.ns.name, 'busybox', 'nslookup', name, GATEWAY], { timeout: 15_000 },
        (err, stdout, stderr) => resolve(`${String(stdout)}${String(stderr)}`));
    });
  }

  async function startNode(i: number, stateDir: string, ns: TestNetns): Promise<Node> {
    const networks = new HostNetworks({ stateDir, netns: ns.name, metadataDnat: true, nameService: true });
    const network = networks.get(ZONE, CIDR);
    await network.setUp();
    const byIp = new Map(Object.values(guests).filter((g) => g.node === i).map((g) => [g.ip, metadataOf(g)]));
    const metadata = new MetadataService({ lookupByIp: (ip) => byIp.get(ip) });
    await metadata.listen(network.metadataListenAddress, 80, { netns: ns.name });
    // No upstream resolvers: nothing may leave the test's namespaces.
    const dns = new ZoneDnsService({
      asker: (ip) => (byIp.has(ip) ? { vpcId: Object.values(guests).find((g) => g.ip === ip)!.vpcId, region: 'ibtest' } : undefined),
      vpcOf: networks.vpcOf, upstream: [],
    });
    await dns.listen(network.gateway, 53, { netns: ns.name });
    return { ns, stateDir, networks, metadata, dns };
  }

  before(async () => {
    for (let i = 0; i < 2; i++) {
      const stateDir = mkdtempSync(join(tmpdir(), 'ibtest-zn-'));
      chmodSync(stateDir, 0o711); // dnsmasq drops to nobody
      nodes.push({ ns: new TestNetns('ibt-znn'), stateDir } as Node);
    }
    // The cluster's private network between the two nodes.
    nodes[0]!.ns.exec('ip', ['link', 'add', 'ul0', 'type', 'veth', 'peer', 'name', 'ul0', 'netns', nodes[1]!.ns.name]);
    for (let i = 0; i < 2; i++) {
      nodes[i]!.ns.exec('ip', ['addr', 'add', `${NODE_IPS[i]}/24`, 'dev', 'ul0']);
      nodes[i]!.ns.exec('ip', ['link', 'set', 'ul0', 'up']);
    }
    const specs: [keyof typeof guests, string, string, string, string[], number][] = [
      ['a1', 'i-0a1000000000000a1', '10.78.0.10', VPC_A, [OPEN_A], 0],
      ['a2', 'i-0a2000000000000a2', '10.78.0.11', VPC_A, [OPEN_A], 1],
      ['b2', 'i-0b2000000000000b2', '10.78.0.12', VPC_B, [OPEN_B], 1],
    ];
    for (const [role, id, ip, vpcId, groups, node] of specs) guests[role] = { id, ns: new TestNetns('ibt-zng'), ip, vpcId, groups, node };
    for (let i = 0; i < 2; i++) Object.assign(nodes[i]!, await startNode(i, nodes[i]!.stateDir, nodes[i]!.ns));
    for (const g of Object.values(guests)) {
      const node = nodes[g.node]!;
      node.ns.exec('ip', ['link', 'add', tapNameForInstance(g.id), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', g.ns.name]);
      g.ns.exec('ip', ['link', 'set', 'eth0', 'address', allocateMac(g.id)]);
      g.ns.exec('ip', ['link', 'set', 'eth0', 'up']);
      g.ns.exec('ip', ['addr', 'add', `${g.ip}/24`, 'dev', 'eth0']);
      g.ns.exec('ip', ['route', 'add', 'default', 'via', GATEWAY]);
      await node.networks.get(ZONE, CIDR).addInstance({ instanceId: g.id, mac: allocateMac(g.id), ip: g.ip, firewall: { vpcId: g.vpcId, groups: g.groups } });
      const server = spawn('ip', ['netns', 'exec', g.ns.name, process.execPath, '-e', `const net = require('net');
        net.createServer((s) => s.end('banner-${g.id}\\n')).listen(22, '0.0.0.0');
        net.createServer((s) => s.pipe(s)).listen(7, '0.0.0.0');`], { stdio: 'ignore', detached: true });
      server.unref();
    }
    for (let i = 0; i < 2; i++) {
      await nodes[i]!.networks.get(ZONE, CIDR).setFirewallDocument(document());
      await nodes[i]!.networks.setZonePeers({ zone: ZONE, peers: NODE_IPS.filter((_, j) => j !== i) });
    }
    for (const g of Object.values(guests)) {
      const deadline = Date.now() + 60_000;
      while (!spawnSync('ip', ['netns', 'exec', g.ns.name, 'busybox', 'nc', '-w', '1', '127.0.0.1', '22'], { encoding: 'utf8', input: '' }).stdout.includes('banner')) {
        if (Date.now() > deadline) assert.fail(`the service of ${g.id} did not start`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  });

  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const n of nodes) {
      await n.metadata?.close().catch(() => undefined);
      await n.dns?.close().catch(() => undefined);
      await n.networks?.tearDownAll().catch(() => undefined);
    }
    for (const g of Object.values(guests)) g.ns.dispose();
    for (const n of nodes) {
      n.ns.dispose();
      rmSync(n.stateDir, { recursive: true, force: true });
    }
  });

  it('joins the two nodes\' bridges: instances of one VPC reach each other across nodes', () => {
    assert.equal(connects(guests.a1, guests.a2), true, 'a1 (node 1) → a2 (node 2)');
    assert.equal(connects(guests.a2, guests.a1), true, 'a2 (node 2) → a1 (node 1)');
  });

  it('keeps another account\'s instance out, across the tunnel and on the same node, even with open groups', () => {
    assert.equal(connects(guests.b2, guests.a1), false, 'b2 (node 2) → a1 (node 1)');
    assert.equal(connects(guests.a1, guests.b2), false, 'a1 (node 1) → b2 (node 2)');
    assert.equal(connects(guests.b2, guests.a2), false, 'b2 → a2 (same node)');
  });

  it('serves each guest its own metadata through 169.254.169.254 and leaves that address off the node', async () => {
    for (const g of Object.values(guests)) {
      const r = await wget(g, 'http://169.254.169.254/latest/meta-data/instance-id');
      assert.equal(r.body, g.id, `${g.id} reads its own instance id`);
    }
    for (const n of nodes) {
      assert.doesNotMatch(n.ns.exec('ip', ['-4', 'addr', 'show']), /169\.254\.169\.254/, 'the node itself keeps no metadata address');
    }
    // The service listens on the gateway, but only requests redirected from 169.254.169.254 reach it.
    const direct = await wget(guests.a1, `http://${GATEWAY}/latest/meta-data/instance-id`);
    assert.equal(direct.ok, false);
  });

  it('gives a guest that takes another\'s address neither a way through nor the other\'s metadata', async () => {
    const spoofer = guests.a2;
    const victim = guests.a1;
    spoofer.ns.exec('ip', ['addr', 'flush', 'dev', 'eth0']);
    spoofer.ns.exec('ip', ['addr', 'add', `${victim.ip}/24`, 'dev', 'eth0']);
    spoofer.ns.exec('ip', ['route', 'replace', 'default', 'via', GATEWAY]);
    try {
      const r = await wget(spoofer, 'http://169.254.169.254/latest/meta-data/instance-id');
      assert.equal(r.body.includes(victim.id), false, 'never the victim\'s metadata');
      assert.equal(r.ok, false, 'nothing answers a spoofed source');
      const pinged = spawnSync('ip', ['netns', 'exec', spoofer.ns.name, 'busybox', 'ping', '-c', '1', '-W', '1', GATEWAY], { timeout: 10_000 }).status;
      assert.notEqual(pinged, 0, 'not even the gateway answers a spoofed source');
    } finally {
      spoofer.ns.exec('ip', ['addr', 'flush', 'dev', 'eth0']);
      spoofer.ns.exec('ip', ['addr', 'add', `${spoofer.ip}/24`, 'dev', 'eth0']);
      spoofer.ns.exec('ip', ['route', 'replace', 'default', 'via', GATEWAY]);
    }
    assert.equal(connects(spoofer, victim), true, 'back on its own address, it works again');
  });

  it('resolves private DNS names inside the VPC only, across nodes, forward and reverse', async () => {
    const a2Name = `ip-10-78-0-11.ibtest.compute.internal`;
    const a1 = await lookup(guests.a1, a2Name);
    assert.match(a1, /Address:?\s+10\.78\.0\.11/, `a1 resolves a2 on the other node: ${a1}`);
    const reverse = await lookup(guests.a1, '10.78.0.11');
    assert.match(reverse, /ip-10-78-0-11\.ibtest\.compute\.internal/, `and back: ${reverse}`);
    const foreign = await lookup(guests.b2, a2Name);
    assert.doesNotMatch(foreign, /10\.78\.0\.11/, `another account's instance does not: ${foreign}`);
    assert.match(foreign, /NXDOMAIN|can't resolve/i);
    const own = await lookup(guests.b2, 'ip-10-78-0-12.ibtest.compute.internal');
    assert.match(own, /Address:?\s+10\.78\.0\.12/, `b2 resolves itself: ${own}`);
    const dhcpConfig = readFileSync(nodes[0]!.networks.get(ZONE, CIDR).dhcp.configPath, 'utf8');
    assert.match(dhcpConfig, new RegExp(`dns-server,${GATEWAY.replace(/\./g, '\\.')}\\b`), 'DHCP hands guests the gateway as DNS server');
  });

  it('diagnoses a node: everything ok after set-up, a deleted tap missing, a stray prefixed link extra', async () => {
    const node = nodes[1]!;
    const first = await node.networks.diagnose('nd-test');
    assert.equal(first.summary.missing, 0, JSON.stringify(first.items.filter((i) => i.status !== 'ok')));
    assert.equal(first.summary.extra, 0, JSON.stringify(first.items.filter((i) => i.status !== 'ok')));
    const kinds = new Set(first.items.map((i) => i.kind));
    for (const kind of ['bridge', 'tunnel', 'tap', 'nftables-table', 'dhcp-server', 'tunnel-peer', 'address']) assert.ok(kinds.has(kind), `lists ${kind}`);

    const tap = tapNameForInstance(guests.b2.id);
    node.ns.exec('ip', ['link', 'del', tap]);
    node.ns.exec('ip', ['link', 'add', 'ibbr-stray', 'type', 'bridge']);
    const second = await node.networks.diagnose('nd-test');
    assert.deepEqual(second.items.filter((i) => i.status === 'missing').map((i) => [i.kind, i.name]), [['tap', tap]]);
    assert.deepEqual(second.items.filter((i) => i.status === 'extra').map((i) => i.name), ['ibbr-stray']);
    node.ns.exec('ip', ['link', 'del', 'ibbr-stray']);
  });

  it('keeps an established connection across the nodes while a node\'s networks are rebuilt from state (agent restart)', async () => {
    const client = spawn('ip', ['netns', 'exec', guests.a1.ns.name, process.execPath, '-e', `
      const s = require('net').connect(7, '${guests.a2.ip}');
      s.on('connect', () => process.stdout.write('connected\\n'));
      s.on('data', (d) => process.stdout.write(d));
      s.on('close', () => { process.stdout.write('closed\\n'); process.exit(0); });
      process.stdin.on('data', (d) => s.write(d));`], { stdio: ['pipe', 'pipe', 'ignore'] });
    children.push(client);
    let out = '';
    client.stdout!.on('data', (d) => (out += d));
    const until = async (text: string) => {
      const deadline = Date.now() + 30_000;
      while (!out.includes(text)) {
        if (Date.now() > deadline) assert.fail(`never saw ${JSON.stringify(text)} (got ${JSON.stringify(out)})`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await until('connected');
    client.stdin!.write('before-restart\n');
    await until('before-restart');

    // The node agent goes away (its objects with it) and a new one rebuilds the networks from state.
    const old = nodes[0]!;
    await old.metadata.close();
    await old.dns.close();
    const restarted = await startNode(0, old.stateDir, old.ns);
    nodes[0] = restarted;
    await restarted.networks.get(ZONE, CIDR).setFirewallDocument(document());
    await restarted.networks.setZonePeers({ zone: ZONE, peers: [NODE_IPS[1]!] });

    client.stdin!.write('after-restart\n');
    await until('after-restart');
    assert.equal(out.includes('closed'), false, 'the connection was never cut');
    assert.equal(connects(guests.a1, guests.a2), true, 'new connections too');
    client.kill();
  });

  it('tears everything down: no link, table or DHCP server of Ironbark\'s is left on the nodes', async () => {
    for (const n of nodes) {
      await n.metadata.close();
      await n.dns.close();
      await n.networks.tearDownAll();
      const links = JSON.parse(n.ns.exec('ip', ['-j', 'link', 'show'])) as { ifname: string }[];
      assert.deepEqual(links.map((l) => l.ifname).filter((name) => name.startsWith('ib') && name !== 'ul0'), []);
      const tables = JSON.parse(n.ns.exec('nft', ['-j', 'list', 'tables'])) as { nftables: { table?: { name: string } }[] };
      assert.deepEqual(tables.nftables.flatMap((t) => (t.table && t.table.name.startsWith('ib_') ? [t.table.name] : [])), []);
    }
  });
});
