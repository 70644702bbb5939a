// Security groups and their rules, as EC2 manages them in a VPC: create, describe, delete,
// authorize, revoke, modify. Every query is scoped to the caller's account, so another account's
// group answers exactly like a group that does not exist.
import type { OperationTable, RequestContext } from './context.ts';
import type { Db, Tx } from '../store/store.ts';
import type { SecurityGroupRulesTable, SecurityGroupsTable } from '../store/schema.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { applyFilters, type Filter } from '../protocol/filters.ts';
import { paginate } from '../protocol/pagination.ts';
import { newId } from './ids.ts';
import { deleteAllTags, tagsByResource, tagsFromSpecifications, writeTags, type Tag, type TagSpecification } from './tags.ts';
import { DEFAULT_GROUP_NAME, defaultVpcId } from './account-setup.ts';
import {
  MAX_RULES_PER_DIRECTION, hasLegacyPermission, sortRuleRows, legacyPermission, ruleFromRow, ruleKey, ruleSummary, rulesFromPermissions,
  toIpPermissions, toSecurityGroupRule, validateGroupText, validateRuleDescription,
  type IpPermission, type LegacyPermissionInput, type PeerGroupResolver, type PrefixListResolver, type RuleDefinition,
} from './security-group-rules.ts';

type Group = SecurityGroupsTable;
type Rule = SecurityGroupRulesTable;
type Direction = 'ingress' | 'egress';

const MAX_GROUPS_PER_VPC = 2500;

// ---- usage by other resources ---------------------------------------------------------------

/** Answers whether something outside this module (an instance, an interface) uses the group. */
export type SecurityGroupUsageCheck = (db: Db | Tx, accountId: string, groupId: string) => Promise<boolean>;

const usageChecks: SecurityGroupUsageCheck[] = [];

/** Lets the instances code refuse DeleteSecurityGroup for a group its instances still use. */
export function registerSecurityGroupUsageCheck(check: SecurityGroupUsageCheck): () => void {
  usageChecks.push(check);
  return () => {
    const i = usageChecks.indexOf(check);
    if (i >= 0) usageChecks.splice(i, 1);
  };
}

// ---- lookups --------------------------------------------------------------------------------

const GROUP_ID = /^sg-[0-9a-f]{8}([0-9a-f]{9})?$/;
const RULE_ID = /^sgr-[0-9a-f]{8}([0-9a-f]{9})?$/;
const VPC_ID = /^vpc-[0-9a-f]{8}([0-9a-f]{9})?$/;

function checkGroupId(id: string): void {
  if (!GROUP_ID.test(id)) throw new Ec2Error('InvalidGroupId.Malformed', `Invalid id: "${id}" (expecting "sg-...")`);
}

function checkRuleId(id: string): void {
  if (!RULE_ID.test(id)) throw new Ec2Error('InvalidSecurityGroupRuleId.Malformed', `Invalid id: "${id}" (expecting "sgr-...")`);
}

function groupNotFound(id: string): Ec2Error {
  return new Ec2Error('InvalidGroup.NotFound', `The security group '${id}' does not exist`);
}

function groupNameNotFound(name: string, vpcId: string, isDefault: boolean): Ec2Error {
  return new Ec2Error('InvalidGroup.NotFound', `The security group '${name}' does not exist in ${isDefault ? 'default ' : ''}VPC '${vpcId}'`);
}

function ruleIdNotFound(id: string): Ec2Error {
  return new Ec2Error('InvalidSecurityGroupRuleId.NotFound', `The security group rule ID '${id}' does not exist`);
}

async function groupById(db: Db | Tx, accountId: string, groupId: string): Promise<Group> {
  checkGroupId(groupId);
  const row = await db.selectFrom('security_groups').selectAll()
    .where('account_id', '=', accountId).where('id', '=', groupId).executeTakeFirst();
  if (!row) throw groupNotFound(groupId);
  return row;
}

async function requireDefaultVpc(db: Db | Tx, accountId: string): Promise<string> {
  const vpcId = await defaultVpcId(db, accountId);
  if (!vpcId) throw new Ec2Error('VPCIdNotSpecified', 'No default VPC for this user');
  return vpcId;
}

