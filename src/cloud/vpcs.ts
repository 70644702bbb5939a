// DescribeVpcs and DescribeSubnets: the default VPC and its per-zone default subnets, as EC2
// shows them. Only the caller's own rows are ever read; a foreign id is simply not found.
import type { OperationTable, RequestContext } from './context.ts';
import type { SubnetsTable, VpcsTable } from '../store/schema.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { applyFilters, type Filter } from '../protocol/filters.ts';
import { paginate } from '../protocol/pagination.ts';
import { tagsByResource, type Tag } from './tags.ts';
import { ipv4CidrSize, parseIpv4Cidr } from './cidr.ts';
import { viewFilters } from './view-filters.ts';

/** EC2 keeps the first four addresses and the last one of every subnet. */
const RESERVED_ADDRESSES_PER_SUBNET = 5;

function isWellFormedId(id: string, prefix: string): boolean {
  return new RegExp(`^${prefix}-[0-9a-f]{8}([0-9a-f]{9})?$`).test(id);
}

function checkIds(ids: string[], prefix: string, malformedCode: string): void {
  for (const id of ids) {
    if (!isWellFormedId(id, prefix)) throw new Ec2Error(malformedCode, `Invalid id: "${id}" (expecting "${prefix}-...")`);
  }
}

/** Keeps the rows named by `ids` (when given), refusing the first id the caller does not own. */
function selectByIds<T extends { id: string }>(rows: T[], ids: string[] | undefined, notFound: (id: string) => Ec2Error): T[] {
  if (!ids || ids.length === 0) return rows;
  const byId = new Map(rows.map((r) => [r.id, r]));
  const wanted = [...new Set(ids)];
  for (const id of wanted) if (!byId.has(id)) throw notFound(id);
  return wanted.map((id) => byId.get(id)!);
}

/** Stable id of the VPC's primary CIDR association, derived from the VPC id. */
export function vpcCidrAssociationId(vpcId: string): string {
  return `vpc-cidr-assoc-${vpcId.slice(4)}`;
}

interface VpcItem { row: VpcsTable; tags: Tag[] }

async function describeVpcs(ctx: RequestContext, input: { VpcIds?: string[]; Filters?: Filter[]; MaxResults?: number; NextToken?: string }) {
  const accountId = ctx.caller.accountId;
  checkIds(input.VpcIds ?? [], 'vpc', 'InvalidVpcID.Malformed');
  const rows = await ctx.store.db.selectFrom('vpcs').selectAll().where('account_id', '=', accountId)
    .orderBy('created_at').orderBy('id').execute();
  const chosen = selectByIds(rows, input.VpcIds,
    (id) => new Ec2Error('InvalidVpcID.NotFound', `The vpc ID '${id}' does not exist`));
  const tags = await tagsByResource(ctx.store.db, accountId, chosen.map((r) => r.id));
  const items: VpcItem[] = chosen.map((row) => ({ row, tags: tags.get(row.id) ?? [] }));
  const filtered = applyFilters(items, input.Filters, {
    'vpc-id': (i) => i.row.id,
    'cidr': (i) => i.row.cidr,
    'cidr-block-association.cidr-block': (i) => i.row.cidr,
    'cidr-block-association.association-id': (i) => vpcCidrAssociationId(i.row.id),
    'cidr-block-association.state': () => 'associated',
    'is-default': (i) => i.row.is_default === 1,
    // EC2 also takes the older camelCase name (Ansible's ec2_instance finds the default VPC with it).
    'isDefault': (i) => i.row.is_default === 1,
    'state': (i) => i.row.state,
    'owner-id': (i) => i.row.account_id,
    'dhcp-options-id': (i) => i.row.dhcp_options_id,
    ...VPC_VIEW_FILTERS,
  }, (i) => i.tags);
  const { page, nextToken } = paginate(filtered, input, JSON.stringify(['vpcs', input.VpcIds ?? [], input.Filters ?? []]));
  return { Vpcs: page.map(vpcView), NextToken: nextToken };
}

function vpcView({ row, tags }: VpcItem) {
  return {
    VpcId: row.id,
    CidrBlock: row.cidr,
    CidrBlockAssociationSet: [{ AssociationId: vpcCidrAssociationId(row.id), CidrBlock: row.cidr, CidrBlockState: { State: 'associated' } }],
    DhcpOptionsId: row.dhcp_options_id,
    State: row.state,
    OwnerId: row.account_id,
    InstanceTenancy: 'default',
    IsDefault: row.is_default === 1,
    Tags: tags,
  };
}

/** The documented VPC filters read from the Vpc structure shown (no VPC here has IPv6 blocks). */
const VPC_VIEW_FILTERS = viewFilters(vpcView, {
  'ipv6-cidr-block-association.association-id': 'Ipv6CidrBlockAssociationSet.AssociationId',
  'ipv6-cidr-block-association.ipv6-cidr-block': 'Ipv6CidrBlockAssociationSet.Ipv6CidrBlock',
  'ipv6-cidr-block-association.ipv6-pool': 'Ipv6CidrBlockAssociationSet.Ipv6Pool',
  'ipv6-cidr-block-association.state': 'Ipv6CidrBlockAssociationSet.Ipv6CidrBlockState.State',
});

interface SubnetItem { row: SubnetsTable; zoneId?: string; region: string; tags: Tag[] }

