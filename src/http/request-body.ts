// Request bodies read under a size limit. Every server reads the body before it can authenticate
// the caller (signatures cover the body), so without a limit one unsigned request could make a
// process hold any amount of memory. A body over the limit is refused as soon as the limit is
// passed, or at once when its Content-Length says so: nothing more of it is read, the answer says
// why, and the connection is closed.
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { getRequestListener } from '@hono/node-server';

/** Largest EC2 (and admin API) request body, by default: far above any real call. */
export const DEFAULT_MAX_REQUEST_BYTES = 512 * 1024;

/**
 * Largest request between roles, by default. A cloud's launch carries every instance's spec and
 * user data (up to 16 KiB each) in one call, so this is far above the EC2 limit.
 */
export const DEFAULT_PEER_MAX_REQUEST_BYTES = 32 * 1024 * 1024;

export const TOO_LARGE = Symbol('request body too large');
/** The client went away before its body ended: there is no one to answer. */
export const ABORTED = Symbol('request aborted');

export type BodyRead = Buffer | typeof TOO_LARGE | typeof ABORTED;

function declaredLength(value: string | null | undefined): number | undefined {
  if (value === undefined || value === null || !/^\d+$/.test(value.trim())) return undefined;
  return Number(value.trim());
}

/** The body of `req`, or TOO_LARGE as soon as it is known to pass `maxBytes`. */
export function readBodyWithin(req: IncomingMessage, maxBytes: number): Promise<BodyRead> {
  const declared = declaredLength(req.headers['content-length']);
  if (declared !== undefined && declared > maxBytes) {
    req.pause();
    return Promise.resolve(TOO_LARGE);
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (result: BodyRead | Error): void => {
      req.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > maxBytes) {
        req.pause();
        chunks.length = 0;
        done(TOO_LARGE);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => done(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    const onError = (err: Error): void => done(err);
    const onClose = (): void => done(ABORTED);
    req.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  });
}

/** The body of a web-standard request (Hono), or TOO_LARGE as soon as it passes `maxBytes`. */
export async function readWebBodyWithin(request: Request, maxBytes: number): Promise<Buffer | typeof TOO_LARGE> {
  const declared = declaredLength(request.headers.get('content-length'));
  if (declared !== undefined && declared > maxBytes) return TOO_LARGE;
  if (!request.body) return Buffer.alloc(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => {});
      return TOO_LARGE;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, size);
}

export interface RefusalAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Answers a request whose body is over the limit and closes the connection: the rest of the body
 * is never read (a keep-alive server would otherwise read and discard all of it first).
 */
export function refuseOversizeRequest(res: ServerResponse, answer: RefusalAnswer): void {
  res.shouldKeepAlive = false;
  res.writeHead(answer.status, { ...answer.headers, 'Content-Length': String(Buffer.byteLength(answer.body)), Connection: 'close' });
  res.end(answer.body);
}

export interface BodyLimit {
  /** Largest body, for every request or per request (by path). */
  maxBytes: number | ((req: IncomingMessage) => number);
  /** The answer to a request over the limit, in the format of the server's API. */
  tooLarge: (maxBytes: number) => RefusalAnswer;
}

/**
 * `listener` behind a body limit: the body is read first (within the limit) and handed on, so the
 * listener never sees a request over it.
 */
export function withBodyLimit(listener: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void, limit: BodyLimit): RequestListener {
  return (req, res) => {
    const maxBytes = typeof limit.maxBytes === 'function' ? limit.maxBytes(req) : limit.maxBytes;
    readBodyWithin(req, maxBytes).then((body) => {
      if (body === ABORTED) return;
      if (body === TOO_LARGE) refuseOversizeRequest(res, limit.tooLarge(maxBytes));
      else listener(req, res, body);
    }, (err: Error) => res.destroy(err));
  };
}

/**
 * A node:http listener for a Hono app (fetch function) behind a body limit. The body read within the
 * limit is handed to the adapter as `rawBody`, which it serves as the request's body.
 */
export function honoListenerWithBodyLimit(fetch: Parameters<typeof getRequestListener>[0], limit: BodyLimit): RequestListener {
  // The adapter's clean-up would wait for an `end` the body already had, then drop the connection.
  const hono = getRequestListener(fetch, { autoCleanupIncoming: false });
  return withBodyLimit((req, res, body) => {
    (req as IncomingMessage & { rawBody?: Buffer }).rawBody = body;
    void hono(req, res);
  }, limit);
}

/** The refusal of the JSON APIs between roles (`{code, message}`), as peer-rpc.ts answers errors. */
export function peerTooLarge(maxBytes: number): RefusalAnswer {
  return {
    status: 413,
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ code: 'RequestEntityTooLarge', message: tooLargeMessage(maxBytes) }),
  };
}

export function tooLargeMessage(maxBytes: number): string {
  return `The request body is larger than the ${maxBytes} bytes this endpoint accepts.`;
}
