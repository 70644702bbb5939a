// Private addresses, MACs and DNS names of instances. An address is unique in its zone among
// instances that are not terminated (the unique (zone, private_ip) index enforces it; terminated
// instances give theirs up by setting private_ip to NULL).
import { createHash } from 'node:crypto';
import type { Db, Tx } from '../store/store.ts';
import { formatIpv4Address, ipv4CidrSize, parseIpv4Address, parseIpv4Cidr } from './cidr.ts';
import { Ec2Error } from '../protocol/errors.ts';

/** Like AWS: the network address, the gateway (.1), two more reserved hosts (.2, .3) and broadcast. */
const RESERVED_AT_START = 4;
const RESERVED_AT_END = 1;

/** The host addresses of a subnet an instance may get, as [first, last] unsigned numbers. */
export function usableRange(cidr: string): { first: number; last: number } {
  const block = parseIpv4Cidr(cidr);
  if (!block) throw new Error(`"${cidr}" is not an IPv4 network`);
  const size = ipv4CidrSize(block);
  return { first: block.network + RESERVED_AT_START, last: block.network + size - 1 - RESERVED_AT_END };
}

/** Whether `address` may be given to an instance in `cidr` (inside it and not reserved). */
export function isUsableAddress(cidr: string, address: string): boolean {
  const value = parseIpv4Address(address);
  if (value === undefined) return false;
  const { first, last } = usableRange(cidr);
  return value >= first && value <= last;
}

/** Addresses held in the zone by instances that still exist (terminated ones hold none). */
export async function addressesInUse(db: Db | Tx, zone: string): Promise<Set<string>> {
  const rows = await db.selectFrom('instances').select('private_ip')
    .where('zone', '=', zone).where('private_ip', 'is not', null).execute();
  return new Set(rows.map((r) => r.private_ip!));
}

/** The `count` lowest usable addresses of `cidr` that are not in `taken`. */
export function pickFreeAddresses(cidr: string, taken: ReadonlySet<string>, count: number): string[] {
  const { first, last } = usableRange(cidr);
  const out: string[] = [];
  for (let v = first; v <= last && out.length < count; v++) {
    const address = formatIpv4Address(v);
    if (!taken.has(address)) out.push(address);
  }
  if (out.length < count) {
    throw new Ec2Error('InsufficientFreeAddressesInSubnet', `There are not enough free addresses in subnet '${cidr}' to satisfy the requested number of instances.`);
  }
  return out;
}

/**
 * The `count` lowest free addresses of `cidr` in `zone`. Call inside the transaction that
 * inserts the instances, so the unique index settles any race between controllers.
 */
export async function allocatePrivateIps(tx: Db | Tx, zone: string, cidr: string, count: number): Promise<string[]> {
  return pickFreeAddresses(cidr, await addressesInUse(tx, zone), count);
}

/**
 * A MAC derived from the instance id, so every controller computes the same one: Eucalyptus'
 * d2:0d prefix, then four bytes of the id's SHA-256.
 */
export function macForInstance(instanceId: string): string {
  const digest = createHash('sha256').update(instanceId).digest();
  return ['d2', '0d', ...[0, 1, 2, 3].map((i) => digest[i]!.toString(16).padStart(2, '0'))].join(':');
}

/** EC2's private host name for an address, e.g. ip-10-1-0-5.ironbark-1.compute.internal. */
export function privateDnsName(address: string, region: string): string {
  return `ip-${address.replaceAll('.', '-')}.${region}.compute.internal`;
}
