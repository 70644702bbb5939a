// Test helpers for the auth tests: capture what real AWS signers produce and turn it into the
// HttpRequestParts the server sees on the wire.
import { EC2Client } from '@aws-sdk/client-ec2';
import { HttpRequest, buildQueryString } from '@smithy/core/protocols';
import type { HttpRequestParts, KeyResolver, ResolvedKey } from '../../src/auth/authenticate.ts';
import { expectEc2Error } from '../helpers/ec2-errors.ts';

// The SDK warns once per process that future versions need Node 22; that is noise in test output.
process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

export const ENDPOINT = 'http://127.0.0.1:8773';
export const REGION = 'ironbark-1';

export interface TestCredentials {
  accessKeyId: string;
  secretAccessKey: string;
}

/** The request as a server receives it: query string rebuilt as the SDK's HTTP handler sends it. */
export function toParts(req: HttpRequest): HttpRequestParts {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) headers[k.toLowerCase()] = String(v);
  const host = req.port ? `${req.hostname}:${req.port}` : req.hostname;
  headers['host'] ??= host;
  const rawQuery = buildQueryString(req.query ?? {});
  const body = req.body === undefined ? Buffer.alloc(0) : Buffer.from(req.body as string | Uint8Array);
  const params: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(rawQuery)) params[k] = v;
  if ((headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
    for (const [k, v] of new URLSearchParams(body.toString('utf8'))) params[k] = v;
  }
  return { method: req.method, host, path: req.path, rawQuery, headers, body, params };
}

class Captured extends Error {
  constructor(readonly request: HttpRequest) {
    super('request captured');
  }
}

/** Runs one SDK command through a handler that captures the signed request instead of sending it. */
export async function captureSdkRequest(credentials: TestCredentials, command: object): Promise<HttpRequestParts> {
  const client = new EC2Client({
    region: REGION,
    endpoint: ENDPOINT,
    credentials,
    maxAttempts: 1,
    requestHandler: { handle: async (request: HttpRequest) => { throw new Captured(request); } } as never,
  });
  try {
    await client.send(command as never);
  } catch (e) {
    if (e instanceof Captured) return toParts(e.request);
    throw e;
  }
  throw new Error('the SDK sent no request');
}

/** A resolver over a fixed set of keys, counting lookups. */
export function staticResolver(keys: ResolvedKey[]): KeyResolver & { lookups: number } {
  const byId = new Map(keys.map((k) => [k.accessKeyId, k]));
  const resolver = (async (akid: string) => {
    resolver.lookups++;
    return byId.get(akid);
  }) as KeyResolver & { lookups: number };
  resolver.lookups = 0;
  return resolver;
}

export function resolvedKey(accessKeyId: string, secretAccessKey: string, status = 'Active'): ResolvedKey {
  return {
    accessKeyId,
    secretAccessKey,
    status,
    caller: { accountId: '123456789012', userId: 'AIDATESTUSER0000000', userName: 'admin', accessKeyId, isAdmin: true, policy: '["ec2:*"]' },
  };
}

/** Asserts that `p` rejects with the EC2 error `code` at HTTP `status`, its message matching `message` when given. */
export function rejectsWith(p: Promise<unknown>, code: string, status: number, message?: RegExp): Promise<void> {
  return expectEc2Error(p, code, message, { status });
}
