// The public IPv4 range the operator gives each zone (`ironbark admin zone public-range`, `ironbark
// up --public-range`): elastic IPs and launch-time public addresses of the zone's instances come
// from it. The zone's nodes answer for those addresses (NAT on the node, src/node/network/public-nat.ts),
// so the operator routes the range to the zone's nodes; a zone without a range gives no public
// addresses, and its instances still reach outside through their node's masquerade.
import type { Db, Tx } from '../../store/store.ts';
import type { PublicRangesTable } from '../../store/schema.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { canonicalIpv4Cidr, formatIpv4Address, ipv4CidrSize, parseIpv4Address, parseIpv4Cidr, type Ipv4Cidr } from '../cidr.ts';

/** Bigger ranges than a /16 are surely typing mistakes; a /32 is a range of one address. */
const MIN_PREFIX = 16;

/** The addresses of a block that may be handed out: all of a /31 or /32, else all but the network and broadcast addresses. */
export function publicRangeBounds(block: Ipv4Cidr): { first: number; last: number } {
  const size = ipv4CidrSize(block);
  if (block.prefix >= 31) return { first: block.network, last: block.network + size - 1 };
  return { first: block.network + 1, last: block.network + size - 2 };
}

export function isInPublicRange(cidr: string, address: string): boolean {
  const block = parseIpv4Cidr(cidr);
  const value = parseIpv4Address(address);
  if (!block || value === undefined) return false;
  const { first, last } = publicRangeBounds(block);
  return value >= first && value <= last;
}

function overlaps(a: Ipv4Cidr, b: Ipv4Cidr): boolean {
  const aEnd = a.network + ipv4CidrSize(a) - 1;
  const bEnd = b.network + ipv4CidrSize(b) - 1;
  return a.network <= bEnd && b.network <= aEnd;
}

export async function listPublicRanges(db: Db | Tx): Promise<PublicRangesTable[]> {
  return db.selectFrom('public_ranges').selectAll().orderBy('zone').execute();
}

export async function publicRangeOf(db: Db | Tx, zone: string): Promise<string | undefined> {
  return (await db.selectFrom('public_ranges').select('cidr').where('zone', '=', zone).executeTakeFirst())?.cidr;
}

/**
 * Gives `zone` the public range `cidr`, or takes its range away (`null`). Refused: a zone that does
 * not exist, a block that is not IPv4 or is larger than a /16, one that overlaps another zone's
 * range or any zone's private network, and a change that would leave an address accounts hold
 * outside the zone's range.
 */
