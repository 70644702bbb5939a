// Security groups and VPC isolation on a real kernel, fast: a NodeNetwork in a network namespace
// that plays the node host, and three more namespaces that play guests, each attached to the zone
// bridge through a veth standing in for its tap (with the instance's MAC, so the anti-spoofing
// rules hold). Two guests are one account's (VPC A), one is another account's (VPC B). The test
// hands the network firewall documents as the cloud would and checks connections between them:
// group-to-group rules, statefulness, revocation, changed membership, DHCP and metadata whatever
// the groups say, isolation of VPCs at L2 and through the gateway, large member sets, and rules
// rebuilt from state after a restart. Every address lives inside the test's namespaces.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeNetwork, allocateMac, METADATA_ADDRESS } from '../../src/node/network.ts';
import { tapNameForInstance } from '../../src/node/network-addressing.ts';
import { MetadataService, type InstanceMetadata } from '../../src/node/metadata-service.ts';
import { makeFirewallDocument, type FirewallGroup, type FirewallInstance } from '../../src/node/network/firewall-document.ts';
import { securityGroupTableNames } from '../../src/node/network/nftables-firewall.ts';
import { NodeFirewallDocuments } from '../../src/node/network/firewall-documents.ts';
import { ZoneDnsService } from '../../src/node/network/dns-service.ts';
import { canUseNetns, TestNetns } from '../helpers/netns.ts';
import { onPath } from '../helpers/multi-host.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

function skipReason(): string | undefined {
  const netns = canUseNetns();
  if (netns) return netns;
  for (const tool of ['nft', 'dnsmasq', 'busybox']) if (!onPath(tool)) return `${tool} is not installed`;
  return undefined;
}

const ZONE = 'ibtest-sg';
const CIDR = '10.79.0.0/24';
const GATEWAY = '10.79.0.1';
const VPC_A = 'vpc-0000000000000a001';
const VPC_B = 'vpc-0000000000000b001';
const SERVER = 'sg-00000000000000a01';  // allows tcp/22 from CLIENT only
const CLIENT = 'sg-00000000000000a02';  // allows nothing in
const OTHER = 'sg-00000000000000b01';   // the other account's group
const EGRESS_ALL = [{ protocol: '-1', cidr: '0.0.0.0/0' }];

interface Guest { id: string; ns: TestNetns; ip: string; vpcId: string; groups: string[] }

