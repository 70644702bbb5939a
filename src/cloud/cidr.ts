// IPv4 and IPv6 CIDR blocks: parsing into numbers, canonical text, sizes and supernets.
// Security groups store CIDRs in canonical form (network address, compressed lower-case IPv6),
// so "10.0.0.5/24" and "10.0.0.0/24" are the same rule, as in EC2.

export interface Ipv4Cidr { network: number; prefix: number }
export interface Ipv6Cidr { network: bigint; prefix: number }

const IPV4_OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** An IPv4 dotted quad as an unsigned 32-bit number, or undefined when it is not one. */
export function parseIpv4Address(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => IPV4_OCTET.test(p))) return undefined;
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function formatIpv4Address(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');
}

function parsePrefix(text: string, max: number): number | undefined {
  if (!/^\d{1,3}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= max ? n : undefined;
}

function ipv4Mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** "a.b.c.d/n" with host bits cleared, or undefined when the text is not an IPv4 CIDR. */
export function parseIpv4Cidr(text: string): Ipv4Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const address = parseIpv4Address(text.slice(0, slash));
  const prefix = parsePrefix(text.slice(slash + 1), 32);
  if (address === undefined || prefix === undefined) return undefined;
  return { network: (address & ipv4Mask(prefix)) >>> 0, prefix };
}

export function formatIpv4Cidr(cidr: Ipv4Cidr): string {
  return `${formatIpv4Address(cidr.network)}/${cidr.prefix}`;
}

/** Canonical text of an IPv4 CIDR, or undefined when the text is not one. */
export function canonicalIpv4Cidr(text: string): string | undefined {
  const c = parseIpv4Cidr(text);
  return c ? formatIpv4Cidr(c) : undefined;
}

export function ipv4CidrSize(cidr: Ipv4Cidr): number {
  return 2 ** (32 - cidr.prefix);
}

/** The smallest IPv4 block that covers every given block (they may overlap or repeat). */
export function ipv4Supernet(cidrs: Ipv4Cidr[]): Ipv4Cidr {
  if (cidrs.length === 0) throw new Error('ipv4Supernet needs at least one block');
  let prefix = Math.min(...cidrs.map((c) => c.prefix));
  const first = cidrs[0]!.network;
  for (const c of cidrs) {
    // Shorten the prefix until this block's network shares it with the first one.
    while (prefix > 0 && ((c.network & ipv4Mask(prefix)) >>> 0) !== ((first & ipv4Mask(prefix)) >>> 0)) prefix--;
  }
  return { network: (first & ipv4Mask(prefix)) >>> 0, prefix };
}

/** An IPv6 address (with `::` compression and an optional dotted IPv4 tail) as a 128-bit number. */
export function parseIpv6Address(text: string): bigint | undefined {
  if (text.length === 0 || text.length > 45) return undefined;
  let groups: string[];
  const doubleColon = text.indexOf('::');
  if (doubleColon >= 0) {
    if (text.indexOf('::', doubleColon + 1) >= 0) return undefined;
    const head = text.slice(0, doubleColon);
    const tail = text.slice(doubleColon + 2);
    const headGroups = head === '' ? [] : head.split(':');
    const tailGroups = tail === '' ? [] : tail.split(':');
    const tailWords = tailGroups.length + (tailGroups.length > 0 && tailGroups[tailGroups.length - 1]!.includes('.') ? 1 : 0);
    const missing = 8 - headGroups.length - tailWords;
    if (missing < 1) return undefined;
    groups = [...headGroups, ...Array<string>(missing).fill('0'), ...tailGroups];
  } else {
    groups = text.split(':');
  }
  let value = 0n;
  let words = 0;
  for (let i = 0; i < groups.length; i++) {
    const g = groups[i]!;
    if (i === groups.length - 1 && g.includes('.')) {
      const v4 = parseIpv4Address(g);
      if (v4 === undefined) return undefined;
      value = (value << 32n) | BigInt(v4);
      words += 2;
    } else {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      value = (value << 16n) | BigInt(parseInt(g, 16));
      words += 1;
    }
  }
  return words === 8 ? value : undefined;
}

/** RFC 5952 text: lower case, leading zeros dropped, the longest run of zero words as `::`. */
export function formatIpv6Address(value: bigint): string {
  const words: number[] = [];
  for (let i = 7; i >= 0; i--) words.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

const IPV6_ALL = (1n << 128n) - 1n;

function ipv6Mask(prefix: number): bigint {
  return prefix === 0 ? 0n : (IPV6_ALL << BigInt(128 - prefix)) & IPV6_ALL;
}

export function parseIpv6Cidr(text: string): Ipv6Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const address = parseIpv6Address(text.slice(0, slash));
  const prefix = parsePrefix(text.slice(slash + 1), 128);
  if (address === undefined || prefix === undefined) return undefined;
  return { network: address & ipv6Mask(prefix), prefix };
}

export function formatIpv6Cidr(cidr: Ipv6Cidr): string {
  return `${formatIpv6Address(cidr.network)}/${cidr.prefix}`;
}

export function canonicalIpv6Cidr(text: string): string | undefined {
  const c = parseIpv6Cidr(text);
  return c ? formatIpv6Cidr(c) : undefined;
}
