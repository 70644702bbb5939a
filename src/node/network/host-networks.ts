// The zone networks of one node host, in one place: made on first use, told the zone's peers when
// the cluster sends them (network/overlay.ts), compared with what the host really has for
// `ironbark admin node diagnose`, and removed together at teardown.
import { ipJson, runCommand } from '../network-commands.ts';
import { parseCidr } from '../network-addressing.ts';
import { NodeNetwork, type NodeNetworkOptions } from '../network.ts';
import { compareNetwork, summarize, type NetworkDiagnosis, type WantedItem } from './diagnosis.ts';
import type { ZonePeers } from './overlay.ts';

interface IpLink {
  ifname: string;
  linkinfo?: { info_kind?: string };
}

interface IpAddress {
  ifname: string;
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

/** Ironbark's interface names: `ib<kind>-…` (ibbr-, ibvx-, ibtap-); not InfiniBand's ib0 or another tool's `ib…`. */
const IRONBARK_LINK = /^ib[a-z]+-/;
/** Tables of Ironbark's that belong to the metadata service, not to a zone network (metadata-hop-limit.ts). */
const SERVICE_TABLES = /^ib_imds_\d+$/;

export class HostNetworks {
  private readonly networks = new Map<string, NodeNetwork>();
  private readonly peersByZone = new Map<string, string[]>();

  /** `nameService`: DHCP hands guests each bridge's gateway as their DNS server (network/dns-service.ts). */
  constructor(private readonly opts: Omit<NodeNetworkOptions, 'zone' | 'cidr'> & { nameService?: boolean }) {}

  /** The zone network for instances of (zone, cidr), made (not yet set up) on first use. */
  readonly get = (zone: string, cidr: string): NodeNetwork => {
    const key = `${zone}|${cidr}`;
    let network = this.networks.get(key);
    if (!network) {
      const dnsServers = this.opts.nameService ? [parseCidr(cidr).gateway] : this.opts.dnsServers;
      network = new NodeNetwork({ ...this.opts, zone, cidr, dnsServers });
      this.networks.set(key, network);
      const peers = this.peersByZone.get(zone);
      if (peers) void network.setOverlayPeers(peers).catch(() => undefined); // tried again at the cluster's next send
    }
    return network;
  };

  /** Takes the zone's peers from the cluster and passes them to that zone's networks here. */
  async setZonePeers(peers: ZonePeers): Promise<void> {
    this.peersByZone.set(peers.zone, peers.peers);
    for (const network of this.networks.values()) {
      if (network.zone === peers.zone) await network.setOverlayPeers(peers.peers);
    }
  }

  /** The VPC of an instance address, as the zone networks here know it (for the name service). */
  readonly vpcOf = (ip: string): string | undefined => {
    for (const network of this.networks.values()) {
      const vpc = network.vpcOfAddress(ip);
      if (vpc) return vpc;
    }
    return undefined;
  };

  /** Every prefixed link, address and table of the host against what the networks want. */
  async diagnose(nodeId: string): Promise<NetworkDiagnosis> {
    const netns = this.opts.netns;
    const wanted: WantedItem[] = [];
    const present: { kind: string; name: string }[] = [];
    for (const network of this.networks.values()) {
      wanted.push(...(await network.wantedHostItems()));
      present.push(...(await network.presentPeculiarItems()));
    }
    for (const link of await ipJson<IpLink>(['-d', 'link', 'show'], netns)) {
      if (!IRONBARK_LINK.test(link.ifname)) continue;
      const kind = link.linkinfo?.info_kind;
      present.push({ kind: kind === 'bridge' ? 'bridge' : kind === 'vxlan' ? 'tunnel' : link.ifname.startsWith('ibtap-') ? 'tap' : `link(${kind ?? 'plain'})`, name: link.ifname });
    }
    for (const entry of await ipJson<IpAddress>(['-4', 'addr', 'show'], netns)) {
      if (!IRONBARK_LINK.test(entry.ifname)) continue;
      for (const a of entry.addr_info ?? []) present.push({ kind: 'address', name: `${a.local}/${a.prefixlen} on ${entry.ifname}` });
    }
    const tables = JSON.parse(await runCommand('nft', ['-j', 'list', 'tables'], { netns })) as { nftables: { table?: { family: string; name: string } }[] };
    for (const t of tables.nftables) {
      if (t.table && t.table.name.startsWith('ib_') && !SERVICE_TABLES.test(t.table.name)) present.push({ kind: 'nftables-table', name: `${t.table.family} ${t.table.name}` });
    }
    return summarize(nodeId, compareNetwork(wanted, present));
  }

  /** Removes every network made here (the node's last instance is gone). */
  async tearDownAll(): Promise<void> {
    for (const network of this.networks.values()) await network.tearDown();
  }
}
