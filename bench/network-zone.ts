// Part of `npm run bench -- network`: what the zone network across nodes costs (issue 9, items 1
// and 3), on a real kernel in network namespaces made here (root, nft, bridge, busybox):
//
// - ruleEffect: two nodes joined by the VXLAN tunnel, a client guest on one and a server guest on
//   the other (namespaces behind veths named like taps). The server's group admits nothing; then
//   both nodes take the document in which AuthorizeSecurityGroupIngress added tcp/7 from the
//   client's group, as the cloud pushes it; the time until the client's new connection gets through
//   is measured (node side: document in, rules loaded, first connection). The cloud pushes a change
//   at its next check (FirewallSync, every 2 s, sooner when poked), so AuthorizeSecurityGroupIngress
//   → effect is at most that interval plus this.
// - tunnelSet: the tunnel's isolation map of a node whose VPC has 10,000 instances on other nodes
//   (one element each): its text size, the time to load it, and to load it again after one member
//   changed (what a launch elsewhere in the zone costs this node).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { allocateMac } from '../src/node/network.ts';
import { tapNameForInstance } from '../src/node/network-addressing.ts';
import { makeFirewallDocument, type FirewallGroup, type FirewallInstance } from '../src/node/network/firewall-document.ts';
import { HostNetworks } from '../src/node/network/host-networks.ts';
import { renderOverlayTables, type OverlayInstance } from '../src/node/network/overlay.ts';

const ZONE = 'bench-zn';
const CIDR = '10.77.0.0/16';
const VPC = 'vpc-0000000000000a001';
const SERVER = 'sg-00000000000000a01';
const CLIENT = 'sg-00000000000000a02';
const REMOTE = 10_000;
const CLOUD_CHECK_INTERVAL_MS = 2000;

const ns = (prefix: string) => {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', name]);
  execFileSync('ip', ['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up']);
  return name;
};
const inNs = (name: string, ...argv: string[]) => execFileSync('ip', ['netns', 'exec', name, ...argv], { encoding: 'utf8' });

function canRun(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const tool of ['nft', 'bridge', 'dnsmasq']) if (spawnSync(tool, ['--version']).error) return `needs ${tool}`;
  return undefined;
}

