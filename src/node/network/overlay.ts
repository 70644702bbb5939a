// One zone network across the zone's nodes: a VXLAN tunnel port on each node's zone bridge, so the
// bridges of all the zone's nodes make one Ethernet segment and instances of one VPC reach each other
// on their private addresses wherever they run.
//
// Why VXLAN between the nodes and not routing through the cluster controller: the zone already is
// one layer-2 range (one bridge, one gateway address, addresses unique in the zone), so joining the
// bridges keeps every guest's view as it is (same gateway, ARP, DHCP) and instance traffic takes
// one hop node→node instead of two through the cluster, which would also carry every byte of the
// zone. The tunnel runs only between the zone's nodes, on the addresses the cluster knows them by
// (the cluster tells each node its peers): nothing outside the cluster's private network is involved.
//
// One VNI per zone (derived from the zone name), not one per VPC: isolation between accounts stays
// the per-VPC marking of the security-group tables (nftables-firewall.ts), extended across the tunnel
// here. A frame that arrives from the tunnel reaches a local instance port only when its source
// address belongs to an instance of that port's VPC (the zone's firewall document names every
// instance's VPC; the sending node's anti-spoofing table keeps source addresses honest), and only
// peers may send VXLAN to this node at all. Each node answers its own instances' DHCP, ARP for the
// gateway and metadata: none of that crosses the tunnel, nor does anything this host sends itself.
//
// Everything is named with Ironbark's prefix: `ibvx-<zone>` (the tunnel port), `table bridge
// ib_ovl_<bridge>` and `table ip ib_ovlu_<bridge>`; each table is replaced whole in one transaction.
import { createHash } from 'node:crypto';
import { Ec2Error } from '../../protocol/errors.ts';
import { firewallTableName } from '../network-addressing.ts';
import { HostCommandError, ipJson, runCommand } from '../network-commands.ts';
import { isIpv4Address } from './firewall-document.ts';

/** IANA's VXLAN port. */
export const VXLAN_PORT = 4789;
const METADATA_ADDRESS = '169.254.169.254';
const FLOOD_MAC = '00:00:00:00:00:00';

/** What the cluster tells a node about its zone's network: the other nodes' addresses. */
export interface ZonePeers {
  zone: string;
  /** IPv4 addresses of the zone's other nodes, as the cluster reaches them. */
  peers: string[];
}

/** An instance as the overlay rules see it: its address and VPC, and its port when it runs here. */
export interface OverlayInstance {
  ip: string;
  vpcId: string;
  tapName?: string;
}

/** `ibvx-<rest of the bridge name>`: the tunnel port of a zone bridge. */
export function tunnelNameForBridge(bridgeName: string): string {
  if (bridgeName.startsWith('ibbr-')) return 'ibvx-' + bridgeName.slice('ibbr-'.length);
  return 'ibvx-' + createHash('sha256').update(bridgeName).digest('hex').slice(0, 10);
}

/** The zone's VXLAN id: 24 bits of the zone name's hash (never 0). */
export function vniForZone(zone: string): number {
  return (createHash('sha256').update(`ironbark-zone:${zone}`).digest().readUIntBE(0, 3) % 0xfffffe) + 1;
}

export function overlayTableNames(bridgeName: string): { bridge: string; ip: string } {
  const rest = firewallTableName(bridgeName).replace(/^ib_/, '');
  return { bridge: `ib_ovl_${rest}`, ip: `ib_ovlu_${rest}` };
}

