// Authentication of every message between Ironbark's roles: cloud ↔ cluster with a secret per
// cluster, cluster ↔ node with a secret per node. A request carries a key id, a timestamp, a nonce
// and an HMAC-SHA256 over those, the method, the path and the body's hash. The receiver refuses a
// stale or future timestamp (5 minutes either way), a signature it has already seen (replay inside
// the window), an unknown key id and a bad signature — and logs which peer it was.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export const PEER_ALGORITHM = 'IRONBARK-HMAC-SHA256';
export const MAX_PEER_SKEW_MS = 5 * 60 * 1000;

export const KEY_ID_HEADER = 'x-ironbark-key-id';
export const TIMESTAMP_HEADER = 'x-ironbark-timestamp';
export const NONCE_HEADER = 'x-ironbark-nonce';
export const SIGNATURE_HEADER = 'x-ironbark-signature';

export interface PeerCredentials {
  /** Who is signing: a zone name for a cluster, a node id for a node. */
  keyId: string;
  secret: string;
}

export interface SignableRequest {
  method: string;
  /** Path without the query string, as the receiver sees it. */
  path: string;
  body: string | Uint8Array;
}

/** A new shared secret: 32 random bytes, base64url (no padding), safe on a command line. */
export function newPeerSecret(): string {
  return randomBytes(32).toString('base64url');
}

function sha256Hex(body: string | Uint8Array): string {
  return createHash('sha256').update(body).digest('hex');
}

function stringToSign(keyId: string, timestamp: string, nonce: string, req: SignableRequest): string {
  return [PEER_ALGORITHM, keyId, req.method.toUpperCase(), req.path, timestamp, nonce, sha256Hex(req.body)].join('\n');
}

function hmacHex(secret: string, text: string): string {
  return createHmac('sha256', secret).update(text).digest('hex');
}

/** The headers that authenticate `req` as coming from the holder of `creds`. */
export function signPeerRequest(creds: PeerCredentials, req: SignableRequest, now: number = Date.now()): Record<string, string> {
  const timestamp = String(now);
  const nonce = randomBytes(12).toString('hex');
  return {
    [KEY_ID_HEADER]: creds.keyId,
    [TIMESTAMP_HEADER]: timestamp,
    [NONCE_HEADER]: nonce,
    [SIGNATURE_HEADER]: hmacHex(creds.secret, stringToSign(creds.keyId, timestamp, nonce, req)),
  };
}

/**
 * Binds a response to the request it answers (through the request's signature, which covers its
 * nonce), so a peer can trust an answer as much as the question.
 */
export function signPeerResponse(secret: string, requestSignature: string, status: number, body: string | Uint8Array): string {
  return hmacHex(secret, [PEER_ALGORITHM, 'response', requestSignature, String(status), sha256Hex(body)].join('\n'));
}

export function verifyPeerResponse(secret: string, requestSignature: string, status: number, body: string | Uint8Array, signature: string | null): boolean {
  if (!signature || !/^[0-9a-f]{64}$/.test(signature)) return false;
  return timingSafeEqual(Buffer.from(signPeerResponse(secret, requestSignature, status, body), 'hex'), Buffer.from(signature, 'hex'));
}

export type PeerRefusal = 'missing-headers' | 'unknown-key' | 'stale' | 'replayed' | 'bad-signature';

export type PeerVerdict = { ok: true; keyId: string; secret: string; signature: string } | { ok: false; keyId?: string; reason: PeerRefusal; message: string };

export interface PeerVerifierOptions {
  /** The secret of a key id, or undefined when that peer is unknown (never joined, revoked, removed). */
  secretFor: (keyId: string) => string | undefined | Promise<string | undefined>;
  maxSkewMs?: number;
  now?: () => number;
}

export interface VerifiableRequest extends SignableRequest {
  /** Header names in lower case. */
  headers: Record<string, string | undefined>;
}

/**
 * Checks signed requests. Keeps the signatures it accepted until they fall out of the time window,
 * so a captured request cannot be sent again while its timestamp would still pass.
 */
export class PeerVerifier {
  readonly #secretFor: PeerVerifierOptions['secretFor'];
  readonly #maxSkewMs: number;
  readonly #now: () => number;
  /** signature → the time after which its timestamp is stale anyway. */
  readonly #seen = new Map<string, number>();

  constructor(opts: PeerVerifierOptions) {
    this.#secretFor = opts.secretFor;
    this.#maxSkewMs = opts.maxSkewMs ?? MAX_PEER_SKEW_MS;
    this.#now = opts.now ?? Date.now;
  }

  async verify(req: VerifiableRequest): Promise<PeerVerdict> {
    const keyId = req.headers[KEY_ID_HEADER];
    const timestamp = req.headers[TIMESTAMP_HEADER];
    const nonce = req.headers[NONCE_HEADER];
    const signature = req.headers[SIGNATURE_HEADER];
    if (!keyId || !timestamp || !nonce || !signature) {
      return { ok: false, keyId, reason: 'missing-headers', message: `request is not signed (it needs ${KEY_ID_HEADER}, ${TIMESTAMP_HEADER}, ${NONCE_HEADER} and ${SIGNATURE_HEADER})` };
    }
    const now = this.#now();
    const signedAt = /^\d{1,16}$/.test(timestamp) ? Number(timestamp) : NaN;
    if (!Number.isFinite(signedAt) || Math.abs(now - signedAt) > this.#maxSkewMs) {
      return { ok: false, keyId, reason: 'stale', message: `request timestamp ${timestamp} is more than ${this.#maxSkewMs / 1000} s away from this host's clock` };
    }
    const secret = await this.#secretFor(keyId);
    if (secret === undefined) return { ok: false, keyId, reason: 'unknown-key', message: `unknown key id ${JSON.stringify(keyId)}` };
    const expected = Buffer.from(hmacHex(secret, stringToSign(keyId, timestamp, nonce, req)), 'hex');
    const given = /^[0-9a-f]{64}$/.test(signature) ? Buffer.from(signature, 'hex') : undefined;
    if (given === undefined || !timingSafeEqual(expected, given)) {
      return { ok: false, keyId, reason: 'bad-signature', message: `signature does not match for key id ${JSON.stringify(keyId)}` };
    }
    this.#forgetExpired(now);
    if (this.#seen.has(signature)) return { ok: false, keyId, reason: 'replayed', message: `request from ${JSON.stringify(keyId)} was already received (replay)` };
    this.#seen.set(signature, signedAt + this.#maxSkewMs);
    return { ok: true, keyId, secret, signature };
  }

  #forgetExpired(now: number): void {
    // Insertion order is arrival order, so the stale ones sit at the front.
    for (const [sig, staleAt] of this.#seen) {
      if (staleAt >= now) break;
      this.#seen.delete(sig);
    }
  }
}