async function groupByName(db: Db | Tx, accountId: string, name: string, vpcId?: string): Promise<Group> {
  const inVpc = vpcId ?? await requireDefaultVpc(db, accountId);
  const row = await db.selectFrom('security_groups').selectAll()
    .where('account_id', '=', accountId).where('vpc_id', '=', inVpc).where('name', '=', name).executeTakeFirst();
  if (!row) throw groupNameNotFound(name, inVpc, vpcId === undefined);
  return row;
}

/** The group an operation acts on: GroupId, else GroupName in the default VPC. */
async function targetGroup(db: Db | Tx, accountId: string, input: { GroupId?: string; GroupName?: string }): Promise<Group> {
  if (input.GroupId !== undefined && input.GroupId !== '') return groupById(db, accountId, input.GroupId);
  if (input.GroupName !== undefined && input.GroupName !== '') return groupByName(db, accountId, input.GroupName);
  throw new Ec2Error('MissingParameter', 'The request must contain the parameter groupName or groupId');
}

async function vpcOf(db: Db | Tx, accountId: string, vpcId: string) {
  return db.selectFrom('vpcs').select(['id', 'is_default']).where('account_id', '=', accountId).where('id', '=', vpcId).executeTakeFirst();
}

/**
 * The groups an instance launch names, for the instances code: ids anywhere in the account,
 * names inside `vpcId` (or the default VPC). With `vpcId`, every group must belong to it.
 */
export async function resolveSecurityGroups(db: Db | Tx, accountId: string, request: { ids?: string[]; names?: string[]; vpcId?: string }): Promise<Group[]> {
  const found = new Map<string, Group>();
  for (const id of request.ids ?? []) {
    const group = await groupById(db, accountId, id);
    if (request.vpcId !== undefined && group.vpc_id !== request.vpcId) {
      throw new Ec2Error('InvalidParameter', `Security group ${group.id} and the instance's subnet belong to different networks (${group.vpc_id}, ${request.vpcId}).`);
    }
    found.set(group.id, group);
  }
  for (const name of request.names ?? []) {
    const group = await groupByName(db, accountId, name, request.vpcId);
    found.set(group.id, group);
  }
  return [...found.values()];
}

/** The `default` group of a VPC (of the default VPC when none is named). */
export async function defaultSecurityGroup(db: Db | Tx, accountId: string, vpcId?: string): Promise<Group> {
  return groupByName(db, accountId, DEFAULT_GROUP_NAME, vpcId);
}

// ---- peers of rules -------------------------------------------------------------------------

/** Rule peers are groups of the caller's own account in the target group's VPC. */
function peerResolver(db: Db | Tx, accountId: string, target: Group): PeerGroupResolver {
  return async (pair) => {
    if (pair.VpcPeeringConnectionId) {
      throw new Ec2Error('InvalidVpcPeeringConnectionID.NotFound', `The vpcPeeringConnection ID '${pair.VpcPeeringConnectionId}' does not exist`);
    }
    const foreign = pair.UserId !== undefined && pair.UserId !== '' && pair.UserId !== accountId;
    let group: Group;
    if (pair.GroupId) {
      checkGroupId(pair.GroupId);
      if (foreign) throw groupNotFound(pair.GroupId);
      group = await groupById(db, accountId, pair.GroupId);
    } else if (pair.GroupName) {
      const vpcId = await requireDefaultVpc(db, accountId);
      if (foreign) throw groupNameNotFound(pair.GroupName, vpcId, true);
      group = await groupByName(db, accountId, pair.GroupName);
    } else {
      throw new Ec2Error('MissingParameter', 'A security group reference must contain the parameter groupId or groupName');
    }
    if (group.vpc_id !== target.vpc_id) {
      throw new Ec2Error('InvalidGroup.NotFound', `You have specified two resources that belong to different networks: ${target.id} and ${group.id}.`);
    }
    return { groupId: group.id, accountId };
  };
}

const PREFIX_LIST_ID = /^pl-[0-9a-f]{8}([0-9a-f]{9})?$/;

/** Ironbark has no managed prefix lists yet, so every well-formed prefix list id is unknown. */
const resolvePrefixList: PrefixListResolver = async (id) => {
  if (!PREFIX_LIST_ID.test(id)) throw new Ec2Error('InvalidPrefixListId.Malformed', `Invalid id: "${id}" (expecting "pl-...")`);
  throw new Ec2Error('InvalidPrefixListID.NotFound', `The prefix list ID '${id}' does not exist`);
};

