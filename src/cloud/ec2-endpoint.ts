// The EC2 Query endpoint: authenticate, look the action up in the official model, parse the input
// from it, authorise, dispatch to the operation handler, serialise the output from it.
import type { ServerResponse } from 'node:http';
import type { Context } from 'hono';
import type { Logger } from 'pino';
import { Ec2Error, excerpt } from '../protocol/errors.ts';
import { getOperation } from '../protocol/model.ts';
import { parseInput } from '../protocol/query-parser.ts';
import { serializeError, serializeOutputBytes } from '../protocol/xml-serializer.ts';
import { authenticate, type KeyResolver } from '../auth/authenticate.ts';
import { isActionAllowed } from '../auth/policy.ts';
import type { Store } from '../store/store.ts';
import type { CloudSettings, OperationTable, RequestContext } from './context.ts';
import { newRequestId } from './ids.ts';
import { createServiceRouter } from './identity/service-router.ts';
import {
  DEFAULT_MAX_REQUEST_BYTES, TOO_LARGE, readWebBodyWithin, tooLargeMessage, withBodyLimit, type RefusalAnswer,
} from '../http/request-body.ts';
import type { RequestLimiter } from './limits/request-limiter.ts';

export interface Ec2EndpointDeps {
  store: Store;
  settings: CloudSettings;
  keys: KeyResolver;
  operations: OperationTable;
  log: Logger;
  /** Size in characters of the pieces a large answer is streamed in (1 Mi by default). */
  answerChunkChars?: number;
  /** Parameter count, per-address and per-account rate limits, fair scheduling (limits/request-limiter.ts). */
  limiter?: RequestLimiter;
}

// A fresh object per response: the node adapter adds content-length to the object it is given.
// SDK v3 reads the request id from this header, older clients from the body.
const xmlHeaders = (requestId: string) => ({ 'Content-Type': 'text/xml;charset=UTF-8', 'x-amzn-requestid': requestId });

/** Query string and form body merged into one decoded map; the body wins on a clash, as in EC2. */
function collectParams(rawQuery: string, body: string, contentType: string): Record<string, string> {
  const params: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(rawQuery)) params[k] = v;
  if (body && (contentType === '' || contentType.startsWith('application/x-www-form-urlencoded'))) {
    for (const [k, v] of new URLSearchParams(body)) params[k] = v;
  }
  return params;
}

/** An HTTP request as the endpoint needs it, whatever server received it. */
export interface Ec2HttpRequest {
  method: string;
  /** Path and query as received, e.g. `/?Action=DescribeRegions&...`. */
  rawUrl: string;
  /** Lower-case names. */
  headers: Record<string, string>;
  body: Buffer;
  /** The client's address, for the limits per client (absent when the server does not know it). */
  remoteAddress?: string;
}

export interface Ec2HttpResponse {
  status: number;
  headers: Record<string, string>;
  /** The whole body, or its first piece when `tail` follows (answers are bytes, errors text). */
  body: string | Buffer;
  /** The rest of a large answer, written while it is sent (chunked transfer encoding). */
  tail?: IterableIterator<Buffer>;
}

export type Ec2Handler = (req: Ec2HttpRequest) => Promise<Ec2HttpResponse>;

export function createEc2Handler(deps: Ec2EndpointDeps): Ec2Handler {
  const { store, settings, keys, operations, log, limiter } = deps;
  // Requests signed for STS or IAM (or a service or region not served here) are answered there.
  const otherServices = createServiceRouter({ store, settings, keys, log });

  return async function handleEc2Request(req: Ec2HttpRequest): Promise<Ec2HttpResponse> {
    const routed = otherServices(req);
    if (routed) return routed;
    const requestId = newRequestId();
    let action = '';
    let release: (() => void) | undefined;
    try {
      const q = req.rawUrl.indexOf('?');
      const path = q < 0 ? req.rawUrl : req.rawUrl.slice(0, q);
      const rawQuery = q < 0 ? '' : req.rawUrl.slice(q + 1);
      const bodyBuffer = req.method === 'GET' || req.method === 'HEAD' ? Buffer.alloc(0) : req.body;
      const headers = req.headers;
      const bodyText = bodyBuffer.length ? bodyBuffer.toString('utf8') : '';
      limiter?.checkParameterCount(rawQuery, bodyText);
      const params = collectParams(rawQuery, bodyText, headers['content-type'] ?? '');
      action = params.Action ?? '';

      limiter?.checkAddress(req.remoteAddress);
      const caller = await authenticate({
        method: req.method, host: headers.host ?? '', path, rawQuery, headers, body: bodyBuffer, params,
      }, keys).catch((err: unknown) => {
        if (err instanceof Ec2Error) limiter?.authenticationFailed(req.remoteAddress);
        throw err;
      });

      if (!action) throw new Ec2Error('MissingAction', 'The request must contain the parameter Action');
      const operation = getOperation(action);
      if (!operation) throw new Ec2Error('InvalidAction', `The action ${excerpt(action)} is not valid for this web service.`);
      const handler = operations[action];
      if (!handler) throw new Ec2Error('UnsupportedOperation', `The operation ${action} is not supported by this cloud yet.`);
      // Throttled before anything else is done for the call; DryRun calls count, as in EC2.
      release = await limiter?.admit(caller.accountId, action, params);

      const input = parseInput(action, params);
      const allowed = caller.policy === undefined || isActionAllowed(caller.policy, `ec2:${action}`);
      if (input.DryRun === true) {
        if (allowed) throw new Ec2Error('DryRunOperation', 'Request would have succeeded, but DryRun flag is set.');
        throw new Ec2Error('UnauthorizedOperation', 'You are not authorized to perform this operation.');
      }
      if (!allowed) throw new Ec2Error('UnauthorizedOperation', `You are not authorized to perform this operation (ec2:${action}).`);
      delete input.DryRun;

      const ctx: RequestContext = { requestId, action, caller, store, settings };
      const output = await handler(ctx, input);
      // The first two pieces are made here, so that a failure to serialise a small answer is still
      // an error response; only an answer of more than one piece is streamed.
      const chunks = serializeOutputBytes(action, output ?? {}, requestId, deps.answerChunkChars);
      const first = chunks.next().value as Buffer;
      const second = chunks.next();
      if (second.done) return { status: 200, headers: xmlHeaders(requestId), body: first };
      const tail = (function* () { yield second.value; yield* chunks; })();
      return { status: 200, headers: xmlHeaders(requestId), body: first, tail };
    } catch (err) {
      const ec2 = err instanceof Ec2Error ? err : new Ec2Error('InternalError', 'An internal error has occurred.');
      if (!(err instanceof Ec2Error)) log.error({ err, action, requestId }, 'operation failed with an unexpected error');
      // Refusals under load are counted and logged by the limiter, not one line each.
      else if (ec2.status >= 500 && ec2.code !== 'RequestLimitExceeded') log.warn({ code: ec2.code, action, requestId }, ec2.message);
      return { status: ec2.status, headers: xmlHeaders(requestId), body: serializeError(ec2, requestId) };
    } finally {
      release?.();
    }
  };
}

