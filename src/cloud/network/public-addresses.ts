// The public address an instance holds, kept in one place: the `addresses` row (an elastic IP with
// its association, or an address given at launch) and its copy on the instance row (public_ip and
// the elastic IP's ids), which DescribeInstances and the zone's firewall document read. Every
// change goes through these functions, inside the caller's transaction, so the two never disagree.
//
// As on EC2: a launch with AssociatePublicIpAddress (or into a subnet with MapPublicIpOnLaunch)
// gets an address from the zone's public range, released when the instance terminates; an elastic
// IP associated with the instance replaces it, and when that elastic IP leaves again the instance
// gets a new launch-time address. A stopped instance gives its launch-time address back and gets a
// new one when it starts (an elastic IP stays with it through both). A terminated instance keeps
// nothing: its launch-time address goes back to the range and its elastic IP stays allocated to the
// account, unassociated.
import type { Tx } from '../../store/store.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { pickFreePublicIps } from './public-ranges.ts';

const CHUNK = 500;

/** EC2's public host name for an address, e.g. ec2-203-0-113-5.ironbark-1.compute.amazonaws.com. */
export function publicDnsName(address: string, region: string): string {
  return `ec2-${address.replaceAll('.', '-')}.${region}.compute.amazonaws.com`;
}

export function insufficientAddresses(zone: string): Ec2Error {
  return new Ec2Error('InsufficientAddressCapacity', `There are not enough free public addresses in availability zone ${zone} to satisfy the request.`);
}

/** Writes the instance row's copy of its public address. */
export async function setInstancePublicIp(tx: Tx, instanceId: string, ip: string | null, elastic?: { allocationId: string; associationId: string }): Promise<void> {
  await tx.updateTable('instances').set({
    public_ip: ip, public_ip_allocation_id: elastic?.allocationId ?? null, public_ip_association_id: elastic?.associationId ?? null,
  }).where('id', '=', instanceId).execute();
}

/**
 * Gives each instance a launch-time public address from its zone's range. Throws
 * InsufficientAddressCapacity when the range has too few free ones; `required` false (a subnet's
 * MapPublicIpOnLaunch rather than the caller's own ask) gives none, quietly, in a zone without a range.
 */
export async function assignLaunchAddresses(tx: Tx, rows: { id: string; account_id: string; zone: string; private_ip: string | null }[],
  required: boolean): Promise<Map<string, string>> {
  const given = new Map<string, string>();
  const now = new Date().toISOString();
  const byZone = new Map<string, typeof rows>();
  for (const row of rows) byZone.set(row.zone, [...(byZone.get(row.zone) ?? []), row]);
  const free = new Map<string, string[]>();
  for (const [zone, inZone] of byZone) {
    const ips = await pickFreePublicIps(tx, zone, inZone.length);
    if (ips.length < inZone.length) {
      const hasRange = await tx.selectFrom('public_ranges').select('zone').where('zone', '=', zone).executeTakeFirst();
      if (!hasRange && !required) continue;
      throw insufficientAddresses(zone);
    }
    free.set(zone, ips);
  }
  for (const row of rows) {
    const ip = free.get(row.zone)?.shift();
    if (ip === undefined) continue; // a zone without a range, and the subnet's MapPublicIpOnLaunch only
    await tx.insertInto('addresses').values({
      public_ip: ip, zone: row.zone, account_id: row.account_id, allocation_id: null, domain: 'vpc',
      instance_id: row.id, association_id: null, private_ip: row.private_ip, created_at: now,
    }).execute();
    await tx.updateTable('instances').set({ auto_public_ip: 1, public_ip: ip }).where('id', '=', row.id).execute();
    given.set(row.id, ip);
  }
  return given;
}

/**
 * What terminated (or rolled back) instances held: launch-time addresses go back to the range and
 * elastic IPs are left allocated but unassociated. Called where instances terminate or are removed.
 */
export async function releaseInstancesPublicAddresses(tx: Tx, instanceIds: string[]): Promise<void> {
  for (let i = 0; i < instanceIds.length; i += CHUNK) {
    const chunk = instanceIds.slice(i, i + CHUNK);
    await tx.deleteFrom('addresses').where('instance_id', 'in', chunk).where('allocation_id', 'is', null).execute();
    await tx.updateTable('addresses').set({ instance_id: null, association_id: null, private_ip: null })
      .where('instance_id', 'in', chunk).execute();
    await tx.updateTable('instances').set({ public_ip: null, public_ip_allocation_id: null, public_ip_association_id: null })
      .where('id', 'in', chunk).execute();
  }
}