/** Checks a peers message from the cluster value by value; returns the sorted, unique peer list. */
export function validateZonePeers(raw: unknown): ZonePeers {
  if (!raw || typeof raw !== 'object') throw new Ec2Error('InvalidParameterValue', 'Zone peers must be an object.');
  const r = raw as Record<string, unknown>;
  if (typeof r.zone !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(r.zone)) {
    throw new Ec2Error('InvalidParameterValue', `Zone peers: invalid zone ${JSON.stringify(r.zone)}.`);
  }
  if (!Array.isArray(r.peers)) throw new Ec2Error('InvalidParameterValue', 'Zone peers: peers must be a list of IPv4 addresses.');
  for (const p of r.peers) {
    if (!isIpv4Address(p)) throw new Ec2Error('InvalidParameterValue', `Zone peers: ${JSON.stringify(p)} is not an IPv4 address.`);
  }
  return { zone: r.zone, peers: [...new Set(r.peers as string[])].sort() };
}

const ident = (text: string) => text.replace(/[^A-Za-z0-9_]/g, '_');

/**
 * The two overlay tables of a bridge (deterministic for its inputs). `instances` is every instance of
 * the zone that the node knows of, local ones with their tap.
 */
export function renderOverlayTables(opts: { bridgeName: string; gateway: string; peers: string[]; instances: OverlayInstance[] }): string {
  const tunnel = JSON.stringify(tunnelNameForBridge(opts.bridgeName));
  const names = overlayTableNames(opts.bridgeName);
  const localTaps = new Map<string, string[]>();
  for (const i of opts.instances) if (i.tapName) localTaps.set(i.vpcId, [...(localTaps.get(i.vpcId) ?? []), i.tapName]);
  // Only VPCs with a port here need a chain; a remote address of any other VPC reaches no port.
  const remote = opts.instances.filter((i) => !i.tapName && localTaps.has(i.vpcId)).sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
  const seen = new Set<string>();
  const elements = remote.filter((i) => !seen.has(i.ip) && seen.add(i.ip)).map((i) => `${i.ip} : jump v_${ident(i.vpcId)}`);
  const chains = [...localTaps.keys()].sort().map((vpc) => {
    const taps = localTaps.get(vpc)!.sort().map((t) => JSON.stringify(t)).join(', ');
    // The verdict is explicit: a jumped-to chain that ends returns to from_tunnel, whose last rule drops.
    return `  chain v_${ident(vpc)} {\n    oifname != { ${taps} } drop\n    accept\n  }\n`;
  }).join('');
  const bridgeTable = `table bridge ${names.bridge} {
  map src_vpc {
    type ipv4_addr : verdict;${elements.length ? `\n    elements = { ${elements.join(', ')} }` : ''}
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    oifname ${tunnel} udp dport { 67, 68 } drop
    iifname ${tunnel} udp dport { 67, 68 } drop
    oifname ${tunnel} arp daddr ip { ${opts.gateway}, ${METADATA_ADDRESS} } drop
    iifname ${tunnel} arp daddr ip { ${opts.gateway}, ${METADATA_ADDRESS} } drop
    iifname ${tunnel} oifname "ibtap-*" jump from_tunnel
  }
  chain from_tunnel {
    ether type ip ip saddr vmap @src_vpc
    ether type arp arp saddr ip vmap @src_vpc
    drop
  }
${chains}  chain input {
    type filter hook input priority filter; policy accept;
    iifname ${tunnel} drop
  }
  chain output {
    type filter hook output priority filter; policy accept;
    oifname ${tunnel} drop
  }
}
`;
  const peers = opts.peers.length ? ` elements = { ${opts.peers.join(', ')} };` : '';
  const ipTable = `table ip ${names.ip} {
  set peers { type ipv4_addr;${peers} }
  chain input {
    type filter hook input priority filter; policy accept;
    udp dport ${VXLAN_PORT} ip saddr != @peers drop
  }
}
`;
  return `table bridge ${names.bridge} {}\ndelete table bridge ${names.bridge}\n${bridgeTable}table ip ${names.ip} {}\ndelete table ip ${names.ip}\n${ipTable}`;
}

interface FdbEntry {
  mac: string;
  dst?: string;
}

interface LinkInfo {
  ifname: string;
  master?: string;
  operstate?: string;
  linkinfo?: { info_kind?: string; info_data?: { id?: number; port?: number } };
}

