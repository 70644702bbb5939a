// `npm run bench -- network`: what security groups cost. The cloud's side: computing a zone's
// firewall document with 10,000 instances in one group (SQLite in memory). The node's side, in a
// network namespace made here (root, nft): the nftables rule set of a bridge with 20 instances
// whose group admits a group of 10,000 members, its size, the time to load it, and the time to
// load it again after one member changed (what a launch elsewhere in the zone costs a node); and the
// same update through a NodeNetwork, which rebuilds all of the bridge's tables in one transaction.
// Seconds from AuthorizeSecurityGroupIngress to the rule taking effect are bounded by the cloud's
// check interval (2 s) plus one push and one load (measured here); the QEMU e2e test
// (test/e2e/security-groups-qemu.test.ts) waits for exactly that on real VMs.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { openStore } from '../src/store/store.ts';
import { createAccountWithDefaults, ensureZone } from '../src/cloud/provision.ts';
import { buildFirewallDocument } from '../src/cloud/network/firewall-document.ts';
import { makeFirewallDocument, type FirewallInstance } from '../src/node/network/firewall-document.ts';
import { planBridgeFirewall } from '../src/node/network/security-group-plan.ts';
import { renderSecurityGroupTables } from '../src/node/network/nftables-firewall.ts';

const MEMBERS = 10_000;
const LOCAL_PORTS = 20;

function ip(i: number): string {
  return `10.${1 + Math.floor(i / 65_000)}.${Math.floor(i / 250) % 256}.${(i % 250) + 2}`;
}

async function documentBuild(): Promise<{ documentBuildMs: number; documentBytes: number }> {
  const store = await openStore({ url: ':memory:' });
  try {
    await ensureZone(store, { name: 'bench-1a', cidr: '10.0.0.0/8', region: 'bench-1' });
    const { account } = await createAccountWithDefaults(store, 'bench');
    const group = await store.db.selectFrom('security_groups').select(['id', 'vpc_id']).where('account_id', '=', account.id).executeTakeFirstOrThrow();
    const now = new Date().toISOString();
    const rows = Array.from({ length: MEMBERS }, (_, i) => ({
      id: `i-${(0x10000000 + i).toString(16).padStart(17, '0')}`, account_id: account.id, reservation_id: 'r-0123456789abcdef0',
      client_token: null, request_hash: null, image_id: 'ami-0123456789abcdef0', kernel_id: null, ramdisk_id: null, instance_type: 'm1.small',
      zone: 'bench-1a', vpc_id: group.vpc_id, subnet_id: 'subnet-0123456789abcdef0', private_ip: ip(i), public_ip: null, mac: 'd2:0d:00:00:00:00',
      key_name: null, user_data: null, security_groups: JSON.stringify([{ id: group.id, name: 'default' }]), launch_index: 0, launch_time: now,
      state: 'running', state_reason: null, state_changed_at: now, node_id: null, disable_api_termination: 0, status_impaired: 0,
      accelerator: null, shutdown_behavior: 'stop',
    }));
    for (let i = 0; i < rows.length; i += 500) await store.db.insertInto('instances').values(rows.slice(i, i + 500)).execute();
    await buildFirewallDocument(store.db, 'bench-1a'); // warm up
    const started = performance.now();
    const doc = await buildFirewallDocument(store.db, 'bench-1a');
    return { documentBuildMs: Math.round(performance.now() - started), documentBytes: JSON.stringify(doc).length };
  } finally {
    await store.close();
  }
}

