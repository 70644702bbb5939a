// Method calls between roles over HTTP: `POST <base>/v1/<method>` with a JSON object of named
// parameters, answered by `{"result": …}` or, on failure, `{"code", "message"}` with EC2's HTTP
// status for that code. Both directions are signed with the peer's shared secret (peer-auth.ts);
// the client rethrows a failure as Ec2Error with the same code, so e.g. InsufficientInstanceCapacity
// reaches the cloud's caller intact.
import type { Context } from 'hono';
import type { Logger } from 'pino';
import { Ec2Error, excerpt, isEc2Error } from '../protocol/errors.ts';
import { DEFAULT_PEER_MAX_REQUEST_BYTES, TOO_LARGE, readWebBodyWithin, tooLargeMessage } from '../http/request-body.ts';
import {
  PeerVerifier, SIGNATURE_HEADER, signPeerRequest, signPeerResponse, verifyPeerResponse, type PeerCredentials,
} from './peer-auth.ts';

export type PeerMethod = (params: Record<string, unknown>, peer: { keyId: string }) => Promise<unknown>;
export type PeerMethods = Record<string, PeerMethod>;

export interface PeerRpcHandlerOptions {
  verifier: PeerVerifier;
  methods: PeerMethods;
  log: Pick<Logger, 'warn' | 'error'>;
  /** What the callers are, for log lines: "cloud", "node". */
  peerKind: string;
  /** Largest request body, read before the signature over it can be checked. Default 32 MiB. */
  maxBodyBytes?: number;
}

function headerMap(c: Context): Record<string, string> {
  const headers: Record<string, string> = {};
  c.req.raw.headers.forEach((v, k) => { headers[k] = v; });
  return headers;
}

function jsonResponse(status: number, body: string, signature?: string): Response {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (signature) headers[SIGNATURE_HEADER] = signature;
  return new Response(body, { status, headers });
}

/** A Hono handler for `POST …/:method` that authenticates the caller, then runs the method. */
export function createPeerRpcHandler(opts: PeerRpcHandlerOptions) {
  const { verifier, methods, log, peerKind } = opts;
  const maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_PEER_MAX_REQUEST_BYTES;
  return async function handlePeerCall(c: Context): Promise<Response> {
    const body = await readWebBodyWithin(c.req.raw, maxBodyBytes);
    if (body === TOO_LARGE) {
      return jsonResponse(413, JSON.stringify({ code: 'RequestEntityTooLarge', message: tooLargeMessage(maxBodyBytes) }));
    }
    const path = new URL(c.req.url).pathname;
    const verdict = await verifier.verify({ method: c.req.method, path, body, headers: headerMap(c) });
    if (!verdict.ok) {
      log.warn({ peerKind, peer: verdict.keyId ?? null, reason: verdict.reason, path, remote: remoteAddress(c) }, `refused ${peerKind} request: ${verdict.message}`);
      return jsonResponse(401, JSON.stringify({ code: 'AuthFailure', message: `${peerKind} request refused: ${verdict.message}` }));
    }
    const method = c.req.param('method') ?? '';
    let status = 200;
    let text: string;
    try {
      const handler = Object.hasOwn(methods, method) ? methods[method] : undefined;
      if (!handler) throw new Ec2Error('InvalidAction', `The action ${excerpt(method)} is not valid for this ${peerKind} endpoint.`);
      let params: unknown;
      try {
        params = body.length === 0 ? {} : JSON.parse(body.toString('utf8'));
      } catch {
        throw new Ec2Error('InvalidParameterValue', 'The request body is not JSON.');
      }
      if (params === null || typeof params !== 'object' || Array.isArray(params)) {
        throw new Ec2Error('InvalidParameterValue', 'The request body must be a JSON object of named parameters.');
      }
      const result = await handler(params as Record<string, unknown>, { keyId: verdict.keyId });
      text = JSON.stringify({ result: result ?? null });
    } catch (err) {
      if (isEc2Error(err)) {
        status = err.status;
        text = JSON.stringify({ code: err.code, message: err.message });
      } else {
        log.error({ err, peerKind, peer: verdict.keyId, method }, `${method} failed`);
        status = 500;
        text = JSON.stringify({ code: 'InternalError', message: `${method} failed: ${err instanceof Error ? err.message : String(err)}` });
      }
    }
    return jsonResponse(status, text, signPeerResponse(verdict.secret, verdict.signature, status, text));
  };
}

// ---- reading named parameters ----------------------------------------------------------------

