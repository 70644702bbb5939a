// The cloud's side of security groups on the wire: one firewall document per zone, computed from
// the store (every instance of the zone that holds an address, with its VPC and current groups;
// every group those instances name, with its rules). Nodes turn it into nftables rules
// (src/node/network/). IPv4 only: IPv6 and prefix-list rules have nothing to match on the zone
// network, which carries IPv4 alone, and are left out.
import type { Db, Tx } from '../../store/store.ts';
import type { SecurityGroupRulesTable } from '../../store/schema.ts';
import { makeFirewallDocument, type FirewallDocument, type FirewallGroup, type FirewallRule } from '../../node/network/firewall-document.ts';

const CHUNK = 500;

function chunks<T>(items: T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += CHUNK) out.push(items.slice(i, i + CHUNK));
  return out;
}

/** The ids of an instance row's `security_groups` JSON ([{id, name}]). */
export function groupIdsOf(json: string): string[] {
  try {
    const parsed = JSON.parse(json) as { id?: unknown }[];
    return Array.isArray(parsed) ? parsed.map((g) => g?.id).filter((id): id is string => typeof id === 'string') : [];
  } catch {
    return [];
  }
}

type RuleRow = Pick<SecurityGroupRulesTable, 'group_id' | 'is_egress' | 'ip_protocol' | 'from_port' | 'to_port' | 'cidr_ipv4' | 'referenced_group_id'>;

/** One stored rule as the nodes match it, or undefined for a rule with no IPv4 meaning. */
export function firewallRuleFromRow(row: RuleRow): FirewallRule | undefined {
  const peer = row.cidr_ipv4 !== null ? { cidr: row.cidr_ipv4 } : row.referenced_group_id !== null ? { group: row.referenced_group_id } : undefined;
  if (!peer) return undefined; // IPv6 block or prefix list
  const protocol = row.ip_protocol;
  if (protocol === 'icmpv6' || protocol === '58') return undefined;
  if (protocol === 'tcp' || protocol === 'udp') return { protocol, fromPort: row.from_port ?? 0, toPort: row.to_port ?? 65535, ...peer };
  if (protocol === 'icmp') return { protocol, fromPort: row.from_port ?? -1, toPort: row.to_port ?? -1, ...peer };
  return { protocol, ...peer };
}

export async function buildFirewallDocument(db: Db | Tx, zone: string): Promise<FirewallDocument> {
  const rows = await db.selectFrom('instances').select(['id', 'private_ip', 'vpc_id', 'security_groups', 'public_ip'])
    .where('zone', '=', zone).where('private_ip', 'is not', null).where('state', '!=', 'terminated').execute();
  const instances = rows.map((r) => ({
    id: r.id, ip: r.private_ip!, vpcId: r.vpc_id, groups: groupIdsOf(r.security_groups), ...(r.public_ip ? { publicIp: r.public_ip } : {}),
  }));
  const groupIds = [...new Set(instances.flatMap((i) => i.groups))].sort();
  const groups = new Map<string, FirewallGroup>();
  for (const part of chunks(groupIds)) {
    const found = await db.selectFrom('security_groups').select(['id', 'vpc_id']).where('id', 'in', part).execute();
    for (const g of found) groups.set(g.id, { id: g.id, vpcId: g.vpc_id, ingress: [], egress: [] });
    const rules = await db.selectFrom('security_group_rules')
      .select(['group_id', 'is_egress', 'ip_protocol', 'from_port', 'to_port', 'cidr_ipv4', 'referenced_group_id'])
      .where('group_id', 'in', part).execute();
    for (const row of rules) {
      const group = groups.get(row.group_id);
      const rule = firewallRuleFromRow(row);
      if (group && rule) (row.is_egress === 1 ? group.egress : group.ingress).push(rule);
    }
  }
  return makeFirewallDocument(zone, [...groups.values()], instances);
}
