// Names and addresses for a node's private network: interface names that fit Linux's 15-character
// limit and carry Ironbark's `ib` prefix, deterministic instance MACs, and IPv4 range arithmetic.
import { createHash } from 'node:crypto';
import { Ec2Error } from '../protocol/errors.ts';

const IFNAME_MAX = 15;

/**
 * Eucalyptus gave instances D0:0D:… MACs, but 0xD0 has the locally-administered bit clear.
 * 0xD2 keeps the look and sets that bit (and leaves the multicast bit clear), so these MACs
 * can never collide with a vendor-assigned address.
 */
export const INSTANCE_MAC_PREFIX = 'd2:0d';

export function allocateMac(instanceId: string): string {
  const digest = createHash('sha256').update(instanceId).digest();
  const tail = [...digest.subarray(0, 4)].map((b) => b.toString(16).padStart(2, '0'));
  return [INSTANCE_MAC_PREFIX, ...tail].join(':');
}

export function isValidMac(mac: string): boolean {
  return /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac) && (parseInt(mac.slice(0, 2), 16) & 1) === 0;
}

function shortHash(text: string, length: number): string {
  return createHash('sha256').update(text).digest('hex').slice(0, length);
}

/** `ibbr-<zone>` when the zone name fits, else `ibbr-<hash of zone>`. */
export function bridgeNameForZone(zone: string): string {
  const prefix = 'ibbr-';
  const readable = zone.toLowerCase().replace(/[^a-z0-9-]/g, '');
  if (readable && readable === zone && prefix.length + readable.length <= IFNAME_MAX) return prefix + readable;
  return prefix + shortHash(zone, 8);
}

/** `ibtap-` + nine hex digits of the instance id (ids are random hex, so they rarely share a prefix). */
export function tapNameForInstance(instanceId: string): string {
  const prefix = 'ibtap-';
  const room = IFNAME_MAX - prefix.length;
  const hex = /^i-([0-9a-f]+)$/.exec(instanceId)?.[1];
  return prefix + (hex && hex.length >= room ? hex.slice(0, room) : shortHash(instanceId, room));
}

export function assertIbInterfaceName(name: string): void {
  if (!/^ib[a-zA-Z0-9_.-]*$/.test(name) || name.length > IFNAME_MAX) {
    throw new Ec2Error(
      'InvalidParameterValue',
      `Invalid interface name '${name}': it must start with 'ib' and be at most ${IFNAME_MAX} characters.`,
    );
  }
}

/** nftables identifiers allow no '-', so the bridge name is folded into `ib_<name>`. */
export function firewallTableName(bridgeName: string): string {
  return 'ib_' + bridgeName.replace(/^ib/, '').replace(/[^a-zA-Z0-9_]/g, '_').replace(/^_+/, '');
}

export function parseIpv4(text: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  const octets = m ? m.slice(1).map(Number) : [];
  if (!m || octets.some((o) => o > 255)) {
    throw new Ec2Error('InvalidParameterValue', `Invalid IPv4 address '${text}'.`);
  }
  return ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
}

export function formatIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join('.');
}

export interface Ipv4Range {
  cidr: string;
  network: number;
  prefixLength: number;
  netmask: string;
  /** The first host address: the bridge's own address and the instances' default gateway. */
  gateway: string;
  broadcast: number;
}

export function parseCidr(cidr: string): Ipv4Range {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(cidr);
  const prefixLength = m ? Number(m[2]) : NaN;
  if (!m || prefixLength < 8 || prefixLength > 29) {
    throw new Ec2Error('InvalidParameterValue', `Invalid CIDR block '${cidr}': expected a.b.c.d/n with n from 8 to 29.`);
  }
  const base = parseIpv4(m[1]!);
  const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  const network = (base & mask) >>> 0;
  if (network !== base) {
    throw new Ec2Error('InvalidParameterValue', `Invalid CIDR block '${cidr}': host bits are set (did you mean ${formatIpv4(network)}/${prefixLength}?).`);
  }
  return {
    cidr,
    network,
    prefixLength,
    netmask: formatIpv4(mask),
    gateway: formatIpv4(network + 1),
    broadcast: (network | (~mask >>> 0)) >>> 0,
  };
}

/** True when `ip` may be given to an instance: inside the range, not the network, gateway or broadcast. */
export function isAssignableHost(range: Ipv4Range, ip: string): boolean {
  const value = parseIpv4(ip);
  return value > range.network + 1 && value < range.broadcast;
}

/** AWS's private DNS name shape, `ip-10-1-2-3`, used as the DHCP host name. */
export function hostnameForIp(ip: string): string {
  return 'ip-' + ip.replace(/\./g, '-');
}
