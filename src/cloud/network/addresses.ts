// Elastic IPs: AllocateAddress, AssociateAddress, DisassociateAddress, ReleaseAddress,
// DescribeAddresses and DescribeAddressesAttribute, as EC2 answers them for VPC addresses. An
// elastic IP comes from a zone's public range (public-ranges.ts) and serves instances of that zone;
// the instance-side bookkeeping is public-addresses.ts. The data plane follows through the zone's
// firewall document (which carries each instance's public address) to the nodes, within seconds.
import { PostgresAdapter } from 'kysely';
import type { OperationTable, RequestContext } from '../context.ts';
import type { Db, Tx } from '../../store/store.ts';
import type { AddressesTable, InstancesTable } from '../../store/schema.ts';
import { Ec2Error, excerpt } from '../../protocol/errors.ts';
import { applyFilters, type Filter } from '../../protocol/filters.ts';
import { paginate } from '../../protocol/pagination.ts';
import { parseIpv4Address, formatIpv4Address } from '../cidr.ts';
import { newId } from '../ids.ts';
import { registerTaggable } from '../resource-registry.ts';
import { deleteAllTags, tagsByResource, tagsFromSpecifications, writeTags, type Tag, type TagSpecification } from '../tags.ts';
import { getQuota } from '../quotas.ts';
import { networkInterfaceIdOf } from '../instance-view.ts';
import { isInPublicRange, listPublicRanges, pickFreePublicIp } from './public-ranges.ts';
import { bindElasticIp, insufficientAddresses, publicDnsName, unbindElasticIp } from './public-addresses.ts';

const ALLOCATION_ID = /^eipalloc-[0-9a-f]{8}([0-9a-f]{9})?$/;
const ASSOCIATION_ID = /^eipassoc-[0-9a-f]{8}([0-9a-f]{9})?$/;
const INSTANCE_ID = /^i-[0-9a-f]{8}([0-9a-f]{9})?$/;
const ENI_ID = /^eni-[0-9a-f]{8}([0-9a-f]{9})?$/;

/** The elastic IP limit when the operator set none (an AWS account's default). */
export const DEFAULT_MAX_ELASTIC_IPS = 5;

type ElasticIp = AddressesTable & { allocation_id: string };

const allocationNotFound = (id: string) => new Ec2Error('InvalidAllocationID.NotFound', `The allocation ID '${excerpt(id)}' does not exist`);
const addressNotFound = (ip: string) => new Ec2Error('InvalidAddress.NotFound', `Address ${excerpt(ip)} not found.`);
const associationNotFound = (id: string) => new Ec2Error('InvalidAssociationID.NotFound', `The association ID '${excerpt(id)}' does not exist`);

function checkAllocationId(id: string): void {
  if (!ALLOCATION_ID.test(id)) throw new Ec2Error('InvalidAllocationID.Malformed', `Invalid id: "${excerpt(id)}" (expecting "eipalloc-...")`);
}

function checkPublicIp(ip: string): void {
  if (parseIpv4Address(ip) === undefined) throw new Ec2Error('InvalidParameterValue', `Invalid value '${excerpt(ip)}' for PublicIp. Not a valid IPv4 address.`);
}

async function elasticIps(db: Db | Tx, accountId: string): Promise<ElasticIp[]> {
  const rows = await db.selectFrom('addresses').selectAll().where('account_id', '=', accountId).where('allocation_id', 'is not', null)
    .orderBy('created_at').orderBy('public_ip').execute();
  return rows as ElasticIp[];
}

/** The caller's elastic IP named by AllocationId (or, for older clients such as euca2ools, PublicIp). */
async function findElasticIp(db: Db | Tx, accountId: string, ref: { AllocationId?: string; PublicIp?: string }): Promise<ElasticIp> {
  if (ref.AllocationId) {
    checkAllocationId(ref.AllocationId);
    const row = await db.selectFrom('addresses').selectAll().where('allocation_id', '=', ref.AllocationId).where('account_id', '=', accountId).executeTakeFirst();
    if (!row) throw allocationNotFound(ref.AllocationId);
    return row as ElasticIp;
  }
  if (ref.PublicIp) {
    checkPublicIp(ref.PublicIp);
    const row = await db.selectFrom('addresses').selectAll().where('public_ip', '=', ref.PublicIp).where('account_id', '=', accountId)
      .where('allocation_id', 'is not', null).executeTakeFirst();
    if (!row) throw addressNotFound(ref.PublicIp);
    return row as ElasticIp;
  }
  throw new Ec2Error('MissingParameter', 'Either public IP or allocation id must be specified');
}

