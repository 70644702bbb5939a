// AWS Signature Version 4, verified server-side by recomputing the signature from the request as
// received. Own implementation on node:crypto: the server needs only the HMAC-SHA256 variant, and
// doing it directly avoids per-request async hops and lets us cache derived signing keys.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { Ec2Error, excerpt } from '../protocol/errors.ts';
import type { HttpRequestParts } from './authenticate.ts';

export const SIGV4_ALGORITHM = 'AWS4-HMAC-SHA256';
const TERMINATOR = 'aws4_request';
const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
/** Clock skew allowed between client and server, and the slack on presigned URL start times. */
export const MAX_SKEW_MS = 5 * 60 * 1000;
/** SigV4 presigned URLs may live at most a week. */
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;

/** What a SigV4 request claims: who signed it, for which scope and time, over which headers. */
export interface SigV4Claim {
  presigned: boolean;
  accessKeyId: string;
  scopeDate: string;      // YYYYMMDD
  region: string;
  service: string;
  amzDate: string;        // YYYYMMDDTHHMMSSZ, as it enters the string to sign
  signedHeaders: string[];
  signature: string;      // lower-case hex
  expiresSeconds?: number; // presigned only
}

export type QueryPairs = Array<[string, string]>;

const LONE_SURROGATE = /\p{Cs}/gu;

/** RFC 3986 percent-encoding, as SigV4 canonicalisation requires (only A-Z a-z 0-9 - _ . ~ stay). */
export function uriEncode(s: string): string {
  // A lone surrogate cannot be UTF-8 encoded (encodeURIComponent throws); clients send U+FFFD for it.
  return encodeURIComponent(s.replace(LONE_SURROGATE, '\uFFFD')).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function decodeComponent(s: string): string {
  // Query strings from form-style encoders carry spaces as '+'; SigV4 clients never send a raw '+'.
  const plain = s.includes('+') ? s.replace(/\+/g, ' ') : s;
  if (!plain.includes('%')) return plain;
  try {
    return decodeURIComponent(plain);
  } catch {
    throw new Ec2Error('MalformedQueryString', 'The query string is not a valid percent-encoded string.');
  }
}

/** The raw query string as decoded name/value pairs, in order, duplicates kept. */
export function parseQueryPairs(rawQuery: string): QueryPairs {
  const pairs: QueryPairs = [];
  if (!rawQuery) return pairs;
  for (const part of rawQuery.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq < 0) pairs.push([decodeComponent(part), '']);
    else pairs.push([decodeComponent(part.slice(0, eq)), decodeComponent(part.slice(eq + 1))]);
  }
  return pairs;
}

/** Sorted, re-encoded query string; X-Amz-Signature is never part of what is signed. */
export function canonicalQueryString(pairs: QueryPairs): string {
  const encoded: Array<[string, string]> = [];
  for (const [k, v] of pairs) {
    if (k.toLowerCase() === 'x-amz-signature') continue;
    encoded.push([uriEncode(k), uriEncode(v)]);
  }
  encoded.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  let out = '';
  for (let i = 0; i < encoded.length; i++) out += (i ? '&' : '') + encoded[i]![0] + '=' + encoded[i]![1];
  return out;
}

/**
 * The canonical URI of a non-S3 service: the path with empty and dot segments removed, each
 * segment URI-encoded once more (clients sign the path they send, which is already encoded once).
 */
export function canonicalPath(rawPath: string): string {
  const path = rawPath || '/';
  if (path === '/') return '/';
  const segments: string[] = [];
  for (const seg of path.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') segments.pop();
    else segments.push(uriEncode(seg));
  }
  const lead = path.startsWith('/') ? '/' : '';
  const trail = segments.length > 0 && path.endsWith('/') ? '/' : '';
  return lead + segments.join('/') + trail;
}

function incomplete(message: string): Ec2Error {
  return new Ec2Error('IncompleteSignature', message);
}

function parseCredential(credential: string, where: string): Pick<SigV4Claim, 'accessKeyId' | 'scopeDate' | 'region' | 'service'> {
  const parts = credential.split('/');
  if (parts.length !== 5 || parts.some((p) => p === '')) {
    throw incomplete(`${where} Credential is malformed: expected "<AccessKeyId>/<YYYYMMDD>/<region>/<service>/aws4_request", got "${excerpt(credential, 128)}".`);
  }
  const [accessKeyId, scopeDate, region, service, terminator] = parts as [string, string, string, string, string];
  if (!/^\d{8}$/.test(scopeDate)) throw incomplete(`${where} Credential has an invalid date "${excerpt(scopeDate)}"; expected YYYYMMDD.`);
  if (terminator !== TERMINATOR) {
    throw incomplete(`Credential should be scoped with a valid terminator: '${TERMINATOR}', not '${excerpt(terminator)}'.`);
  }
  return { accessKeyId, scopeDate, region, service };
}

