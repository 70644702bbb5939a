// A cluster controller served over HTTP, to two kinds of peers:
// - the cloud controller calls ClusterApi as `POST /v1/<method>`, signed with the cluster's shared
//   secret (key id = the zone), plus two admin methods: listJoinedNodes and revokeNode;
// - nodes join with `POST /join` and a join token, re-announce their address (and MAC) with
//   `POST /node/v1/hello` signed with their own secret, and fetch base images from
//   `GET /images/<id>?…&sig=…` — URLs this server signs when it relays a launch, so a node (which may
//   have no route to the cloud) gets its images through its cluster and nothing else can. Unless
//   told where nodes reach it (--node-url), the server hands out these locations relative
//   (`images/<id>?…`): each node resolves them against the cluster URL it joined with, which is
//   the one address of this server it is sure to reach.
import http from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { isAbsolute } from 'node:path';
import { Hono } from 'hono';
import type { Logger } from 'pino';
import type { ClusterApi } from './cluster-api.ts';
import type { NodeRegistration } from './node-registry.ts';
import type { ImageRef, InstanceMetadataOptions, InstanceSpec, InstanceUpdate, NodeApi } from '../node/node-api.ts';
import { NodeHttpClient } from '../node/node-http-client.ts';
import { PeerVerifier, signPeerRequest } from '../auth/peer-auth.ts';
import { createPeerRpcHandler, optionalBoolean, optionalObject, requiredObject, requiredString, type PeerMethods } from '../auth/peer-rpc.ts';
import { validateFirewallDocument } from '../node/network/firewall-document.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { JoinTokenError, verifyJoinToken } from './join-tokens.ts';
import { JoinedNodes, TokenAlreadyUsedError, type JoinedNode } from './joined-nodes.ts';
import { createImageRelay, type RelayedImage } from './image-relay.ts';
import { isMacAddress, normalizeMac } from '../node/hardware-address.ts';
import { DEFAULT_PEER_MAX_REQUEST_BYTES, honoListenerWithBodyLimit, peerTooLarge } from '../http/request-body.ts';

/** What the server needs of the cluster controller besides ClusterApi: adding and removing nodes. */
export interface ClusterNodeControl {
  /** The zone's private network, told to nodes when they join. */
  readonly cidr: string;
  addNode(id: string, reg: NodeRegistration): Promise<boolean> | boolean | void;
  removeNode(id: string): boolean;
}

export interface ClusterHttpServerOptions {
  cluster: ClusterApi & ClusterNodeControl;
  /** The secret shared with the cloud controller for this zone. */
  cloudSecret: string;
  joined: JoinedNodes;
  log: Pick<Logger, 'info' | 'warn' | 'error'>;
  /**
   * Base URL at which nodes reach this server (e.g. http://172.30.0.1:8774), for a launch's image
   * URLs on this server's relay. Without it they are relative (`images/<id>?…`), and each node
   * resolves them against the cluster URL it joined with.
   */
  nodeFacingUrl?: string;
  /** Where the relay keeps images it fetched from an http(s) URL. */
  imageCacheDir?: string;
  /** How this cluster talks to a joined node (tests put an in-memory node behind it). */
  connectNode?: (node: JoinedNode, secret: () => string | undefined) => NodeApi;
  /** Largest body of the cloud's calls; larger ones are refused unread. Default 32 MiB. */
  maxRequestBytes?: number;
}

/** Nodes' requests (join, hello) are a few hundred bytes; anyone may send them, signed or not. */
const NODE_REQUEST_MAX_BYTES = 64 * 1024;

export interface JoinedNodeView {
  id: string;
  name: string;
  url: string;
  /** The node host's MAC, when the node told one. */
  mac?: string;
  joinedAt: string;
}

export interface ClusterHttpServer {
  app: Hono;
  /** A node:http listener for the whole surface (API, join, images). */
  listener: http.RequestListener;
  /** Registers every node that joined before (at start); resolves when each answered or failed once. */
  registerJoinedNodes(): Promise<void>;
}

const URL_PATTERN = /^https?:\/\/[^\s/]+(\/[^\s]*)?$/;

function imageSignature(key: Buffer, id: string, src: string, sha256: string, size: string): string {
  return createHmac('sha256', key).update([id, src, sha256, size].join('\n')).digest('base64url');
}

