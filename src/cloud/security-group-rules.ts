// Security group rules: turning EC2's IpPermission structures into one normalised rule per peer,
// with EC2's validation of protocols, ports, CIDRs and descriptions, and back into the
// grouped IpPermission form that DescribeSecurityGroups shows.
import type { SecurityGroupRulesTable } from '../store/schema.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { canonicalIpv4Cidr, canonicalIpv6Cidr } from './cidr.ts';
import type { Tag } from './tags.ts';

/** One rule: a protocol and port range with exactly one peer. */
export interface RuleDefinition {
  ipProtocol: string;          // tcp | udp | icmp | icmpv6 | -1 | other protocol number
  fromPort: number | null;     // port, or ICMP type; null when the protocol has no ports
  toPort: number | null;       // port, or ICMP code
  cidrIpv4: string | null;
  cidrIpv6: string | null;
  prefixListId: string | null;
  referencedGroupId: string | null;
  referencedAccountId: string | null;
  description: string | null;
}

export interface UserIdGroupPair {
  GroupId?: string; GroupName?: string; UserId?: string; Description?: string;
  VpcId?: string; VpcPeeringConnectionId?: string; PeeringStatus?: string;
}

export interface IpPermission {
  IpProtocol?: string;
  FromPort?: number;
  ToPort?: number;
  IpRanges?: { CidrIp?: string; Description?: string }[];
  Ipv6Ranges?: { CidrIpv6?: string; Description?: string }[];
  PrefixListIds?: { PrefixListId?: string; Description?: string }[];
  UserIdGroupPairs?: UserIdGroupPair[];
}

/** Finds the group a UserIdGroupPair names, in the caller's account; throws EC2's error when it cannot. */
export type PeerGroupResolver = (pair: UserIdGroupPair) => Promise<{ groupId: string; accountId: string }>;

/** Resolves a prefix list id (pl-…) or throws EC2's error for it. */
export type PrefixListResolver = (prefixListId: string) => Promise<string>;

export const MAX_RULES_PER_DIRECTION = 60;

const PROTOCOL_NAMES: Record<string, string> = {
  '-1': '-1', 'tcp': 'tcp', '6': 'tcp', 'udp': 'udp', '17': 'udp', 'icmp': 'icmp', '1': 'icmp', 'icmpv6': 'icmpv6', '58': 'icmpv6',
};

/** EC2's protocol spelling: the four names, -1 for all traffic, else the IANA number. */
export function normalizeProtocol(raw: string | undefined): string {
  if (raw === undefined || raw === '') throw new Ec2Error('MissingParameter', 'The request must contain the parameter ipProtocol');
  const lower = String(raw).trim().toLowerCase();
  const named = PROTOCOL_NAMES[lower];
  if (named) return named;
  if (/^\d{1,3}$/.test(lower) && Number(lower) <= 255) return String(Number(lower));
  throw new Ec2Error('InvalidParameterValue', `Invalid value '${raw}' for IP protocol. Unknown protocol.`);
}

function hasPorts(protocol: string): boolean {
  return protocol === 'tcp' || protocol === 'udp' || protocol === 'icmp' || protocol === 'icmpv6';
}

/** Ports for TCP/UDP, type and code for ICMP; protocols without ports keep none, as EC2 does. */
export function normalizePorts(protocol: string, from: number | undefined, to: number | undefined): { fromPort: number | null; toPort: number | null } {
  if (!hasPorts(protocol)) return { fromPort: null, toPort: null };
  const isIcmp = protocol === 'icmp' || protocol === 'icmpv6';
  if (from === undefined || from === null || to === undefined || to === null) {
    throw new Ec2Error('InvalidParameterValue', `Invalid value 'Must specify both from and to ports with ${isIcmp ? 'ICMP' : 'TCP/UDP'}.' for portRange.`);
  }
  if (!Number.isInteger(from) || !Number.isInteger(to)) {
    throw new Ec2Error('InvalidParameterValue', `Invalid value '${from}-${to}' for portRange.`);
  }
  if (isIcmp) {
    if (from < -1 || from > 255) throw new Ec2Error('InvalidParameterValue', `ICMP type (${from}) out of range`);
    if (to < -1 || to > 255) throw new Ec2Error('InvalidParameterValue', `ICMP code (${to}) out of range`);
    if (from === -1 && to !== -1) {
      throw new Ec2Error('InvalidParameterValue', `ICMP code (${to}) must be -1 (all codes) when the ICMP type is -1 (all types)`);
    }
    return { fromPort: from, toPort: to };
  }
  if (from < 0 || from > 65535) throw new Ec2Error('InvalidPermission.Malformed', `TCP/UDP (from) port (${from}) out of range`);
  if (to < 0 || to > 65535) throw new Ec2Error('InvalidPermission.Malformed', `TCP/UDP (to) port (${to}) out of range`);
  if (from > to) throw new Ec2Error('InvalidParameterValue', `Invalid TCP/UDP port range (${from}-${to}): the from port must not be greater than the to port.`);
  return { fromPort: from, toPort: to };
}