// ---- CreateSecurityGroup --------------------------------------------------------------------

async function createSecurityGroup(ctx: RequestContext, input: { GroupName?: string; Description?: string; VpcId?: string; TagSpecifications?: TagSpecification[] }) {
  const accountId = ctx.caller.accountId;
  const name = validateGroupText(input.GroupName, 'GroupName');
  const description = validateGroupText(input.Description, 'GroupDescription');
  if (name === DEFAULT_GROUP_NAME) throw new Ec2Error('InvalidParameterValue', `Cannot use reserved security group name: ${DEFAULT_GROUP_NAME}`);
  if (name.toLowerCase().startsWith('sg-')) throw new Ec2Error('InvalidParameterValue', 'Group names may not be in the format sg-*.');
  const tags = tagsFromSpecifications(input.TagSpecifications, ['security-group']).get('security-group') ?? [];
  return ctx.store.transaction(async (tx) => {
    let vpcId: string;
    if (input.VpcId !== undefined && input.VpcId !== '') {
      if (!VPC_ID.test(input.VpcId)) throw new Ec2Error('InvalidVpcID.Malformed', `Invalid id: "${input.VpcId}" (expecting "vpc-...")`);
      if (!await vpcOf(tx, accountId, input.VpcId)) throw new Ec2Error('InvalidVpcID.NotFound', `The vpc ID '${input.VpcId}' does not exist`);
      vpcId = input.VpcId;
    } else {
      vpcId = await requireDefaultVpc(tx, accountId);
    }
    const duplicate = await tx.selectFrom('security_groups').select('id')
      .where('account_id', '=', accountId).where('vpc_id', '=', vpcId).where('name', '=', name).executeTakeFirst();
    if (duplicate) throw new Ec2Error('InvalidGroup.Duplicate', `The security group '${name}' already exists for VPC '${vpcId}'`);
    const { count } = await tx.selectFrom('security_groups').select((eb) => eb.fn.countAll<number>().as('count'))
      .where('account_id', '=', accountId).where('vpc_id', '=', vpcId).executeTakeFirstOrThrow();
    if (Number(count) >= MAX_GROUPS_PER_VPC) {
      throw new Ec2Error('SecurityGroupLimitExceeded', 'The maximum number of security groups for the VPC has been reached.');
    }
    const now = new Date().toISOString();
    const groupId = newId('sg');
    await tx.insertInto('security_groups').values({ id: groupId, account_id: accountId, vpc_id: vpcId, name, description, created_at: now }).execute();
    // Every new VPC group lets all outbound traffic out until the user says otherwise.
    await tx.insertInto('security_group_rules').values({
      id: newId('sgr'), group_id: groupId, account_id: accountId, is_egress: 1, ip_protocol: '-1', from_port: null, to_port: null,
      cidr_ipv4: '0.0.0.0/0', cidr_ipv6: null, prefix_list_id: null, referenced_group_id: null, referenced_account_id: null,
      description: null, created_at: now,
    }).execute();
    await writeTags(tx, accountId, groupId, tags);
    return tags.length > 0 ? { GroupId: groupId, Tags: tags } : { GroupId: groupId };
  });
}

// ---- DescribeSecurityGroups -----------------------------------------------------------------

async function rulesOfGroups(db: Db | Tx, accountId: string, groupIds?: string[]): Promise<Rule[]> {
  let query = db.selectFrom('security_group_rules').selectAll().where('account_id', '=', accountId);
  if (groupIds) {
    if (groupIds.length === 0) return [];
    query = query.where('group_id', 'in', groupIds);
  }
  return sortRuleRows(await query.execute());
}

interface GroupItem { group: Group; ingress: Rule[]; egress: Rule[]; tags: Tag[] }

const PROTOCOL_NUMBERS: Record<string, string> = { tcp: '6', udp: '17', icmp: '1', icmpv6: '58' };

