// The network every account starts with, as EC2 gives it: a default VPC, one default subnet per
// availability zone (that zone's private network) and the VPC's `default` security group.
// Everything here is idempotent, so it can run on every account creation, zone creation or start-up.
import type { Db, Tx } from '../store/store.ts';
import { newId } from './ids.ts';
import { formatIpv4Cidr, ipv4Supernet, parseIpv4Cidr, type Ipv4Cidr } from './cidr.ts';

/** Used as the default VPC's range until the cloud has a zone. */
const EMPTY_CLOUD_VPC_CIDR = '172.31.0.0/16';

export const DEFAULT_GROUP_NAME = 'default';
export const DEFAULT_GROUP_DESCRIPTION = 'default VPC security group';

export async function defaultVpcId(db: Db | Tx, accountId: string): Promise<string | undefined> {
  const row = await db.selectFrom('vpcs').select('id')
    .where('account_id', '=', accountId).where('is_default', '=', 1)
    .orderBy('created_at').orderBy('id').executeTakeFirst();
  return row?.id;
}

/** The smallest IPv4 block covering every zone's network. */
async function defaultVpcCidr(db: Db | Tx): Promise<string> {
  const zones = await db.selectFrom('zones').select(['name', 'cidr']).execute();
  const blocks: Ipv4Cidr[] = [];
  for (const z of zones) {
    const block = parseIpv4Cidr(z.cidr);
    if (!block) throw new Error(`zone ${z.name} has an invalid network ${JSON.stringify(z.cidr)}`);
    blocks.push(block);
  }
  return blocks.length === 0 ? EMPTY_CLOUD_VPC_CIDR : formatIpv4Cidr(ipv4Supernet(blocks));
}

async function ensureDefaultSubnet(tx: Tx, accountId: string, vpcId: string, zone: { name: string; cidr: string }, now: string): Promise<void> {
  const existing = await tx.selectFrom('subnets').select('id')
    .where('vpc_id', '=', vpcId).where('zone', '=', zone.name).where('default_for_az', '=', 1)
    .executeTakeFirst();
  if (existing) return;
  await tx.insertInto('subnets').values({
    id: newId('subnet'), account_id: accountId, vpc_id: vpcId, zone: zone.name,
    cidr: formatIpv4Cidr(parseIpv4Cidr(zone.cidr)!), default_for_az: 1, map_public_ip_on_launch: 1,
    state: 'available', created_at: now,
  }).execute();
}

/** Creates the VPC's `default` group with EC2's default rules, unless it exists. */
export async function ensureDefaultSecurityGroup(tx: Tx, accountId: string, vpcId: string): Promise<string> {
  const existing = await tx.selectFrom('security_groups').select('id')
    .where('account_id', '=', accountId).where('vpc_id', '=', vpcId).where('name', '=', DEFAULT_GROUP_NAME)
    .executeTakeFirst();
  if (existing) return existing.id;
  const now = new Date().toISOString();
  const groupId = newId('sg');
  await tx.insertInto('security_groups').values({
    id: groupId, account_id: accountId, vpc_id: vpcId, name: DEFAULT_GROUP_NAME,
    description: DEFAULT_GROUP_DESCRIPTION, created_at: now,
  }).execute();
  const blank = { from_port: null, to_port: null, cidr_ipv4: null, cidr_ipv6: null, prefix_list_id: null,
    referenced_group_id: null, referenced_account_id: null, description: null, created_at: now };
  await tx.insertInto('security_group_rules').values([
    { ...blank, id: newId('sgr'), group_id: groupId, account_id: accountId, is_egress: 0, ip_protocol: '-1',
      referenced_group_id: groupId, referenced_account_id: accountId },
    { ...blank, id: newId('sgr'), group_id: groupId, account_id: accountId, is_egress: 1, ip_protocol: '-1',
      cidr_ipv4: '0.0.0.0/0' },
  ]).execute();
  return groupId;
}

/** Gives the account its default VPC, default subnets and default security group (idempotent). */
export async function provisionAccount(tx: Tx, accountId: string): Promise<string> {
  const cidr = await defaultVpcCidr(tx);
  const now = new Date().toISOString();
  let vpcId = await defaultVpcId(tx, accountId);
  if (!vpcId) {
    vpcId = newId('vpc');
    await tx.insertInto('vpcs').values({
      id: vpcId, account_id: accountId, cidr, is_default: 1, state: 'available',
      dhcp_options_id: newId('dopt'), created_at: now,
    }).execute();
  } else {
    await tx.updateTable('vpcs').set({ cidr }).where('id', '=', vpcId).execute();
  }
  const zones = await tx.selectFrom('zones').select(['name', 'cidr']).orderBy('name').execute();
  for (const zone of zones) await ensureDefaultSubnet(tx, accountId, vpcId, zone, now);
  await ensureDefaultSecurityGroup(tx, accountId, vpcId);
  return vpcId;
}

/** Adds the new zone's default subnet to every default VPC, widening the VPCs' range to cover it. */
export async function provisionZone(tx: Tx, zoneName: string): Promise<void> {
  const zone = await tx.selectFrom('zones').select(['name', 'cidr']).where('name', '=', zoneName).executeTakeFirst();
  if (!zone) throw new Error(`zone ${zoneName} does not exist`);
  const cidr = await defaultVpcCidr(tx);
  const now = new Date().toISOString();
  const vpcs = await tx.selectFrom('vpcs').select(['id', 'account_id']).where('is_default', '=', 1).execute();
  await tx.updateTable('vpcs').set({ cidr }).where('is_default', '=', 1).execute();
  for (const vpc of vpcs) await ensureDefaultSubnet(tx, vpc.account_id, vpc.id, zone, now);
}