function parseSignedHeaders(value: string): string[] {
  return value.split(';').map((h) => h.trim().toLowerCase()).filter((h) => h !== '');
}

const LONG_DATE = /^\d{8}T\d{6}Z$/;

/** `Mon, 02 Jan 2006 15:04:05 GMT` (the HTTP Date header) as a SigV4 long date. */
function httpDateToLongDate(value: string): string | undefined {
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) return undefined;
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '');
}

export function longDateToMs(longDate: string): number {
  const iso = `${longDate.slice(0, 4)}-${longDate.slice(4, 6)}-${longDate.slice(6, 8)}T${longDate.slice(9, 11)}:${longDate.slice(11, 13)}:${longDate.slice(13, 15)}Z`;
  return Date.parse(iso);
}

/** Parses `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`. */
export function parseAuthorizationHeader(authorization: string, headers: Record<string, string>): SigV4Claim {
  const rest = authorization.slice(SIGV4_ALGORITHM.length).trim();
  const fields: Record<string, string> = {};
  for (const piece of rest.split(',')) {
    const eq = piece.indexOf('=');
    if (eq < 0) continue;
    fields[piece.slice(0, eq).trim()] = piece.slice(eq + 1).trim();
  }
  const missing: string[] = [];
  for (const name of ['Credential', 'Signature', 'SignedHeaders']) {
    if (!fields[name]) missing.push(`Authorization header requires '${name}' parameter.`);
  }
  let amzDate: string | undefined = headers['x-amz-date'];
  if (amzDate === undefined && headers['date'] !== undefined) amzDate = httpDateToLongDate(headers['date']);
  if (amzDate === undefined) missing.push("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
  if (missing.length > 0) throw incomplete(`${missing.join(' ')} Authorization=${excerpt(authorization, 512)}`);
  if (!LONG_DATE.test(amzDate!)) {
    throw incomplete(`X-Amz-Date must be in the ISO8601 basic format YYYYMMDD'T'HHMMSS'Z', got "${excerpt(amzDate)}".`);
  }
  const signedHeaders = parseSignedHeaders(fields['SignedHeaders']!);
  return {
    presigned: false,
    ...parseCredential(fields['Credential']!, 'Authorization header'),
    amzDate: amzDate!,
    signedHeaders,
    signature: fields['Signature']!.toLowerCase(),
  };
}

/** Parses the X-Amz-* parameters of a presigned URL. */
export function parsePresignedQuery(pairs: QueryPairs): SigV4Claim {
  const q = new Map<string, string>();
  for (const [k, v] of pairs) if (k.startsWith('X-Amz-') && !q.has(k)) q.set(k, v);
  const required = ['X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders', 'X-Amz-Expires'];
  const missing = required.filter((name) => !q.get(name));
  if (missing.length > 0) {
    throw incomplete(`AWS query-string parameters must include ${missing.map((m) => `'${m}'`).join(', ')}. Re-examine the query-string parameters.`);
  }
  if (q.get('X-Amz-Algorithm') !== SIGV4_ALGORITHM) {
    throw incomplete(`X-Amz-Algorithm only supports "${SIGV4_ALGORITHM}".`);
  }
  const amzDate = q.get('X-Amz-Date')!;
  if (!LONG_DATE.test(amzDate)) {
    throw incomplete(`X-Amz-Date must be in the ISO8601 basic format YYYYMMDD'T'HHMMSS'Z', got "${excerpt(amzDate)}".`);
  }
  const expiresRaw = q.get('X-Amz-Expires')!;
  const expiresSeconds = /^\d{1,7}$/.test(expiresRaw) ? Number(expiresRaw) : NaN;
  if (!(expiresSeconds >= 0 && expiresSeconds <= MAX_PRESIGN_SECONDS)) {
    throw new Ec2Error('AuthFailure', `X-Amz-Expires must be a number of seconds between 0 and ${MAX_PRESIGN_SECONDS} (one week), got "${excerpt(expiresRaw)}".`);
  }
  return {
    presigned: true,
    ...parseCredential(q.get('X-Amz-Credential')!, 'X-Amz-Credential'),
    amzDate,
    signedHeaders: parseSignedHeaders(q.get('X-Amz-SignedHeaders')!),
    signature: q.get('X-Amz-Signature')!.toLowerCase(),
    expiresSeconds,
  };
}

/** Checks the claim's scope date and freshness against the server clock (before any key lookup). */
export function checkSigV4Time(claim: SigV4Claim, now: Date): void {
  if (claim.scopeDate !== claim.amzDate.slice(0, 8)) {
    throw new Ec2Error('SignatureDoesNotMatch',
      `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${excerpt(claim.scopeDate)}' != '${claim.amzDate.slice(0, 8)}', from '${excerpt(claim.amzDate)}'.`);
  }
  const signedAt = longDateToMs(claim.amzDate);
  if (Number.isNaN(signedAt)) throw incomplete(`X-Amz-Date "${excerpt(claim.amzDate)}" is not a valid date.`);
  const nowMs = now.getTime();
  if (signedAt - nowMs > MAX_SKEW_MS) throw new Ec2Error('RequestExpired', 'Request has expired.');
  if (claim.presigned) {
    if (signedAt + claim.expiresSeconds! * 1000 < nowMs) throw new Ec2Error('RequestExpired', 'Request has expired.');
  } else if (nowMs - signedAt > MAX_SKEW_MS) {
    throw new Ec2Error('RequestExpired', 'Request has expired.');
  }
  if (!claim.signedHeaders.includes('host')) {
    throw incomplete("'Host' must be a 'SignedHeader' in the AWS Authorization.");
  }
}

// Derived signing keys depend only on (secret, day, region, service): one HMAC chain per key per
// day instead of four extra HMACs on every request.
const SIGNING_KEY_CACHE_LIMIT = 10_000;
const signingKeys = new Map<string, Buffer>();

export function signingKey(secret: string, scopeDate: string, region: string, service: string): Buffer {
  const cacheKey = `${secret}\n${scopeDate}\n${region}\n${service}`;
  let key = signingKeys.get(cacheKey);
  if (key === undefined) {
    const kDate = createHmac('sha256', `AWS4${secret}`).update(scopeDate).digest();
    const kRegion = createHmac('sha256', kDate).update(region).digest();
    const kService = createHmac('sha256', kRegion).update(service).digest();
    key = createHmac('sha256', kService).update(TERMINATOR).digest();
    if (signingKeys.size >= SIGNING_KEY_CACHE_LIMIT) signingKeys.clear();
    signingKeys.set(cacheKey, key);
  }
  return key;
}

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

function payloadHash(req: HttpRequestParts, pairs: QueryPairs): string {
  if (req.body.length === 0) {
    // A body-less request (a presigned GET) may declare its payload unsigned; there is nothing to protect.
    const declared = req.headers['x-amz-content-sha256'] ?? pairs.find(([k]) => k === 'X-Amz-Content-Sha256')?.[1];
    return declared === UNSIGNED_PAYLOAD ? UNSIGNED_PAYLOAD : EMPTY_SHA256;
  }
  return createHash('sha256').update(req.body).digest('hex');
}

export function canonicalRequest(req: HttpRequestParts, claim: SigV4Claim, pairs: QueryPairs): string {
  const names = [...claim.signedHeaders].sort();
  let headerBlock = '';
  for (const name of names) {
    const raw = req.headers[name] ?? (name === 'host' ? req.host : '');
    // Only spaces and tabs are HTTP whitespace: a no-break space (0xA0) is part of the value, as the SDKs sign it.
    headerBlock += `${name}:${raw.replace(/[ \t]+/g, ' ').replace(/^ | $/g, '')}\n`;
  }
  return `${req.method.toUpperCase()}\n${canonicalPath(req.path)}\n${canonicalQueryString(pairs)}\n${headerBlock}\n${names.join(';')}\n${payloadHash(req, pairs)}`;
}

export function stringToSign(claim: SigV4Claim, canonical: string): string {
  const scope = `${claim.scopeDate}/${claim.region}/${claim.service}/${TERMINATOR}`;
  return `${SIGV4_ALGORITHM}\n${claim.amzDate}\n${scope}\n${createHash('sha256').update(canonical).digest('hex')}`;
}

/** Recomputes the signature with `secret` and compares it in constant time. */
export function verifySigV4(req: HttpRequestParts, claim: SigV4Claim, pairs: QueryPairs, secret: string): boolean {
  const key = signingKey(secret, claim.scopeDate, claim.region, claim.service);
  const expected = createHmac('sha256', key).update(stringToSign(claim, canonicalRequest(req, claim, pairs))).digest();
  if (!/^[0-9a-f]{64}$/.test(claim.signature)) return false;
  return timingSafeEqual(expected, Buffer.from(claim.signature, 'hex'));
}
