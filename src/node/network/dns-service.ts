// The zone's name service on a node, as EC2's Amazon-provided DNS behaves for private names:
// `ip-10-1-0-5.<region>.compute.internal` (`ip-….ec2.internal` in us-east-1) resolves to 10.1.0.5, and
// 5.0.1.10.in-addr.arpa back to that name, but only for an instance asking about its own VPC: an
// instance of another account's VPC gets NXDOMAIN, as if the name did not exist. The asker is known
// by the source address of its query (the bridge's anti-spoofing table drops any other source from
// its tap). Other names are passed to the node's own resolvers and their answers handed back as they
// are. It listens on port 53 of the zone bridge's gateway, UDP and TCP (the same answers, length-
// prefixed), which DHCP hands guests as their DNS server; the security-group tables let guests reach
// it whatever their groups say, as on EC2.
import dgram, { type Socket } from 'node:dgram';
import net from 'node:net';
import { listenInNamespace } from '../network-netns-socket.ts';
import { readFileSync } from 'node:fs';
import { buildAnswer, CLASS_IN, parseQuery, RCODE, TYPE_A, TYPE_PTR, type DnsQuestion } from './dns-wire.ts';
import { bindUdpInNamespace } from './udp-netns-socket.ts';
import { isIpv4Address } from './firewall-document.ts';

const TTL_SECONDS = 60;
const FORWARD_TIMEOUT_MS = 4000;
/** A TCP connection with no query for this long is closed. */
const TCP_IDLE_MS = 10_000;

export interface DnsAsker {
  vpcId: string;
  region: string;
}

export interface ZoneDnsOptions {
  /** The instance of this node that has this address: its VPC and region. */
  asker: (ip: string) => DnsAsker | undefined;
  /** The VPC of an instance address of the zone, as far as this node knows (its own and the document's). */
  vpcOf: (ip: string) => string | undefined;
  /** Resolvers for other names (address, port 53); the host's /etc/resolv.conf by default. */
  upstream?: string[];
  onError?: (err: Error, what: string) => void;
}

/** The private DNS name of an address in a region, as EC2 spells it. */
export function privateDnsName(ip: string, region: string): string {
  const host = `ip-${ip.replace(/\./g, '-')}`;
  return region === 'us-east-1' ? `${host}.ec2.internal` : `${host}.${region}.compute.internal`;
}

/** The address a private DNS name of `region` stands for, or undefined when it is not one. */
export function addressOfPrivateName(name: string, region: string): string | undefined {
  const m = /^ip-(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})\.(.+)$/.exec(name);
  if (!m) return undefined;
  const ip = m.slice(1, 5).join('.');
  if (!isIpv4Address(ip)) return undefined;
  return privateDnsName(ip, region) === name ? ip : undefined;
}

function addressOfReverseName(name: string): string | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.in-addr\.arpa$/.exec(name);
  if (!m) return undefined;
  const ip = [m[4], m[3], m[2], m[1]].join('.');
  return isIpv4Address(ip) ? ip : undefined;
}

/** Whether a name is one this service answers itself (private names and reverse names of any region). */
function isZoneName(name: string): boolean {
  return /\.compute\.internal$|\.ec2\.internal$/.test(name) || /\.in-addr\.arpa$/.test(name);
}

export function hostResolvers(resolvConf = '/etc/resolv.conf'): string[] {
  let text = '';
  try {
    text = readFileSync(resolvConf, 'utf8');
  } catch {
    return [];
  }
  return [...text.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1]!).filter(isIpv4Address);
}

export class ZoneDnsService {
  private socket: Socket | undefined;
  private tcpServer: net.Server | undefined;
  private readonly upstream: string[];

  constructor(private readonly opts: ZoneDnsOptions) {
    this.upstream = opts.upstream ?? hostResolvers();
  }

  /** Listens on host:port, UDP and TCP, inside `netns` when given (TCP is best effort: a failure there is reported, not thrown). */
  async listen(host: string, port: number, opts: { netns?: string } = {}): Promise<void> {
    await this.listenUdp(host, port, opts);
    try {
      await this.listenTcp(host, port, opts);
    } catch (err) {
      this.opts.onError?.(err as Error, 'DNS over TCP is not available');
    }
  }

  private async listenUdp(host: string, port: number, opts: { netns?: string }): Promise<void> {
    const socket = opts.netns ? await bindUdpInNamespace(opts.netns, host, port) : await new Promise<Socket>((resolve, reject) => {
      const s = dgram.createSocket('udp4');
      s.once('error', reject);
      s.bind(port, host, () => resolve(s));
    });
    socket.on('message', (packet, from) => {
      this.answer(packet, from.address).then(
        (reply) => { if (reply) socket.send(reply, from.port, from.address); },
        (err: Error) => this.opts.onError?.(err, 'a DNS query failed'),
      );
    });
    socket.on('error', (err) => this.opts.onError?.(err, 'DNS socket error'));
    this.socket = socket;
  }

