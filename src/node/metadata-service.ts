// EC2's instance metadata service for the instances on this node. A guest is recognised by the
// source address of its TCP connection (the bridge's anti-spoofing rules keep that honest), and
// sees only its own data. Both IMDSv1 (plain GETs) and IMDSv2 (session tokens from PUT) work, and
// each instance's metadata options are honoured as EC2 does: HttpTokens=required refuses IMDSv1
// (401), HttpEndpoint=disabled refuses everything (403), and HttpPutResponseHopLimit is the IP TTL
// token answers leave with (metadata-hop-limit.ts). What cloud-init's Ec2 datasource reads is here:
// the dated versions it probes, meta-data/ with network/interfaces/macs/…, block-device-mapping/,
// user-data as raw bytes, and dynamic/instance-identity/document (unsigned: its signature paths 404).
import http from 'node:http';
import type { AddressInfo, Server as NetServer } from 'node:net';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { listenInNamespace } from './network-netns-socket.ts';
import { applyServerTimeouts } from '../http/server-timeouts.ts';
import { NftHopLimiter, type HopLimiter } from './metadata-hop-limit.ts';

export interface InstanceMetadata {
  instanceId: string;
  amiId: string;
  instanceType: string;
  localIpv4: string;
  localHostname: string;
  publicIpv4?: string;
  publicHostname?: string;
  availabilityZone: string;
  region: string;
  publicKeys: { name: string; openssh: string }[];
  securityGroups: string[];
  securityGroupIds?: string[];
  reservationId: string;
  mac: string;
  userData?: Buffer;
  accountId: string;
  launchTime: Date;
  kernelId?: string;
  ramdiskId?: string;
  amiLaunchIndex: number;
  architecture?: string;
  vpcId?: string;
  vpcIpv4CidrBlock?: string;
  subnetId?: string;
  subnetIpv4CidrBlock?: string;
  /** 'required' refuses IMDSv1 requests, as the instance's HttpTokens metadata option does on EC2. */
  httpTokens?: 'optional' | 'required';
  /** 'disabled' turns the service off for the instance (HttpEndpoint): every request gets 403. */
  httpEndpoint?: 'enabled' | 'disabled';
  /** HttpPutResponseHopLimit: the IP TTL of token answers (1 when absent, as on EC2). */
  httpPutResponseHopLimit?: number;
  /** The root device, as block-device-mapping/ami and /root show it. */
  rootDeviceName?: string;
}

export interface MetadataServiceOptions {
  lookupByIp: (ip: string) => InstanceMetadata | undefined;
  /** Milliseconds since the epoch; injectable so token expiry can be tested without waiting. */
  now?: () => number;
  /**
   * Enforce HttpPutResponseHopLimit: true makes nftables rules (metadata-hop-limit.ts) in the
   * namespace the service listens in, once it listens; or a limiter of the caller's. Off by default,
   * so a service on a test's loopback never touches the host's firewall.
   */
  hopLimit?: boolean | HopLimiter;
  /** Told when the hop limit could not be applied (the token is still given: the guest keeps working). */
  onError?: (err: Error, what: string) => void;
}

/** The API versions EC2 lists at `/`; every one of them is served with the current layout. */
const API_VERSIONS = [
  '1.0', '2007-01-19', '2007-03-01', '2007-08-29', '2007-10-10', '2007-12-15', '2008-02-01', '2008-09-01',
  '2009-04-04', '2011-01-01', '2011-05-01', '2012-01-12', '2014-02-25', '2014-11-05', '2015-10-20',
  '2016-04-19', '2016-06-30', '2016-09-02', '2018-03-28', '2018-08-17', '2018-09-24', '2019-10-01',
  '2020-10-27', '2021-01-03', '2021-03-23', '2021-07-15', '2022-09-24', '2024-04-11', 'latest',
];

const TOKEN_HEADER = 'x-aws-ec2-metadata-token';
const TOKEN_TTL_HEADER = 'x-aws-ec2-metadata-token-ttl-seconds';
const MAX_TOKEN_TTL_SECONDS = 21600;