const DESCRIPTION_CHARACTERS = /^[a-zA-Z0-9. _\-:/()#,@[\]+=&;{}!$*]*$/;

/** Rule descriptions: up to 255 characters from EC2's allowed set. */
export function validateRuleDescription(description: string | undefined): string | null {
  if (description === undefined || description === null || description === '') return null;
  if (description.length > 255 || !DESCRIPTION_CHARACTERS.test(description)) {
    throw new Ec2Error('InvalidParameterValue',
      'Invalid rule description. Valid descriptions are strings less than 256 characters from the following set:  a-zA-Z0-9. _-:/()#,@[]+=&;{}!$*');
  }
  return description;
}

/** Group names and descriptions: 1..255 characters from the VPC character set. */
export function validateGroupText(value: string | undefined, parameter: 'GroupName' | 'GroupDescription'): string {
  if (value === undefined || value === null) throw new Ec2Error('MissingParameter', `The request must contain the parameter ${parameter}`);
  if (value.length === 0) throw new Ec2Error('InvalidParameterValue', `Value () for parameter ${parameter} is invalid. Empty value`);
  if (value.length > 255) throw new Ec2Error('InvalidParameterValue', `Value (${value.slice(0, 40)}...) for parameter ${parameter} is invalid. Length exceeds maximum of 255.`);
  if (!/^[\x20-\x7e]*$/.test(value)) {
    throw new Ec2Error('InvalidParameterValue', `Value (${value}) for parameter ${parameter} is invalid. Character sets beyond ASCII are not supported.`);
  }
  if (!DESCRIPTION_CHARACTERS.test(value)) {
    const what = parameter === 'GroupName' ? 'group name' : 'security group description';
    throw new Ec2Error('InvalidParameterValue',
      `Invalid ${what}. Valid values are strings less than 256 characters from the following set:  a-zA-Z0-9. _-:/()#,@[]+=&;{}!$*`);
  }
  return value;
}

function ipv4(cidr: string | undefined): string {
  const canonical = cidr === undefined ? undefined : canonicalIpv4Cidr(cidr.trim());
  if (!canonical) throw new Ec2Error('InvalidParameterValue', `Value (${cidr}) for parameter cidrIp is invalid. This is not a valid CIDR block.`);
  return canonical;
}

function ipv6(cidr: string | undefined): string {
  const canonical = cidr === undefined ? undefined : canonicalIpv6Cidr(cidr.trim());
  if (!canonical) throw new Ec2Error('InvalidParameterValue', `Value (${cidr}) for parameter cidrIpv6 is invalid. This is not a valid IPv6 CIDR block.`);
  return canonical;
}

const NO_PEER = { cidrIpv4: null, cidrIpv6: null, prefixListId: null, referencedGroupId: null, referencedAccountId: null };

/**
 * Every rule the permissions describe, validated and normalised. Nothing is written here, so a
 * caller can check a whole request before storing any of it.
 */
export async function rulesFromPermissions(permissions: IpPermission[], resolvePeer: PeerGroupResolver, resolvePrefixList: PrefixListResolver): Promise<RuleDefinition[]> {
  const rules: RuleDefinition[] = [];
  for (const p of permissions) {
    const ipProtocol = normalizeProtocol(p.IpProtocol);
    const { fromPort, toPort } = normalizePorts(ipProtocol, p.FromPort, p.ToPort);
    const base = { ipProtocol, fromPort, toPort };
    const before = rules.length;
    for (const r of p.IpRanges ?? []) {
      rules.push({ ...base, ...NO_PEER, cidrIpv4: ipv4(r.CidrIp), description: validateRuleDescription(r.Description) });
    }
    for (const r of p.Ipv6Ranges ?? []) {
      rules.push({ ...base, ...NO_PEER, cidrIpv6: ipv6(r.CidrIpv6), description: validateRuleDescription(r.Description) });
    }
    for (const r of p.PrefixListIds ?? []) {
      if (!r.PrefixListId) throw new Ec2Error('MissingParameter', 'The request must contain the parameter prefixListId');
      const prefixListId = await resolvePrefixList(r.PrefixListId);
      rules.push({ ...base, ...NO_PEER, prefixListId, description: validateRuleDescription(r.Description) });
    }
    for (const pair of p.UserIdGroupPairs ?? []) {
      const description = validateRuleDescription(pair.Description);
      const { groupId, accountId } = await resolvePeer(pair);
      rules.push({ ...base, ...NO_PEER, referencedGroupId: groupId, referencedAccountId: accountId, description });
    }
    if (rules.length === before) {
      throw new Ec2Error('InvalidParameterValue',
        'Each IP permission must name at least one source or destination: an IPv4 range, an IPv6 range, a prefix list or a security group.');
    }
  }
  return rules;
}

/** The permission form of the old top-level parameters (CidrIp, IpProtocol, FromPort, ...). */
export interface LegacyPermissionInput {
  CidrIp?: string; IpProtocol?: string; FromPort?: number; ToPort?: number;
  SourceSecurityGroupName?: string; SourceSecurityGroupOwnerId?: string;
}

export function hasLegacyPermission(input: LegacyPermissionInput): boolean {
  return input.CidrIp !== undefined || input.IpProtocol !== undefined || input.FromPort !== undefined
    || input.ToPort !== undefined || input.SourceSecurityGroupName !== undefined || input.SourceSecurityGroupOwnerId !== undefined;
}

export function legacyPermission(input: LegacyPermissionInput): IpPermission {
  if (input.CidrIp !== undefined && input.SourceSecurityGroupName !== undefined) {
    throw new Ec2Error('InvalidParameterCombination', 'You may not specify both a source security group and a CIDR IP address range.');
  }
  const permission: IpPermission = {
    // A bare source group means all traffic from it, as EC2's old form always did.
    IpProtocol: input.IpProtocol ?? (input.SourceSecurityGroupName !== undefined ? '-1' : undefined),
    FromPort: input.FromPort,
    ToPort: input.ToPort,
  };
  if (input.CidrIp !== undefined) permission.IpRanges = [{ CidrIp: input.CidrIp }];
  if (input.SourceSecurityGroupName !== undefined) {
    permission.UserIdGroupPairs = [{ GroupName: input.SourceSecurityGroupName, UserId: input.SourceSecurityGroupOwnerId }];
  }
  return permission;
}

/** What makes two rules the same rule (the description is not part of it). */
export function ruleKey(r: RuleDefinition): string {
  const peer = r.cidrIpv4 ?? r.cidrIpv6 ?? r.prefixListId ?? `${r.referencedAccountId}/${r.referencedGroupId}`;
  return `${r.ipProtocol}|${r.fromPort ?? ''}|${r.toPort ?? ''}|${peer}`;
}

/** EC2's text for a rule in InvalidPermission.Duplicate messages. */
export function ruleSummary(r: RuleDefinition): string {
  const peer = r.cidrIpv4 ?? r.cidrIpv6 ?? r.prefixListId ?? r.referencedGroupId;
  let traffic: string;
  if (r.ipProtocol === '-1') traffic = 'ALL';
  else if (r.ipProtocol === 'icmp' || r.ipProtocol === 'icmpv6') traffic = `${r.ipProtocol.toUpperCase()}, type: ${r.fromPort}, code: ${r.toPort}`;
  else if (r.ipProtocol === 'tcp' || r.ipProtocol === 'udp') traffic = `${r.ipProtocol.toUpperCase()}, from port: ${r.fromPort}, to port: ${r.toPort}`;
  else traffic = `PROTOCOL ${r.ipProtocol}`;
  return `peer: ${peer}, ${traffic}, ALLOW`;
}

const PEER_KIND_ORDER = (r: RuleDefinition) => (r.cidrIpv4 !== null ? 0 : r.cidrIpv6 !== null ? 1 : r.prefixListId !== null ? 2 : 3);

function compareNullableNumbers(a: number | null, b: number | null): number {
  return (a ?? -2) - (b ?? -2);
}

/**
 * A stable display order for rules created at the same instant (one request): protocol, ports,
 * then peer kind and peer, so Describe output never depends on random rule ids.
 */
export function compareRules(a: RuleDefinition, b: RuleDefinition): number {
  if (a.ipProtocol !== b.ipProtocol) return a.ipProtocol < b.ipProtocol ? -1 : 1;
  return compareNullableNumbers(a.fromPort, b.fromPort) || compareNullableNumbers(a.toPort, b.toPort)
    || PEER_KIND_ORDER(a) - PEER_KIND_ORDER(b)
    || (ruleKey(a) < ruleKey(b) ? -1 : ruleKey(a) > ruleKey(b) ? 1 : 0);
}

/** Rule rows in display order: oldest request first, then compareRules within a request. */
export function sortRuleRows<T extends SecurityGroupRulesTable>(rows: T[]): T[] {
  return rows.sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0)
    || compareRules(ruleFromRow(a), ruleFromRow(b)) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export function ruleFromRow(row: SecurityGroupRulesTable): RuleDefinition {
  return {
    ipProtocol: row.ip_protocol, fromPort: row.from_port, toPort: row.to_port,
    cidrIpv4: row.cidr_ipv4, cidrIpv6: row.cidr_ipv6, prefixListId: row.prefix_list_id,
    referencedGroupId: row.referenced_group_id, referencedAccountId: row.referenced_account_id,
    description: row.description,
  };
}

function withDescription<T extends object>(item: T, description: string | null): T & { Description?: string } {
  return description === null ? item : { ...item, Description: description };
}

/**
 * Rules grouped as EC2 shows them: one IpPermission per (protocol, from, to), holding every peer,
 * in the order each combination first appeared.
 */
export function toIpPermissions(rules: RuleDefinition[]): IpPermission[] {
  const byTraffic = new Map<string, Required<Pick<IpPermission, 'IpRanges' | 'Ipv6Ranges' | 'PrefixListIds' | 'UserIdGroupPairs'>> & IpPermission>();
  for (const r of rules) {
    const key = `${r.ipProtocol}|${r.fromPort ?? ''}|${r.toPort ?? ''}`;
    let p = byTraffic.get(key);
    if (!p) {
      p = { IpProtocol: r.ipProtocol, IpRanges: [], Ipv6Ranges: [], PrefixListIds: [], UserIdGroupPairs: [] };
      if (r.fromPort !== null) p.FromPort = r.fromPort;
      if (r.toPort !== null) p.ToPort = r.toPort;
      byTraffic.set(key, p);
    }
    if (r.cidrIpv4 !== null) p.IpRanges.push(withDescription({ CidrIp: r.cidrIpv4 }, r.description));
    else if (r.cidrIpv6 !== null) p.Ipv6Ranges.push(withDescription({ CidrIpv6: r.cidrIpv6 }, r.description));
    else if (r.prefixListId !== null) p.PrefixListIds.push(withDescription({ PrefixListId: r.prefixListId }, r.description));
    else if (r.referencedGroupId !== null) {
      p.UserIdGroupPairs.push(withDescription({ UserId: r.referencedAccountId ?? undefined, GroupId: r.referencedGroupId }, r.description));
    }
  }
  return [...byTraffic.values()];
}

/** The SecurityGroupRule structure of DescribeSecurityGroupRules and the Authorize outputs. */
export function toSecurityGroupRule(row: SecurityGroupRulesTable, tags: Tag[]) {
  return {
    SecurityGroupRuleId: row.id,
    GroupId: row.group_id,
    GroupOwnerId: row.account_id,
    IsEgress: row.is_egress === 1,
    IpProtocol: row.ip_protocol,
    FromPort: row.from_port ?? -1,
    ToPort: row.to_port ?? -1,
    CidrIpv4: row.cidr_ipv4 ?? undefined,
    CidrIpv6: row.cidr_ipv6 ?? undefined,
    PrefixListId: row.prefix_list_id ?? undefined,
    ReferencedGroupInfo: row.referenced_group_id === null ? undefined
      : { GroupId: row.referenced_group_id, UserId: row.referenced_account_id ?? undefined },
    Description: row.description ?? undefined,
    Tags: tags,
  };
}