function availableAddresses(cidr: string): number {
  const block = parseIpv4Cidr(cidr);
  return block ? Math.max(0, ipv4CidrSize(block) - RESERVED_ADDRESSES_PER_SUBNET) : 0;
}

async function describeSubnets(ctx: RequestContext, input: { SubnetIds?: string[]; Filters?: Filter[]; MaxResults?: number; NextToken?: string }) {
  const accountId = ctx.caller.accountId;
  checkIds(input.SubnetIds ?? [], 'subnet', 'InvalidSubnetID.Malformed');
  const rows = await ctx.store.db.selectFrom('subnets').selectAll().where('account_id', '=', accountId)
    .orderBy('created_at').orderBy('zone').orderBy('id').execute();
  const chosen = selectByIds(rows, input.SubnetIds,
    (id) => new Ec2Error('InvalidSubnetID.NotFound', `The subnet ID '${id}' does not exist`));
  const zones = new Map((await ctx.store.db.selectFrom('zones').select(['name', 'zone_id', 'region']).execute()).map((z) => [z.name, z]));
  const tags = await tagsByResource(ctx.store.db, accountId, chosen.map((r) => r.id));
  const items: SubnetItem[] = chosen.map((row) => ({
    row, zoneId: zones.get(row.zone)?.zone_id, region: zones.get(row.zone)?.region ?? ctx.settings.region, tags: tags.get(row.id) ?? [],
  }));
  const filtered = applyFilters(items, input.Filters, {
    'subnet-id': (i) => i.row.id,
    'vpc-id': (i) => i.row.vpc_id,
    'availability-zone': (i) => i.row.zone,
    'availabilityZone': (i) => i.row.zone,
    'availability-zone-id': (i) => i.zoneId,
    'availabilityZoneId': (i) => i.zoneId,
    'cidr-block': (i) => i.row.cidr,
    'cidrBlock': (i) => i.row.cidr,
    'cidr': (i) => i.row.cidr,
    'default-for-az': (i) => i.row.default_for_az === 1,
    'defaultForAz': (i) => i.row.default_for_az === 1,
    'state': (i) => i.row.state,
    'owner-id': (i) => i.row.account_id,
    'map-public-ip-on-launch': (i) => i.row.map_public_ip_on_launch === 1,
    'available-ip-address-count': (i) => availableAddresses(i.row.cidr),
    'subnet-arn': (i) => subnetArn(i),
    ...SUBNET_VIEW_FILTERS,
  }, (i) => i.tags);
  const { page, nextToken } = paginate(filtered, input, JSON.stringify(['subnets', input.SubnetIds ?? [], input.Filters ?? []]));
  return { Subnets: page.map(subnetView), NextToken: nextToken };
}

function subnetView(i: SubnetItem) {
  return {
    SubnetId: i.row.id,
    SubnetArn: subnetArn(i),
    VpcId: i.row.vpc_id,
    State: i.row.state,
    CidrBlock: i.row.cidr,
    AvailableIpAddressCount: availableAddresses(i.row.cidr),
    AvailabilityZone: i.row.zone,
    AvailabilityZoneId: i.zoneId,
    DefaultForAz: i.row.default_for_az === 1,
    MapPublicIpOnLaunch: i.row.map_public_ip_on_launch === 1,
    MapCustomerOwnedIpOnLaunch: false,
    AssignIpv6AddressOnCreation: false,
    Ipv6CidrBlockAssociationSet: [],
    OwnerId: i.row.account_id,
    Tags: i.tags,
  };
}

/** The documented subnet filters read from the Subnet structure shown (most name what no subnet here has). */
const SUBNET_VIEW_FILTERS = viewFilters(subnetView, {
  'customer-owned-ipv4-pool': 'CustomerOwnedIpv4Pool',
  'enable-dns64': 'EnableDns64',
  'enable-lni-at-device-index': 'EnableLniAtDeviceIndex',
  'ipv6-cidr-block-association.association-id': 'Ipv6CidrBlockAssociationSet.AssociationId',
  'ipv6-cidr-block-association.ipv6-cidr-block': 'Ipv6CidrBlockAssociationSet.Ipv6CidrBlock',
  'ipv6-cidr-block-association.state': 'Ipv6CidrBlockAssociationSet.Ipv6CidrBlockState.State',
  'ipv6-native': 'Ipv6Native',
  'map-customer-owned-ip-on-launch': 'MapCustomerOwnedIpOnLaunch',
  'outpost-arn': 'OutpostArn',
  'private-dns-name-options-on-launch.enable-resource-name-dns-a-record': 'PrivateDnsNameOptionsOnLaunch.EnableResourceNameDnsARecord',
  'private-dns-name-options-on-launch.enable-resource-name-dns-aaaa-record': 'PrivateDnsNameOptionsOnLaunch.EnableResourceNameDnsAAAARecord',
  'private-dns-name-options-on-launch.hostname-type': 'PrivateDnsNameOptionsOnLaunch.HostnameType',
});

function subnetArn(i: SubnetItem): string {
  return `arn:aws:ec2:${i.region}:${i.row.account_id}:subnet/${i.row.id}`;
}

export const vpcOperations: OperationTable = {
  DescribeVpcs: describeVpcs,
  DescribeSubnets: describeSubnets,
};