  /**
   * The same answers over TCP, for resolvers that retry there (a truncated answer, or a client set
   * to use TCP): each message, both ways, has a two-byte length before it (RFC 1035 4.2.2). Several
   * queries may come on one connection; an idle one is closed after a few seconds.
   */
  private async listenTcp(host: string, port: number, opts: { netns?: string }): Promise<void> {
    const target: net.Server | { host: string; port: number } = opts.netns ? await listenInNamespace(opts.netns, host, port) : { host, port };
    const server = net.createServer((conn) => this.serveTcp(conn));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(target, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.opts.onError?.(err, 'DNS TCP server error'));
    this.tcpServer = server;
  }

  private serveTcp(conn: net.Socket): void {
    const source = conn.remoteAddress?.replace(/^::ffff:/, '') ?? '';
    let buffered = Buffer.alloc(0);
    conn.setTimeout(TCP_IDLE_MS, () => conn.destroy());
    conn.on('error', () => conn.destroy());
    conn.on('data', (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        const packet = buffered.subarray(2, 2 + buffered.readUInt16BE(0));
        buffered = buffered.subarray(2 + packet.length);
        this.answer(Buffer.from(packet), source).then(
          (reply) => {
            if (!reply) return conn.destroy(); // not a query: nothing sensible follows on this stream
            const length = Buffer.alloc(2);
            length.writeUInt16BE(reply.length);
            conn.write(Buffer.concat([length, reply]));
          },
          (err: Error) => this.opts.onError?.(err, 'a DNS query over TCP failed'),
        );
      }
    });
  }

  async close(): Promise<void> {
    const socket = this.socket;
    const server = this.tcpServer;
    this.socket = undefined;
    this.tcpServer = undefined;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** The reply to one datagram from `source`, or undefined to stay silent (not a query at all). */
  async answer(packet: Buffer, source: string): Promise<Buffer | undefined> {
    const q = parseQuery(packet);
    if (!q) return undefined;
    const asker = this.opts.asker(source);
    if (!asker) return buildAnswer(packet, q, RCODE.REFUSED);
    if (q.class !== CLASS_IN) return buildAnswer(packet, q, RCODE.REFUSED);
    if (isZoneName(q.name)) return this.answerZoneName(packet, q, asker);
    return this.forward(packet, q);
  }

  private answerZoneName(packet: Buffer, q: DnsQuestion, asker: DnsAsker): Buffer {
    const forward = addressOfPrivateName(q.name, asker.region);
    const reverse = forward === undefined ? addressOfReverseName(q.name) : undefined;
    const ip = forward ?? reverse;
    // Only the asker's own VPC: any other address is a name that does not exist.
    if (ip === undefined || this.opts.vpcOf(ip) !== asker.vpcId) return buildAnswer(packet, q, RCODE.NXDOMAIN);
    if (forward !== undefined && q.type === TYPE_A) return buildAnswer(packet, q, RCODE.NOERROR, [{ type: TYPE_A, ttl: TTL_SECONDS, value: ip }]);
    if (reverse !== undefined && q.type === TYPE_PTR) {
      return buildAnswer(packet, q, RCODE.NOERROR, [{ type: TYPE_PTR, ttl: TTL_SECONDS, value: privateDnsName(ip, asker.region) }]);
    }
    return buildAnswer(packet, q, RCODE.NOERROR); // the name exists, with no record of that type
  }

  /** Asks the node's resolvers in turn and hands back the first answer unchanged. */
  private async forward(packet: Buffer, q: DnsQuestion): Promise<Buffer> {
    for (const server of this.upstream) {
      const reply = await askOnce(packet, server).catch(() => undefined);
      if (reply && reply.length >= 2 && reply.readUInt16BE(0) === q.id) return reply;
    }
    return buildAnswer(packet, q, RCODE.SERVFAIL);
  }
}

function askOnce(packet: Buffer, server: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const done = (fn: () => void) => {
      clearTimeout(timer);
      s.close();
      fn();
    };
    const timer = setTimeout(() => done(() => reject(new Error(`no answer from ${server}`))), FORWARD_TIMEOUT_MS);
    s.once('message', (msg) => done(() => resolve(msg)));
    s.once('error', (err) => done(() => reject(err)));
    s.send(packet, 53, server);
  });
}
