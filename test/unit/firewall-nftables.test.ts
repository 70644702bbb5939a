// Security groups on a node, without touching the host: the firewall document's checks (nothing
// unexpected reaches nftables text), the plan a bridge's ports and the document make, the exact
// nftables text rendered from a plan, and the per-node cut a cluster sends over HTTP.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  documentSlicer, firewallDocumentVersion, makeFirewallDocument, validateFirewallDocument, type FirewallDocument, type FirewallRule,
} from '../../src/node/network/firewall-document.ts';
import { planBridgeFirewall } from '../../src/node/network/security-group-plan.ts';
import { renderSecurityGroupTables, ruleMatch, securityGroupTableNames } from '../../src/node/network/nftables-firewall.ts';
import { RecordingFirewall } from '../../src/node/network/firewall-backend.ts';
import { isEc2Error } from '../helpers/ec2-errors.ts';

const BRIDGE = { bridgeName: 'ibbr-z1', cidr: '10.1.0.0/16', gateway: '10.1.0.1' };
const WEB = 'sg-0000000000000000a';
const ADMIN = 'sg-0000000000000000b';
const OTHER = 'sg-0000000000000000c';
const VPC_A = 'vpc-000000000000000a1';
const VPC_B = 'vpc-000000000000000b1';

function sampleDocument(): FirewallDocument {
  return makeFirewallDocument('z1', [
    {
      id: WEB, vpcId: VPC_A,
      ingress: [
        { protocol: 'tcp', fromPort: 22, toPort: 22, group: ADMIN },
        { protocol: 'tcp', fromPort: 8000, toPort: 8080, cidr: '10.1.0.1/32' },
        { protocol: 'icmp', fromPort: 8, toPort: -1, cidr: '0.0.0.0/0' },
      ],
      egress: [{ protocol: '-1', cidr: '0.0.0.0/0' }],
    },
    { id: ADMIN, vpcId: VPC_A, ingress: [{ protocol: 'tcp', fromPort: 22, toPort: 22, cidr: '10.1.0.1/32' }], egress: [{ protocol: 'udp', fromPort: 53, toPort: 53, cidr: '10.0.0.0/8' }] },
    { id: OTHER, vpcId: VPC_B, ingress: [{ protocol: '-1', cidr: '0.0.0.0/0' }], egress: [{ protocol: '-1', cidr: '0.0.0.0/0' }] },
  ], [
    { id: 'i-0000000000000000b', ip: '10.1.0.11', vpcId: VPC_A, groups: [ADMIN] },
    { id: 'i-0000000000000000a', ip: '10.1.0.10', vpcId: VPC_A, groups: [WEB] },
    { id: 'i-0000000000000000d', ip: '10.1.3.4', vpcId: VPC_A, groups: [ADMIN] }, // on another node
    { id: 'i-0000000000000000c', ip: '10.1.0.12', vpcId: VPC_B, groups: [OTHER] },
  ]);
}

const ports = [
  { instanceId: 'i-0000000000000000a', tapName: 'ibtap-00000000a', ip: '10.1.0.10', vpcId: VPC_A, groups: [] },
  { instanceId: 'i-0000000000000000b', tapName: 'ibtap-00000000b', ip: '10.1.0.11', vpcId: VPC_A, groups: [ADMIN] },
  { instanceId: 'i-0000000000000000c', tapName: 'ibtap-00000000c', ip: '10.1.0.12', vpcId: VPC_B, groups: [OTHER] },
];