function permissionAccessors(prefix: string, rulesOf: (i: GroupItem) => Rule[], groupNames: Map<string, string>) {
  const each = <T>(read: (r: Rule) => T | null) => (i: GroupItem) => rulesOf(i).map(read).filter((v) => v !== null);
  return {
    [`${prefix}ip-permission.cidr`]: each((r) => r.cidr_ipv4),
    [`${prefix}ip-permission.ipv6-cidr`]: each((r) => r.cidr_ipv6),
    [`${prefix}ip-permission.prefix-list-id`]: each((r) => r.prefix_list_id),
    [`${prefix}ip-permission.from-port`]: each((r) => r.from_port ?? -1),
    [`${prefix}ip-permission.to-port`]: each((r) => r.to_port ?? -1),
    [`${prefix}ip-permission.protocol`]: (i: GroupItem) => rulesOf(i).flatMap((r) => [r.ip_protocol, PROTOCOL_NUMBERS[r.ip_protocol] ?? r.ip_protocol]),
    [`${prefix}ip-permission.group-id`]: each((r) => r.referenced_group_id),
    [`${prefix}ip-permission.group-name`]: each((r) => (r.referenced_group_id === null ? null : groupNames.get(r.referenced_group_id) ?? null)),
    [`${prefix}ip-permission.user-id`]: each((r) => r.referenced_account_id),
  };
}

async function describeSecurityGroups(ctx: RequestContext, input: { GroupIds?: string[]; GroupNames?: string[]; Filters?: Filter[]; MaxResults?: number; NextToken?: string }) {
  const accountId = ctx.caller.accountId;
  const db = ctx.store.db;
  for (const id of input.GroupIds ?? []) checkGroupId(id);
  const groups = await db.selectFrom('security_groups').selectAll().where('account_id', '=', accountId)
    .orderBy('created_at').orderBy('id').execute();
  let chosen = groups;
  const ids = input.GroupIds ?? [];
  const names = input.GroupNames ?? [];
  if (ids.length > 0 || names.length > 0) {
    const wanted = new Set<string>();
    for (const id of ids) {
      if (!groups.some((g) => g.id === id)) throw groupNotFound(id);
      wanted.add(id);
    }
    if (names.length > 0) {
      const vpcId = await requireDefaultVpc(db, accountId);
      for (const name of names) {
        const g = groups.find((x) => x.vpc_id === vpcId && x.name === name);
        if (!g) throw groupNameNotFound(name, vpcId, true);
        wanted.add(g.id);
      }
    }
    chosen = groups.filter((g) => wanted.has(g.id));
  }
  const rules = await rulesOfGroups(db, accountId);
  const tags = await tagsByResource(db, accountId, chosen.map((g) => g.id));
  const groupNames = new Map(groups.map((g) => [g.id, g.name]));
  const items = new Map<string, GroupItem>(chosen.map((group) => [group.id, { group, ingress: [], egress: [], tags: tags.get(group.id) ?? [] }]));
  for (const r of rules) {
    const item = items.get(r.group_id);
    if (item) (r.is_egress === 1 ? item.egress : item.ingress).push(r);
  }
  const filtered = applyFilters([...items.values()], input.Filters, {
    'group-id': (i) => i.group.id,
    'group-name': (i) => i.group.name,
    'description': (i) => i.group.description,
    'vpc-id': (i) => i.group.vpc_id,
    'owner-id': (i) => i.group.account_id,
    ...permissionAccessors('', (i) => i.ingress, groupNames),
    ...permissionAccessors('egress.', (i) => i.egress, groupNames),
  }, (i) => i.tags);
  const { page, nextToken } = paginate(filtered, input, JSON.stringify(['security-groups', ids, names, input.Filters ?? []]));
  return {
    SecurityGroups: page.map((i) => ({
      GroupId: i.group.id,
      GroupName: i.group.name,
      Description: i.group.description,
      OwnerId: i.group.account_id,
      VpcId: i.group.vpc_id,
      IpPermissions: toIpPermissions(i.ingress.map(ruleFromRow)),
      IpPermissionsEgress: toIpPermissions(i.egress.map(ruleFromRow)),
      Tags: i.tags,
    })),
    NextToken: nextToken,
  };
}

// ---- DeleteSecurityGroup --------------------------------------------------------------------

