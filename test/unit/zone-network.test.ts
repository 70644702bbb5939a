// The pure parts of the zone network (issue 9, items 3, 5, 6): the tunnel's tables and names, the
// peers a cluster sends and how a node checks them, the metadata-by-port tables, the DNS wire format
// and the private names, diagnosis by comparison, and the document cut that gives a node its VPCs'
// instances. The kernel side is in test/e2e/zone-network-netns.test.ts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { renderOverlayTables, tunnelNameForBridge, validateZonePeers, vniForZone } from '../../src/node/network/overlay.ts';
import { renderMetadataTables } from '../../src/node/network/metadata-port.ts';
import { buildAnswer, parseQuery, RCODE, TYPE_A, TYPE_PTR } from '../../src/node/network/dns-wire.ts';
import { addressOfPrivateName, privateDnsName, ZoneDnsService } from '../../src/node/network/dns-service.ts';
import { compareNetwork, summarize } from '../../src/node/network/diagnosis.ts';
import { documentSlicer, makeFirewallDocument } from '../../src/node/network/firewall-document.ts';
import { nodeUnderlayAddress, ZonePeersRelay } from '../../src/cluster/zone-peers-relay.ts';
import { NodeRegistry } from '../../src/cluster/node-registry.ts';
import type { NodeApi } from '../../src/node/node-api.ts';

