// A node controller's API served over HTTP to its cluster controller, and to nothing else: every
// call must be signed with the secret this node received when it joined (key id = its node id).
import type { RequestListener } from 'node:http';
import { Hono } from 'hono';
import type { Logger } from 'pino';
import type { InstanceMetadataOptions, InstanceUpdate, NodeApi, NodeVolumeAttachment } from './node-api.ts';
import { PeerVerifier } from '../auth/peer-auth.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { DEFAULT_PEER_MAX_REQUEST_BYTES, honoListenerWithBodyLimit, peerTooLarge } from '../http/request-body.ts';
import { createPeerRpcHandler, optionalBoolean, optionalObject, requiredObject, requiredString, type PeerMethods } from '../auth/peer-rpc.ts';

export interface NodeIdentity { nodeId: string; secret: string }

export interface NodeHttpServerOptions {
  agent: NodeApi;
  /** The node's identity from joining; read per request so a re-join takes effect at once. */
  identity: () => NodeIdentity | undefined;
  log: Pick<Logger, 'warn' | 'error'>;
  /** Largest request body; larger ones are refused unread. Default 32 MiB (a launch's spec is far less). */
  maxRequestBytes?: number;
}

export function nodeApiMethods(agent: NodeApi): PeerMethods {
  return {
    describeResources: () => agent.describeResources(),
    describeInstances: () => agent.describeInstances(),
    runInstance: (p) => agent.runInstance(requiredObject(p, 'spec')),
    startInstance: (p) => agent.startInstance(requiredString(p, 'instanceId'), optionalObject<InstanceUpdate>(p, 'update')),
    stopInstance: (p) => agent.stopInstance(requiredString(p, 'instanceId'), optionalBoolean(p, 'force')),
    rebootInstance: (p) => agent.rebootInstance(requiredString(p, 'instanceId')),
    terminateInstance: (p) => agent.terminateInstance(requiredString(p, 'instanceId')),
    consoleOutput: async (p) => ({ output: await agent.consoleOutput(requiredString(p, 'instanceId')) }),
    // The agent checks the options value by value (metadata-options.ts).
    setMetadataOptions: async (p) => {
      if (!agent.setMetadataOptions) throw new Ec2Error('UnsupportedOperation', 'This node cannot change metadata options.');
      await agent.setMetadataOptions(requiredString(p, 'instanceId'), requiredObject<InstanceMetadataOptions>(p, 'options'));
      return {};
    },
    // The agent checks the attachment value by value (storage/node-volumes.ts).
    attachVolume: async (p) => {
      if (!agent.attachVolume) throw new Ec2Error('UnsupportedOperation', 'This node cannot attach volumes.');
      await agent.attachVolume(requiredString(p, 'instanceId'), requiredObject<NodeVolumeAttachment>(p, 'attachment'));
      return {};
    },
    detachVolume: async (p) => {
      if (!agent.detachVolume) throw new Ec2Error('UnsupportedOperation', 'This node cannot detach volumes.');
      await agent.detachVolume(requiredString(p, 'instanceId'), requiredString(p, 'volumeId'), optionalBoolean(p, 'force'));
      return {};
    },
    // The agent checks the document value by value before any of it reaches nftables.
    applyFirewall: async (p) => {
      if (!agent.applyFirewall) throw new Ec2Error('UnsupportedOperation', 'This node does not run security groups.');
      return agent.applyFirewall(requiredObject(p, 'doc'));
    },
    // The agent checks the peers (IPv4 addresses) before any reaches `ip` or nftables.
    setZonePeers: async (p) => {
      if (!agent.setZonePeers) throw new Ec2Error('UnsupportedOperation', 'This node has no zone network.');
      await agent.setZonePeers(requiredObject(p, 'peers'));
      return {};
    },
    diagnoseNetwork: () => {
      if (!agent.diagnoseNetwork) throw new Ec2Error('UnsupportedOperation', 'This node cannot diagnose its network.');
      return agent.diagnoseNetwork();
    },
  };
}

export function createNodeHttpApp(opts: NodeHttpServerOptions): Hono {
  const verifier = new PeerVerifier({
    secretFor: (keyId) => {
      const id = opts.identity();
      return id && id.nodeId === keyId ? id.secret : undefined;
    },
  });
  const app = new Hono();
  app.get('/healthz', (c) => c.json({ ok: true, joined: opts.identity() !== undefined }));
  app.post('/v1/:method', createPeerRpcHandler({ verifier, methods: nodeApiMethods(opts.agent), log: opts.log, peerKind: 'cluster' }));
  return app;
}

/** The node's API as a node:http listener, behind the request body limit. */
export function createNodeHttpListener(opts: NodeHttpServerOptions): RequestListener {
  return honoListenerWithBodyLimit(createNodeHttpApp(opts).fetch, {
    maxBytes: opts.maxRequestBytes ?? DEFAULT_PEER_MAX_REQUEST_BYTES,
    tooLarge: peerTooLarge,
  });
}
