// Public addresses on a real kernel, fast: a NodeNetwork in a network namespace that plays the node
// host, two namespaces that play guests on its zone bridge (veths standing in for taps), and one
// that plays the outside, linked to the node and routing the zone's public range to it. The test
// hands the network firewall documents as the cloud would (an instance's public address appears
// in it at AssociateAddress, and leaves at DisassociateAddress) and checks: the public address
// reaches the instance's port 22 from outside (through its security groups), and stops doing so
// when disassociated; the instance's outbound traffic arrives outside with its public address;
// an instance without one reaches outside through the node's masquerade; an instance reaches
// another's public address (hairpin); the table carries Ironbark's prefix and teardown removes it.
// Every address lives inside the test's namespaces.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeNetwork, allocateMac } from '../../src/node/network.ts';
import { tapNameForInstance } from '../../src/node/network-addressing.ts';
import { makeFirewallDocument, type FirewallGroup, type FirewallInstance } from '../../src/node/network/firewall-document.ts';
import { publicNatTableName } from '../../src/node/network/public-nat.ts';
import { canUseNetns, TestNetns } from '../helpers/netns.ts';
import { onPath } from '../helpers/multi-host.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

function skipReason(): string | undefined {
  const netns = canUseNetns();
  if (netns) return netns;
  for (const tool of ['nft', 'dnsmasq', 'busybox']) if (!onPath(tool)) return `${tool} is not installed`;
  return undefined;
}

const ZONE = 'ibtest-pub';
const CIDR = '10.78.0.0/24';
const GATEWAY = '10.78.0.1';
const VPC = 'vpc-0000000000000a001';
const WEB = 'sg-00000000000000a01';     // tcp/22 from anywhere, all egress
const CLOSED = 'sg-00000000000000a02';  // nothing in, all egress
const NODE_UPLINK = '192.0.2.1';        // the node's address towards the outside
const OUTSIDE = '192.0.2.2';            // a host on the outside
const PUBLIC_RANGE = '198.51.100.0/24'; // the zone's public range, routed to the node
const PUBLIC_ONE = '198.51.100.5';

interface Guest { id: string; ns: TestNetns; ip: string }

