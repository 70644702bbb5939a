// The firewall document: what the cloud tells every node of a zone about security groups. The
// cloud owns groups and rules; it computes one document per zone (each group's rules, and each
// instance's address, VPC and groups) and sends it through the zone's cluster to the nodes, on
// change and again periodically. A node keeps the last one it got (on disk, so a restart rebuilds
// its rules before the cloud speaks again) and turns the part that concerns its own instances into
// nftables rules (security-group-plan.ts, nftables-firewall.ts).
//
// Group membership is not listed per group: it follows from the instances, so a group's members are
// the addresses of the instances that name it, wherever in the zone they run.
//
// Every value of a document ends up in nftables text, so a node checks a document completely before
// it uses it (validateFirewallDocument): a cluster or cloud that sends garbage gets an error, never
// a rule set with something unexpected spliced into it.
import { createHash } from 'node:crypto';
import { Ec2Error } from '../../protocol/errors.ts';

/** One allow rule of a group: traffic of a protocol and port range from (ingress) or to (egress) one peer. */
export interface FirewallRule {
  /** EC2's spelling: tcp | udp | icmp | -1 (all traffic) | another IANA protocol number. */
  protocol: string;
  /** TCP/UDP: first port; ICMP: the type (-1: every type). Absent for protocols without ports. */
  fromPort?: number;
  /** TCP/UDP: last port; ICMP: the code (-1: every code). */
  toPort?: number;
  /** The peer as an IPv4 block (canonical, host bits clear). */
  cidr?: string;
  /** The peer as a security group: the addresses of its members. */
  group?: string;
}

export interface FirewallGroup {
  id: string;
  vpcId: string;
  ingress: FirewallRule[];
  egress: FirewallRule[];
}

export interface FirewallInstance {
  id: string;
  /** Private IPv4 address. */
  ip: string;
  vpcId: string;
  /** Security group ids, as the instance has them now (ModifyInstanceAttribute may change them). */
  groups: string[];
  /** Its public IPv4 address (elastic IP or launch-time), which its node NATs to `ip` (public-nat.ts). */
  publicIp?: string;
}

export interface FirewallDocument {
  zone: string;
  /** Hash of the content: equal documents have equal versions (see firewallDocumentVersion). */
  version: string;
  /** Groups named by the zone's instances, sorted by id. */
  groups: FirewallGroup[];
  /** The zone's instances that hold an address, sorted by id. */
  instances: FirewallInstance[];
}

/** What a node answers when it has taken a document. */
export interface FirewallApplyResult {
  version: string;
}

/** What a cluster answers when it has passed a document on to its nodes. */
export interface FirewallPushResult {
  version: string;
  /** Nodes that took it. */
  applied: number;
  /** Nodes that were up but did not take it (they get it again at the next push). */
  failed: { nodeId: string; error: string }[];
  /** Nodes not asked because they are down or asleep. */
  skipped: number;
}

/** The content hash that identifies a document; the zone, groups and instances in their canonical order. */
export function firewallDocumentVersion(doc: Pick<FirewallDocument, 'zone' | 'groups' | 'instances'>): string {
  const canonical = JSON.stringify([doc.zone, doc.groups.map(canonicalGroup), doc.instances.map((i) => [i.id, i.ip, i.vpcId, i.groups, ...(i.publicIp ? [i.publicIp] : [])])]);
  return createHash('sha256').update(canonical).digest('hex').slice(0, 32);
}

function canonicalGroup(g: FirewallGroup): unknown {
  const rule = (r: FirewallRule) => [r.protocol, r.fromPort ?? null, r.toPort ?? null, r.cidr ?? null, r.group ?? null];
  return [g.id, g.vpcId, g.ingress.map(rule), g.egress.map(rule)];
}

