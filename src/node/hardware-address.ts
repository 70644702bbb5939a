// The hardware (MAC) address a node host is woken at: the power-save policy's wake command
// (`wakeonlan {mac}`) needs it for nodes on other hosts. The operator may say it (`--mac`);
// otherwise it is the address of the interface the cluster reaches this node through: the one that
// carries the address the node advertises, or, when that is not one of ours (NAT, a name), the one
// the route towards the cluster leaves by.
import { execFile } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';

const MAC_PATTERN = /^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$/i;

/** Six hex pairs separated by `:` or `-` (all the same), e.g. 52:54:00:12:34:56. */
export function isMacAddress(value: string): boolean {
  return MAC_PATTERN.test(value.trim());
}

/**
 * The canonical form (lower case, colons) of a MAC written as six hex pairs separated by `:` or
 * `-`; undefined when it is not one, or is all zeros (what loopback and tunnels report: no MAC).
 */
export function normalizeMac(value: string): string | undefined {
  if (!isMacAddress(value)) return undefined;
  const mac = value.trim().toLowerCase().replaceAll('-', ':');
  return mac === '00:00:00:00:00:00' ? undefined : mac;
}

export type InterfaceTable = NodeJS.Dict<NetworkInterfaceInfo[]>;

export interface MacDiscoveryDeps {
  /** The host's interfaces (os.networkInterfaces()). */
  interfaces?: () => InterfaceTable;
  /** The device the route towards `ip` leaves by (`ip -j route get`). */
  routeDevice?: (ip: string) => Promise<string | undefined>;
  /** A device's MAC as the kernel has it (/sys/class/net/<dev>/address). */
  deviceMac?: (dev: string) => Promise<string | undefined>;
  /** Resolves a host name to an address. */
  resolve?: (host: string) => Promise<string | undefined>;
}

export interface DiscoveredMac {
  mac: string;
  device: string;
  /** How the device was chosen, for the log. */
  via: 'advertised address' | 'route to the cluster';
}

/** The MAC of the interface that carries `ip`, with its device name. */
export function macOfAddress(ip: string, table: InterfaceTable): { mac: string; device: string } | undefined {
  const wanted = bare(ip);
  for (const [device, infos] of Object.entries(table)) {
    for (const info of infos ?? []) {
      if (bare(info.address) !== wanted) continue;
      const mac = info.internal ? undefined : normalizeMac(info.mac);
      return mac ? { mac, device } : undefined;
    }
  }
  return undefined;
}

/**
 * Finds this host's MAC for the cluster: the interface of the advertised address, else of the route
 * towards the cluster's host; undefined when neither gives one (loopback, a tunnel, no `ip`).
 */
export async function discoverHostMac(urls: { advertisedUrl: string; clusterUrl: string }, deps: MacDiscoveryDeps = {}): Promise<DiscoveredMac | undefined> {
  const table = (deps.interfaces ?? networkInterfaces)();
  const resolve = deps.resolve ?? resolveHost;
  const advertised = await addressOf(urls.advertisedUrl, resolve);
  if (advertised && !isWildcard(advertised)) {
    const found = macOfAddress(advertised, table);
    if (found) return { ...found, via: 'advertised address' };
  }
  const cluster = await addressOf(urls.clusterUrl, resolve);
  if (!cluster) return undefined;
  const device = await (deps.routeDevice ?? routeDeviceTowards)(cluster);
  if (!device) return undefined;
  const fromKernel = await (deps.deviceMac ?? sysfsMac)(device);
  const mac = fromKernel === undefined ? table[device]?.find((i) => !i.internal)?.mac : fromKernel;
  const usable = mac === undefined ? undefined : normalizeMac(mac);
  return usable ? { mac: usable, device, via: 'route to the cluster' } : undefined;
}

/** `ip -j route get ADDRESS`: the device traffic to it leaves by (a netlink query, nothing is sent). */
export function routeDeviceTowards(ip: string): Promise<string | undefined> {
  return new Promise((done) => {
    execFile('ip', ['-j', 'route', 'get', ip], { timeout: 5000 }, (err, stdout) => {
      if (err) return done(undefined);
      try {
        const routes = JSON.parse(String(stdout)) as Array<{ dev?: unknown }>;
        const dev = routes[0]?.dev;
        done(typeof dev === 'string' && dev ? dev : undefined);
      } catch {
        done(undefined);
      }
    });
  });
}

async function sysfsMac(dev: string): Promise<string | undefined> {
  if (!/^[A-Za-z0-9_.@:-]+$/.test(dev) || dev.startsWith('.')) return undefined;
  return readFile(`/sys/class/net/${dev}/address`, 'utf8').then((text) => text.trim(), () => undefined);
}

async function resolveHost(host: string): Promise<string | undefined> {
  return lookup(host).then((r) => r.address, () => undefined);
}

async function addressOf(url: string, resolve: (host: string) => Promise<string | undefined>): Promise<string | undefined> {
  let host: string;
  try {
    host = bare(new URL(url).hostname);
  } catch {
    return undefined;
  }
  if (!host) return undefined;
  return isIP(host) ? host : resolve(host);
}

function isWildcard(ip: string): boolean {
  return ip === '0.0.0.0' || ip === '::';
}

/** An address without URL brackets or an IPv6 zone, lower case. */
function bare(address: string): string {
  return address.replace(/^\[(.*)\]$/, '$1').replace(/%.*$/, '').toLowerCase();
}