async function deleteSecurityGroup(ctx: RequestContext, input: { GroupId?: string; GroupName?: string }) {
  const accountId = ctx.caller.accountId;
  await ctx.store.transaction(async (tx) => {
    const group = await targetGroup(tx, accountId, input);
    if (group.name === DEFAULT_GROUP_NAME) {
      throw new Ec2Error('CannotDelete', `the specified group: "${group.id}" name: "${group.name}" cannot be deleted by a user`);
    }
    // VPC EC2 answers DependencyViolation for both kinds of dependent: another group's rule that
    // references this one, and an instance (its network interface) still in the group.
    const dependent = await tx.selectFrom('security_group_rules').select('id')
      .where('referenced_group_id', '=', group.id).where('group_id', '!=', group.id).executeTakeFirst();
    let hasDependent = dependent !== undefined;
    for (const inUse of usageChecks) {
      if (hasDependent) break;
      hasDependent = await inUse(tx, accountId, group.id);
    }
    if (hasDependent) throw new Ec2Error('DependencyViolation', `resource ${group.id} has a dependent object`);
    const ruleIds = (await tx.selectFrom('security_group_rules').select('id').where('group_id', '=', group.id).execute()).map((r) => r.id);
    for (const id of ruleIds) await deleteAllTags(tx, id);
    await tx.deleteFrom('security_group_rules').where('group_id', '=', group.id).execute();
    await deleteAllTags(tx, group.id);
    await tx.deleteFrom('security_groups').where('id', '=', group.id).execute();
  });
  return {};
}

// ---- Authorize ------------------------------------------------------------------------------

type PermissionInput = LegacyPermissionInput & { GroupId?: string; GroupName?: string; IpPermissions?: IpPermission[] };

/** The request's permissions, from IpPermissions or from the old top-level parameters. */
function requestedPermissions(input: PermissionInput, direction: Direction): IpPermission[] {
  const legacy = hasLegacyPermission(input);
  if (legacy && input.IpPermissions && input.IpPermissions.length > 0) {
    throw new Ec2Error('InvalidParameterCombination', 'The parameter IpPermissions cannot be used with the parameters CidrIp, IpProtocol, FromPort, ToPort or SourceSecurityGroupName.');
  }
  if (legacy) {
    if (direction === 'egress') {
      throw new Ec2Error('InvalidParameterValue', 'AuthorizeSecurityGroupEgress and RevokeSecurityGroupEgress take rules only as IpPermissions.');
    }
    return [legacyPermission(input)];
  }
  return input.IpPermissions ?? [];
}

/** Ingress calls may name the group by GroupName; egress calls (VPC only in EC2) need GroupId. */
async function directionTarget(db: Db | Tx, accountId: string, input: { GroupId?: string; GroupName?: string }, direction: Direction): Promise<Group> {
  if (direction === 'egress' && !input.GroupId) throw new Ec2Error('MissingParameter', 'The request must contain the parameter groupId');
  return targetGroup(db, accountId, input);
}

function egressFlag(direction: Direction): number {
  return direction === 'egress' ? 1 : 0;
}

async function rulesOfDirection(db: Db | Tx, group: Group, direction: Direction): Promise<Rule[]> {
  return sortRuleRows(await db.selectFrom('security_group_rules').selectAll()
    .where('group_id', '=', group.id).where('is_egress', '=', egressFlag(direction)).execute());
}

function ruleRow(group: Group, direction: Direction, rule: RuleDefinition, now: string): Rule {
  return {
    id: newId('sgr'), group_id: group.id, account_id: group.account_id, is_egress: egressFlag(direction),
    ip_protocol: rule.ipProtocol, from_port: rule.fromPort, to_port: rule.toPort,
    cidr_ipv4: rule.cidrIpv4, cidr_ipv6: rule.cidrIpv6, prefix_list_id: rule.prefixListId,
    referenced_group_id: rule.referencedGroupId, referenced_account_id: rule.referencedAccountId,
    description: rule.description, created_at: now,
  };
}

