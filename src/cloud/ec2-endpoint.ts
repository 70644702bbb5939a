// The EC2 Query endpoint: authenticate, look the action up in the official model, parse the input
// from it, authorise, dispatch to the operation handler, serialise the output from it.
import type { Context } from 'hono';
import type { Logger } from 'pino';
import { Ec2Error } from '../protocol/errors.ts';
import { getOperation } from '../protocol/model.ts';
import { parseInput } from '../protocol/query-parser.ts';
import { serializeError, serializeOutput } from '../protocol/xml-serializer.ts';
import { authenticate, type KeyResolver } from '../auth/authenticate.ts';
import { isActionAllowed } from '../auth/policy.ts';
import type { Store } from '../store/store.ts';
import type { CloudSettings, OperationTable, RequestContext } from './context.ts';
import { newRequestId } from './ids.ts';

export interface Ec2EndpointDeps {
  store: Store;
  settings: CloudSettings;
  keys: KeyResolver;
  operations: OperationTable;
  log: Logger;
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

export function createEc2Handler(deps: Ec2EndpointDeps) {
  const { store, settings, keys, operations, log } = deps;

  return async function handleEc2Request(c: Context): Promise<Response> {
    const requestId = newRequestId();
    let action = '';
    try {
      const url = new URL(c.req.url);
      const bodyBuffer = c.req.method === 'GET' || c.req.method === 'HEAD' ? Buffer.alloc(0) : Buffer.from(await c.req.arrayBuffer());
      const body = bodyBuffer.toString('utf8');
      const headers: Record<string, string> = {};
      c.req.raw.headers.forEach((v, k) => { headers[k] = v; });
      const rawQuery = url.search.startsWith('?') ? url.search.slice(1) : url.search;
      const params = collectParams(rawQuery, body, headers['content-type'] ?? '');
      action = params.Action ?? '';

      const caller = await authenticate({
        method: c.req.method, host: headers.host ?? url.host, path: url.pathname, rawQuery, headers, body: bodyBuffer, params,
      }, keys);

      if (!action) throw new Ec2Error('MissingAction', 'The request must contain the parameter Action');
      const operation = getOperation(action);
      if (!operation) throw new Ec2Error('InvalidAction', `The action ${action} is not valid for this web service.`);
      const handler = operations[action];
      if (!handler) throw new Ec2Error('UnsupportedOperation', `The operation ${action} is not supported by this cloud yet.`);

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
      return new Response(serializeOutput(action, output ?? {}, requestId), { status: 200, headers: xmlHeaders(requestId) });
    } catch (err) {
      const ec2 = err instanceof Ec2Error ? err : new Ec2Error('InternalError', 'An internal error has occurred.');
      if (!(err instanceof Ec2Error)) log.error({ err, action, requestId }, 'operation failed with an unexpected error');
      else if (ec2.status >= 500) log.warn({ code: ec2.code, action, requestId }, ec2.message);
      return new Response(serializeError(ec2, requestId), { status: ec2.status, headers: xmlHeaders(requestId) });
    }
  };
}