describe('firewall document', () => {
  it('is sorted and versioned by content, whatever order it was built in', () => {
    const doc = sampleDocument();
    assert.deepEqual(doc.instances.map((i) => i.id), ['i-0000000000000000a', 'i-0000000000000000b', 'i-0000000000000000c', 'i-0000000000000000d']);
    assert.equal(doc.version, firewallDocumentVersion(doc));
    const reversed = makeFirewallDocument('z1', [...doc.groups].reverse(), [...doc.instances].reverse());
    assert.equal(reversed.version, doc.version);
    const changed = makeFirewallDocument('z1', doc.groups, doc.instances.map((i) => (i.id.endsWith('a') ? { ...i, groups: [ADMIN] } : i)));
    assert.notEqual(changed.version, doc.version);
  });

  it('passes a well-formed document through validation unchanged', () => {
    const doc = sampleDocument();
    assert.deepEqual(validateFirewallDocument(JSON.parse(JSON.stringify(doc))), doc);
  });

  it('refuses anything that could carry text into the rule set', () => {
    const doc = sampleDocument();
    // WEB's ingress, sorted: [0] icmp from anywhere, [1] tcp/22 from ADMIN, [2] tcp/8000-8080 from the gateway.
    const bad: [string, (d: any) => void][] = [
      ['a CIDR with a statement after it', (d) => { d.groups[0].ingress[2].cidr = '0.0.0.0/0 accept'; }],
      ['a CIDR with host bits', (d) => { d.groups[0].ingress[2].cidr = '10.1.0.1/16'; }],
      ['an address with a space', (d) => { d.instances[0].ip = '10.1.0.10 '; }],
      ['an address out of range', (d) => { d.instances[0].ip = '10.1.0.256'; }],
      ['a group id with a quote', (d) => { d.instances[0].groups = ['sg-1"; flush ruleset']; }],
      ['a protocol name nft knows but EC2 does not', (d) => { d.groups[0].ingress[1].protocol = 'sctp'; }],
      ['a protocol number above 255', (d) => { d.groups[0].ingress[1].protocol = '300'; }],
      ['a port above 65535', (d) => { d.groups[0].ingress[1].toPort = 70000; }],
      ['a reversed port range', (d) => { d.groups[0].ingress[2].fromPort = 9000; }],
      ['a rule with two peers', (d) => { d.groups[0].ingress[1].cidr = '10.0.0.0/8'; }],
      ['a rule with no peer', (d) => { delete d.groups[0].ingress[1].group; }],
      ['a zone with a slash', (d) => { d.zone = '../etc'; }],
      ['a VPC id of the wrong kind', (d) => { d.instances[0].vpcId = 'sg-0123'; }],
    ];
    for (const [what, spoil] of bad) {
      const copy = JSON.parse(JSON.stringify(doc));
      spoil(copy);
      assert.throws(() => validateFirewallDocument(copy), isEc2Error('InvalidParameterValue'), what);
    }
  });

  it('cuts a node its own part: its instances, their groups, and the members of the groups their rules name', () => {
    const doc = sampleDocument();
    const slicer = documentSlicer(doc);
    const part = slicer.forInstances((id) => id === 'i-0000000000000000a');
    assert.equal(part.version, doc.version);
    assert.deepEqual(part.groups.map((g) => g.id), [WEB]);
    // WEB allows ADMIN: both ADMIN members come along, wherever they run; the other account's instance does not.
    assert.deepEqual(part.instances.map((i) => i.id), ['i-0000000000000000a', 'i-0000000000000000b', 'i-0000000000000000d']);
    assert.deepEqual(slicer.forInstances(() => false), { zone: 'z1', version: doc.version, groups: [], instances: [] });
  });
});