export function createClusterHttpServer(opts: ClusterHttpServerOptions): ClusterHttpServer {
  const { cluster, joined, log } = opts;
  const zone = cluster.zone;
  const connect = opts.connectNode ?? ((node, secret) => new NodeHttpClient({ nodeId: node.id, url: node.url, secret }));
  const imageKey = createHmac('sha256', opts.cloudSecret).update('ironbark image relay v1').digest();

  const register = async (node: JoinedNode): Promise<void> => {
    const client = connect(node, () => joined.secretOf(node.id));
    await cluster.addNode(node.id, { name: node.name, address: node.url, client, ...(node.mac ? { mac: node.mac } : {}) });
  };

  // ---- images for nodes ----------------------------------------------------------------------

  /** Images whose signed URL a node presented, by id: what the relay serves. */
  const requestedImages = new Map<string, RelayedImage>();
  const relay = createImageRelay({
    resolveImage: async (id) => requestedImages.get(id),
    cacheDir: opts.imageCacheDir,
    // The cloud serves image files to its clusters only (src/cloud/images/cluster-images.ts).
    fetchHeaders: (url) => (url.pathname.startsWith('/cluster-images/')
      ? signPeerRequest({ keyId: zone, secret: opts.cloudSecret }, { method: 'GET', path: url.pathname, body: '' })
      : undefined),
    log,
  });

  function relayedRef(ref: ImageRef): ImageRef {
    const size = String(ref.sizeBytes);
    const sig = imageSignature(imageKey, ref.id, ref.url, ref.sha256, size);
    const query = new URLSearchParams({ src: ref.url, sha256: ref.sha256, size, sig });
    const location = `images/${encodeURIComponent(ref.id)}?${query}`;
    return { ...ref, url: opts.nodeFacingUrl ? `${opts.nodeFacingUrl.replace(/\/+$/, '')}/${location}` : location };
  }

  function relaySpec(spec: InstanceSpec): InstanceSpec {
    return { ...spec, ...(spec.kernel ? { kernel: relayedRef(spec.kernel) } : {}), root: relayedRef(spec.root), ...(spec.ramdisk ? { ramdisk: relayedRef(spec.ramdisk) } : {}) };
  }

  function serveImage(req: http.IncomingMessage, res: http.ServerResponse, url: URL): void {
    const id = decodeURIComponent(url.pathname.slice('/images/'.length));
    const src = url.searchParams.get('src') ?? '';
    const sha256 = url.searchParams.get('sha256') ?? '';
    const size = url.searchParams.get('size') ?? '';
    const given = Buffer.from(url.searchParams.get('sig') ?? '', 'base64url');
    const expected = Buffer.from(imageSignature(imageKey, id, src, sha256, size), 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      log.warn({ imageId: id, remote: req.socket.remoteAddress }, 'refused image request: the URL is not one this cluster signed');
      res.writeHead(403, { 'content-type': 'text/plain' }).end('image URL not signed by this cluster\n');
      return;
    }
    const image: RelayedImage = { sha256, size: Number(size) };
    if (/^https?:\/\//i.test(src)) image.url = src;
    else image.path = src.startsWith('file:') ? fileURLToPath(src) : src;
    if (image.path !== undefined && !isAbsolute(image.path)) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`image ${id} has no absolute location\n`);
      return;
    }
    // Same id, same checksum: a concurrent request for the same image sets the same entry.
    requestedImages.set(id, image);
    req.url = url.pathname;
    relay(req, res);
  }

  // ---- the cloud's calls ---------------------------------------------------------------------

  /** A volume call the cluster may lack (no storage back-end): EC2's UnsupportedOperation then. */
  function volumeCall<T>(method: keyof ClusterApi, work: (c: ClusterApi) => Promise<T>): Promise<T> {
    if (typeof cluster[method] !== 'function') throw new Ec2Error('UnsupportedOperation', `The cluster of ${zone} keeps no volumes.`);
    return work(cluster);
  }

  function requiredInteger(p: Record<string, unknown>, name: string): number {
    const value = p[name];
    if (typeof value !== 'number' || !Number.isInteger(value)) throw new Ec2Error('InvalidParameterValue', `The parameter ${name} must be a whole number.`);
    return value;
  }

  const cloudVerifier = new PeerVerifier({ secretFor: (keyId) => (keyId === zone ? opts.cloudSecret : undefined) });
  const cloudMethods: PeerMethods = {
    runInstances: async (p) => {
      const specs = p.specs;
      if (!Array.isArray(specs) || specs.length === 0) throw new Ec2Error('MissingParameter', 'The request must contain the parameter specs');
      return cluster.runInstances((specs as InstanceSpec[]).map(relaySpec));
    },
    startInstance: (p) => cluster.startInstance(requiredString(p, 'instanceId'), optionalObject<InstanceUpdate>(p, 'update')),
    stopInstance: (p) => cluster.stopInstance(requiredString(p, 'instanceId'), optionalBoolean(p, 'force')),
    rebootInstance: (p) => cluster.rebootInstance(requiredString(p, 'instanceId')),
    setMetadataOptions: async (p) => {
      if (!cluster.setMetadataOptions) throw new Ec2Error('UnsupportedOperation', `The cluster of ${zone} cannot change metadata options.`);
      await cluster.setMetadataOptions(requiredString(p, 'instanceId'), requiredObject<InstanceMetadataOptions>(p, 'options'));
      return {};
    },
    terminateInstance: (p) => cluster.terminateInstance(requiredString(p, 'instanceId')),
    createVolume: (p) => volumeCall('createVolume', (c) => c.createVolume!(requiredString(p, 'volumeId'), requiredInteger(p, 'sizeGiB'))),
    deleteVolume: (p) => volumeCall('deleteVolume', async (c) => { await c.deleteVolume!(requiredString(p, 'volumeId')); return {}; }),
    resizeVolume: (p) => volumeCall('resizeVolume', (c) => c.resizeVolume!(requiredString(p, 'volumeId'), requiredInteger(p, 'sizeGiB'))),
    attachVolume: (p) => volumeCall('attachVolume', async (c) => {
      await c.attachVolume!(requiredString(p, 'instanceId'), requiredString(p, 'volumeId'), requiredString(p, 'device'));
      return {};
    }),
    detachVolume: (p) => volumeCall('detachVolume', async (c) => {
      await c.detachVolume!(requiredString(p, 'instanceId'), requiredString(p, 'volumeId'), optionalBoolean(p, 'force'));
      return {};
    }),
    createSnapshot: (p) => volumeCall('createSnapshot', (c) => c.createSnapshot!(requiredString(p, 'volumeId'), requiredString(p, 'snapshotId'))),
    createVolumeFromSnapshot: (p) => volumeCall('createVolumeFromSnapshot',
      (c) => c.createVolumeFromSnapshot!(requiredString(p, 'volumeId'), requiredString(p, 'snapshotId'), requiredInteger(p, 'sizeGiB'))),
    copySnapshot: (p) => volumeCall('copySnapshot', (c) => c.copySnapshot!(requiredString(p, 'sourceSnapshotId'), requiredString(p, 'snapshotId'))),
    deleteSnapshot: (p) => volumeCall('deleteSnapshot', async (c) => { await c.deleteSnapshot!(requiredString(p, 'snapshotId')); return {}; }),
    consoleOutput: async (p) => ({ output: await cluster.consoleOutput(requiredString(p, 'instanceId')) }),
    describeInstances: () => cluster.describeInstances(),
    describeNodes: () => cluster.describeNodes(),
    applyFirewall: async (p) => {
      if (!cluster.applyFirewall) throw new Ec2Error('UnsupportedOperation', `The cluster of ${zone} does not run security groups.`);
      const doc = validateFirewallDocument(requiredObject(p, 'doc'));
      if (doc.zone !== zone) throw new Ec2Error('InvalidParameterValue', `The firewall document is for zone ${doc.zone}, not ${zone}.`);
      return cluster.applyFirewall(doc);
    },
    diagnoseNode: async (p) => {
      if (!cluster.diagnoseNode) throw new Ec2Error('UnsupportedOperation', `The cluster of ${zone} cannot diagnose nodes.`);
      return cluster.diagnoseNode(requiredString(p, 'nodeId'));
    },
    listJoinedNodes: async (): Promise<JoinedNodeView[]> => joined.list().map(({ id, name, url, mac, joinedAt }) => ({ id, name, url, ...(mac ? { mac } : {}), joinedAt })),
    revokeNode: async (p) => {
      const nodeId = requiredString(p, 'nodeId');
      const node = joined.get(nodeId);
      if (!node) throw new Ec2Error('InvalidNodeID.NotFound', `The node ${nodeId} has not joined zone ${zone}.`, 404);
      await joined.revoke(nodeId);
      cluster.removeNode(nodeId);
      log.warn({ nodeId, node: node.name, url: node.url }, 'node revoked: its secret is forgotten and it is no longer used');
      return { revoked: nodeId };
    },
  };

  // ---- nodes' calls --------------------------------------------------------------------------

  const nodeVerifier = new PeerVerifier({ secretFor: (keyId) => joined.secretOf(keyId) });
  const nodeMethods: PeerMethods = {
    hello: async (p, peer) => {
      const url = requiredNodeUrl(p);
      const mac = optionalMac(p);
      const node = await joined.updateAddress(peer.keyId, { url, mac });
      if (!node) throw new Ec2Error('AuthFailure', `Node ${peer.keyId} is not a member of zone ${zone}.`, 401);
      await register(node);
      log.info({ nodeId: node.id, node: node.name, url, mac: node.mac }, 'node said hello');
      return { nodeId: node.id, zone, cidr: cluster.cidr };
    },
  };

  const app = new Hono();
  app.get('/healthz', (c) => c.json({ ok: true, zone }));
  app.post('/v1/:method', createPeerRpcHandler({ verifier: cloudVerifier, methods: cloudMethods, log, peerKind: 'cloud' }));
  app.post('/node/v1/:method', createPeerRpcHandler({ verifier: nodeVerifier, methods: nodeMethods, log, peerKind: 'node' }));

  app.post('/join', async (c) => {
    const remote = (c.env as { incoming?: http.IncomingMessage } | undefined)?.incoming?.socket.remoteAddress;
    let body: Record<string, unknown>;
    try {
      body = await c.req.json();
    } catch {
      return c.json({ code: 'InvalidParameterValue', message: 'The join request body must be a JSON object.' }, 400);
    }
    try {
      const token = requiredString(body, 'token');
      const url = requiredNodeUrl(body);
      const name = typeof body.name === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(body.name) ? body.name : undefined;
      const mac = optionalMac(body);
      const claims = verifyJoinToken(opts.cloudSecret, zone, token);
      const node = await joined.join({ nonce: claims.nonce, expiresAt: claims.expiresAt }, { name, url, mac });
      log.info({ nodeId: node.id, node: node.name, url, mac, remote }, 'node joined');
      // Not awaited: the first poll can only succeed once the node has stored the secret we answer.
      register(node).catch((err: Error) => log.warn({ nodeId: node.id, err: err.message }, 'cannot register the node that joined'));
      return c.json({ nodeId: node.id, name: node.name, zone, cidr: cluster.cidr, secret: node.secret });
    } catch (err) {
      if (err instanceof JoinTokenError || err instanceof TokenAlreadyUsedError) {
        log.warn({ remote, reason: err instanceof JoinTokenError ? err.reason : 'reused' }, `refused node join: ${err.message}`);
        return c.json({ code: 'AuthFailure', message: `Join refused: ${err.message}.` }, 401);
      }
      if (err instanceof Ec2Error) return c.json({ code: err.code, message: err.message }, 400);
      throw err;
    }
  });

  const cloudMaxBytes = opts.maxRequestBytes ?? DEFAULT_PEER_MAX_REQUEST_BYTES;
  const honoListener = honoListenerWithBodyLimit(app.fetch, {
    maxBytes: (req) => ((req.url ?? '').startsWith('/v1/') ? cloudMaxBytes : NODE_REQUEST_MAX_BYTES),
    tooLarge: peerTooLarge,
  });
  const listener: http.RequestListener = (req, res) => {
    const url = new URL(req.url ?? '/', 'http://cluster');
    if (url.pathname.startsWith('/images/') && (req.method === 'GET' || req.method === 'HEAD')) return serveImage(req, res, url);
    honoListener(req, res);
  };

  return {
    app,
    listener,
    async registerJoinedNodes() {
      await Promise.all(joined.list().map((node) => register(node).catch((err: Error) => {
        log.warn({ nodeId: node.id, err: err.message }, 'cannot register a joined node');
      })));
    },
  };
}

function requiredNodeUrl(p: Record<string, unknown>): string {
  const url = requiredString(p, 'url');
  if (!URL_PATTERN.test(url)) throw new Ec2Error('InvalidParameterValue', `The node URL ${JSON.stringify(url)} is not an http(s) URL such as http://172.30.0.11:8775.`);
  return url.replace(/\/+$/, '');
}

/** A node's MAC (six hex pairs), canonical; an all-zero one (loopback) is no MAC. */
function optionalMac(p: Record<string, unknown>): string | undefined {
  const value = p.mac;
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string' || !isMacAddress(value)) {
    throw new Ec2Error('InvalidParameterValue', `The MAC address ${JSON.stringify(value)} is not six hex pairs such as 52:54:00:12:34:56.`);
  }
  return normalizeMac(value);
}