describe('public addresses on a node: DNAT, SNAT, masquerade (network namespaces)', { skip: skipUnlessPresent(skipReason()), timeout: 5 * 60_000 }, () => {
  let host: TestNetns;
  let outside: TestNetns;
  const guests: Record<'one' | 'two', Guest> = {} as never;
  let stateDir = '';
  let network: NodeNetwork;

  const groups: FirewallGroup[] = [
    { id: WEB, vpcId: VPC, ingress: [{ protocol: 'tcp', fromPort: 22, toPort: 22, cidr: '0.0.0.0/0' }], egress: [{ protocol: '-1', cidr: '0.0.0.0/0' }] },
    { id: CLOSED, vpcId: VPC, ingress: [], egress: [{ protocol: '-1', cidr: '0.0.0.0/0' }] },
  ];
  const instance = (g: Guest, groupId: string, publicIp?: string): FirewallInstance => ({ id: g.id, ip: g.ip, vpcId: VPC, groups: [groupId], ...(publicIp ? { publicIp } : {}) });
  const apply = (instances: FirewallInstance[]) => network.setFirewallDocument(makeFirewallDocument(ZONE, groups, instances));

  /** What `from` reads from ip:port within a few seconds ('' when it cannot connect). */
  function read(from: TestNetns, ip: string, port: number): string {
    return spawnSync('ip', ['netns', 'exec', from.name, 'busybox', 'nc', '-w', '2', ip, String(port)], { encoding: 'utf8', input: '', timeout: 10_000 }).stdout.trim();
  }

  /** Runs a TCP server in `ns` on `port` that answers `answer` (JavaScript, given the socket `s`). */
  function serve(ns: TestNetns, port: number, answer: string): void {
    const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e',
      `require('net').createServer((s) => s.end(${answer} + '\\n')).listen(${port}, '0.0.0.0')`], { stdio: 'ignore', detached: true });
    child.unref();
  }

  async function waitFor(what: string, ok: () => boolean): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (!ok()) {
      if (Date.now() > deadline) assert.fail(`${what} did not happen within 30 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'ibtest-pub-'));
    chmodSync(stateDir, 0o711); // dnsmasq drops to nobody
    host = new TestNetns('ibt-pnh');
    outside = new TestNetns('ibt-pno');
    host.exec('ip', ['link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', outside.name]);
    host.exec('ip', ['addr', 'add', `${NODE_UPLINK}/24`, 'dev', 'up0']);
    host.exec('ip', ['link', 'set', 'up0', 'up']);
    host.exec('ip', ['route', 'add', 'default', 'via', OUTSIDE]); // the node's way out, as on a real host
    outside.exec('ip', ['addr', 'add', `${OUTSIDE}/24`, 'dev', 'eth0']);
    outside.exec('ip', ['link', 'set', 'eth0', 'up']);
    // The outside knows the public range is behind the node; it knows nothing of the private one.
    outside.exec('ip', ['route', 'add', PUBLIC_RANGE, 'via', NODE_UPLINK]);
    // The outside's service: it answers with the address the connection came from.
    serve(outside, 80, 's.remoteAddress');

    network = new NodeNetwork({ zone: ZONE, cidr: CIDR, stateDir, netns: host.name });
    await network.setUp();
    const specs: [keyof typeof guests, string, string][] = [['one', 'i-0a1000000000000c1', '10.78.0.10'], ['two', 'i-0a2000000000000c2', '10.78.0.11']];
    for (const [role, id, ip] of specs) {
      const ns = new TestNetns('ibt-png');
      guests[role] = { id, ns, ip };
      host.exec('ip', ['link', 'add', tapNameForInstance(id), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name]);
      ns.exec('ip', ['link', 'set', 'eth0', 'address', allocateMac(id)]);
      ns.exec('ip', ['link', 'set', 'eth0', 'up']);
      ns.exec('ip', ['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      ns.exec('ip', ['route', 'add', 'default', 'via', GATEWAY]);
      await network.addInstance({ instanceId: id, mac: allocateMac(id), ip, firewall: { vpcId: VPC, groups: [WEB] } });
      serve(ns, 22, `'banner-${id}'`);
    }
    for (const g of Object.values(guests)) await waitFor(`the service of ${g.id}`, () => read(g.ns, '127.0.0.1', 22).startsWith('banner'));
    await waitFor('the outside service', () => read(outside, '127.0.0.1', 80) !== '');
  });

  after(async () => {
    await network?.tearDown().catch(() => undefined);
    for (const g of Object.values(guests)) g.ns?.dispose();
    outside?.dispose();
    host?.dispose();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('reaches nothing at a public address before one is associated; instances still reach outside through the masquerade', async () => {
    await apply([instance(guests.one, WEB), instance(guests.two, WEB)]);
    assert.equal(read(outside, PUBLIC_ONE, 22), '');
    assert.equal(read(guests.one.ns, OUTSIDE, 80), NODE_UPLINK, "an instance without a public address leaves with the node's own address");
  });

  it('brings traffic to the public address to the instance, and its outbound traffic leaves with that address', async () => {
    await apply([instance(guests.one, WEB, PUBLIC_ONE), instance(guests.two, WEB)]);
    assert.equal(read(outside, PUBLIC_ONE, 22), `banner-${guests.one.id}`);
    assert.equal(read(guests.one.ns, OUTSIDE, 80), PUBLIC_ONE);
    assert.equal(read(guests.two.ns, OUTSIDE, 80), NODE_UPLINK, 'the other instance still leaves masqueraded');
    assert.equal(read(guests.two.ns, PUBLIC_ONE, 22), `banner-${guests.one.id}`, 'an instance reaches another by its public address');
    assert.equal(read(host, PUBLIC_ONE, 22), `banner-${guests.one.id}`, 'so does the node itself');
    assert.equal(read(guests.one.ns, guests.two.ip, 22), `banner-${guests.two.id}`, 'traffic inside the zone network is not translated');
    const rules = host.exec('nft', ['list', 'table', 'ip', publicNatTableName(network.bridgeName)]);
    assert.match(rules, new RegExp(`${PUBLIC_ONE.replaceAll('.', '\\.')} : ${guests.one.ip.replaceAll('.', '\\.')}`));
  });

  it("keeps the instance's security groups on traffic to its public address", async () => {
    await apply([instance(guests.one, CLOSED, PUBLIC_ONE), instance(guests.two, WEB)]);
    assert.equal(read(outside, PUBLIC_ONE, 22), '');
    assert.equal(read(guests.one.ns, OUTSIDE, 80), PUBLIC_ONE, 'egress is still allowed, with the public address');
  });

  it('stops answering at the public address once it is disassociated, and moves it with a new association', async () => {
    await apply([instance(guests.one, WEB), instance(guests.two, WEB, PUBLIC_ONE)]);
    assert.equal(read(outside, PUBLIC_ONE, 22), `banner-${guests.two.id}`, 'reassociated to the other instance');
    assert.equal(read(guests.one.ns, OUTSIDE, 80), NODE_UPLINK);
    await apply([instance(guests.one, WEB), instance(guests.two, WEB)]);
    assert.equal(read(outside, PUBLIC_ONE, 22), '');
    assert.equal(read(guests.two.ns, OUTSIDE, 80), NODE_UPLINK);
  });

  it('ignores a public address whose private address is not the port here (a stale document)', async () => {
    await apply([{ ...instance(guests.one, WEB, PUBLIC_ONE), ip: '10.78.0.99' }, instance(guests.two, WEB)]);
    assert.equal(read(outside, PUBLIC_ONE, 22), '');
  });

  it('removes its table at teardown', async () => {
    const table = publicNatTableName(network.bridgeName);
    assert.match(table, /^ib_nat_/);
    assert.match(host.exec('nft', ['list', 'tables']), new RegExp(`table ip ${table}\\b`));
    await network.tearDown();
    assert.doesNotMatch(host.exec('nft', ['list', 'tables']), /ib_/);
  });
});