registerTaggable('eipalloc', async (db, accountId, id) => {
  const row = await db.selectFrom('addresses').select('public_ip').where('allocation_id', '=', id).where('account_id', '=', accountId).executeTakeFirst();
  return row !== undefined;
}, allocationNotFound);

// ---- the view -----------------------------------------------------------------------------------

interface AddressItem { row: ElasticIp; tags: Tag[] }

function addressView({ row, tags }: AddressItem, region: string) {
  const associated = row.instance_id !== null && row.association_id !== null;
  return {
    PublicIp: row.public_ip,
    AllocationId: row.allocation_id,
    Domain: row.domain,
    PublicIpv4Pool: 'amazon',
    NetworkBorderGroup: region,
    ...(associated ? {
      AssociationId: row.association_id!,
      InstanceId: row.instance_id!,
      NetworkInterfaceId: networkInterfaceIdOf(row.instance_id!),
      NetworkInterfaceOwnerId: row.account_id,
      PrivateIpAddress: row.private_ip ?? undefined,
    } : {}),
    Tags: tags,
  };
}

const ADDRESS_FILTERS = (region: string) => ({
  'allocation-id': (i: AddressItem) => i.row.allocation_id,
  'association-id': (i: AddressItem) => i.row.association_id ?? undefined,
  'domain': (i: AddressItem) => i.row.domain,
  'instance-id': (i: AddressItem) => i.row.instance_id ?? undefined,
  'network-border-group': () => region,
  'network-interface-id': (i: AddressItem) => (i.row.instance_id ? networkInterfaceIdOf(i.row.instance_id) : undefined),
  'network-interface-owner-id': (i: AddressItem) => (i.row.instance_id ? i.row.account_id : undefined),
  'private-ip-address': (i: AddressItem) => i.row.private_ip ?? undefined,
  'public-ip': (i: AddressItem) => i.row.public_ip,
  'public-ipv4-pool': () => 'amazon',
});

/** The rows named by the request's PublicIps and AllocationIds (all when neither), refusing the first unknown one. */
function selectNamed(rows: ElasticIp[], publicIps: string[] | undefined, allocationIds: string[] | undefined): ElasticIp[] {
  let chosen = rows;
  if (publicIps?.length) {
    const byIp = new Map(rows.map((r) => [r.public_ip, r]));
    for (const ip of publicIps) {
      checkPublicIp(ip);
      if (!byIp.has(ip)) throw addressNotFound(ip);
    }
    const wanted = new Set(publicIps);
    chosen = chosen.filter((r) => wanted.has(r.public_ip));
  }
  if (allocationIds?.length) {
    const known = new Set(rows.map((r) => r.allocation_id));
    for (const id of allocationIds) {
      checkAllocationId(id);
      if (!known.has(id)) throw allocationNotFound(id);
    }
    const wanted = new Set(allocationIds);
    chosen = chosen.filter((r) => wanted.has(r.allocation_id));
  }
  return chosen;
}

async function DescribeAddresses(ctx: RequestContext, input: { PublicIps?: string[]; AllocationIds?: string[]; Filters?: Filter[] }) {
  const accountId = ctx.caller.accountId;
  const db = ctx.store.db;
  const chosen = selectNamed(await elasticIps(db, accountId), input.PublicIps, input.AllocationIds);
  const tags = await tagsByResource(db, accountId, chosen.map((r) => r.allocation_id));
  const items = chosen.map((row) => ({ row, tags: tags.get(row.allocation_id) ?? [] }));
  const filtered = applyFilters(items, input.Filters, ADDRESS_FILTERS(ctx.settings.region), (i) => i.tags);
  return { Addresses: filtered.map((i) => addressView(i, ctx.settings.region)) };
}

