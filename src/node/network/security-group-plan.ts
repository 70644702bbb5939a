// What one zone bridge's firewall must do, worked out from the zone's firewall document and the
// ports attached to the bridge on this node. Pure data in, pure data out: the nftables backend turns
// a plan into rules, and unit tests look at plans without touching the host.
//
// Every port is filtered, from the moment it is attached: default deny. Its VPC and groups come from
// the instance's launch spec (the firewall context the node agent attaches it with); the document,
// when it knows the instance, wins over the spec (ModifyInstanceAttribute changes a running
// instance's groups). A group the node has no rules for yet contributes no rules, and a port with
// neither context nor document entry (vpcId '') has no group and no VPC: such a port is closed to new
// connections both ways, but for what an instance needs to boot (DHCP, the zone's DNS, metadata: the
// tables allow those before any group), until the cloud's document reaches the node (within seconds).
import type { FirewallDocument, FirewallGroup, FirewallRule } from './firewall-document.ts';

/** A bridge port as the firewall sees it. */
export interface FirewallPort {
  instanceId: string;
  tapName: string;
  ip: string;
  vpcId: string;
  groups: string[];
}

export interface BridgeFirewallPlan {
  bridgeName: string;
  /** The zone network on the bridge, and its gateway (this host's address on it). */
  cidr: string;
  gateway: string;
  /** Filtered ports, sorted by tap name. */
  ports: FirewallPort[];
  /** The rules of every group a filtered port is in (groups unknown to the node have none). */
  groups: Map<string, Pick<FirewallGroup, 'ingress' | 'egress'>>;
  /** Members' addresses of every group a rule names as its peer, sorted. */
  groupMembers: Map<string, string[]>;
}

const NO_RULES = { ingress: [] as FirewallRule[], egress: [] as FirewallRule[] };

function compareIpv4(a: string, b: string): number {
  const value = (ip: string) => ip.split('.').reduce((acc, p) => acc * 256 + Number(p), 0);
  return value(a) - value(b);
}

function sortedAddresses(set: Set<string>): string[] {
  return [...set].sort(compareIpv4);
}

export function planBridgeFirewall(bridge: { bridgeName: string; cidr: string; gateway: string }, doc: FirewallDocument | undefined,
  attached: FirewallPort[]): BridgeFirewallPlan {
  const known = new Map((doc?.instances ?? []).map((i) => [i.id, i]));
  const ports = attached.map((p): FirewallPort => {
    const entry = known.get(p.instanceId);
    return entry ? { ...p, vpcId: entry.vpcId, groups: [...entry.groups] } : { ...p, groups: [...p.groups] };
  }).sort((a, b) => (a.tapName < b.tapName ? -1 : a.tapName > b.tapName ? 1 : 0));

  const rulesById = new Map((doc?.groups ?? []).map((g) => [g.id, g]));
  const groups = new Map<string, Pick<FirewallGroup, 'ingress' | 'egress'>>();
  for (const p of ports) {
    for (const id of p.groups) {
      const g = rulesById.get(id);
      // Only a group of the port's own VPC applies to it.
      groups.set(id, g && g.vpcId === p.vpcId ? { ingress: g.ingress, egress: g.egress } : NO_RULES);
    }
  }

  // Everyone the document knows, plus the local ports it does not know yet.
  const everyone = [...(doc?.instances ?? []), ...ports.filter((p) => !known.has(p.instanceId)).map((p) => ({ id: p.instanceId, ip: p.ip, vpcId: p.vpcId, groups: p.groups }))];
  const peerGroups = new Set<string>();
  for (const g of groups.values()) for (const r of [...g.ingress, ...g.egress]) if (r.group) peerGroups.add(r.group);
  const memberSets = new Map([...peerGroups].sort().map((id) => [id, new Set<string>()]));
  for (const i of everyone) for (const g of i.groups) memberSets.get(g)?.add(i.ip);
  return {
    bridgeName: bridge.bridgeName,
    cidr: bridge.cidr,
    gateway: bridge.gateway,
    ports,
    groups,
    groupMembers: new Map([...memberSets].map(([id, s]) => [id, sortedAddresses(s)])),
  };
}