/** Like releaseInstancesPublicAddresses, for those of `instanceIds` that gave up their private address (terminated). */
export async function releaseEndedInstancesPublicAddresses(tx: Tx, instanceIds: string[]): Promise<void> {
  const ended: string[] = [];
  for (let i = 0; i < instanceIds.length; i += CHUNK) {
    const rows = await tx.selectFrom('instances').select('id').where('id', 'in', instanceIds.slice(i, i + CHUNK)).where('private_ip', 'is', null).execute();
    ended.push(...rows.map((r) => r.id));
  }
  await releaseInstancesPublicAddresses(tx, ended);
}

/**
 * An elastic IP now serves the instance: its launch-time address (if any) goes back to the range,
 * and another elastic IP it had is disassociated (it stays allocated to its account).
 */
export async function bindElasticIp(tx: Tx, eip: { public_ip: string; allocation_id: string }, instance: { id: string; private_ip: string },
  associationId: string): Promise<void> {
  await tx.deleteFrom('addresses').where('instance_id', '=', instance.id).where('allocation_id', 'is', null).execute();
  await tx.updateTable('addresses').set({ instance_id: null, association_id: null, private_ip: null })
    .where('instance_id', '=', instance.id).where('public_ip', '!=', eip.public_ip).execute();
  await tx.updateTable('addresses').set({ instance_id: instance.id, association_id: associationId, private_ip: instance.private_ip })
    .where('public_ip', '=', eip.public_ip).execute();
  await setInstancePublicIp(tx, instance.id, eip.public_ip, { allocationId: eip.allocation_id, associationId });
}

/**
 * The elastic IP leaves the instance. One launched with a public address gets a new launch-time
 * address, as on EC2 (none when its zone's range has no free one left: it then has no public address).
 */
export async function unbindElasticIp(tx: Tx, eip: { public_ip: string; instance_id: string | null }): Promise<void> {
  await tx.updateTable('addresses').set({ instance_id: null, association_id: null, private_ip: null })
    .where('public_ip', '=', eip.public_ip).execute();
  if (!eip.instance_id) return;
  await setInstancePublicIp(tx, eip.instance_id, null);
  const instance = await tx.selectFrom('instances').select(['id', 'account_id', 'zone', 'private_ip', 'state', 'auto_public_ip'])
    .where('id', '=', eip.instance_id).executeTakeFirst();
  if (instance && instance.auto_public_ip === 1 && instance.private_ip !== null && instance.state !== 'terminated' && instance.state !== 'shutting-down') {
    await assignLaunchAddresses(tx, [instance], false).catch((e) => {
      if (!(e instanceof Ec2Error && e.code === 'InsufficientAddressCapacity')) throw e;
    });
  }
}

/**
 * As EC2 at a stop: a stopped instance's launch-time public address goes back to the range (its
 * elastic IP, if it has one, stays). Only those of `instanceIds` that are stopped now are touched,
 * so a row an API call moved on meanwhile keeps what it has. Called where rows become stopped.
 */
export async function releaseStoppedInstancesLaunchAddresses(tx: Tx, instanceIds: string[]): Promise<void> {
  for (let i = 0; i < instanceIds.length; i += CHUNK) {
    const stopped = (await tx.selectFrom('instances').select('id').where('id', 'in', instanceIds.slice(i, i + CHUNK))
      .where('state', '=', 'stopped').where('public_ip_allocation_id', 'is', null).where('public_ip', 'is not', null).execute()).map((r) => r.id);
    if (stopped.length === 0) continue;
    await tx.deleteFrom('addresses').where('instance_id', 'in', stopped).where('allocation_id', 'is', null).execute();
    await tx.updateTable('instances').set({ public_ip: null }).where('id', 'in', stopped).execute();
  }
}

/**
 * As EC2 at a start: an instance launched with a public address (and holding no elastic IP) gets a
 * new launch-time address; one it still holds from before (stopped before this rule existed) goes
 * back first. Throws InsufficientAddressCapacity when the zone's range has none free, so the start
 * is refused with nothing changed; in a zone whose range was taken away it quietly gets none.
 */
export async function renewLaunchAddresses(tx: Tx, rows: { id: string; account_id: string; zone: string; private_ip: string | null }[]): Promise<void> {
  const wanting: typeof rows = [];
  for (let i = 0; i < rows.length; i += CHUNK) {
    const chunk = rows.slice(i, i + CHUNK);
    const due = new Set((await tx.selectFrom('instances').select('id').where('id', 'in', chunk.map((r) => r.id))
      .where('auto_public_ip', '=', 1).where('public_ip_allocation_id', 'is', null).execute()).map((r) => r.id));
    wanting.push(...chunk.filter((r) => due.has(r.id) && r.private_ip !== null));
  }
  if (wanting.length === 0) return;
  for (let i = 0; i < wanting.length; i += CHUNK) {
    await tx.deleteFrom('addresses').where('instance_id', 'in', wanting.slice(i, i + CHUNK).map((r) => r.id)).where('allocation_id', 'is', null).execute();
  }
  await assignLaunchAddresses(tx, wanting, false);
}