async function DescribeAddressesAttribute(ctx: RequestContext, input: { AllocationIds?: string[]; Attribute?: string; MaxResults?: number; NextToken?: string }) {
  if (input.Attribute !== undefined && input.Attribute !== 'domain-name') {
    throw new Ec2Error('InvalidParameterValue', `Value (${excerpt(input.Attribute)}) for parameter attribute is invalid. Valid values are: domain-name.`);
  }
  if (input.MaxResults !== undefined && (input.MaxResults < 1 || input.MaxResults > 1000)) {
    throw new Ec2Error('InvalidParameterValue', `Value (${input.MaxResults}) for parameter maxResults is invalid. Expecting a value between 1 and 1000.`);
  }
  const chosen = selectNamed(await elasticIps(ctx.store.db, ctx.caller.accountId), undefined, input.AllocationIds);
  const { page, nextToken } = paginate(chosen, input, JSON.stringify(['addresses-attribute', input.AllocationIds ?? []]), { min: 1, max: 1000 });
  return {
    // The reverse DNS record of each address: its public host name, fully qualified.
    Addresses: page.map((r) => ({ PublicIp: r.public_ip, AllocationId: r.allocation_id, PtrRecord: `${publicDnsName(r.public_ip, ctx.settings.region)}.` })),
    ...(nextToken ? { NextToken: nextToken } : {}),
  };
}

// ---- allocation ----------------------------------------------------------------------------------

interface AllocateInput {
  Domain?: string; Address?: string; PublicIpv4Pool?: string; NetworkBorderGroup?: string;
  CustomerOwnedIpv4Pool?: string; IpamPoolId?: string; TagSpecifications?: TagSpecification[];
}

function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: string })?.code;
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === '23505';
}

async function AllocateAddress(ctx: RequestContext, input: AllocateInput) {
  const region = ctx.settings.region;
  if (input.Domain !== undefined && input.Domain !== 'vpc') {
    throw new Ec2Error('InvalidParameterValue', input.Domain === 'standard'
      ? 'EC2-Classic addresses (Domain standard) are not offered: allocate a VPC address (Domain vpc).'
      : `Value (${excerpt(input.Domain)}) for parameter domain is invalid. Valid values are: vpc, standard.`);
  }
  if (input.PublicIpv4Pool !== undefined && input.PublicIpv4Pool !== 'amazon') {
    throw new Ec2Error('InvalidParameterValue', `The public IPv4 pool '${excerpt(input.PublicIpv4Pool)}' does not exist: this cloud's addresses come from the pool 'amazon' (the zones' public ranges).`);
  }
  if (input.NetworkBorderGroup !== undefined && input.NetworkBorderGroup !== region) {
    throw new Ec2Error('InvalidParameterValue', `Value (${excerpt(input.NetworkBorderGroup)}) for parameter networkBorderGroup is invalid. The network border group of this region is ${region}.`);
  }
  if (input.CustomerOwnedIpv4Pool !== undefined) {
    throw new Ec2Error('InvalidParameterValue', 'Customer-owned IPv4 pools (Outposts) are not offered by this cloud.');
  }
  if (input.IpamPoolId !== undefined) {
    throw new Ec2Error('InvalidParameterValue', 'IPAM pools are not offered by this cloud.');
  }
  if (input.Address !== undefined) checkAddress(input.Address);
  const tags = tagsFromSpecifications(input.TagSpecifications, ['elastic-ip']).get('elastic-ip') ?? [];
  const accountId = ctx.caller.accountId;
  for (let attempt = 0; ; attempt++) {
    try {
      return await ctx.store.transaction(async (tx) => {
        // On PostgreSQL the account's row is locked until the end, so two controllers cannot both
        // admit the last address the quota allows (SQLite runs one transaction at a time anyway).
        if (tx.getExecutor().adapter instanceof PostgresAdapter) {
          await tx.selectFrom('accounts').select('id').where('id', '=', accountId).forNoKeyUpdate().execute();
        }
        const limit = (await getQuota(tx, accountId, 'max-elastic-ips')) ?? DEFAULT_MAX_ELASTIC_IPS;
        const held = await tx.selectFrom('addresses').select((eb) => eb.fn.countAll<number>().as('n'))
          .where('account_id', '=', accountId).where('allocation_id', 'is not', null).executeTakeFirstOrThrow();
        if (Number(held.n) >= limit) throw new Ec2Error('AddressLimitExceeded', 'The maximum number of addresses has been reached.');
        const { ip, zone } = input.Address !== undefined ? await requestedAddress(tx, input.Address) : await anyFreeAddress(tx);
        const allocationId = newId('eipalloc');
        await tx.insertInto('addresses').values({
          public_ip: ip, zone, account_id: accountId, allocation_id: allocationId, domain: 'vpc',
          instance_id: null, association_id: null, private_ip: null, created_at: new Date().toISOString(),
        }).execute();
        await writeTags(tx, accountId, allocationId, tags);
        return { PublicIp: ip, AllocationId: allocationId, PublicIpv4Pool: 'amazon', NetworkBorderGroup: region, Domain: 'vpc' };
      });
    } catch (e) {
      // Another controller took the same free address first: pick again.
      if (isUniqueViolation(e) && input.Address === undefined && attempt < 3) continue;
      if (isUniqueViolation(e)) throw addressInUse(input.Address ?? '');
      throw e;
    }
  }
}