export async function setPublicRange(tx: Tx, zone: string, cidr: string | null): Promise<PublicRangesTable | undefined> {
  const zoneRow = await tx.selectFrom('zones').select(['name']).where('name', '=', zone).executeTakeFirst();
  if (!zoneRow) throw new Ec2Error('InvalidParameterValue', `There is no zone ${JSON.stringify(zone)}.`);
  const held = await tx.selectFrom('addresses').select('public_ip').where('zone', '=', zone).execute();
  if (cidr === null) {
    if (held.length > 0) {
      throw new Ec2Error('DependencyViolation', `Accounts hold ${held.length} public address(es) of zone ${zone} (e.g. ${held[0]!.public_ip}); release them before removing its public range.`);
    }
    await tx.deleteFrom('public_ranges').where('zone', '=', zone).execute();
    return undefined;
  }
  const canonical = canonicalIpv4Cidr(cidr);
  const block = canonical === undefined ? undefined : parseIpv4Cidr(canonical);
  if (!canonical || !block) throw new Ec2Error('InvalidParameterValue', `"${cidr}" is not an IPv4 block such as 203.0.113.0/24.`);
  if (canonical !== cidr) throw new Ec2Error('InvalidParameterValue', `"${cidr}" has host bits set: did you mean ${canonical}?`);
  if (block.prefix < MIN_PREFIX) throw new Ec2Error('InvalidParameterValue', `A public range may be at most a /${MIN_PREFIX}; ${cidr} is larger.`);
  for (const other of await listPublicRanges(tx)) {
    if (other.zone !== zone && overlaps(block, parseIpv4Cidr(other.cidr)!)) {
      throw new Ec2Error('InvalidParameterValue', `${cidr} overlaps the public range ${other.cidr} of zone ${other.zone}.`);
    }
  }
  for (const z of await tx.selectFrom('zones').select(['name', 'cidr']).execute()) {
    const privateBlock = parseIpv4Cidr(z.cidr);
    if (privateBlock && overlaps(block, privateBlock)) {
      throw new Ec2Error('InvalidParameterValue', `${cidr} overlaps the private network ${z.cidr} of zone ${z.name}.`);
    }
  }
  const outside = held.filter((h) => !isInPublicRange(canonical, h.public_ip));
  if (outside.length > 0) {
    throw new Ec2Error('DependencyViolation', `Accounts hold ${outside.length} public address(es) of zone ${zone} outside ${cidr} (e.g. ${outside[0]!.public_ip}); release them first.`);
  }
  const row: PublicRangesTable = { zone, cidr: canonical, created_at: new Date().toISOString() };
  await tx.insertInto('public_ranges').values(row)
    .onConflict((oc) => oc.column('zone').doUpdateSet({ cidr: canonical })).execute();
  return row;
}

/** How many addresses a range holds, and how many of them accounts hold now. */
export async function publicRangeUsage(db: Db | Tx, zone: string, cidr: string): Promise<{ size: number; used: number }> {
  const { first, last } = publicRangeBounds(parseIpv4Cidr(cidr)!);
  const used = await db.selectFrom('addresses').select((eb) => eb.fn.countAll<number>().as('n')).where('zone', '=', zone).executeTakeFirstOrThrow();
  return { size: last - first + 1, used: Number(used.n) };
}

/**
 * The lowest free address of the zone's range (after the ones in `alsoTaken`), or undefined when
 * the zone has no range or none is free. Call inside the transaction that inserts the address: the
 * primary key on `addresses.public_ip` settles a race between controllers.
 */
export async function pickFreePublicIp(tx: Tx, zone: string, alsoTaken: ReadonlySet<string> = new Set()): Promise<string | undefined> {
  const cidr = await publicRangeOf(tx, zone);
  if (!cidr) return undefined;
  const taken = new Set((await tx.selectFrom('addresses').select('public_ip').where('zone', '=', zone).execute()).map((r) => r.public_ip));
  const { first, last } = publicRangeBounds(parseIpv4Cidr(cidr)!);
  for (let v = first; v <= last; v++) {
    const ip = formatIpv4Address(v);
    if (!taken.has(ip) && !alsoTaken.has(ip)) return ip;
  }
  return undefined;
}

/**
 * The `count` lowest free addresses of the zone's range (fewer when the range runs out; none
 * without a range), read in one pass: a launch of many instances costs one query, not one each.
 */
export async function pickFreePublicIps(tx: Tx, zone: string, count: number): Promise<string[]> {
  const cidr = await publicRangeOf(tx, zone);
  if (!cidr || count <= 0) return [];
  const taken = new Set((await tx.selectFrom('addresses').select('public_ip').where('zone', '=', zone).execute()).map((r) => r.public_ip));
  const { first, last } = publicRangeBounds(parseIpv4Cidr(cidr)!);
  const out: string[] = [];
  for (let v = first; v <= last && out.length < count; v++) {
    const ip = formatIpv4Address(v);
    if (!taken.has(ip)) out.push(ip);
  }
  return out;
}

/** The zone whose public range holds `address`, if any. */
export async function zoneOfPublicAddress(db: Db | Tx, address: string): Promise<string | undefined> {
  return (await listPublicRanges(db)).find((r) => isInPublicRange(r.cidr, address))?.zone;
}