function ruleOrder(a: FirewallRule, b: FirewallRule): number {
  const key = (r: FirewallRule) => JSON.stringify([r.protocol, r.fromPort ?? null, r.toPort ?? null, r.cidr ?? '', r.group ?? '']);
  const ka = key(a);
  const kb = key(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** A document with its parts (groups, their rules, instances, their groups) sorted and its version computed. */
export function makeFirewallDocument(zone: string, groups: FirewallGroup[], instances: FirewallInstance[]): FirewallDocument {
  const byId = <T extends { id: string }>(a: T, b: T) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const sortedGroups = groups.map((g) => ({ ...g, ingress: [...g.ingress].sort(ruleOrder), egress: [...g.egress].sort(ruleOrder) })).sort(byId);
  const sortedInstances = [...instances].map((i) => ({ ...i, groups: [...new Set(i.groups)].sort() })).sort(byId);
  return { zone, version: firewallDocumentVersion({ zone, groups: sortedGroups, instances: sortedInstances }), groups: sortedGroups, instances: sortedInstances };
}

// ---- validation -----------------------------------------------------------------------------------

const RESOURCE_ID = /^(sg|vpc|i)-[0-9a-f]{1,32}$/;
const ZONE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const PROTOCOL = /^(tcp|udp|icmp|-1|\d{1,3})$/;

function bad(message: string): never {
  throw new Ec2Error('InvalidParameterValue', `Invalid firewall document: ${message}`);
}

/** An IPv4 address in dotted-quad form, without leading zeros. */
export function isIpv4Address(text: unknown): text is string {
  if (typeof text !== 'string') return false;
  const parts = text.split('.');
  return parts.length === 4 && parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255);
}

/** An IPv4 block a.b.c.d/n with its host bits clear. */
export function isIpv4Cidr(text: unknown): text is string {
  if (typeof text !== 'string') return false;
  const [address, prefix, extra] = text.split('/');
  if (extra !== undefined || !isIpv4Address(address) || !/^(0|[1-9]\d?)$/.test(prefix ?? '') || Number(prefix) > 32) return false;
  const value = address.split('.').reduce((acc, p) => acc * 256 + Number(p), 0);
  const hostBits = 2 ** (32 - Number(prefix));
  return value % hostBits === 0;
}

function checkId(value: unknown, kind: 'sg' | 'vpc' | 'i', where: string): string {
  if (typeof value !== 'string' || !RESOURCE_ID.test(value) || !value.startsWith(`${kind}-`)) bad(`${where} is not a ${kind}- id: ${JSON.stringify(value)}`);
  return value;
}

function checkPort(value: unknown, min: number, max: number, where: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) bad(`${where} is out of range: ${JSON.stringify(value)}`);
  return value;
}

function checkRule(raw: unknown, where: string): FirewallRule {
  if (!raw || typeof raw !== 'object') bad(`${where} is not an object`);
  const r = raw as Record<string, unknown>;
  if (typeof r.protocol !== 'string' || !PROTOCOL.test(r.protocol) || (/^\d+$/.test(r.protocol) && Number(r.protocol) > 255)) {
    bad(`${where}.protocol is not tcp, udp, icmp, -1 or a protocol number: ${JSON.stringify(r.protocol)}`);
  }
  const protocol = r.protocol as string;
  const rule: FirewallRule = { protocol };
  if (protocol === 'tcp' || protocol === 'udp') {
    const from = checkPort(r.fromPort, 0, 65535, `${where}.fromPort`);
    const to = checkPort(r.toPort, 0, 65535, `${where}.toPort`);
    if (from === undefined || to === undefined || from > to) bad(`${where} needs a port range fromPort <= toPort`);
    rule.fromPort = from;
    rule.toPort = to;
  } else if (protocol === 'icmp') {
    rule.fromPort = checkPort(r.fromPort, -1, 255, `${where}.fromPort`) ?? -1;
    rule.toPort = checkPort(r.toPort, -1, 255, `${where}.toPort`) ?? -1;
  }
  const hasCidr = r.cidr !== undefined && r.cidr !== null;
  const hasGroup = r.group !== undefined && r.group !== null;
  if (hasCidr === hasGroup) bad(`${where} needs exactly one peer (cidr or group)`);
  if (hasCidr) {
    if (!isIpv4Cidr(r.cidr)) bad(`${where}.cidr is not an IPv4 block: ${JSON.stringify(r.cidr)}`);
    rule.cidr = r.cidr;
  } else {
    rule.group = checkId(r.group, 'sg', `${where}.group`);
  }
  return rule;
}