function checkAddress(address: string): void {
  const value = parseIpv4Address(address);
  if (value === undefined || formatIpv4Address(value) !== address) {
    throw new Ec2Error('InvalidParameterValue', `Value (${excerpt(address)}) for parameter address is invalid. Not a valid IPv4 address.`);
  }
}

function addressInUse(address: string): Ec2Error {
  return new Ec2Error('InvalidParameterValue', `The address ${excerpt(address)} is already allocated and is not available.`);
}

async function requestedAddress(tx: Tx, address: string): Promise<{ ip: string; zone: string }> {
  const range = (await listPublicRanges(tx)).find((r) => isInPublicRange(r.cidr, address));
  if (!range) throw addressNotFound(address);
  const taken = await tx.selectFrom('addresses').select('public_ip').where('public_ip', '=', address).executeTakeFirst();
  if (taken) throw addressInUse(address);
  return { ip: address, zone: range.zone };
}

/** The lowest free address of the first zone (by name) whose range has one. */
async function anyFreeAddress(tx: Tx): Promise<{ ip: string; zone: string }> {
  const ranges = await listPublicRanges(tx);
  for (const range of ranges) {
    const ip = await pickFreePublicIp(tx, range.zone);
    if (ip) return { ip, zone: range.zone };
  }
  if (ranges.length === 0) {
    throw new Ec2Error('InsufficientAddressCapacity', 'This cloud has no public addresses to give: the operator has given no zone a public range.');
  }
  throw insufficientAddresses(ranges.map((r) => r.zone).join(', '));
}

async function ReleaseAddress(ctx: RequestContext, input: { AllocationId?: string; PublicIp?: string; NetworkBorderGroup?: string }) {
  if (input.NetworkBorderGroup !== undefined && input.NetworkBorderGroup !== ctx.settings.region) {
    throw new Ec2Error('InvalidParameterValue', `Value (${excerpt(input.NetworkBorderGroup)}) for parameter networkBorderGroup is invalid. The network border group of this region is ${ctx.settings.region}.`);
  }
  await ctx.store.transaction(async (tx) => {
    const eip = await findElasticIp(tx, ctx.caller.accountId, input);
    if (eip.association_id !== null) {
      throw new Ec2Error('InvalidIPAddress.InUse', `The address with allocation id [${eip.allocation_id}] is in use (associated with ${eip.instance_id}); disassociate it first.`);
    }
    await deleteAllTags(tx, eip.allocation_id);
    await tx.deleteFrom('addresses').where('public_ip', '=', eip.public_ip).execute();
  });
  return {};
}

// ---- association ---------------------------------------------------------------------------------

interface AssociateInput {
  AllocationId?: string; PublicIp?: string; InstanceId?: string; NetworkInterfaceId?: string; PrivateIpAddress?: string; AllowReassociation?: boolean;
}