describe('security group plan of a bridge', () => {
  it('takes each port\'s groups from the document, which wins over the launch spec', () => {
    const plan = planBridgeFirewall(BRIDGE, sampleDocument(), ports);
    assert.deepEqual(plan.ports.map((p) => [p.tapName, p.groups]), [['ibtap-00000000a', [WEB]], ['ibtap-00000000b', [ADMIN]], ['ibtap-00000000c', [OTHER]]]);
    assert.deepEqual([...plan.groups.keys()].sort(), [WEB, ADMIN, OTHER].sort());
    // Only ADMIN is named as a peer; its members include the one on another node.
    assert.deepEqual([...plan.groupMembers], [[ADMIN, ['10.1.0.11', '10.1.3.4']]]);
  });

  it('closes a port whose groups the node has no rules for yet, and counts it as a member at once', () => {
    const plan = planBridgeFirewall(BRIDGE, undefined, [
      { instanceId: 'i-0000000000000000e', tapName: 'ibtap-00000000e', ip: '10.1.0.20', vpcId: VPC_A, groups: [ADMIN] },
    ]);
    assert.deepEqual(plan.groups.get(ADMIN), { ingress: [], egress: [] });
    const text = renderSecurityGroupTables(plan);
    assert.match(text, /chain out_ibtap_00000000e \{\n    # [^\n]*\n    drop\n  \}/);
    assert.match(text, /chain in_ibtap_00000000e \{\n    # [^\n]*\n    drop\n  \}/);
    // Known later: a new member of a group named by a local rule is in that group's set before the cloud says so.
    const doc = makeFirewallDocument('z1', [{ id: WEB, vpcId: VPC_A, ingress: [{ protocol: '-1', group: ADMIN }], egress: [] }], []);
    const withPeer = planBridgeFirewall(BRIDGE, doc, [
      { instanceId: 'i-0000000000000000e', tapName: 'ibtap-00000000e', ip: '10.1.0.20', vpcId: VPC_A, groups: [ADMIN] },
      { instanceId: 'i-0000000000000000f', tapName: 'ibtap-00000000f', ip: '10.1.0.21', vpcId: VPC_A, groups: [WEB] },
    ]);
    assert.deepEqual(withPeer.groupMembers.get(ADMIN), ['10.1.0.20']);
  });

  it('closes a port with neither context nor document entry, and keeps it alone on the link', () => {
    const plan = planBridgeFirewall(BRIDGE, undefined, [
      { instanceId: 'i-0000000000000000e', tapName: 'ibtap-00000000e', ip: '10.1.0.20', vpcId: '', groups: [] },
      { instanceId: 'i-0000000000000000f', tapName: 'ibtap-00000000f', ip: '10.1.0.21', vpcId: VPC_A, groups: [] },
    ]);
    const text = renderSecurityGroupTables(plan);
    assert.match(text, /chain out_ibtap_00000000e \{\n    # [^\n]*no group\n    drop\n  \}/);
    assert.match(text, /chain in_ibtap_00000000e \{\n    # [^\n]*no group\n    drop\n  \}/);
    assert.match(text, /"ibtap-00000000e" : jump v_unknown, "ibtap-00000000f" : jump v_vpc_000000000000000a1/);
    assert.match(text, /chain v_unknown \{\n    oifname "ibtap-\*" drop\n  \}/);
    // What it needs to boot is allowed before any port's chain.
    assert.match(text, /udp sport 68 udp dport 67 accept\n    ip daddr 10\.1\.0\.1 meta l4proto \{ tcp, udp \} th dport 53 accept\n    ct original ip daddr 169\.254\.169\.254 tcp dport 80 accept\n    ip saddr vmap/);
  });

  it('ignores a group of another VPC named on a port', () => {
    const plan = planBridgeFirewall(BRIDGE, sampleDocument(), [
      { instanceId: 'i-0000000000000000e', tapName: 'ibtap-00000000e', ip: '10.1.0.20', vpcId: VPC_B, groups: [WEB] },
    ]);
    assert.deepEqual(plan.groups.get(WEB), { ingress: [], egress: [] });
  });
});

describe('nftables rules', () => {
  const rule = (r: Partial<FirewallRule>): FirewallRule => ({ protocol: '-1', cidr: '0.0.0.0/0', ...r });

  it('matches each protocol, port range, ICMP type and code, CIDR and group as EC2 means them', () => {
    const cases: [FirewallRule, 'saddr' | 'daddr', string][] = [
      [rule({}), 'saddr', ''],
      [rule({ cidr: '10.0.0.0/8' }), 'saddr', 'ip saddr 10.0.0.0/8'],
      [rule({ cidr: undefined, group: 'sg-0123' }), 'daddr', 'ip daddr @g_sg_0123'],
      [rule({ protocol: 'tcp', fromPort: 22, toPort: 22 }), 'saddr', 'tcp dport 22'],
      [rule({ protocol: 'udp', fromPort: 1000, toPort: 2000 }), 'saddr', 'udp dport 1000-2000'],
      [rule({ protocol: 'tcp', fromPort: 0, toPort: 65535 }), 'saddr', 'meta l4proto tcp'],
      [rule({ protocol: 'icmp', fromPort: -1, toPort: -1 }), 'saddr', 'meta l4proto icmp'],
      [rule({ protocol: 'icmp', fromPort: 8, toPort: -1 }), 'saddr', 'icmp type 8'],
      [rule({ protocol: 'icmp', fromPort: 3, toPort: 4, cidr: '192.168.0.0/16' }), 'saddr', 'ip saddr 192.168.0.0/16 icmp type 3 icmp code 4'],
      [rule({ protocol: '47' }), 'daddr', 'meta l4proto 47'],
    ];
    for (const [r, peer, expected] of cases) assert.equal(ruleMatch(r, peer), expected, JSON.stringify(r));
  });

  it('names its tables with the ib prefix, one per family', () => {
    assert.deepEqual(securityGroupTableNames('ibbr-us-east-1a'), { sg: 'ib_sg_br_us_east_1a', vpc: 'ib_vpc_br_us_east_1a' });
  });

  it('renders the same text for the same plan, stateful, with DHCP and metadata always open and VPCs kept apart', () => {
    const text = renderSecurityGroupTables(planBridgeFirewall(BRIDGE, sampleDocument(), ports));
    assert.equal(text, renderSecurityGroupTables(planBridgeFirewall(BRIDGE, sampleDocument(), [...ports].reverse())));
    assert.equal(text, `table ip ib_sg_br_z1 {}
delete table ip ib_sg_br_z1
table ip ib_sg_br_z1 {
  set g_sg_0000000000000000b { type ipv4_addr; elements = { 10.1.0.11, 10.1.3.4 }; }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname != "ibbr-z1" oifname != "ibbr-z1" accept
    ct state established,related accept
    iifname "ibbr-z1" ip saddr vmap { 10.1.0.10 : jump out_ibtap_00000000a, 10.1.0.11 : jump out_ibtap_00000000b, 10.1.0.12 : jump out_ibtap_00000000c }
    oifname "ibbr-z1" ip daddr vmap { 10.1.0.10 : jump in_ibtap_00000000a, 10.1.0.11 : jump in_ibtap_00000000b, 10.1.0.12 : jump in_ibtap_00000000c }
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname != "ibbr-z1" accept
    ct state established,related accept
    udp sport 68 udp dport 67 accept
    ip daddr 10.1.0.1 meta l4proto { tcp, udp } th dport 53 accept
    ct original ip daddr 169.254.169.254 tcp dport 80 accept
    ip saddr vmap { 10.1.0.10 : jump out_ibtap_00000000a, 10.1.0.11 : jump out_ibtap_00000000b, 10.1.0.12 : jump out_ibtap_00000000c }
  }
  chain output {
    type filter hook output priority filter; policy accept;
    oifname != "ibbr-z1" accept
    ct state established,related accept
    udp sport 67 udp dport 68 accept
    ip daddr vmap { 10.1.0.10 : jump in_ibtap_00000000a, 10.1.0.11 : jump in_ibtap_00000000b, 10.1.0.12 : jump in_ibtap_00000000c }
  }
  chain out_ibtap_00000000a {
    # i-0000000000000000a 10.1.0.10: egress of ${WEB}
    return
    drop
  }
  chain in_ibtap_00000000a {
    # i-0000000000000000a 10.1.0.10: ingress of ${WEB}
    icmp type 8 accept
    ip saddr @g_sg_0000000000000000b tcp dport 22 accept
    ip saddr 10.1.0.1/32 tcp dport 8000-8080 accept
    drop
  }
  chain out_ibtap_00000000b {
    # i-0000000000000000b 10.1.0.11: egress of ${ADMIN}
    ip daddr 10.0.0.0/8 udp dport 53 return
    drop
  }
  chain in_ibtap_00000000b {
    # i-0000000000000000b 10.1.0.11: ingress of ${ADMIN}
    ip saddr 10.1.0.1/32 tcp dport 22 accept
    drop
  }
  chain out_ibtap_00000000c {
    # i-0000000000000000c 10.1.0.12: egress of ${OTHER}
    return
    drop
  }
  chain in_ibtap_00000000c {
    # i-0000000000000000c 10.1.0.12: ingress of ${OTHER}
    accept
    drop
  }
}
table bridge ib_vpc_br_z1 {}
delete table bridge ib_vpc_br_z1
table bridge ib_vpc_br_z1 {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname vmap { "ibtap-00000000a" : jump v_vpc_000000000000000a1, "ibtap-00000000b" : jump v_vpc_000000000000000a1, "ibtap-00000000c" : jump v_vpc_000000000000000b1 }
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname { "ibtap-00000000a", "ibtap-00000000b", "ibtap-00000000c" } ether type ip ip daddr 10.1.0.0/16 ip daddr != 10.1.0.1 drop
  }
  chain v_vpc_000000000000000a1 {
    oifname "ibtap-*" oifname != { "ibtap-00000000a", "ibtap-00000000b" } drop
  }
  chain v_vpc_000000000000000b1 {
    oifname "ibtap-*" oifname != { "ibtap-00000000c" } drop
  }
}
`);
  });

  it('renders empty tables for a bridge without filtered ports', () => {
    const text = renderSecurityGroupTables(planBridgeFirewall(BRIDGE, sampleDocument(), []));
    assert.doesNotMatch(text, /vmap|jump/);
    assert.match(text, /table ip ib_sg_br_z1 \{\n  chain forward/);
  });

  it('a recording backend keeps the plans it was given', async () => {
    const backend = new RecordingFirewall();
    backend.render(planBridgeFirewall(BRIDGE, undefined, []));
    await backend.remove('ibbr-z1');
    assert.equal(backend.last('ibbr-z1')?.bridgeName, 'ibbr-z1');
    assert.deepEqual(backend.removed, ['ibbr-z1']);
  });
});