export interface Ec2ServeOptions {
  /** Largest request body; a larger one is refused with RequestEntityTooLarge (413) unread. */
  maxRequestBytes?: number;
}

/** The XML error answering a request whose body is over the limit. */
function tooLargeAnswer(maxBytes: number): RefusalAnswer {
  const requestId = newRequestId();
  return { status: 413, headers: xmlHeaders(requestId), body: serializeError(new Ec2Error('RequestEntityTooLarge', tooLargeMessage(maxBytes)), requestId) };
}

/**
 * Serves the endpoint straight on node:http: EC2 requests are the hot path, and building
 * web-standard Request/Response objects for each would cost more than the rest of the request.
 */
export function serveEc2OnNode(handler: () => Ec2Handler | undefined, log?: Pick<Logger, 'error'>, opts: Ec2ServeOptions = {}) {
  return withBodyLimit((req, res, body) => {
    const ec2 = handler();
    if (!ec2) {
      res.writeHead(503, { 'Content-Type': 'text/plain' }).end('starting');
      return;
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(',') : v;
    ec2({ method: req.method ?? 'GET', rawUrl: req.url ?? '/', headers, body, remoteAddress: req.socket.remoteAddress })
      .then((r) => {
        if (!r.tail) {
          res.writeHead(r.status, { ...r.headers, 'Content-Length': Buffer.byteLength(r.body) });
          res.end(r.body);
          return;
        }
        res.writeHead(r.status, r.headers);
        res.write(r.body);
        sendTail(res, r.tail, log);
      }, () => res.writeHead(500).end());
  }, { maxBytes: opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES, tooLarge: tooLargeAnswer });
}

/**
 * Writes the rest of a large answer piece by piece, waiting for the socket to drain after each
 * piece it could not take at once: the client receives while the next piece is written.
 */
function sendTail(res: ServerResponse, tail: IterableIterator<Buffer>, log?: Pick<Logger, 'error'>): void {
  const sendNext = (): void => {
    for (;;) {
      if (res.destroyed) return;
      let piece: IteratorResult<Buffer>;
      try {
        piece = tail.next();
      } catch (err) {
        // The status line is gone: all that is left is to cut the answer short, which clients see.
        log?.error({ err }, 'serialising a streamed answer failed');
        res.destroy(err as Error);
        return;
      }
      if (piece.done) {
        res.end();
        return;
      }
      if (!res.write(piece.value)) {
        res.once('drain', sendNext);
        return;
      }
    }
  };
  setImmediate(sendNext);
}

/** The same endpoint as a Hono route (tests and embedders that serve it through Hono). */
export function ec2HonoRoute(handler: Ec2Handler, opts: Ec2ServeOptions = {}) {
  const maxBytes = opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
  return async (c: Context): Promise<Response> => {
    const url = new URL(c.req.url);
    const headers: Record<string, string> = {};
    c.req.raw.headers.forEach((v, k) => { headers[k] = v; });
    const body = c.req.method === 'GET' || c.req.method === 'HEAD' ? Buffer.alloc(0) : await readWebBodyWithin(c.req.raw, maxBytes);
    const r: Ec2HttpResponse = body === TOO_LARGE ? tooLargeAnswer(maxBytes) : await handler({ method: c.req.method, rawUrl: url.pathname + url.search, headers, body });
    const answer = r.tail ? Buffer.concat([Buffer.from(r.body), ...r.tail]) : r.body;
    return new Response(typeof answer === 'string' ? answer : answer.toString('utf8'), { status: r.status, headers: r.headers });
  };
}
