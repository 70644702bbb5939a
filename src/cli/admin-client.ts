// A small JSON client for the cloud's admin API. It signs every request with SigV4 (service
// "ec2", like the EC2 endpoint) using the cloud admin's key, found in order: `--data-dir`'s
// credentials.env, the AWS_* environment variables, then $IRONBARK_DATA_DIR (or
// /var/lib/ironbark)/credentials.env. The endpoint is `--endpoint`, else AWS_ENDPOINT_URL_EC2 from
// the same place as the credentials, else from the environment.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { CREDENTIALS_ENV, readCredentialsEnv } from '../auth/credentials-file.ts';

export interface AdminClientConfig {
  /** The cloud's EC2 endpoint, e.g. http://127.0.0.1:8773; the admin API is under /admin/v1. */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
}

export interface AdminConnectionOptions {
  dataDir?: string;
  endpoint?: string;
}

/** The admin API refused a request: its error code, message and HTTP status. */
export class AdminApiError extends Error {
  constructor(readonly code: string, message: string, readonly status: number) {
    super(message);
    this.name = 'AdminApiError';
  }
}

const DEFAULT_DATA_DIR = '/var/lib/ironbark';
const DEFAULT_REGION = 'ironbark-1';
const REQUEST_TIMEOUT_MS = 60_000;

export function resolveAdminConfig(opts: AdminConnectionOptions, env: NodeJS.ProcessEnv = process.env): AdminClientConfig {
  let vars: Record<string, string | undefined>;
  if (opts.dataDir !== undefined) {
    vars = readEnvFile(opts.dataDir);
  } else if (env.AWS_ACCESS_KEY_ID) {
    vars = env;
  } else {
    const dataDir = env.IRONBARK_DATA_DIR ?? DEFAULT_DATA_DIR;
    if (!existsSync(join(dataDir, CREDENTIALS_ENV))) {
      throw new Error(`No admin credentials found: pass --data-dir DIR (the cloud's data directory, which holds ${CREDENTIALS_ENV}) or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.`);
    }
    vars = readEnvFile(dataDir);
  }
  const accessKeyId = vars.AWS_ACCESS_KEY_ID;
  const secretAccessKey = vars.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey) {
    throw new Error('The admin credentials are incomplete: both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are needed.');
  }
  // The endpoint that came with the credentials belongs to them; the environment's may be another cloud's.
  const endpoint = opts.endpoint ?? vars.AWS_ENDPOINT_URL_EC2 ?? env.AWS_ENDPOINT_URL_EC2;
  if (!endpoint) throw new Error('No endpoint known: pass --endpoint URL or set AWS_ENDPOINT_URL_EC2.');
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new Error(`The endpoint "${endpoint}" is not a URL such as http://127.0.0.1:8773.`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`The endpoint "${endpoint}" must start with http:// or https://.`);
  const region = vars.AWS_REGION || vars.AWS_DEFAULT_REGION || DEFAULT_REGION;
  return { endpoint, accessKeyId, secretAccessKey, region };
}

function readEnvFile(dataDir: string): Record<string, string> {
  try {
    return readCredentialsEnv(dataDir);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new Error(`There is no ${CREDENTIALS_ENV} in ${dataDir}: is it the data directory of a cloud?`);
    if (err.code === 'EACCES') throw new Error(`${join(dataDir, CREDENTIALS_ENV)} is not readable by this user (it is private to the cloud's owner).`);
    throw err;
  }
}

export interface SignedAdminRequest {
  url: string;
  method: string;
  /** Includes `host`; an HTTP client that sets Host itself may drop it. */
  headers: Record<string, string>;
  body?: string;
}

/** Builds and signs one admin API request; `path` is below /admin/v1, e.g. `/accounts`. */
export async function signAdminRequest(config: AdminClientConfig, method: string, path: string,
  options: { query?: Record<string, string | undefined>; body?: unknown; now?: Date } = {}): Promise<SignedAdminRequest> {
  const base = new URL(config.endpoint);
  const url = new URL(`${base.pathname.replace(/\/+$/, '')}/admin/v1${path}`, base);
  const query: Record<string, string> = {};
  for (const [k, v] of Object.entries(options.query ?? {})) {
    if (v !== undefined) {
      query[k] = v;
      url.searchParams.set(k, v);
    }
  }
  const headers: Record<string, string> = { host: url.host, accept: 'application/json' };
  let body: string | undefined;
  if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers['content-type'] = 'application/json';
  }
  const signer = new SignatureV4({
    credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey },
    region: config.region, service: 'ec2', sha256: Hash.bind(null, 'sha256'),
  });
  const signed = await signer.sign({
    method, protocol: url.protocol, hostname: url.hostname, port: url.port ? Number(url.port) : undefined,
    path: url.pathname, query, headers, body,
  }, { signingDate: options.now });
  const sent = { ...(signed.headers as Record<string, string>) };
  if (body !== undefined) sent['content-length'] = String(Buffer.byteLength(body));
  return { url: url.toString(), method, headers: sent, body };
}

export class AdminClient {
  constructor(readonly config: AdminClientConfig) {}

  /** Sends a signed request and returns the JSON answer; throws AdminApiError for an error answer. */
  async request<T = any>(method: string, path: string, options: { query?: Record<string, string | undefined>; body?: unknown } = {}): Promise<T> {
    const req = await signAdminRequest(this.config, method, path, options);
    const { status, text } = await send(req);
    let json: any;
    try {
      json = text === '' ? {} : JSON.parse(text);
    } catch {
      throw new AdminApiError('InvalidResponse',
        `The cloud at ${this.config.endpoint} answered ${method} ${path} with HTTP ${status} and no JSON: is this an Ironbark cloud with its admin API?`, status);
    }
    if (status >= 400) {
      const err = json?.error;
      throw new AdminApiError(String(err?.code ?? `HTTP${status}`), String(err?.message ?? `The request failed with HTTP ${status}.`), status);
    }
    return json as T;
  }
}

function send(req: SignedAdminRequest): Promise<{ status: number; text: string }> {
  const url = new URL(req.url);
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    // No keep-alive agent: a CLI run sends a request or two and should exit at once afterwards.
    const r = request(url, { method: req.method, headers: req.headers, agent: false, timeout: REQUEST_TIMEOUT_MS }, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    r.on('timeout', () => r.destroy(new Error(`The cloud at ${url.origin} did not answer within ${REQUEST_TIMEOUT_MS / 1000} s.`)));
    r.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ECONNREFUSED' || e.code === 'ENOTFOUND' || e.code === 'EHOSTUNREACH') {
        reject(new Error(`Cannot reach the cloud at ${url.origin} (${e.code}): is it running, and is the endpoint right?`));
      } else {
        reject(e);
      }
    });
    if (req.body !== undefined) r.write(req.body);
    r.end();
  });
}
