// AWS Signature Version 4 for the console's admin API calls, on WebCrypto so that it runs in the
// browser and, unchanged, in Node 20 (globalThis.crypto) where the tests import it. It mirrors
// what the server recomputes (src/auth/sigv4.ts): service-style double-encoded path, sorted
// query, the signed headers host, x-amz-date and (with a body) content-type, and the SHA-256 of
// the body as the payload hash.

const ALGORITHM = 'AWS4-HMAC-SHA256';
const TERMINATOR = 'aws4_request';
const encoder = new TextEncoder();

/** RFC 3986 percent-encoding: only A-Z a-z 0-9 - _ . ~ stay as they are. */
export function uriEncode(s) {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function sha256Hex(data) {
  return hex(await crypto.subtle.digest('SHA-256', typeof data === 'string' ? encoder.encode(data) : data));
}

async function hmac(key, data) {
  const raw = typeof key === 'string' ? encoder.encode(key) : key;
  const cryptoKey = await crypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return crypto.subtle.sign('HMAC', cryptoKey, encoder.encode(data));
}

/** The path as sent (already encoded once), each segment encoded once more; empty and dot segments dropped. */
export function canonicalPath(path) {
  if (!path || path === '/') return '/';
  const segments = [];
  for (const seg of path.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') segments.pop();
    else segments.push(uriEncode(seg));
  }
  const trail = segments.length > 0 && path.endsWith('/') ? '/' : '';
  return '/' + segments.join('/') + trail;
}

function decodeQueryPart(s) {
  return decodeURIComponent(s.replace(/\+/g, ' '));
}

/** The query string (without '?') as SigV4 wants it: pairs decoded, re-encoded and sorted. */
export function canonicalQuery(search) {
  const raw = search.startsWith('?') ? search.slice(1) : search;
  const pairs = [];
  for (const part of raw.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const name = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? '' : part.slice(eq + 1);
    pairs.push([uriEncode(decodeQueryPart(name)), uriEncode(decodeQueryPart(value))]);
  }
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join('&');
}

/** `2026-11-24T18:44:02.123Z` -> `20261124T184402Z`. */
export function amzDate(date) {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '');
}

/**
 * Signs a request and returns the headers to send with it (without `host`, which fetch sets from
 * the URL and which is signed as the URL's host).
 *
 * @param {{ method: string, url: string | URL, body?: string, contentType?: string,
 *           accessKeyId: string, secretAccessKey: string, region: string, service?: string, now?: Date }} request
 * @returns {Promise<Record<string, string>>}
 */
export async function signRequest(request) {
  const { method, body, accessKeyId, secretAccessKey, region } = request;
  const service = request.service ?? 'ec2';
  const url = new URL(request.url);
  const longDate = amzDate(request.now ?? new Date());
  const scope = `${longDate.slice(0, 8)}/${region}/${service}/${TERMINATOR}`;

  const headers = { 'x-amz-date': longDate };
  if (body !== undefined) headers['content-type'] = request.contentType ?? 'application/json';
  const signed = { ...headers, host: url.host };
  const names = Object.keys(signed).sort();
  const headerBlock = names.map((n) => `${n}:${String(signed[n]).trim().replace(/\s+/g, ' ')}\n`).join('');
  const canonical = [
    method.toUpperCase(), canonicalPath(url.pathname), canonicalQuery(url.search),
    headerBlock, names.join(';'), await sha256Hex(body ?? ''),
  ].join('\n');
  const stringToSign = `${ALGORITHM}\n${longDate}\n${scope}\n${await sha256Hex(canonical)}`;

  let key = await hmac(`AWS4${secretAccessKey}`, longDate.slice(0, 8));
  key = await hmac(key, region);
  key = await hmac(key, service);
  key = await hmac(key, TERMINATOR);
  const signature = hex(await hmac(key, stringToSign));
  headers.authorization = `${ALGORITHM} Credential=${accessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
  return headers;
}
