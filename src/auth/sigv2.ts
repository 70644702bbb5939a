// AWS Signature Version 2 for query-API clients that predate SigV4 (euca2ools, boto 2).
// String to sign: METHOD \n host \n path \n sorted RFC 3986-encoded params (all but Signature),
// signed with HMAC-SHA256 or HMAC-SHA1 and sent base64-encoded in the Signature parameter.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Ec2Error, excerpt } from '../protocol/errors.ts';
import type { HttpRequestParts } from './authenticate.ts';
import { MAX_SKEW_MS, uriEncode } from './sigv4.ts';

const HMAC_BY_METHOD: Record<string, string> = { HmacSHA256: 'sha256', HmacSHA1: 'sha1' };
/**
 * How far ahead an `Expires` may lie: a week, as for presigned SigV4 URLs, plus the clock skew
 * we forgive. Without a bound, a link signed to expire in 2099 would be a password that never
 * expires for anyone who ever sees it.
 */
const MAX_EXPIRES_AHEAD_MS = 7 * 24 * 3600 * 1000 + MAX_SKEW_MS;

export interface SigV2Claim {
  accessKeyId: string;
  hmac: string;          // node:crypto digest name
  signature: Buffer;
}

/** Sorted `name=value` pairs, RFC 3986-encoded, without Signature. */
export function sigV2CanonicalParams(params: Record<string, string>): string {
  // The spec sorts the names by their UTF-8 bytes before encoding them (boto and the AWS SDKs do):
  // sorting the encoded names differs where one holds a character that encoding puts before
  // letters (`a/b` and `a.b`, `[` and `Action`), and such a request would never verify.
  const names = Object.keys(params).filter((n) => n !== 'Signature')
    .map((n) => ({ n, bytes: Buffer.from(n.replace(/\p{Cs}/gu, '\uFFFD'), 'utf8') }))
    .sort((a, b) => Buffer.compare(a.bytes, b.bytes))
    .map(({ n }) => n);
  return names.map((n) => `${uriEncode(n)}=${uriEncode(params[n]!)}`).join('&');
}

export function sigV2StringToSign(method: string, host: string, path: string, params: Record<string, string>): string {
  return `${method.toUpperCase()}\n${host.toLowerCase()}\n${path || '/'}\n${sigV2CanonicalParams(params)}`;
}

function parseTimestamp(value: string, name: string): number {
  const iso = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$/.exec(value);
  // Timestamps without a zone are UTC in the SigV2 spec (Date.parse would read them as local time).
  const ms = iso ? Date.parse(iso[2] ? value : `${value}Z`) : NaN;
  if (Number.isNaN(ms)) {
    throw new Ec2Error('InvalidParameterValue', `Value (${excerpt(value)}) for parameter ${name} is invalid. Expected an ISO 8601 timestamp such as 2011-10-03T15:19:30Z.`);
  }
  return ms;
}

/** Validates the SigV2 parameters and their freshness (before any key lookup). */
export function parseSigV2(params: Record<string, string>, now: Date): SigV2Claim {
  const version = params['SignatureVersion'];
  if (version !== undefined && version !== '2') {
    throw new Ec2Error('AuthFailure', `Signature version ${excerpt(version)} is not supported; sign requests with Signature Version 2 or 4.`);
  }
  for (const name of ['AWSAccessKeyId', 'Signature', 'SignatureVersion', 'SignatureMethod']) {
    if (!params[name]) throw new Ec2Error('IncompleteSignature', `The request must contain the parameter ${name}.`);
  }
  const method = params['SignatureMethod']!;
  // Own entries only: `toString` and the like are unknown methods, not inherited functions.
  const hmac = Object.hasOwn(HMAC_BY_METHOD, method) ? HMAC_BY_METHOD[method] : undefined;
  if (hmac === undefined) {
    throw new Ec2Error('InvalidParameterValue', `Value (${excerpt(method)}) for parameter SignatureMethod is invalid. Supported methods are HmacSHA256 and HmacSHA1.`);
  }
  const timestamp = params['Timestamp'];
  const expires = params['Expires'];
  if (timestamp !== undefined && expires !== undefined) {
    throw new Ec2Error('InvalidParameterCombination', 'The parameters Timestamp and Expires cannot be used together.');
  }
  if (timestamp === undefined && expires === undefined) {
    throw new Ec2Error('IncompleteSignature', 'The request must contain either a valid (unexpired) Timestamp or Expires parameter.');
  }
  const nowMs = now.getTime();
  if (timestamp !== undefined) {
    const at = parseTimestamp(timestamp, 'Timestamp');
    if (Math.abs(nowMs - at) > MAX_SKEW_MS) throw new Ec2Error('RequestExpired', 'Request has expired.');
  } else {
    const until = parseTimestamp(expires!, 'Expires');
    if (until < nowMs) throw new Ec2Error('RequestExpired', 'Request has expired.');
    // EC2 answers RequestExpired for a date stamp too far in the future as well.
    if (until - nowMs > MAX_EXPIRES_AHEAD_MS) {
      throw new Ec2Error('RequestExpired', `The Expires parameter (${excerpt(expires)}) is more than 7 days after the server time; sign requests that expire within a week.`);
    }
  }
  // A '+' sent unencoded arrives as a space after form decoding; base64 never contains spaces.
  const signature = Buffer.from(params['Signature']!.replace(/ /g, '+'), 'base64');
  return { accessKeyId: params['AWSAccessKeyId']!, hmac, signature };
}

/** Host forms a client may have signed: as sent, and without an explicit default port. */
function hostCandidates(host: string): string[] {
  const lower = host.toLowerCase();
  const stripped = lower.replace(/:(80|443)$/, '');
  return stripped === lower ? [lower] : [lower, stripped];
}

export function verifySigV2(req: HttpRequestParts, claim: SigV2Claim, secret: string): boolean {
  const host = req.headers['host'] ?? req.host;
  let ok = false;
  for (const candidate of hostCandidates(host)) {
    const expected = createHmac(claim.hmac, secret).update(sigV2StringToSign(req.method, candidate, req.path, req.params)).digest();
    if (expected.length === claim.signature.length && timingSafeEqual(expected, claim.signature)) ok = true;
  }
  return ok;
}
