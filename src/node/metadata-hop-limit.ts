// HttpPutResponseHopLimit, as EC2 enforces it: the answer to an IMDSv2 token request (PUT
// /latest/api/token) leaves with that IP TTL, so it reaches the instance itself (TTL 1 is enough
// for a packet addressed to it) but dies on the way to a container or VM behind one more router hop
// inside the guest, which then cannot get a token. Node cannot set IP_TTL on a TCP socket, so the
// metadata service asks nftables: its own table, in the namespace the service listens in, holds one
// set per hop limit in use; before a token is sent, the connection's client address and port go into
// the set of its instance's hop limit, and the set's rule rewrites the TTL of packets sent back on
// that connection. Elements expire by themselves; the table goes when the service closes.
import { runCommand } from './network-commands.ts';

/** A token answer is one small packet written at once; the entry only has to outlive that connection's reply. */
const ELEMENT_TIMEOUT_S = 120;
/** The TTL Linux sends with by default: a hop limit of this or more needs no rule. */
const DEFAULT_TTL = 64;

export interface HopLimiter {
  /** Makes the reply to the connection from clientIp:clientPort leave with TTL `hops`. */
  limit(clientIp: string, clientPort: number, hops: number): Promise<void>;
  close(): Promise<void>;
}

export interface NftHopLimiterOptions {
  /** Named network namespace the metadata service listens in (the host when absent). */
  netns?: string;
  /** Address and port the service listens on (the rules match packets sent from them). */
  serviceAddress: string;
  servicePort: number;
  run?: (args: string[], input?: string) => Promise<string>;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function isIpv4(text: string): boolean {
  const m = IPV4.exec(text);
  return m !== null && m.slice(1).every((p) => Number(p) <= 255);
}

export class NftHopLimiter implements HopLimiter {
  readonly table: string;
  private readonly opts: NftHopLimiterOptions;
  private readonly run: (args: string[], input?: string) => Promise<string>;
  private tableReady: Promise<void> | undefined;
  private readonly sets = new Map<number, Promise<void>>();

  constructor(opts: NftHopLimiterOptions) {
    if (!isIpv4(opts.serviceAddress)) throw new Error(`metadata hop limit: ${opts.serviceAddress} is not an IPv4 address`);
    if (!Number.isInteger(opts.servicePort) || opts.servicePort < 1 || opts.servicePort > 65535) {
      throw new Error(`metadata hop limit: bad port ${opts.servicePort}`);
    }
    this.opts = opts;
    // Prefixed `ib` like everything Ironbark makes; one table per service port (tests may run several).
    this.table = `ib_imds_${opts.servicePort}`;
    this.run = opts.run ?? ((args, input) => runCommand('nft', args, { netns: opts.netns, input }));
  }

  async limit(clientIp: string, clientPort: number, hops: number): Promise<void> {
    if (!Number.isInteger(hops) || hops < 1) throw new Error(`metadata hop limit: bad hop limit ${hops}`);
    if (hops >= DEFAULT_TTL) return;
    if (!isIpv4(clientIp) || !Number.isInteger(clientPort) || clientPort < 1 || clientPort > 65535) return;
    await this.ensureSet(hops);
    await this.run(['add', 'element', 'ip', this.table, `hop_${hops}`, `{ ${clientIp} . ${clientPort} }`]);
  }

  async close(): Promise<void> {
    const had = this.tableReady;
    this.tableReady = undefined;
    this.sets.clear();
    if (!had) return;
    await had.catch(() => undefined);
    await this.run(['delete', 'table', 'ip', this.table]).catch(() => undefined);
  }

  private ensureTable(): Promise<void> {
    this.tableReady ??= this.run(['-f', '-'], [
      // Declared, emptied and filled in one transaction: a table left by a crashed process is replaced.
      `table ip ${this.table} {}`,
      `delete table ip ${this.table}`,
      `table ip ${this.table} {`,
      `  chain output { type filter hook output priority mangle; policy accept; }`,
      `}`,
      '',
    ].join('\n')).then(() => undefined);
    this.tableReady.catch(() => { this.tableReady = undefined; });
    return this.tableReady;
  }

  private ensureSet(hops: number): Promise<void> {
    let ready = this.sets.get(hops);
    if (!ready) {
      ready = this.ensureTable().then(() => this.run(['-f', '-'], [
        `add set ip ${this.table} hop_${hops} { type ipv4_addr . inet_service; flags timeout; timeout ${ELEMENT_TIMEOUT_S}s; }`,
        `add rule ip ${this.table} output ip saddr ${this.opts.serviceAddress} tcp sport ${this.opts.servicePort} ip daddr . tcp dport @hop_${hops} ip ttl set ${hops}`,
        '',
      ].join('\n'))).then(() => undefined);
      ready.catch(() => this.sets.delete(hops));
      this.sets.set(hops, ready);
    }
    return ready;
  }
}