/** A metadata tree: directories map names to children; leaves are the documents. */
type MetadataNode = MetadataDirectory | string | Buffer;
interface MetadataDirectory {
  entries: Map<string, MetadataNode>;
  /** How a child is named in the listing when EC2 shows more than its path segment (`0=key-name`). */
  labels?: Map<string, string>;
}

function dir(entries: [string, MetadataNode | undefined][], labels?: Map<string, string>): MetadataDirectory {
  return { entries: new Map(entries.filter((e): e is [string, MetadataNode] => e[1] !== undefined)), labels };
}

function isDirectory(node: MetadataNode): node is MetadataDirectory {
  return typeof node === 'object' && !Buffer.isBuffer(node);
}

/** AWS prints times in the identity document without fractional seconds. */
function awsTime(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function identityDocument(m: InstanceMetadata): Record<string, unknown> {
  return {
    accountId: m.accountId,
    architecture: m.architecture ?? 'x86_64',
    availabilityZone: m.availabilityZone,
    billingProducts: null,
    devpayProductCodes: null,
    marketplaceProductCodes: null,
    imageId: m.amiId,
    instanceId: m.instanceId,
    instanceType: m.instanceType,
    kernelId: m.kernelId ?? null,
    pendingTime: awsTime(m.launchTime),
    privateIp: m.localIpv4,
    ramdiskId: m.ramdiskId ?? null,
    region: m.region,
    version: '2017-09-30',
  };
}

function interfaceTree(m: InstanceMetadata): MetadataDirectory {
  return dir([
    ['device-number', '0'],
    ['local-hostname', m.localHostname],
    ['local-ipv4s', m.localIpv4],
    ['mac', m.mac],
    ['owner-id', m.accountId],
    ['public-hostname', m.publicIpv4 ? m.publicHostname : undefined],
    ['public-ipv4s', m.publicIpv4],
    ['security-group-ids', m.securityGroupIds?.join('\n')],
    ['security-groups', m.securityGroups.join('\n')],
    ['subnet-id', m.subnetId],
    ['subnet-ipv4-cidr-block', m.subnetIpv4CidrBlock],
    ['vpc-id', m.vpcId],
    ['vpc-ipv4-cidr-block', m.vpcIpv4CidrBlock],
    ['vpc-ipv4-cidr-blocks', m.vpcIpv4CidrBlock],
  ]);
}

function metaDataTree(m: InstanceMetadata): MetadataDirectory {
  const keys = m.publicKeys.map((k, i) => [String(i), dir([['openssh-key', k.openssh.trimEnd() + '\n']])] as [string, MetadataNode]);
  const keyLabels = new Map(m.publicKeys.map((k, i) => [String(i), `${i}=${k.name}`]));
  return dir([
    ['ami-id', m.amiId],
    ['ami-launch-index', String(m.amiLaunchIndex)],
    ['block-device-mapping', dir([['ami', m.rootDeviceName ?? '/dev/vda'], ['root', m.rootDeviceName ?? '/dev/vda']])],
    ['hostname', m.localHostname],
    ['instance-action', 'none'],
    ['instance-id', m.instanceId],
    ['instance-life-cycle', 'on-demand'],
    ['instance-type', m.instanceType],
    ['kernel-id', m.kernelId],
    ['local-hostname', m.localHostname],
    ['local-ipv4', m.localIpv4],
    ['mac', m.mac],
    ['network', dir([['interfaces', dir([['macs', dir([[m.mac, interfaceTree(m)]])]])]])],
    ['placement', dir([['availability-zone', m.availabilityZone], ['region', m.region]])],
    ['public-hostname', m.publicIpv4 ? m.publicHostname : undefined],
    ['public-ipv4', m.publicIpv4],
    ['public-keys', keys.length ? dir(keys, keyLabels) : undefined],
    ['ramdisk-id', m.ramdiskId],
    ['reservation-id', m.reservationId],
    ['security-groups', m.securityGroups.join('\n')],
  ]);
}

function versionTree(m: InstanceMetadata): MetadataDirectory {
  const document = JSON.stringify(identityDocument(m), null, 2);
  // EC2 lists a version's top level without the trailing slashes it uses further down.
  const plainNames = new Map([['dynamic', 'dynamic'], ['meta-data', 'meta-data']]);
  return dir(
    [
      ['dynamic', dir([['instance-identity', dir([['document', document]])]])],
      ['meta-data', metaDataTree(m)],
      ['user-data', m.userData],
    ],
    plainNames,
  );
}

function listing(node: MetadataDirectory): string {
  return [...node.entries]
    .map(([name, child]) => node.labels?.get(name) ?? (isDirectory(child) ? `${name}/` : name))
    .join('\n');
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
};

export class MetadataService {
  private readonly lookupByIp: (ip: string) => InstanceMetadata | undefined;
  private readonly now: () => number;
  /** Tokens are HMACs under a key that lives only in this process, so they need no table and die with it. */
  private readonly tokenKey = randomBytes(32);
  private server: http.Server | undefined;
  private hopLimiter: HopLimiter | undefined;
  private readonly opts: MetadataServiceOptions;

  constructor(opts: MetadataServiceOptions) {
    this.opts = opts;
    this.lookupByIp = opts.lookupByIp;
    this.now = opts.now ?? Date.now;
    if (opts.hopLimit && opts.hopLimit !== true) this.hopLimiter = opts.hopLimit;
  }

  /**
   * Serves on host:port; with `netns`, the listening socket is made inside that named network
   * namespace (e.g. on 169.254.169.254:80 of a namespace that plays the node host).
   */
  async listen(host: string, port: number, opts: { netns?: string } = {}): Promise<AddressInfo> {
    if (this.server) throw new Error('MetadataService is already listening');
    const server = applyServerTimeouts(http.createServer((req, res) => this.handle(req, res)));
    this.server = server;
    try {
      const target: NetServer | { host: string; port: number } = opts.netns
        ? await listenInNamespace(opts.netns, host, port)
        : { host, port };
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(target, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      this.server = undefined;
      throw e;
    }
    const address = server.address() as AddressInfo;
    if (this.opts.hopLimit === true) {
      this.hopLimiter = new NftHopLimiter({ netns: opts.netns, serviceAddress: address.address, servicePort: address.port });
    }
    return address;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (this.opts.hopLimit === true) {
      await this.hopLimiter?.close().catch(() => undefined);
      this.hopLimiter = undefined;
    }
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const clientIp = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    const path = (req.url ?? '/').split('?')[0]!.replace(/\/{2,}/g, '/');
    req.resume(); // bodies are ignored; drain so keep-alive connections stay usable
    if (req.method === 'PUT') return this.issueToken(req, res, clientIp, path);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return this.fail(res, 405, { Allow: 'OPTIONS, GET, HEAD, PUT' });
    }
    const instance = this.lookupByIp(clientIp);
    if (!instance) return this.fail(res, 404);
    if (instance.httpEndpoint === 'disabled') return this.fail(res, 403);
    const token = req.headers[TOKEN_HEADER];
    let ttlLeft: number | undefined;
    if (token !== undefined) {
      ttlLeft = typeof token === 'string' ? this.tokenSecondsLeft(token, clientIp, instance.instanceId) : undefined;
      if (ttlLeft === undefined) return this.fail(res, 401);
    } else if (instance.httpTokens === 'required') {
      return this.fail(res, 401);
    }
    const node = this.resolve(instance, path);
    if (node === undefined) return this.fail(res, 404);
    const body = isDirectory(node) ? listing(node) : node;
    const type = Buffer.isBuffer(node) ? 'application/octet-stream' : 'text/plain';
    // With a token, EC2 says how long it has left.
    const ttlHeader: Record<string, string> = ttlLeft !== undefined ? { 'X-Aws-Ec2-Metadata-Token-Ttl-Seconds': String(ttlLeft) } : {};
    this.send(res, 200, body, { 'Content-Type': type, ...ttlHeader }, req.method === 'HEAD');
  }

  private resolve(instance: InstanceMetadata, path: string): MetadataNode | undefined {
    const segments = path.split('/').filter(Boolean);
    if (segments.length === 0) return dir(API_VERSIONS.map((v) => [v, '']));
    if (!API_VERSIONS.includes(segments[0]!)) return undefined;
    let node: MetadataNode = versionTree(instance);
    for (const segment of segments.slice(1)) {
      if (!isDirectory(node)) return undefined;
      // EC2 also accepts a key listed as `0=name` by its bare index.
      const next: MetadataNode | undefined = node.entries.get(segment) ?? node.entries.get(segment.split('=')[0]!);
      if (next === undefined) return undefined;
      node = next;
    }
    return node;
  }

  private issueToken(req: http.IncomingMessage, res: http.ServerResponse, clientIp: string, path: string): void {
    // A proxy on the guest forwarding requests for someone else: EC2 refuses to issue tokens then.
    if (req.headers['x-forwarded-for'] !== undefined) return this.fail(res, 403);
    if (!/^\/latest\/api\/token\/?$/.test(path)) return this.fail(res, 405, { Allow: 'OPTIONS, GET, HEAD' });
    const instance = this.lookupByIp(clientIp);
    if (!instance) return this.fail(res, 404);
    if (instance.httpEndpoint === 'disabled') return this.fail(res, 403);
    const ttlHeader = req.headers[TOKEN_TTL_HEADER];
    const ttl = typeof ttlHeader === 'string' && /^\d+$/.test(ttlHeader.trim()) ? Number(ttlHeader.trim()) : NaN;
    if (!(ttl >= 1 && ttl <= MAX_TOKEN_TTL_SECONDS)) return this.fail(res, 400);
    const token = this.makeToken(clientIp, instance.instanceId, this.now() + ttl * 1000);
    const answer = () => this.send(res, 200, token, { 'Content-Type': 'text/plain', 'X-Aws-Ec2-Metadata-Token-Ttl-Seconds': String(ttl) });
    const limiter = this.hopLimiter;
    const port = req.socket.remotePort;
    if (!limiter || port === undefined) return answer();
    // The answer leaves only once its TTL rule is in place, so it never slips past the hop limit.
    limiter.limit(clientIp, port, instance.httpPutResponseHopLimit ?? 1).then(answer, (err: Error) => {
      this.opts.onError?.(err, `cannot apply the metadata hop limit for ${instance.instanceId}`);
      answer();
    });
  }

  private makeToken(ip: string, instanceId: string, expiresAt: number): string {
    const payload = Buffer.from(JSON.stringify({ ip, id: instanceId, exp: expiresAt })).toString('base64url');
    return `${payload}.${this.sign(payload)}`;
  }

  /** Whole seconds the token has left, or undefined when it is not a valid token of this instance. */
  private tokenSecondsLeft(token: string, ip: string, instanceId: string): number | undefined {
    const [payload, signature, extra] = token.split('.');
    if (!payload || !signature || extra !== undefined) return undefined;
    const expected = Buffer.from(this.sign(payload));
    const given = Buffer.from(signature);
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) return undefined;
    try {
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { ip: string; id: string; exp: number };
      const now = this.now();
      if (claims.ip !== ip || claims.id !== instanceId || !(now < claims.exp)) return undefined;
      return Math.max(1, Math.ceil((claims.exp - now) / 1000));
    } catch {
      return undefined;
    }
  }

  private sign(payload: string): string {
    return createHmac('sha256', this.tokenKey).update(payload).digest('base64url');
  }

  private fail(res: http.ServerResponse, status: number, headers: Record<string, string> = {}): void {
    const title = `${status} - ${STATUS_TEXT[status] ?? 'Error'}`;
    const body = `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>${title}</title>
 </head>
 <body>
  <h1>${title}</h1>
 </body>
</html>
`;
    this.send(res, status, body, { 'Content-Type': 'text/html', ...headers });
  }

  private send(res: http.ServerResponse, status: number, body: string | Buffer, headers: Record<string, string>, headOnly = false): void {
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    res.writeHead(status, { Server: 'EC2ws', 'Content-Length': String(bytes.length), ...headers });
    res.end(headOnly ? undefined : bytes);
  }
}