/** Refuses a rule set that repeats a rule or exceeds the per-direction limit. */
function checkRuleSet(existing: RuleDefinition[], added: RuleDefinition[]): void {
  const seen = new Set(existing.map(ruleKey));
  for (const r of added) {
    const key = ruleKey(r);
    if (seen.has(key)) throw new Ec2Error('InvalidPermission.Duplicate', `the specified rule "${ruleSummary(r)}" already exists`);
    seen.add(key);
  }
  if (existing.length + added.length > MAX_RULES_PER_DIRECTION) {
    throw new Ec2Error('RulesPerSecurityGroupLimitExceeded', 'The maximum number of rules per security group has been reached.');
  }
}

function authorize(direction: Direction) {
  return async (ctx: RequestContext, input: PermissionInput & { TagSpecifications?: TagSpecification[] }) => {
    const accountId = ctx.caller.accountId;
    const permissions = requestedPermissions(input, direction);
    if (permissions.length === 0) throw new Ec2Error('MissingParameter', 'The request must contain the parameter ipPermissions');
    const tags = tagsFromSpecifications(input.TagSpecifications, ['security-group-rule']).get('security-group-rule') ?? [];
    return ctx.store.transaction(async (tx) => {
      const group = await directionTarget(tx, accountId, input, direction);
      const added = await rulesFromPermissions(permissions, peerResolver(tx, accountId, group), resolvePrefixList);
      const existing = await rulesOfDirection(tx, group, direction);
      checkRuleSet(existing.map(ruleFromRow), added);
      const now = new Date().toISOString();
      const rows = added.map((r) => ruleRow(group, direction, r, now));
      await tx.insertInto('security_group_rules').values(rows).execute();
      for (const row of rows) await writeTags(tx, accountId, row.id, tags);
      return { Return: true, SecurityGroupRules: rows.map((row) => toSecurityGroupRule(row, tags)) };
    });
  };
}

// ---- Revoke ---------------------------------------------------------------------------------

async function deleteRules(tx: Tx, ruleIds: string[]): Promise<void> {
  for (const id of ruleIds) await deleteAllTags(tx, id);
  if (ruleIds.length > 0) await tx.deleteFrom('security_group_rules').where('id', 'in', ruleIds).execute();
}

/** The rules of `existing` named by ids, refusing an id that is not a rule of this group and direction. */
function rulesByIds(existing: Rule[], ids: string[]): Rule[] {
  const byId = new Map(existing.map((r) => [r.id, r]));
  return [...new Set(ids)].map((id) => {
    checkRuleId(id);
    const rule = byId.get(id);
    if (!rule) throw ruleIdNotFound(id);
    return rule;
  });
}

function revoke(direction: Direction) {
  return async (ctx: RequestContext, input: PermissionInput & { SecurityGroupRuleIds?: string[] }) => {
    const accountId = ctx.caller.accountId;
    const permissions = requestedPermissions(input, direction);
    const ruleIds = input.SecurityGroupRuleIds ?? [];
    if (permissions.length > 0 && ruleIds.length > 0) {
      throw new Ec2Error('InvalidParameterCombination', 'The parameter SecurityGroupRuleIds cannot be used with IpPermissions.');
    }
    if (permissions.length === 0 && ruleIds.length === 0) {
      throw new Ec2Error('MissingParameter', 'The request must contain the parameter ipPermissions or securityGroupRuleIds');
    }
    return ctx.store.transaction(async (tx) => {
      const group = await directionTarget(tx, accountId, input, direction);
      const existing = await rulesOfDirection(tx, group, direction);
      if (ruleIds.length > 0) {
        await deleteRules(tx, rulesByIds(existing, ruleIds).map((r) => r.id));
        return { Return: true };
      }
      const wanted = await rulesFromPermissions(permissions, peerResolver(tx, accountId, group), resolvePrefixList);
      const byKey = new Map(existing.map((r) => [ruleKey(ruleFromRow(r)), r]));
      const matched = new Set<string>();
      const unknown: RuleDefinition[] = [];
      for (const w of wanted) {
        const rule = byKey.get(ruleKey(w));
        if (rule) matched.add(rule.id);
        else unknown.push(w);
      }
      if (unknown.length > 0) {
        // EC2 forgives unknown rules only in a default VPC, where it reports them instead.
        const vpc = await vpcOf(tx, accountId, group.vpc_id);
        if (!vpc || vpc.is_default !== 1) {
          throw new Ec2Error('InvalidPermission.NotFound', 'The specified rule does not exist in this security group.');
        }
      }
      await deleteRules(tx, [...matched]);
      return unknown.length > 0 ? { Return: true, UnknownIpPermissions: toIpPermissions(unknown) } : { Return: true };
    });
  };
}