function nftables(): Record<string, unknown> {
  if (process.getuid?.() !== 0 || spawnSync('nft', ['--version']).status !== 0) return { nftables: 'skipped: needs root and nft' };
  const members: FirewallInstance[] = Array.from({ length: MEMBERS }, (_, i) => ({
    id: `i-${(0x20000000 + i).toString(16).padStart(17, '0')}`, ip: ip(i), vpcId: 'vpc-0000000000000000a', groups: ['sg-0000000000000000b'],
  }));
  const group = { id: 'sg-0000000000000000a', vpcId: 'vpc-0000000000000000a', ingress: [{ protocol: '-1', group: 'sg-0000000000000000b' }], egress: [{ protocol: '-1', cidr: '0.0.0.0/0' }] };
  const ports = Array.from({ length: LOCAL_PORTS }, (_, i) => ({
    instanceId: `i-${(0x30000000 + i).toString(16).padStart(17, '0')}`, tapName: `ibtap-${(0x30000000 + i).toString(16)}`, ip: `10.200.0.${i + 2}`,
    vpcId: 'vpc-0000000000000000a', groups: ['sg-0000000000000000a'],
  }));
  const bridge = { bridgeName: 'ibbr-bench', cidr: '10.0.0.0/8', gateway: '10.0.0.1' };
  const render = (list: FirewallInstance[]) => renderSecurityGroupTables(planBridgeFirewall(bridge, makeFirewallDocument('bench-1a', [group], list), ports));
  const first = render(members);
  const changed = render([...members.slice(1), { ...members[0]!, ip: '10.250.0.2' }]);
  const ns = `ibbench-${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const load = (text: string) => {
      const started = performance.now();
      execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: text });
      return Math.round(performance.now() - started);
    };
    const loadMs = load(first);
    const updateMs = load(changed);
    const elements = (execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'set', 'ip', 'ib_sg_br_bench', 'g_sg_0000000000000000b'], { encoding: 'utf8' })
      .match(/\d+\.\d+\.\d+\.\d+/g) ?? []).length;
    return { members: MEMBERS, localPorts: LOCAL_PORTS, rulesetBytes: first.length, rulesetLines: first.split('\n').length, setElements: elements, loadMs, updateMs };
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

/**
 * A whole node update as the cloud's push causes it: a NodeNetwork in a namespace made here, with
 * LOCAL_PORTS instance taps, takes a document whose peer group has MEMBERS members, then one where a
 * member changed. Every table of the bridge (anti-spoofing, NAT, security groups, VPC isolation,
 * metadata) is rebuilt in the one `nft -f` transaction each update makes.
 */
async function nodeUpdate(): Promise<Record<string, unknown>> {
  if (process.getuid?.() !== 0 || spawnSync('nft', ['--version']).status !== 0 || spawnSync('dnsmasq', ['--version']).status !== 0) {
    return { nodeUpdate: 'skipped: needs root, nft and dnsmasq' };
  }
  const { NodeNetwork, allocateMac } = await import('../src/node/network.ts');
  const { mkdtempSync, chmodSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const ns = `ibbench-${randomBytes(3).toString('hex')}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'ibbench-upd-'));
  chmodSync(stateDir, 0o711);
  execFileSync('ip', ['netns', 'add', ns]);
  const network = new NodeNetwork({ zone: 'bench-1a', cidr: '10.0.0.0/8', stateDir, netns: ns });
  try {
    await network.setUp();
    const group = { id: 'sg-0000000000000000a', vpcId: 'vpc-0000000000000000a', ingress: [{ protocol: '-1', group: 'sg-0000000000000000b' }], egress: [{ protocol: '-1', cidr: '0.0.0.0/0' }] };
    const members: FirewallInstance[] = Array.from({ length: MEMBERS }, (_, i) => ({
      id: `i-${(0x20000000 + i).toString(16).padStart(17, '0')}`, ip: ip(i), vpcId: 'vpc-0000000000000000a', groups: ['sg-0000000000000000b'],
    }));
    for (let i = 0; i < LOCAL_PORTS; i++) {
      const id = `i-${(0x30 + i).toString(16)}${randomBytes(8).toString('hex').slice(0, 15)}`;
      await network.addInstance({ instanceId: id, mac: allocateMac(id), ip: `10.200.0.${i + 2}`, firewall: { vpcId: group.vpcId, groups: [group.id] } });
    }
    const timed = async (list: FirewallInstance[]) => {
      const started = performance.now();
      await network.setFirewallDocument(makeFirewallDocument('bench-1a', [group], list));
      return Math.round(performance.now() - started);
    };
    const nodeFirstLoadMs = await timed(members);
    const nodeUpdateMs = await timed([...members.slice(1), { ...members[0]!, ip: '10.250.0.2' }]);
    return { nodeFirstLoadMs, nodeUpdateMs };
  } finally {
    await network.tearDown().catch(() => undefined);
    spawnSync('ip', ['netns', 'del', ns]);
    rmSync(stateDir, { recursive: true, force: true });
  }
}

export async function benchNetwork(): Promise<Record<string, unknown>> {
  const publicAddress = await (await import('./network-public.ts')).benchPublicAddresses();
  const zoneNetwork = await (await import('./network-zone.ts')).benchZoneNetwork();
  return { bench: 'network', ...(await documentBuild()), ...nftables(), ...(await nodeUpdate()), ...publicAddress, ...zoneNetwork };
}