export function requiredString(params: Record<string, unknown>, name: string): string {
  const value = params[name];
  if (value === undefined || value === null || value === '') throw new Ec2Error('MissingParameter', `The request must contain the parameter ${name}`);
  if (typeof value !== 'string') throw new Ec2Error('InvalidParameterValue', `Value for parameter ${name} must be a string.`);
  return value;
}

export function optionalBoolean(params: Record<string, unknown>, name: string): boolean | undefined {
  const value = params[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw new Ec2Error('InvalidParameterValue', `Value for parameter ${name} must be true or false.`);
  return value;
}

export function requiredObject<T>(params: Record<string, unknown>, name: string): T {
  const value = params[name];
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Ec2Error('MissingParameter', `The request must contain the parameter ${name}`);
  }
  return value as T;
}

export function optionalObject<T>(params: Record<string, unknown>, name: string): T | undefined {
  const value = params[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) throw new Ec2Error('InvalidParameterValue', `Value for parameter ${name} must be an object.`);
  return value as T;
}

function remoteAddress(c: Context): string | undefined {
  const incoming = (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming;
  return incoming?.socket?.remoteAddress;
}

export interface PeerClientOptions {
  /** e.g. http://172.30.0.11:8775; methods are posted to <baseUrl>/v1/<method>. */
  baseUrl: string;
  /** Read on every call, so a rotated or revoked secret takes effect at once. */
  credentials: () => PeerCredentials | undefined;
  /** What the peer is, for error messages: "cluster ironbark-1a", "node nd-1234". */
  peerName: string;
  timeoutMs?: number;
  /** Longer limits for slow methods, by method name. */
  timeoutsMs?: Record<string, number>;
}

export const DEFAULT_PEER_TIMEOUT_MS = 15_000;

/** Calls methods of a peer; every failure is an Ec2Error (Unavailable when the peer does not answer). */
export class PeerClient {
  readonly baseUrl: string;
  readonly peerName: string;
  readonly #opts: PeerClientOptions;

  constructor(opts: PeerClientOptions) {
    this.#opts = opts;
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.peerName = opts.peerName;
  }

  async call<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const creds = this.#opts.credentials();
    if (!creds) throw new Ec2Error('AuthFailure', `No credentials for ${this.peerName}: it has been removed or never joined.`);
    const url = new URL(`${this.baseUrl}/v1/${method}`);
    const body = JSON.stringify(params);
    const headers = signPeerRequest(creds, { method: 'POST', path: url.pathname, body });
    const timeoutMs = this.#opts.timeoutsMs?.[method] ?? this.#opts.timeoutMs ?? DEFAULT_PEER_TIMEOUT_MS;
    let res: Response;
    let text: string;
    try {
      res = await fetch(url, {
        method: 'POST', body, headers: { ...headers, 'content-type': 'application/json' }, signal: AbortSignal.timeout(timeoutMs),
      });
      text = await res.text();
    } catch (err) {
      const why = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')
        ? `did not answer ${method} within ${timeoutMs} ms`
        : `cannot be reached (${describeFetchError(err)})`;
      throw new Ec2Error('Unavailable', `${this.peerName} at ${this.baseUrl} ${why}.`);
    }
    let payload: { result?: unknown; code?: unknown; message?: unknown };
    try {
      payload = JSON.parse(text);
    } catch {
      throw new Ec2Error('InternalError', `${this.peerName} answered ${method} with HTTP ${res.status} and a body that is not JSON.`);
    }
    if (res.status === 401) {
      throw new Ec2Error('AuthFailure', typeof payload.message === 'string' ? payload.message : `${this.peerName} refused our credentials.`);
    }
    // Refused before the signature could be checked, so the answer cannot be signed either.
    if (res.status === 413) {
      throw new Ec2Error('RequestEntityTooLarge', `${this.peerName} refused ${method}: ${typeof payload.message === 'string' ? payload.message : 'the request is too large.'}`, 413);
    }
    if (!verifyPeerResponse(creds.secret, headers[SIGNATURE_HEADER]!, res.status, text, res.headers.get(SIGNATURE_HEADER))) {
      throw new Ec2Error('AuthFailure', `The answer of ${this.peerName} to ${method} is not signed with its shared secret.`);
    }
    if (res.ok) return payload.result as T;
    const code = typeof payload.code === 'string' ? payload.code : 'InternalError';
    const message = typeof payload.message === 'string' ? payload.message : `${this.peerName} failed ${method} with HTTP ${res.status}.`;
    throw new Ec2Error(code, message, res.status);
  }
}

function describeFetchError(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err));
}