async function ruleEffect(): Promise<Record<string, unknown>> {
  const made: string[] = [];
  const dirs: string[] = [];
  const networks: HostNetworks[] = [];
  try {
    const nodes = [ns('ibbz'), ns('ibbz')];
    made.push(...nodes);
    inNs(nodes[0]!, 'ip', 'link', 'add', 'ul0', 'type', 'veth', 'peer', 'name', 'ul0', 'netns', nodes[1]!);
    const ips = ['172.31.77.1', '172.31.77.2'];
    nodes.forEach((n, i) => { inNs(n, 'ip', 'addr', 'add', `${ips[i]}/24`, 'dev', 'ul0'); inNs(n, 'ip', 'link', 'set', 'ul0', 'up'); });
    const guests = [
      { id: 'i-0c1000000000000c1', ip: '10.77.0.10', groups: [CLIENT], node: 0 },
      { id: 'i-0c2000000000000c2', ip: '10.77.0.11', groups: [SERVER], node: 1 },
    ].map((g) => ({ ...g, ns: ns('ibbzg') }));
    made.push(...guests.map((g) => g.ns));
    for (let i = 0; i < 2; i++) {
      const dir = mkdtempSync(join(tmpdir(), 'ibbench-zn-'));
      chmodSync(dir, 0o711);
      dirs.push(dir);
      networks.push(new HostNetworks({ stateDir: dir, netns: nodes[i]!, metadataDnat: true }));
      await networks[i]!.get(ZONE, CIDR).setUp();
    }
    for (const g of guests) {
      inNs(nodes[g.node]!, 'ip', 'link', 'add', tapNameForInstance(g.id), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', g.ns);
      inNs(g.ns, 'ip', 'link', 'set', 'eth0', 'address', allocateMac(g.id));
      inNs(g.ns, 'ip', 'link', 'set', 'eth0', 'up');
      inNs(g.ns, 'ip', 'addr', 'add', `${g.ip}/16`, 'dev', 'eth0');
      await networks[g.node]!.get(ZONE, CIDR).addInstance({ instanceId: g.id, mac: allocateMac(g.id), ip: g.ip, firewall: { vpcId: VPC, groups: g.groups } });
    }
    const server = spawn('ip', ['netns', 'exec', guests[1]!.ns, process.execPath, '-e', `require('net').createServer((s) => s.end('ok')).listen(7)`], { stdio: 'ignore' });
    const members: FirewallInstance[] = guests.map((g) => ({ id: g.id, ip: g.ip, vpcId: VPC, groups: g.groups }));
    const groups = (ingress: FirewallGroup['ingress']): FirewallGroup[] => [
      { id: SERVER, vpcId: VPC, ingress, egress: [{ protocol: '-1', cidr: '0.0.0.0/0' }] },
      { id: CLIENT, vpcId: VPC, ingress: [], egress: [{ protocol: '-1', cidr: '0.0.0.0/0' }] },
    ];
    const push = (doc: ReturnType<typeof makeFirewallDocument>) => Promise.all(networks.map((n) => n.get(ZONE, CIDR).setFirewallDocument(doc)));
    await push(makeFirewallDocument(ZONE, groups([]), members));
    for (let i = 0; i < 2; i++) await networks[i]!.setZonePeers({ zone: ZONE, peers: [ips[1 - i]!] });
    const connects = () => spawnSync('ip', ['netns', 'exec', guests[0]!.ns, 'busybox', 'nc', '-w', '1', guests[1]!.ip, '7'], { encoding: 'utf8', input: '' }).stdout.includes('ok');
    const closedBefore = !connects();

    const started = performance.now();
    await push(makeFirewallDocument(ZONE, groups([{ protocol: 'tcp', fromPort: 7, toPort: 7, group: CLIENT }]), members));
    const loadedMs = performance.now() - started;
    let attempts = 0;
    while (!connects()) {
      if (++attempts > 500) throw new Error('the rule never took effect');
    }
    const effectMs = performance.now() - started;
    server.kill();
    return {
      closedBeforeAuthorize: closedBefore, ruleLoadMsBothNodes: Math.round(loadedMs), ruleEffectMsAcrossNodes: Math.round(effectMs),
      cloudCheckIntervalMs: CLOUD_CHECK_INTERVAL_MS, authorizeToEffectBoundMs: Math.round(CLOUD_CHECK_INTERVAL_MS + effectMs),
    };
  } finally {
    for (const n of networks) await n.tearDownAll().catch(() => undefined);
    for (const name of made) {
      for (const pid of spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean)) {
        try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
      }
      spawnSync('ip', ['netns', 'del', name]);
    }
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
}

function tunnelSet(): Record<string, unknown> {
  const remote = (shift: number): OverlayInstance[] => Array.from({ length: REMOTE }, (_, i) => ({
    ip: `10.${100 + Math.floor((i + shift) / 65_000)}.${Math.floor((i + shift) / 250) % 256}.${((i + shift) % 250) + 2}`, vpcId: VPC,
  }));
  const local: OverlayInstance[] = Array.from({ length: 20 }, (_, i) => ({ ip: `10.99.0.${i + 2}`, vpcId: VPC, tapName: `ibtap-${(0x30000000 + i).toString(16)}` }));
  const render = (list: OverlayInstance[]) => renderOverlayTables({ bridgeName: 'ibbr-bench', gateway: '10.0.0.1', peers: ['172.31.0.2', '172.31.0.3'], instances: [...local, ...list] });
  const first = render(remote(0));
  const changed = render(remote(1));
  const name = ns('ibbzs');
  try {
    const load = (text: string) => {
      const started = performance.now();
      execFileSync('ip', ['netns', 'exec', name, 'nft', '-f', '-'], { input: text });
      return Math.round(performance.now() - started);
    };
    const loadMs = load(first);
    const updateMs = load(changed);
    const elements = (inNs(name, 'nft', 'list', 'map', 'bridge', 'ib_ovl_br_bench', 'src_vpc').match(/jump/g) ?? []).length;
    return { tunnelRemoteInstances: REMOTE, tunnelTableBytes: first.length, tunnelMapElements: elements, tunnelLoadMs: loadMs, tunnelUpdateMs: updateMs };
  } finally {
    spawnSync('ip', ['netns', 'del', name]);
  }
}

export async function benchZoneNetwork(): Promise<Record<string, unknown>> {
  const reason = canRun();
  if (reason) return { zoneNetwork: `skipped: ${reason}` };
  return { ...(await ruleEffect()), ...tunnelSet() };
}