/** The document, checked value by value (and copied): throws InvalidParameterValue on anything off. */
export function validateFirewallDocument(raw: unknown): FirewallDocument {
  if (!raw || typeof raw !== 'object') bad('not an object');
  const d = raw as Record<string, unknown>;
  if (typeof d.zone !== 'string' || !ZONE.test(d.zone)) bad(`zone ${JSON.stringify(d.zone)}`);
  if (typeof d.version !== 'string' || !/^[0-9a-f]{1,64}$/.test(d.version)) bad(`version ${JSON.stringify(d.version)}`);
  if (!Array.isArray(d.groups) || !Array.isArray(d.instances)) bad('groups and instances must be lists');
  const groups = (d.groups as unknown[]).map((g, i): FirewallGroup => {
    const where = `groups[${i}]`;
    if (!g || typeof g !== 'object') bad(`${where} is not an object`);
    const o = g as Record<string, unknown>;
    if (!Array.isArray(o.ingress) || !Array.isArray(o.egress)) bad(`${where} needs ingress and egress lists`);
    return {
      id: checkId(o.id, 'sg', `${where}.id`),
      vpcId: checkId(o.vpcId, 'vpc', `${where}.vpcId`),
      ingress: (o.ingress as unknown[]).map((r, j) => checkRule(r, `${where}.ingress[${j}]`)),
      egress: (o.egress as unknown[]).map((r, j) => checkRule(r, `${where}.egress[${j}]`)),
    };
  });
  const instances = (d.instances as unknown[]).map((x, i): FirewallInstance => {
    const where = `instances[${i}]`;
    if (!x || typeof x !== 'object') bad(`${where} is not an object`);
    const o = x as Record<string, unknown>;
    if (!isIpv4Address(o.ip)) bad(`${where}.ip is not an IPv4 address: ${JSON.stringify(o.ip)}`);
    if (!Array.isArray(o.groups)) bad(`${where}.groups must be a list`);
    if (o.publicIp !== undefined && o.publicIp !== null && !isIpv4Address(o.publicIp)) bad(`${where}.publicIp is not an IPv4 address: ${JSON.stringify(o.publicIp)}`);
    return {
      id: checkId(o.id, 'i', `${where}.id`),
      ip: o.ip,
      vpcId: checkId(o.vpcId, 'vpc', `${where}.vpcId`),
      groups: (o.groups as unknown[]).map((g, j) => checkId(g, 'sg', `${where}.groups[${j}]`)),
      ...(typeof o.publicIp === 'string' ? { publicIp: o.publicIp } : {}),
    };
  });
  return { zone: d.zone, version: d.version, groups, instances };
}

/**
 * Cuts a zone's document into the parts nodes need, for a cluster that sends each node its own:
 * `forInstances(keep)` holds the instances `keep` says a node runs, their groups, the instances
 * that are members of a group those groups' rules name (their addresses fill the node's sets), and
 * the other instances of their VPCs (the tunnel's isolation, overlay.ts). The
 * version stays the zone document's. The index is built once per document, so each cut costs what
 * it holds, not the size of the zone.
 */
export function documentSlicer(doc: FirewallDocument): { forInstances(keep: (instanceId: string) => boolean): FirewallDocument } {
  const groupsById = new Map(doc.groups.map((g) => [g.id, g]));
  const membersOf = new Map<string, FirewallInstance[]>();
  for (const i of doc.instances) {
    for (const g of i.groups) {
      const list = membersOf.get(g);
      if (list) list.push(i);
      else membersOf.set(g, [i]);
    }
  }
  const membersOfVpc = new Map<string, FirewallInstance[]>();
  for (const i of doc.instances) {
    const list = membersOfVpc.get(i.vpcId);
    if (list) list.push(i);
    else membersOfVpc.set(i.vpcId, [i]);
  }
  return {
    forInstances(keep) {
      const local = doc.instances.filter((i) => keep(i.id));
      const groupIds = [...new Set(local.flatMap((i) => i.groups))].sort();
      const groups = groupIds.map((id) => groupsById.get(id)).filter((g): g is FirewallGroup => g !== undefined);
      const peers = new Set(groups.flatMap((g) => [...g.ingress, ...g.egress].map((r) => r.group).filter((x): x is string => x !== undefined)));
      const chosen = new Map(local.map((i) => [i.id, i]));
      for (const peer of peers) for (const i of membersOf.get(peer) ?? []) chosen.set(i.id, i);
      // The zone network's tunnel lets a frame from another node reach a local port only when its
      // source is an instance of that port's VPC (overlay.ts): the node needs those instances too.
      for (const vpc of new Set(local.map((i) => i.vpcId))) for (const i of membersOfVpc.get(vpc) ?? []) chosen.set(i.id, i);
      const instances = [...chosen.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      return { zone: doc.zone, version: doc.version, groups, instances };
    },
  };
}
