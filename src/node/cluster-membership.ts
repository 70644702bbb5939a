// A node controller's membership of its cluster: joining once with a token (the cluster answers a
// node id and a secret, kept in the node's data directory, 0600), and on every later start saying
// hello with that secret so the cluster learns the node's current address and hardware address
// (the MAC its power-save wake command needs).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ec2Error } from '../protocol/errors.ts';
import { PeerClient } from '../auth/peer-rpc.ts';
import { writePrivateFile } from '../store/private-files.ts';

export const MEMBERSHIP_FILE = 'cluster-membership.json';

export interface ClusterMembership {
  clusterUrl: string;
  zone: string;
  /** The zone's private network, as the cluster told it. */
  cidr: string;
  nodeId: string;
  name: string;
  secret: string;
  joinedAt: string;
}

export async function loadMembership(dataDir: string): Promise<ClusterMembership | undefined> {
  let text: string;
  try {
    text = await readFile(join(dataDir, MEMBERSHIP_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const m = JSON.parse(text) as ClusterMembership;
  if (!m.nodeId || !m.secret || !m.clusterUrl) throw new Error(`${join(dataDir, MEMBERSHIP_FILE)} is incomplete; remove it and join again with a new token`);
  return m;
}

export async function saveMembership(dataDir: string, m: ClusterMembership): Promise<void> {
  await writePrivateFile(join(dataDir, MEMBERSHIP_FILE), `${JSON.stringify(m, null, 2)}\n`);
}

export interface JoinRequest {
  clusterUrl: string;
  token: string;
  /** Base URL of this node's API as the cluster should call it. */
  url: string;
  name?: string;
  /** This host's MAC, for waking it (hardware-address.ts). */
  mac?: string;
  timeoutMs?: number;
}

/** Presents the token to the cluster's `POST /join`; the answer holds this node's id and secret. */
export async function joinCluster(req: JoinRequest): Promise<ClusterMembership> {
  const clusterUrl = req.clusterUrl.replace(/\/+$/, '');
  let res: Response;
  try {
    res = await fetch(`${clusterUrl}/join`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: req.token, url: req.url, name: req.name, mac: req.mac }),
      signal: AbortSignal.timeout(req.timeoutMs ?? 30_000),
    });
  } catch (err) {
    throw new Ec2Error('Unavailable', `Cannot reach the cluster at ${clusterUrl} to join: ${(err as Error).message}`);
  }
  const text = await res.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Ec2Error('InternalError', `The cluster at ${clusterUrl} answered the join with HTTP ${res.status} and no JSON.`);
  }
  if (!res.ok) {
    throw new Ec2Error(String(body.code ?? 'AuthFailure'), String(body.message ?? `The cluster refused the join with HTTP ${res.status}.`), res.status);
  }
  const { nodeId, zone, cidr, secret, name } = body;
  if (typeof nodeId !== 'string' || typeof zone !== 'string' || typeof cidr !== 'string' || typeof secret !== 'string') {
    throw new Ec2Error('InternalError', `The cluster at ${clusterUrl} answered the join without a node id, zone, network and secret.`);
  }
  return { clusterUrl, zone, cidr, nodeId, secret, name: typeof name === 'string' ? name : nodeId, joinedAt: new Date().toISOString() };
}

/**
 * Tells the cluster where this node now listens and its MAC (when known); fails with AuthFailure
 * once the node is revoked.
 */
export async function sayHello(m: ClusterMembership, url: string, mac?: string): Promise<void> {
  const peer = new PeerClient({
    baseUrl: `${m.clusterUrl}/node`,
    peerName: `cluster ${m.zone}`,
    credentials: () => ({ keyId: m.nodeId, secret: m.secret }),
  });
  await peer.call('hello', { url, ...(mac ? { mac } : {}) });
}