/** The tunnel port of one zone bridge on this node, its peers' flood entries and the overlay tables. */
export class ZoneOverlay {
  readonly tunnelName: string;
  readonly vni: number;
  readonly tables: { bridge: string; ip: string };

  constructor(private readonly opts: { zone: string; bridgeName: string; gateway: string; netns?: string }) {
    this.tunnelName = tunnelNameForBridge(opts.bridgeName);
    this.vni = vniForZone(opts.zone);
    this.tables = overlayTableNames(opts.bridgeName);
  }

  /**
   * Makes the tunnel port exist on the bridge with one flood entry per peer. A port that exists with
   * the right id is kept (so established instance traffic never stops on a node restart); only the
   * flood entries that differ are added or removed.
   */
  async ensurePort(peers: string[]): Promise<void> {
    const [link] = await ipJson<LinkInfo>(['-d', 'link', 'show', 'dev', this.tunnelName], this.opts.netns);
    const data = link?.linkinfo?.info_data;
    if (link && (link.linkinfo?.info_kind !== 'vxlan' || data?.id !== this.vni || data?.port !== VXLAN_PORT)) {
      await this.ip(['link', 'del', this.tunnelName]);
    }
    if (!link || link.linkinfo?.info_kind !== 'vxlan' || data?.id !== this.vni || data?.port !== VXLAN_PORT) {
      // MTU 1500 like the guests': the outer packets are fragmented on a 1500-byte underlay rather than lost.
      await this.ip(['link', 'add', this.tunnelName, 'mtu', '1500', 'type', 'vxlan', 'id', String(this.vni), 'dstport', String(VXLAN_PORT)]);
    }
    if (link?.master !== this.opts.bridgeName) await this.ip(['link', 'set', this.tunnelName, 'master', this.opts.bridgeName]);
    await this.ip(['link', 'set', this.tunnelName, 'up']);
    const current = new Set((await this.floodEntries()).map((e) => e.dst!));
    const wanted = new Set(peers);
    for (const dst of wanted) if (!current.has(dst)) await this.bridgeCmd(['fdb', 'append', FLOOD_MAC, 'dev', this.tunnelName, 'dst', dst]);
    for (const dst of current) if (!wanted.has(dst)) await this.bridgeCmd(['fdb', 'del', FLOOD_MAC, 'dev', this.tunnelName, 'dst', dst]);
  }

  /** The peers the tunnel floods to now (its all-zero FDB entries). */
  async floodEntries(): Promise<FdbEntry[]> {
    let out: string;
    try {
      out = await runCommand('bridge', ['-j', 'fdb', 'show', 'dev', this.tunnelName], { netns: this.opts.netns });
    } catch (e) {
      if (e instanceof HostCommandError && /does not exist|Cannot find device/i.test(e.stderr)) return [];
      throw e;
    }
    const entries = out.trim() ? (JSON.parse(out) as FdbEntry[]) : [];
    return entries.filter((e) => e.mac === FLOOD_MAC && e.dst !== undefined);
  }

  /** Removes the tunnel port and both tables; a no-op for what is already gone. */
  async remove(): Promise<void> {
    const [link] = await ipJson<LinkInfo>(['link', 'show', 'dev', this.tunnelName], this.opts.netns);
    if (link) await this.ip(['link', 'del', this.tunnelName]);
    for (const [family, table] of [['bridge', this.tables.bridge], ['ip', this.tables.ip]] as const) {
      try {
        await runCommand('nft', ['delete', 'table', family, table], { netns: this.opts.netns });
      } catch (e) {
        if (!(e instanceof HostCommandError && /No such file or directory/.test(e.stderr))) throw e;
      }
    }
  }

  private async ip(args: string[]): Promise<void> {
    await runCommand('ip', args, { netns: this.opts.netns });
  }

  private async bridgeCmd(args: string[]): Promise<void> {
    await runCommand('bridge', args, { netns: this.opts.netns });
  }
}