// ---- DescribeSecurityGroupRules -------------------------------------------------------------

async function describeSecurityGroupRules(ctx: RequestContext, input: { SecurityGroupRuleIds?: string[]; Filters?: Filter[]; MaxResults?: number; NextToken?: string }) {
  const accountId = ctx.caller.accountId;
  const db = ctx.store.db;
  const ids = input.SecurityGroupRuleIds ?? [];
  for (const id of ids) checkRuleId(id);
  const all = await rulesOfGroups(db, accountId);
  let chosen = all;
  if (ids.length > 0) {
    const byId = new Map(all.map((r) => [r.id, r]));
    chosen = [...new Set(ids)].map((id) => {
      const rule = byId.get(id);
      if (!rule) throw ruleIdNotFound(id);
      return rule;
    });
  }
  const tags = await tagsByResource(db, accountId, chosen.map((r) => r.id));
  const items = chosen.map((rule) => ({ rule, tags: tags.get(rule.id) ?? [] }));
  const filtered = applyFilters(items, input.Filters, {
    'group-id': (i) => i.rule.group_id,
    'security-group-rule-id': (i) => i.rule.id,
  }, (i) => i.tags);
  const { page, nextToken } = paginate(filtered, input, JSON.stringify(['security-group-rules', ids, input.Filters ?? []]));
  return { SecurityGroupRules: page.map((i) => toSecurityGroupRule(i.rule, i.tags)), NextToken: nextToken };
}

// ---- ModifySecurityGroupRules ---------------------------------------------------------------

interface SecurityGroupRuleRequest {
  IpProtocol?: string; FromPort?: number; ToPort?: number; CidrIpv4?: string; CidrIpv6?: string;
  PrefixListId?: string; ReferencedGroupId?: string; Description?: string;
}

/** A ModifySecurityGroupRules rule as the one-peer IpPermission it stands for. */
function permissionOfRuleRequest(r: SecurityGroupRuleRequest): IpPermission {
  const peers = [r.CidrIpv4, r.CidrIpv6, r.PrefixListId, r.ReferencedGroupId].filter((p) => p !== undefined && p !== '');
  if (peers.length !== 1) {
    throw new Ec2Error('InvalidParameterCombination', 'A security group rule must have exactly one of CidrIpv4, CidrIpv6, PrefixListId or ReferencedGroupId.');
  }
  const permission: IpPermission = { IpProtocol: r.IpProtocol, FromPort: r.FromPort, ToPort: r.ToPort };
  if (r.CidrIpv4) permission.IpRanges = [{ CidrIp: r.CidrIpv4, Description: r.Description }];
  if (r.CidrIpv6) permission.Ipv6Ranges = [{ CidrIpv6: r.CidrIpv6, Description: r.Description }];
  if (r.PrefixListId) permission.PrefixListIds = [{ PrefixListId: r.PrefixListId, Description: r.Description }];
  if (r.ReferencedGroupId) permission.UserIdGroupPairs = [{ GroupId: r.ReferencedGroupId, Description: r.Description }];
  return permission;
}