function query(name: string, type: number, id = 0x1234): Buffer {
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const header = Buffer.from([id >> 8, id & 255, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([header, ...labels, Buffer.from([0, 0, type, 0, 1])]);
}

function answerOf(reply: Buffer): { rcode: number; answers: number; a?: string } {
  const rcode = reply.readUInt16BE(2) & 0xf;
  const answers = reply.readUInt16BE(6);
  return { rcode, answers, ...(answers && reply.readUInt16BE(reply.length - 14 + 2) === TYPE_A ? { a: [...reply.subarray(reply.length - 4)].join('.') } : {}) };
}

describe('zone tunnel', () => {
  it('names the tunnel after the bridge within 15 characters and gives each zone its own VNI', () => {
    assert.equal(tunnelNameForBridge('ibbr-ibq-1a'), 'ibvx-ibq-1a');
    assert.ok(tunnelNameForBridge('ibsomething-long').length <= 15);
    assert.ok(tunnelNameForBridge('ibsomething-long').startsWith('ibvx-'));
    const a = vniForZone('eu-1a');
    assert.ok(a >= 1 && a <= 0xffffff);
    assert.equal(vniForZone('eu-1a'), a);
    assert.notEqual(vniForZone('eu-1b'), a);
  });

  it('takes peers only as IPv4 addresses, sorted and unique', () => {
    assert.deepEqual(validateZonePeers({ zone: 'z1', peers: ['172.30.0.12', '172.30.0.11', '172.30.0.12'] }), { zone: 'z1', peers: ['172.30.0.11', '172.30.0.12'] });
    assert.throws(() => validateZonePeers({ zone: 'z1', peers: ['172.30.0.1; drop'] }), /not an IPv4 address/);
    assert.throws(() => validateZonePeers({ zone: 'z 1', peers: [] }), /invalid zone/);
    assert.throws(() => validateZonePeers({ zone: 'z1' }), /list/);
  });

  it('lets a tunnel frame reach a local port only from an instance of the port\'s VPC, and VXLAN only from peers', () => {
    const text = renderOverlayTables({
      bridgeName: 'ibbr-z1', gateway: '10.1.0.1', peers: ['172.30.0.12'],
      instances: [
        { ip: '10.1.0.10', vpcId: 'vpc-a', tapName: 'ibtap-a' },
        { ip: '10.1.0.11', vpcId: 'vpc-a' },
        { ip: '10.1.0.12', vpcId: 'vpc-b' }, // no port of vpc-b here: not in the map, so dropped
      ],
    });
    assert.match(text, /elements = \{ 10\.1\.0\.11 : jump v_vpc_a \}/);
    assert.doesNotMatch(text, /10\.1\.0\.12/);
    assert.match(text, /chain v_vpc_a \{\n\s+oifname != \{ "ibtap-a" \} drop\n\s+accept/);
    assert.match(text, /udp dport 4789 ip saddr != @peers drop/);
    assert.match(text, /elements = \{ 172\.30\.0\.12 \}/);
    assert.match(text, /iifname "ibvx-z1" drop/, 'nothing from the tunnel reaches this host');
    assert.match(text, /oifname "ibvx-z1" drop/, 'nothing this host sends goes through the tunnel');
    // Replaced atomically: declared, deleted and made again in one transaction.
    assert.match(text, /^table bridge ib_ovl_br_z1 \{\}\ndelete table bridge ib_ovl_br_z1\n/);
  });
});

describe('cluster → node peers', () => {
  it('takes a node\'s address in the zone from its URL, and none from "local" or a name', () => {
    assert.equal(nodeUnderlayAddress({ address: 'http://172.30.0.11:8775' }), '172.30.0.11');
    assert.equal(nodeUnderlayAddress({ address: 'local' }), undefined);
    assert.equal(nodeUnderlayAddress({ address: 'http://node1.example:8775' }), undefined);
  });

  it('tells each up node the others, again only when they change or are due', async () => {
    const received: Record<string, string[][]> = {};
    const registry = new NodeRegistry({ downAfterMs: 60_000 });
    const entries = ['11', '12', '13'].map((n) => {
      // Only the call under test: the relay never asks anything else of a node.
      const c = { setZonePeers: async (p: { peers: string[] }) => { (received[n] ??= []).push(p.peers); } } as unknown as NodeApi;
      const e = registry.add(`nd-${n}`, { name: `n${n}`, address: `http://172.30.0.${n}:8775`, client: c });
      e.state = 'up';
      return e;
    });
    let now = 1000;
    const relay = new ZonePeersRelay({ zone: 'z1', registry, now: () => now, resendMs: 30_000 });
    await relay.sync();
    assert.deepEqual(received['11'], [['172.30.0.12', '172.30.0.13']]);
    assert.deepEqual(received['13'], [['172.30.0.11', '172.30.0.12']]);
    await relay.sync();
    assert.equal(received['11']!.length, 1, 'unchanged: not sent again');
    entries[2]!.state = 'down';
    registry.remove('nd-13');
    await relay.sync();
    assert.deepEqual(received['11']!.at(-1), ['172.30.0.12'], 'a removed node is no longer a peer');
    now += 31_000;
    await relay.sync();
    assert.equal(received['12']!.length, 3, 'sent again when due');
  });
});

describe('metadata by port', () => {
  it('marks each tap and source-NATs a metadata request to that tap\'s instance; redirected when the address is off the bridge', () => {
    const text = renderMetadataTables({ bridgeName: 'ibbr-z1', ports: [{ tapName: 'ibtap-b', ip: '10.1.0.11' }, { tapName: 'ibtap-a', ip: '10.1.0.10' }], listen: '10.1.0.1' });
    assert.match(text, /meta mark set iifname map \{ "ibtap-a" : 0x1b0d0001, "ibtap-b" : 0x1b0d0002 \}/);
    assert.match(text, /elements = \{ 0x1b0d0001 : 10\.1\.0\.10, 0x1b0d0002 : 10\.1\.0\.11 \}/);
    assert.match(text, /ip daddr 169\.254\.169\.254 tcp dport 80 dnat to 10\.1\.0\.1:80/);
    assert.match(text, /snat to meta mark map @mark_ip/);
    assert.match(text, /meta mark != @marks drop/, 'a request from no known tap is dropped');
    assert.match(text, /ip daddr 10\.1\.0\.1 tcp dport 80 ct original ip daddr != 169\.254\.169\.254 drop/, 'the gateway answers only redirected requests');
    assert.doesNotMatch(renderMetadataTables({ bridgeName: 'ibbr-z1', ports: [] }), /dnat/);
  });
});

describe('private DNS names', () => {
  it('spells names as EC2 does and reads them back only for the region', () => {
    assert.equal(privateDnsName('10.1.0.5', 'eu-west-1'), 'ip-10-1-0-5.eu-west-1.compute.internal');
    assert.equal(privateDnsName('10.1.0.5', 'us-east-1'), 'ip-10-1-0-5.ec2.internal');
    assert.equal(addressOfPrivateName('ip-10-1-0-5.eu-west-1.compute.internal', 'eu-west-1'), '10.1.0.5');
    assert.equal(addressOfPrivateName('ip-10-1-0-5.eu-west-2.compute.internal', 'eu-west-1'), undefined);
    assert.equal(addressOfPrivateName('ip-10-1-0-500.eu-west-1.compute.internal', 'eu-west-1'), undefined);
  });

  it('reads one question and refuses what is not a plain query', () => {
    const q = parseQuery(query('Ip-10-1-0-5.Eu-1.Compute.Internal', TYPE_A));
    assert.equal(q?.name, 'ip-10-1-0-5.eu-1.compute.internal');
    const response = query('x.y', TYPE_A);
    response[2] = 0x81;
    assert.equal(parseQuery(response), undefined);
    assert.equal(parseQuery(Buffer.from([1, 2, 3])), undefined);
    const looping = Buffer.concat([query('a', TYPE_A).subarray(0, 12), Buffer.from([0xc0, 0x0c])]);
    assert.equal(parseQuery(looping), undefined);
  });

  it('answers only an instance of the same VPC; others get NXDOMAIN, strangers REFUSED', async () => {
    const vpcs: Record<string, string> = { '10.1.0.5': 'vpc-a', '10.1.0.6': 'vpc-a', '10.1.0.7': 'vpc-b' };
    const dns = new ZoneDnsService({
      asker: (ip) => (vpcs[ip] ? { vpcId: vpcs[ip]!, region: 'eu-1' } : undefined),
      vpcOf: (ip) => vpcs[ip], upstream: [],
    });
    const name = 'ip-10-1-0-6.eu-1.compute.internal';
    assert.deepEqual(answerOf((await dns.answer(query(name, TYPE_A), '10.1.0.5'))!), { rcode: RCODE.NOERROR, answers: 1, a: '10.1.0.6' });
    assert.equal(answerOf((await dns.answer(query(name, TYPE_A), '10.1.0.7'))!).rcode, RCODE.NXDOMAIN);
    assert.equal(answerOf((await dns.answer(query(name, TYPE_A), '10.9.9.9'))!).rcode, RCODE.REFUSED);
    const ptr = (await dns.answer(query('6.0.1.10.in-addr.arpa', TYPE_PTR), '10.1.0.5'))!;
    assert.equal(answerOf(ptr).answers, 1);
    assert.ok(ptr.includes(Buffer.from('ip-10-1-0-6')));
    assert.equal(answerOf((await dns.answer(query('example.com', TYPE_A), '10.1.0.5'))!).rcode, RCODE.SERVFAIL, 'no upstream here');
    const id = (await dns.answer(query(name, TYPE_A, 0xbeef), '10.1.0.5'))!.readUInt16BE(0);
    assert.equal(id, 0xbeef);
    assert.equal(buildAnswer(query(name, TYPE_A), parseQuery(query(name, TYPE_A))!, RCODE.NOERROR).readUInt16BE(6), 0);
  });
});

describe('diagnosis', () => {
  it('lists what is wanted as ok or missing and what is prefixed but unwanted as extra', () => {
    const items = compareNetwork(
      [{ kind: 'bridge', name: 'ibbr-z1' }, { kind: 'tap', name: 'ibtap-a', detail: 'i-a' }, { kind: 'tap', name: 'ibtap-b' }],
      [{ kind: 'bridge', name: 'ibbr-z1' }, { kind: 'tap', name: 'ibtap-a' }, { kind: 'tap', name: 'ibtap-old' }],
    );
    assert.deepEqual(items.map((i) => [i.kind, i.name, i.status]), [
      ['bridge', 'ibbr-z1', 'ok'], ['tap', 'ibtap-a', 'ok'], ['tap', 'ibtap-b', 'missing'], ['tap', 'ibtap-old', 'extra'],
    ]);
    assert.deepEqual(summarize('nd-1', items).summary, { ok: 2, missing: 1, extra: 1 });
  });
});

describe('a node\'s part of the zone document', () => {
  it('holds the other instances of its instances\' VPCs (the tunnel\'s isolation needs them), not other VPCs\'', () => {
    const doc = makeFirewallDocument('z1', [], [
      { id: 'i-0a', ip: '10.1.0.10', vpcId: 'vpc-0a', groups: [] },
      { id: 'i-0b', ip: '10.1.0.11', vpcId: 'vpc-0a', groups: [] },
      { id: 'i-0c', ip: '10.1.0.12', vpcId: 'vpc-0b', groups: [] },
    ]);
    const part = documentSlicer(doc).forInstances((id) => id === 'i-0a');
    assert.deepEqual(part.instances.map((i) => i.id), ['i-0a', 'i-0b']);
  });
});