/** The instance an AssociateAddress names, by InstanceId or by its (one) network interface. */
async function targetInstance(tx: Tx, accountId: string, input: AssociateInput): Promise<InstancesTable> {
  if (input.InstanceId) {
    if (!INSTANCE_ID.test(input.InstanceId)) throw new Ec2Error('InvalidInstanceID.Malformed', `Invalid id: "${excerpt(input.InstanceId)}"`);
    const row = await tx.selectFrom('instances').selectAll().where('id', '=', input.InstanceId).where('account_id', '=', accountId).executeTakeFirst();
    if (!row) throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${input.InstanceId}' does not exist`);
    if (input.NetworkInterfaceId && networkInterfaceIdOf(row.id) !== input.NetworkInterfaceId) {
      throw new Ec2Error('InvalidParameterCombination', `The network interface ${excerpt(input.NetworkInterfaceId)} is not attached to instance ${row.id}.`);
    }
    return row;
  }
  if (input.NetworkInterfaceId) {
    if (!ENI_ID.test(input.NetworkInterfaceId)) throw new Ec2Error('InvalidNetworkInterfaceID.Malformed', `Invalid id: "${excerpt(input.NetworkInterfaceId)}"`);
    // An instance's one interface has no row of its own: its id is derived from the instance's.
    const rows = await tx.selectFrom('instances').selectAll().where('account_id', '=', accountId).where('private_ip', 'is not', null).execute();
    const row = rows.find((r) => networkInterfaceIdOf(r.id) === input.NetworkInterfaceId);
    if (!row) throw new Ec2Error('InvalidNetworkInterfaceID.NotFound', `The networkInterface ID '${input.NetworkInterfaceId}' does not exist`);
    return row;
  }
  throw new Ec2Error('MissingParameter', 'Either an instance ID or a network interface ID must be specified');
}

async function AssociateAddress(ctx: RequestContext, input: AssociateInput) {
  const accountId = ctx.caller.accountId;
  if (input.AllocationId === undefined && input.PublicIp === undefined) {
    throw new Ec2Error('MissingParameter', 'Either public IP or allocation id must be specified');
  }
  return ctx.store.transaction(async (tx) => {
    const eip = await findElasticIp(tx, accountId, input);
    const instance = await targetInstance(tx, accountId, input);
    if (instance.private_ip === null || instance.state === 'terminated' || instance.state === 'shutting-down') {
      throw new Ec2Error('IncorrectInstanceState', `The instance '${instance.id}' is not in a valid state for this operation (${instance.state}).`);
    }
    if (input.PrivateIpAddress !== undefined && input.PrivateIpAddress !== instance.private_ip) {
      throw new Ec2Error('InvalidParameterValue', `The private IP address ${excerpt(input.PrivateIpAddress)} is not assigned to the network interface of ${instance.id} (${instance.private_ip}).`);
    }
    if (eip.zone !== instance.zone) {
      throw new Ec2Error('InvalidParameterValue',
        `The address ${eip.public_ip} comes from the public range of availability zone ${eip.zone} and can serve only instances there; ${instance.id} runs in ${instance.zone}.`);
    }
    if (eip.instance_id === instance.id && eip.private_ip === instance.private_ip && eip.association_id) {
      return { AssociationId: eip.association_id }; // already so
    }
    if (eip.association_id !== null && input.AllowReassociation !== true) {
      throw new Ec2Error('Resource.AlreadyAssociated', `resource ${eip.allocation_id} is already associated with associate-id ${eip.association_id}`);
    }
    if (eip.instance_id !== null) await unbindElasticIp(tx, eip);
    const associationId = newId('eipassoc');
    await bindElasticIp(tx, eip, { id: instance.id, private_ip: instance.private_ip }, associationId);
    return { AssociationId: associationId };
  });
}

async function DisassociateAddress(ctx: RequestContext, input: { AssociationId?: string; PublicIp?: string }) {
  const accountId = ctx.caller.accountId;
  await ctx.store.transaction(async (tx) => {
    let eip: ElasticIp;
    if (input.AssociationId) {
      if (!ASSOCIATION_ID.test(input.AssociationId)) {
        throw new Ec2Error('InvalidAssociationID.Malformed', `Invalid id: "${excerpt(input.AssociationId)}" (expecting "eipassoc-...")`);
      }
      const row = await tx.selectFrom('addresses').selectAll().where('association_id', '=', input.AssociationId).where('account_id', '=', accountId).executeTakeFirst();
      if (!row) throw associationNotFound(input.AssociationId);
      eip = row as ElasticIp;
    } else if (input.PublicIp) {
      eip = await findElasticIp(tx, accountId, { PublicIp: input.PublicIp });
    } else {
      throw new Ec2Error('MissingParameter', 'Either public IP or association id must be specified');
    }
    if (eip.association_id !== null) await unbindElasticIp(tx, eip);
  });
  return {};
}

export const addressOperations: OperationTable = {
  AllocateAddress, AssociateAddress, DisassociateAddress, ReleaseAddress, DescribeAddresses, DescribeAddressesAttribute,
};
