// Node join tokens. The cloud mints one for an operator (`ironbark admin node token --zone Z`); a new
// node presents it to its cluster's `POST /join`. The token is an HMAC, keyed from the cluster's
// shared secret, over {zone, expiry, nonce}: the cluster checks it offline, without asking the
// cloud, and remembers its nonce so each token admits one node only.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

const TOKEN_PREFIX = 'ibj1';
export const DEFAULT_JOIN_TOKEN_TTL_SECONDS = 3600;
export const MAX_JOIN_TOKEN_TTL_SECONDS = 7 * 24 * 3600;

export interface JoinTokenClaims {
  zone: string;
  /** ms since the epoch after which the token is refused. */
  expiresAt: number;
  /** Random, unique per token: what the cluster records once the token is used. */
  nonce: string;
}

export type JoinTokenRefusal = 'malformed' | 'bad-signature' | 'wrong-zone' | 'expired';

export class JoinTokenError extends Error {
  constructor(readonly reason: JoinTokenRefusal, message: string) {
    super(message);
    this.name = 'JoinTokenError';
  }
}

/** Tokens are keyed apart from request signing, so one can never stand in for the other. */
function tokenKey(clusterSecret: string): Buffer {
  return createHmac('sha256', clusterSecret).update('ironbark node join token v1').digest();
}

function mac(clusterSecret: string, payload: string): Buffer {
  return createHmac('sha256', tokenKey(clusterSecret)).update(`${TOKEN_PREFIX}.${payload}`).digest();
}

export function mintJoinToken(clusterSecret: string, zone: string, ttlSeconds = DEFAULT_JOIN_TOKEN_TTL_SECONDS, now = Date.now()): { token: string; claims: JoinTokenClaims } {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_JOIN_TOKEN_TTL_SECONDS) {
    throw new RangeError(`a join token lives 1 to ${MAX_JOIN_TOKEN_TTL_SECONDS} seconds, not ${ttlSeconds}`);
  }
  const claims: JoinTokenClaims = { zone, expiresAt: now + ttlSeconds * 1000, nonce: randomBytes(16).toString('hex') };
  const payload = Buffer.from(JSON.stringify({ z: claims.zone, e: claims.expiresAt, n: claims.nonce })).toString('base64url');
  return { token: `${TOKEN_PREFIX}.${payload}.${mac(clusterSecret, payload).toString('base64url')}`, claims };
}

/** The token's claims if it was minted for `zone` with this cluster's secret and has not expired. */
export function verifyJoinToken(clusterSecret: string, zone: string, token: string, now = Date.now()): JoinTokenClaims {
  const parts = token.trim().split('.');
  if (parts.length !== 3 || parts[0] !== TOKEN_PREFIX || !parts[1] || !parts[2]) {
    throw new JoinTokenError('malformed', 'the join token is not one Ironbark made (expected ibj1.<claims>.<signature>)');
  }
  const [, payload, signature] = parts as [string, string, string];
  const given = Buffer.from(signature, 'base64url');
  const expected = mac(clusterSecret, payload);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new JoinTokenError('bad-signature', `the join token was not made for this cluster (zone ${zone}) or was altered`);
  }
  let raw: { z?: unknown; e?: unknown; n?: unknown };
  try {
    raw = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    throw new JoinTokenError('malformed', 'the join token claims are not JSON');
  }
  if (typeof raw.z !== 'string' || typeof raw.e !== 'number' || typeof raw.n !== 'string' || !/^[0-9a-f]{32}$/.test(raw.n)) {
    throw new JoinTokenError('malformed', 'the join token claims are incomplete');
  }
  if (raw.z !== zone) throw new JoinTokenError('wrong-zone', `the join token is for zone ${raw.z}, not ${zone}`);
  if (raw.e <= now) throw new JoinTokenError('expired', `the join token expired at ${new Date(raw.e).toISOString()}`);
  return { zone: raw.z, expiresAt: raw.e, nonce: raw.n };
}