async function modifySecurityGroupRules(ctx: RequestContext, input: { GroupId?: string; SecurityGroupRules?: { SecurityGroupRuleId?: string; SecurityGroupRule?: SecurityGroupRuleRequest }[] }) {
  const accountId = ctx.caller.accountId;
  if (!input.GroupId) throw new Ec2Error('MissingParameter', 'The request must contain the parameter groupId');
  const changes = input.SecurityGroupRules ?? [];
  if (changes.length === 0) throw new Ec2Error('MissingParameter', 'The request must contain the parameter securityGroupRules');
  await ctx.store.transaction(async (tx) => {
    const group = await groupById(tx, accountId, input.GroupId!);
    const all = await rulesOfGroups(tx, accountId, [group.id]);
    const byId = new Map(all.map((r) => [r.id, r]));
    const replaced = new Map<string, RuleDefinition>();
    for (const change of changes) {
      const id = change.SecurityGroupRuleId ?? '';
      checkRuleId(id);
      if (!byId.has(id)) throw ruleIdNotFound(id);
      if (replaced.has(id)) throw new Ec2Error('InvalidParameterValue', `The security group rule ID '${id}' is specified more than once.`);
      if (!change.SecurityGroupRule) throw new Ec2Error('MissingParameter', `The request must contain the parameter securityGroupRule for ${id}`);
      const [rule] = await rulesFromPermissions([permissionOfRuleRequest(change.SecurityGroupRule)], peerResolver(tx, accountId, group), resolvePrefixList);
      replaced.set(id, rule!);
    }
    for (const egress of [0, 1]) {
      const unchanged = all.filter((r) => r.is_egress === egress && !replaced.has(r.id)).map(ruleFromRow);
      const changed = [...replaced].filter(([id]) => byId.get(id)!.is_egress === egress).map(([, r]) => r);
      checkRuleSet(unchanged, changed);
    }
    for (const [id, r] of replaced) {
      await tx.updateTable('security_group_rules').set({
        ip_protocol: r.ipProtocol, from_port: r.fromPort, to_port: r.toPort, cidr_ipv4: r.cidrIpv4, cidr_ipv6: r.cidrIpv6,
        prefix_list_id: r.prefixListId, referenced_group_id: r.referencedGroupId, referenced_account_id: r.referencedAccountId,
        description: r.description,
      }).where('id', '=', id).execute();
    }
  });
  return { Return: true };
}

// ---- UpdateSecurityGroupRuleDescriptions ----------------------------------------------------

function updateDescriptions(direction: Direction) {
  return async (ctx: RequestContext, input: { GroupId?: string; GroupName?: string; IpPermissions?: IpPermission[]; SecurityGroupRuleDescriptions?: { SecurityGroupRuleId?: string; Description?: string }[] }) => {
    const accountId = ctx.caller.accountId;
    const permissions = input.IpPermissions ?? [];
    const byIds = input.SecurityGroupRuleDescriptions ?? [];
    if (permissions.length === 0 && byIds.length === 0) {
      throw new Ec2Error('MissingParameter', 'The request must contain the parameter ipPermissions or securityGroupRuleDescriptions');
    }
    await ctx.store.transaction(async (tx) => {
      const group = await targetGroup(tx, accountId, input);
      const existing = await rulesOfDirection(tx, group, direction);
      const updates: { id: string; description: string | null }[] = [];
      if (byIds.length > 0) {
        const rules = rulesByIds(existing, byIds.map((d) => d.SecurityGroupRuleId ?? ''));
        rules.forEach((rule, i) => updates.push({ id: rule.id, description: validateRuleDescription(byIds[i]!.Description) }));
      }
      if (permissions.length > 0) {
        const wanted = await rulesFromPermissions(permissions, peerResolver(tx, accountId, group), resolvePrefixList);
        const byKey = new Map(existing.map((r) => [ruleKey(ruleFromRow(r)), r]));
        for (const w of wanted) {
          const rule = byKey.get(ruleKey(w));
          if (!rule) throw new Ec2Error('InvalidPermission.NotFound', 'The specified rule does not exist in this security group.');
          updates.push({ id: rule.id, description: w.description });
        }
      }
      for (const u of updates) {
        await tx.updateTable('security_group_rules').set({ description: u.description }).where('id', '=', u.id).execute();
      }
    });
    return { Return: true };
  };
}

export const securityGroupOperations: OperationTable = {
  CreateSecurityGroup: createSecurityGroup,
  DescribeSecurityGroups: describeSecurityGroups,
  DeleteSecurityGroup: deleteSecurityGroup,
  AuthorizeSecurityGroupIngress: authorize('ingress'),
  AuthorizeSecurityGroupEgress: authorize('egress'),
  RevokeSecurityGroupIngress: revoke('ingress'),
  RevokeSecurityGroupEgress: revoke('egress'),
  DescribeSecurityGroupRules: describeSecurityGroupRules,
  ModifySecurityGroupRules: modifySecurityGroupRules,
  UpdateSecurityGroupRuleDescriptionsIngress: updateDescriptions('ingress'),
  UpdateSecurityGroupRuleDescriptionsEgress: updateDescriptions('egress'),
};