describe('security groups and VPC isolation on a zone bridge (network namespaces)', { skip: skipUnlessPresent(skipReason()), timeout: 5 * 60_000 }, () => {
  let host: TestNetns;
  const guests: Record<'server' | 'client' | 'foreign', Guest> = {} as never;
  let stateDir = '';
  let network: NodeNetwork;
  let metadata: MetadataService | undefined;

  const groups = (overrides: Partial<Record<string, Partial<FirewallGroup>>> = {}): FirewallGroup[] => [
    { id: SERVER, vpcId: VPC_A, ingress: [{ protocol: 'tcp', fromPort: 22, toPort: 22, group: CLIENT }], egress: EGRESS_ALL, ...overrides[SERVER] },
    { id: CLIENT, vpcId: VPC_A, ingress: [], egress: EGRESS_ALL, ...overrides[CLIENT] },
    { id: OTHER, vpcId: VPC_B, ingress: [], egress: [], ...overrides[OTHER] },
  ];
  const members = (extra: FirewallInstance[] = []): FirewallInstance[] => [
    ...Object.values(guests).map((g) => ({ id: g.id, ip: g.ip, vpcId: g.vpcId, groups: g.groups })), ...extra,
  ];
  const apply = (g: FirewallGroup[], i: FirewallInstance[] = members()) => network.setFirewallDocument(makeFirewallDocument(ZONE, g, i));

  /** Whether `from` (a guest or the host) gets the banner of `to`'s port 22 within a few seconds. */
  function connects(from: TestNetns, to: Guest, port = 22): boolean {
    const r = spawnSync('ip', ['netns', 'exec', from.name, 'busybox', 'nc', '-w', '2', to.ip, String(port)], { encoding: 'utf8', input: '', timeout: 10_000 });
    return r.stdout.includes(`banner-${to.id}`);
  }

  /** Whether `check` holds within a few tries (a condition that settles, not a timing). */
  async function eventually(check: () => boolean, tries = 5): Promise<boolean> {
    for (let i = 0; i < tries; i++) {
      if (check()) return true;
      await new Promise((r) => setTimeout(r, 500));
    }
    return false;
  }

  function pings(from: TestNetns, ip: string): boolean {
    return spawnSync('ip', ['netns', 'exec', from.name, 'busybox', 'ping', '-c', '1', '-W', '1', ip], { timeout: 10_000 }).status === 0;
  }

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'ibtest-sg-'));
    chmodSync(stateDir, 0o711); // dnsmasq drops to nobody
    host = new TestNetns('ibt-sgh');
    network = new NodeNetwork({ zone: ZONE, cidr: CIDR, stateDir, netns: host.name });
    await network.setUp();
    const specs: [keyof typeof guests, string, string, string, string[]][] = [
      ['server', 'i-0a1000000000000a1', '10.79.0.10', VPC_A, [SERVER]],
      ['client', 'i-0a2000000000000a2', '10.79.0.11', VPC_A, [CLIENT]],
      ['foreign', 'i-0b1000000000000b1', '10.79.0.12', VPC_B, [OTHER]],
    ];
    for (const [role, id, ip, vpcId, groupIds] of specs) {
      const ns = new TestNetns('ibt-sgg');
      guests[role] = { id, ns, ip, vpcId, groups: groupIds };
      const tap = tapNameForInstance(id);
      host.exec('ip', ['link', 'add', tap, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name]);
      ns.exec('ip', ['link', 'set', 'eth0', 'address', allocateMac(id)]);
      ns.exec('ip', ['link', 'set', 'eth0', 'up']);
      await network.addInstance({ instanceId: id, mac: allocateMac(id), ip, firewall: { vpcId, groups: groupIds } });
      // The guest's service on port 22: a banner that names it.
      const server = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e',
        `require('net').createServer((s) => s.end('banner-${id}\\n')).listen(22, '0.0.0.0')`], { stdio: 'ignore', detached: true });
      server.unref();
    }
    // Static addresses for the connection tests (DHCP is checked on its own below).
    for (const g of Object.values(guests)) {
      g.ns.exec('ip', ['addr', 'add', `${g.ip}/24`, 'dev', 'eth0']);
      g.ns.exec('ip', ['route', 'add', 'default', 'via', GATEWAY]);
    }
    for (const g of Object.values(guests)) {
      const deadline = Date.now() + 30_000;
      while (spawnSync('ip', ['netns', 'exec', g.ns.name, 'busybox', 'nc', '-w', '1', '127.0.0.1', '22'], { encoding: 'utf8', input: '' }).stdout.indexOf('banner') < 0) {
        if (Date.now() > deadline) assert.fail(`the service of ${g.id} did not start`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  });

  after(async () => {
    await metadata?.close().catch(() => undefined);
    await network?.tearDown().catch(() => undefined);
    for (const g of Object.values(guests)) g.ns.dispose();
    host?.dispose();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('closes a port attached without a firewall context until the document names it, but for DHCP, DNS and metadata', async () => {
    // Default deny: an instance that reaches this node before its groups are known (an older
    // node's state file, no context; no document yet) boots, and nothing else gets in or out.
    const id = 'i-0d1000000000000d1';
    const ip = '10.79.0.13';
    const ns = new TestNetns('ibt-sgl');
    const tap = tapNameForInstance(id);
    const hostListener = spawn('ip', ['netns', 'exec', host.name, process.execPath, '-e',
      `require('net').createServer((s) => s.end('banner-host\\n')).listen(7000, '${GATEWAY}')`], { stdio: 'ignore', detached: true });
    hostListener.unref();
    const meta: InstanceMetadata = {
      instanceId: id, amiId: 'ami-0123456789abcdef0', instanceType: 'm1.small', localIpv4: ip, localHostname: 'ip-10-79-0-13',
      availabilityZone: ZONE, region: 'ibtest', publicKeys: [], securityGroups: [], reservationId: 'r-0123456789abcdef0',
      mac: allocateMac(id), accountId: '111111111111', launchTime: new Date(), amiLaunchIndex: 0,
    };
    const md = new MetadataService({ lookupByIp: (a) => (a === ip ? meta : undefined) });
    const dns = new ZoneDnsService({ asker: (a) => (a === ip ? { vpcId: VPC_A, region: 'ibtest' } : undefined), vpcOf: () => VPC_A, upstream: [] });
    const late: Guest = { id, ns, ip, vpcId: VPC_A, groups: [SERVER] };
    try {
      host.exec('ip', ['link', 'add', tap, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name]);
      ns.exec('ip', ['link', 'set', 'eth0', 'address', allocateMac(id)]);
      ns.exec('ip', ['link', 'set', 'eth0', 'up']);
      await network.addInstance({ instanceId: id, mac: allocateMac(id), ip }); // no firewall context
      const server = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e',
        `require('net').createServer((s) => s.end('banner-${id}\\n')).listen(22, '0.0.0.0')`], { stdio: 'ignore', detached: true });
      server.unref();
      await md.listen(METADATA_ADDRESS, 80, { netns: host.name });
      await dns.listen(GATEWAY, 53, { netns: host.name });

      // DHCP hands it its address (and so configures it).
      const envFile = join(stateDir, 'late-lease.env');
      const script = join(stateDir, 'late-udhcpc.sh');
      writeFileSync(script, `#!/bin/sh\n[ "$1" = bound ] && echo "ip=$ip" > ${envFile} && ip addr add "$ip/24" dev "$interface" && ip route add default via "$router"\nexit 0\n`);
      chmodSync(script, 0o755);
      const dhcp = spawnSync('ip', ['netns', 'exec', ns.name, 'busybox', 'udhcpc', '-i', 'eth0', '-f', '-q', '-n', '-t', '5', '-T', '1', '-s', script], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(dhcp.status, 0, dhcp.stderr);
      assert.equal(readFileSync(envFile, 'utf8').trim(), `ip=${ip}`);
      // The zone's name service on the gateway answers it (asynchronously: it answers from this process).
      const lookup = await new Promise<string>((resolve) => {
        execFile('ip', ['netns', 'exec', ns.name, 'busybox', 'nslookup', 'ip-10-79-0-13.ibtest.compute.internal', GATEWAY], { timeout: 20_000 },
          (err, stdout, stderr) => resolve(`${String(stdout)}${String(stderr)}${err?.message ?? ''}`));
      });
      assert.match(lookup, /Address:\s*10\.79\.0\.13/, lookup);
      // And the metadata service.
      const r = await new Promise<{ stdout: string; stderr: string }>((resolve) => {
        execFile('ip', ['netns', 'exec', ns.name, 'busybox', 'wget', '-q', '-O', '-', `http://${METADATA_ADDRESS}/latest/meta-data/instance-id`],
          { timeout: 20_000 }, (err, stdout, stderr) => resolve({ stdout: String(stdout), stderr: `${String(stderr)} ${err?.message ?? ''}` }));
      });
      assert.equal(r.stdout, id, r.stderr);

      // Nothing else: not the host's other services, not another instance (even of its future VPC), not the other way.
      for (let i = 0; i < 50 && spawnSync('ip', ['netns', 'exec', host.name, 'busybox', 'nc', '-w', '1', GATEWAY, '7000'], { encoding: 'utf8', input: '' }).stdout.indexOf('banner-host') < 0; i++) {
        await new Promise((res) => setTimeout(res, 200));
      }
      const toHost = spawnSync('ip', ['netns', 'exec', ns.name, 'busybox', 'nc', '-w', '2', GATEWAY, '7000'], { encoding: 'utf8', input: '', timeout: 10_000 });
      assert.doesNotMatch(toHost.stdout, /banner-host/, 'a TCP service of the node host');
      assert.equal(pings(ns, GATEWAY), false, 'ICMP to the gateway');
      assert.equal(connects(ns, guests.client), false, 'to another instance');
      assert.equal(connects(host, late), false, 'from the host');
      assert.equal(pings(guests.client.ns, ip), false, 'from another instance');

      // The document names it (in SERVER, whose rule lets CLIENT in on tcp/22): its groups apply.
      await network.setFirewallDocument(makeFirewallDocument(ZONE, groups(), [...members(), { id, ip, vpcId: VPC_A, groups: [SERVER] }]));
      // (The client's first tries may go to resolving its address again: its ARP requests were dropped until now.)
      assert.equal(await eventually(() => connects(guests.client.ns, late)), true, 'CLIENT reaches it on tcp/22 once its groups are known');
      assert.equal(connects(host, late), false, 'the host still does not');
    } finally {
      await md.close().catch(() => undefined);
      await dns.close().catch(() => undefined);
      await network.removeInstance(id).catch(() => undefined);
      ns.dispose();
      try { process.kill(-hostListener.pid!, 'SIGKILL'); } catch { /* gone */ }
    }
    // Back to no document for the cases below: the node as it restarts before the cloud speaks.
    network = new NodeNetwork({ zone: ZONE, cidr: CIDR, stateDir, netns: host.name });
    await network.setUp();
  });

  it('closes every port whose groups the node has no rules for yet', async () => {
    assert.equal(connects(guests.client.ns, guests.server), false);
    assert.equal(connects(host, guests.server), false);
    assert.equal(pings(guests.client.ns, GATEWAY), false, 'no egress rules yet');
  });

  it('lets a member of the allowed group in on tcp/22, and nobody the other way', async () => {
    await apply(groups());
    assert.equal(connects(guests.client.ns, guests.server), true, 'client → server: allowed by SERVER\'s rule for CLIENT');
    assert.equal(connects(guests.server.ns, guests.client), false, 'server → client: CLIENT allows nothing in');
    assert.equal(connects(host, guests.server), false, 'the host (gateway address) is not in CLIENT');
    assert.equal(connects(guests.client.ns, guests.server, 23), false, 'only port 22');
    assert.equal(pings(guests.client.ns, guests.server.ip), false, 'no ICMP rule');
  });

  it('keeps DHCP and the metadata service open whatever the groups say', async () => {
    const g = guests.foreign; // OTHER has no rules at all, not even egress
    const meta: InstanceMetadata = {
      instanceId: g.id, amiId: 'ami-0123456789abcdef0', instanceType: 'm1.small', localIpv4: g.ip, localHostname: 'ip-10-79-0-12',
      availabilityZone: ZONE, region: 'ibtest', publicKeys: [], securityGroups: ['other'], reservationId: 'r-0123456789abcdef0',
      mac: allocateMac(g.id), accountId: '222222222222', launchTime: new Date(), amiLaunchIndex: 0,
    };
    metadata = new MetadataService({ lookupByIp: (ip) => (ip === g.ip ? meta : undefined) });
    await metadata.listen(METADATA_ADDRESS, 80, { netns: host.name });
    // Not spawnSync: the metadata service answers from this process. (Debian's busybox wget crashes on -T.)
    const r = await new Promise<{ stdout: string; stderr: string }>((resolve) => {
      execFile('ip', ['netns', 'exec', g.ns.name, 'busybox', 'wget', '-q', '-O', '-', `http://${METADATA_ADDRESS}/latest/meta-data/instance-id`],
        { timeout: 20_000 }, (err, stdout, stderr) => resolve({ stdout: String(stdout), stderr: `${String(stderr)} ${err?.message ?? ''}` }));
    });
    assert.equal(r.stdout, g.id, r.stderr);

    const envFile = join(stateDir, 'lease.env');
    const script = join(stateDir, 'udhcpc.sh');
    writeFileSync(script, `#!/bin/sh\n[ "$1" = bound ] && echo "ip=$ip" > ${envFile}\nexit 0\n`);
    chmodSync(script, 0o755);
    const dhcp = spawnSync('ip', ['netns', 'exec', g.ns.name, 'busybox', 'udhcpc', '-i', 'eth0', '-f', '-q', '-n', '-t', '5', '-T', '1', '-s', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(dhcp.status, 0, dhcp.stderr);
    assert.equal(readFileSync(envFile, 'utf8').trim(), `ip=${g.ip}`);
  });

  it('loads an update in one nftables transaction (all of the bridge\'s tables at once)', async () => {
    // A stand-in `nft` first on PATH logs each call and runs the real one.
    const shimDir = join(stateDir, 'shim');
    const log = join(stateDir, 'nft-calls.log');
    const real = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'].find((f) => existsSync(f))!;
    spawnSync('mkdir', ['-p', shimDir]);
    writeFileSync(join(shimDir, 'nft'), `#!/bin/sh\necho "$*" >> ${log}\ncat > ${log}.in\nexec ${real} "$@" < ${log}.in\n`);
    chmodSync(join(shimDir, 'nft'), 0o755);
    const path = process.env.PATH;
    process.env.PATH = `${shimDir}:${path}`;
    try {
      await apply(groups({ [SERVER]: { ingress: [] } }));
      await apply(groups());
    } finally {
      process.env.PATH = path;
    }
    const calls = readFileSync(log, 'utf8').trim().split('\n');
    assert.deepEqual(calls, ['-f -', '-f -'], 'one nft call per update');
    const script = readFileSync(`${log}.in`, 'utf8');
    for (const table of ['ib_br_', 'ib_nat_', 'ib_sg_', 'ib_vpc_', 'ib_md_', 'ib_mdn_']) assert.match(script, new RegExp(`delete table \\w+ ${table}`), table);
    assert.equal(connects(guests.client.ns, guests.server), true, 'and it took effect');
  });

  it('stops new connections as soon as the rule is revoked, and lets them again when it is back', async () => {
    await apply(groups({ [SERVER]: { ingress: [] } }));
    assert.equal(connects(guests.client.ns, guests.server), false);
    await apply(groups());
    assert.equal(connects(guests.client.ns, guests.server), true);
  });

  it('follows an instance\'s changed groups (ModifyInstanceAttribute GroupId)', async () => {
    const moved = members().map((i) => (i.id === guests.client.id ? { ...i, groups: [SERVER] } : i));
    await apply(groups(), moved);
    assert.equal(connects(guests.client.ns, guests.server), false, 'no longer in CLIENT');
    assert.equal(connects(guests.server.ns, guests.client), false, 'SERVER does not allow SERVER');
    const both = members().map((i) => (i.id === guests.client.id ? { ...i, groups: [CLIENT, SERVER] } : i));
    await apply(groups(), both);
    assert.equal(connects(guests.client.ns, guests.server), true);
  });

  it('matches a peer group of thousands of members with one set', async () => {
    const many: FirewallInstance[] = [];
    for (let i = 0; i < 5000; i++) {
      many.push({ id: `i-${(0xc000000 + i).toString(16).padStart(17, '0')}`, ip: `10.${80 + Math.floor(i / 250)}.${i % 250}.${(i % 7) + 1}`, vpcId: VPC_A, groups: [CLIENT] });
    }
    await apply(groups(), members(many));
    const listed = host.exec('nft', ['list', 'set', 'ip', securityGroupTableNames(network.bridgeName).sg, `g_${CLIENT.replace('-', '_')}`]);
    assert.equal((listed.match(/\d+\.\d+\.\d+\.\d+/g) ?? []).length, 5001);
    assert.equal(connects(guests.client.ns, guests.server), true);
    assert.equal(connects(guests.server.ns, guests.client), false);
  });

  it('keeps another account\'s instance out even when both groups allow everything', async () => {
    const open = { ingress: [{ protocol: '-1', cidr: '0.0.0.0/0' }], egress: EGRESS_ALL };
    await apply(groups({ [SERVER]: open, [OTHER]: open }));
    assert.equal(connects(host, guests.server), true, 'the rule is open: the host gets in');
    assert.equal(connects(guests.client.ns, guests.server), true, 'so does the same account');
    assert.equal(connects(guests.foreign.ns, guests.server), false, 'the other account does not (L2)');
    assert.equal(pings(guests.foreign.ns, guests.server.ip), false);
    assert.equal(connects(guests.server.ns, guests.foreign), false, 'nor the other way');
    assert.equal(pings(guests.foreign.ns, GATEWAY), true, 'the other account reaches its gateway');

    // Through the gateway instead: the host routes, the guest sends to the gateway's MAC.
    host.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
    guests.foreign.ns.exec('ip', ['route', 'add', `${guests.server.ip}/32`, 'via', GATEWAY]);
    try {
      assert.equal(connects(guests.foreign.ns, guests.server), false, 'nor routed back into the bridge by the host');
    } finally {
      guests.foreign.ns.exec('ip', ['route', 'del', `${guests.server.ip}/32`]);
      host.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=0']);
    }
  });

  it('rebuilds the rules from state after a restart, and removes its tables on teardown', async () => {
    const docs = new NodeFirewallDocuments(stateDir);
    const doc = makeFirewallDocument(ZONE, groups(), members());
    await docs.put(JSON.parse(JSON.stringify(doc)));
    const tables = securityGroupTableNames(network.bridgeName);
    host.exec('nft', ['delete', 'table', 'ip', tables.sg]);
    host.exec('nft', ['delete', 'table', 'bridge', tables.vpc]);
    assert.equal(connects(guests.foreign.ns, guests.server), true, 'without the tables nothing is filtered');

    const reloaded = new NodeFirewallDocuments(stateDir);
    await reloaded.load();
    assert.equal(reloaded.get(ZONE)?.version, doc.version);
    network = new NodeNetwork({ zone: ZONE, cidr: CIDR, stateDir, netns: host.name });
    void network.setFirewallDocument(reloaded.get(ZONE)!);
    await network.setUp();
    assert.equal(connects(guests.client.ns, guests.server), true);
    assert.equal(connects(guests.server.ns, guests.client), false);
    assert.equal(connects(guests.foreign.ns, guests.server), false);

    await metadata?.close();
    metadata = undefined;
    await network.tearDown();
    const left = host.exec('nft', ['list', 'tables']);
    assert.doesNotMatch(left, /\bib_/);
    assert.equal(existsSync(join(stateDir, `${network.bridgeName}.json`)), false);
  });
});
