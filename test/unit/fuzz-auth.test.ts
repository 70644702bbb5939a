// Hostile input fuzzed over the signature code (issue 11, item 6), with fast-check. A request
// signed correctly, whatever its parameters and header values hold (Unicode-tricky, oversized,
// duplicated), authenticates: SigV4 as the AWS SDK's own signer signs it, SigV2 as the spec and
// boto sort and encode it. Any change to a signed request, and any hostile Authorization header,
// query string or SigV2 parameter set, is refused with an EC2 error (never a crash), whose
// document is well-formed; a SigV2 Expires more than a week ahead is never accepted.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { authenticate, type HttpRequestParts } from '../../src/auth/authenticate.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';
import { serializeError } from '../../src/protocol/xml-serializer.ts';
import { hostileString, parseWellFormed, TRICKY_CHARS } from '../helpers/hostile-input.ts';
import { resolvedKey, staticResolver } from './auth-helpers.ts';

const AKID = 'AKIAIOSFODNN7EXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const HOST = '127.0.0.1:8773';
const REGION = 'ironbark-1';
const NOW = new Date('2026-06-01T12:00:00Z');
const RUNS = Number(process.env.IRONBARK_FUZZ_RUNS ?? 300);
/** As a client's UTF-8 encoder sends it: a lone surrogate becomes U+FFFD. */
const wellFormed = (s: string) => s.replace(/\p{Cs}/gu, '\uFFFD');
const keys = () => staticResolver([resolvedKey(AKID, SECRET)]);

/** Codes an authentication failure may answer with. */
const AUTH_CODES = new Set(['AuthFailure', 'SignatureDoesNotMatch', 'IncompleteSignature', 'MissingAuthenticationToken', 'RequestExpired',
  'InvalidParameterValue', 'InvalidParameterCombination', 'MalformedQueryString', 'InvalidClientTokenId']);

async function refused(p: Promise<unknown>, what: string): Promise<Ec2Error> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof Ec2Error)) throw new Error(`${what}: threw a ${(err as Error)?.constructor?.name} instead of an EC2 error: ${(err as Error)?.message}`);
    assert.ok(AUTH_CODES.has(err.code), `${what}: unexpected code ${err.code}`);
    assert.ok(err.status >= 400 && err.status < 500, `${what}: status ${err.status}`);
    parseWellFormed(serializeError(err, 'req-fuzz'));
    return err;
  }
  throw new Error(`${what}: was accepted`);
}

/** The request as the server sees it: query and form parameters decoded as the endpoint decodes them. */
function parts(method: string, path: string, rawQuery: string, headers: Record<string, string>, body: string): HttpRequestParts {
  const params: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(rawQuery)) params[k] = v;
  if ((headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) for (const [k, v] of new URLSearchParams(body)) params[k] = v;
  return { method, host: HOST, path, rawQuery, headers, body: Buffer.from(body, 'utf8'), params };
}

/** Parameter names a client could send: EC2's, and odd ones. */
const paramName = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('Action', 'Version', 'InstanceId.1', 'Filter.1.Name', 'Filter.1.Value.1', 'TagSpecification.1.Tag.1.Value', 'UserData', 'Name.99999999', 'Filter.1.Value.0') },
  { weight: 2, arbitrary: hostileString.filter((s) => s.length > 0 && s.length < 200) },
);
const params = fc.array(fc.tuple(paramName, hostileString), { minLength: 1, maxLength: 8 });

async function signV4(pairs: Array<[string, string]>, headerValue: string) {
  const signer = new SignatureV4({ service: 'ec2', region: REGION, sha256: Hash.bind(null, 'sha256'), credentials: { accessKeyId: AKID, secretAccessKey: SECRET } });
  const body = new URLSearchParams(pairs).toString();
  const headers: Record<string, string> = { host: HOST, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8', 'x-ironbark-note': headerValue };
  const signed = await signer.sign({ method: 'POST', protocol: 'http:', hostname: '127.0.0.1', port: 8773, path: '/', headers, body }, { signingDate: NOW });
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(signed.headers)) out[k.toLowerCase()] = String(v);
  return { headers: out, body };
}

/** Header values HTTP can carry (Node refuses control characters and non-Latin-1 in headers). */
const headerValue = fc.string({ unit: fc.constantFrom(...'abc XYZ 019 \t!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~\u00a0\u00e9\u00ff'.split('')), maxLength: 40 });

describe('fuzz: SigV4', () => {
  it('a request the SDK signed authenticates, whatever its parameters hold', async () => {
    await fc.assert(fc.asyncProperty(params, headerValue, async (pairs, note) => {
      const { headers, body } = await signV4(pairs, note);
      const caller = await authenticate(parts('POST', '/', '', headers, body), keys(), NOW);
      assert.equal(caller.accessKeyId, AKID);
    }), { numRuns: RUNS });
  });

  it('any change to a signed request is refused with an EC2 error', async () => {
    const change = fc.oneof(
      fc.record({ kind: fc.constant('body' as const), extra: fc.tuple(paramName, hostileString) }),
      fc.record({ kind: fc.constant('signature' as const), at: fc.nat({ max: 63 }) }),
      fc.record({ kind: fc.constant('header' as const), value: headerValue }),
      fc.record({ kind: fc.constant('date' as const), value: fc.oneof(hostileString, fc.constantFrom('20260601T120000Z', '20260601T115000Z', '99999999T999999Z', '20261301T000000Z', '')) }),
      fc.record({ kind: fc.constant('query' as const), value: hostileString }),
    );
    await fc.assert(fc.asyncProperty(params, headerValue, change, async (pairs, note, c) => {
      const { headers, body } = await signV4(pairs, note);
      let newBody = body;
      let rawQuery = '';
      const h = { ...headers };
      switch (c.kind) {
        case 'body': newBody = `${body}&${new URLSearchParams([c.extra]).toString()}`; break;
        case 'signature': {
          const auth = h['authorization']!;
          const at = auth.indexOf('Signature=') + 'Signature='.length + c.at;
          h['authorization'] = auth.slice(0, at) + (auth[at] === '0' ? '1' : '0') + auth.slice(at + 1);
          break;
        }
        case 'header': fc.pre(c.value !== note); h['x-ironbark-note'] = c.value; break;
        case 'date': fc.pre(c.value !== h['x-amz-date']); h['x-amz-date'] = c.value; break;
        case 'query': fc.pre(c.value !== ''); rawQuery = encodeURIComponent(wellFormed(c.value)).replace(/%25/g, '%'); break;
      }
      await refused(authenticate(parts('POST', '/', rawQuery, h, newBody), keys(), NOW), c.kind);
    }), { numRuns: RUNS });
  });

  it('hostile Authorization headers and presigned query strings are refused with an EC2 error', async () => {
    const authorization = fc.oneof(
      hostileString,
      fc.tuple(hostileString, hostileString, hostileString).map(([c, s, h]) => `AWS4-HMAC-SHA256 Credential=${c}, SignedHeaders=${h}, Signature=${s}`),
      fc.array(fc.constantFrom('Credential=AKIAIOSFODNN7EXAMPLE/20260601/ironbark-1/ec2/aws4_request', 'Credential=a/b/c/d/e', 'Credential=////',
        'SignedHeaders=host;x-amz-date', 'SignedHeaders=', 'SignedHeaders=;;;;', 'Signature=00', 'Signature=', '=', ',', 'Credential==='), { maxLength: 6 })
        .map((pieces) => `AWS4-HMAC-SHA256 ${pieces.join(', ')}`),
    );
    const presigned = fc.array(fc.tuple(fc.constantFrom('X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders', 'X-Amz-Expires', 'Action'),
      fc.oneof(hostileString, fc.constantFrom('AWS4-HMAC-SHA256', 'AKIAIOSFODNN7EXAMPLE/20260601/ironbark-1/ec2/aws4_request', '20260601T120000Z', 'host', '604800', '604801', '-1', '99999999'))), { minLength: 1, maxLength: 8 })
      .map((pairs) => pairs.map(([k, v]) => `${k}=${encodeURIComponent(wellFormed(v))}`).join('&'));
    const raw = fc.oneof(presigned, hostileString.map((s) => wellFormed(s).replace(/[^\x21-\x7e]/gu, (ch) => encodeURIComponent(ch))), fc.constantFrom('%', '%E0%A4%A', '%ED%A0%80', '%FF', 'a=%', '&&&=&', 'X-Amz-Signature'));
    await fc.assert(fc.asyncProperty(fc.option(authorization, { nil: undefined }), raw, async (auth, rawQuery) => {
      const headers: Record<string, string> = { host: HOST, 'x-amz-date': '20260601T120000Z' };
      if (auth !== undefined) headers['authorization'] = auth;
      let req: HttpRequestParts;
      try {
        req = parts('GET', '/', rawQuery, headers, '');
      } catch {
        return; // URLSearchParams never throws, but the property is about authenticate
      }
      await refused(authenticate(req, keys(), NOW), `Authorization ${JSON.stringify(auth)?.slice(0, 80)} query ${JSON.stringify(rawQuery).slice(0, 80)}`);
    }), { numRuns: RUNS });
  });
});

// ---- SigV2, the client side written from the specification (boto 2 does the same) ----------------

function rfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

/** Names sorted by their UTF-8 bytes (the spec's "natural byte ordering"), then encoded. */
function signV2(method: string, params: Record<string, string>, algo: 'HmacSHA256' | 'HmacSHA1'): string {
  const names = Object.keys(params).sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
  const query = names.map((k) => `${rfc3986(k)}=${rfc3986(params[k]!)}`).join('&');
  return createHmac(algo === 'HmacSHA256' ? 'sha256' : 'sha1', SECRET).update(`${method}\n${HOST}\n/\n${query}`).digest('base64');
}

/** What a client sends over the wire: names and values as UTF-8 (lone surrogates become U+FFFD). */
const wellFormedParams = params.map((pairs) => {
  const out: Record<string, string> = {};
  for (const [k, v] of pairs) out[wellFormed(k)] = wellFormed(v);
  for (const reserved of ['AWSAccessKeyId', 'Signature', 'SignatureVersion', 'SignatureMethod', 'Timestamp', 'Expires']) delete out[reserved];
  return out;
});

function v2Request(method: 'GET' | 'POST', all: Record<string, string>): HttpRequestParts {
  const encoded = new URLSearchParams(Object.entries(all)).toString();
  return method === 'GET'
    ? parts('GET', '/', encoded, { host: HOST }, '')
    : parts('POST', '/', '', { host: HOST, 'content-type': 'application/x-www-form-urlencoded' }, encoded);
}

describe('fuzz: SigV2', () => {
  it('a request signed by the specification authenticates, whatever its parameters hold', async () => {
    await fc.assert(fc.asyncProperty(wellFormedParams, fc.constantFrom('GET' as const, 'POST' as const), fc.constantFrom('HmacSHA256' as const, 'HmacSHA1' as const), async (p, method, algo) => {
      const all = { ...p, AWSAccessKeyId: AKID, SignatureVersion: '2', SignatureMethod: algo, Timestamp: '2026-06-01T11:59:00Z' };
      const caller = await authenticate(v2Request(method, { ...all, Signature: signV2(method, all, algo) }), keys(), NOW);
      assert.equal(caller.accessKeyId, AKID);
    }), { numRuns: RUNS });
  });

  it('hostile SigV2 parameters are refused with an EC2 error; an Expires beyond a week never passes', async () => {
    const envelope = fc.record({
      AWSAccessKeyId: fc.oneof(fc.constant(AKID), hostileString),
      SignatureVersion: fc.oneof(fc.constantFrom('2', '1', '0', '4', ''), hostileString),
      SignatureMethod: fc.oneof(fc.constantFrom('HmacSHA256', 'HmacSHA1', 'hmacsha256', 'toString', '__proto__', 'HmacMD5'), hostileString),
      Timestamp: fc.oneof(fc.constantFrom('2026-06-01T11:59:00Z', '2026-06-01T11:59:00', '2026-06-01T11:59:00+14:00', '2026-02-30T00:00:00Z', '+275760-09-13T00:00:00Z', '0000-00-00T00:00:00Z'), hostileString),
      Expires: fc.oneof(fc.constantFrom('2026-06-08T12:10:00Z', '2026-06-09T00:00:00Z', '2099-01-01T00:00:00Z', '9999-12-31T23:59:59Z', '2026-06-01T12:30:00Z'), hostileString),
      Signature: fc.oneof(hostileString, fc.constantFrom('', '====', 'AAAA')),
    }, { requiredKeys: [] });
    await fc.assert(fc.asyncProperty(wellFormedParams, envelope, fc.boolean(), async (p, env, signIt) => {
      const all: Record<string, string> = { ...p };
      for (const [k, v] of Object.entries(env)) all[k] = wellFormed(v);
      const method = (all['SignatureMethod'] === 'HmacSHA1' ? 'HmacSHA1' : 'HmacSHA256') as 'HmacSHA256' | 'HmacSHA1';
      if (signIt) { const { Signature: _, ...rest } = all; all['Signature'] = signV2('POST', rest, method); }
      const req = v2Request('POST', all);
      const expires = Date.parse(all['Expires'] ?? '');
      const farAhead = Number.isFinite(expires) && expires - NOW.getTime() > 7 * 24 * 3600_000 + 5 * 60_000;
      const acceptable = signIt && !farAhead && all['AWSAccessKeyId'] === AKID && (all['SignatureVersion'] ?? '2') === '2';
      try {
        await authenticate(req, keys(), NOW);
      } catch (err) {
        await refused(Promise.reject(err), 'SigV2');
        return;
      }
      assert.ok(acceptable, `accepted: ${JSON.stringify(env).slice(0, 300)}`);
    }), { numRuns: RUNS, examples: [[{}, { AWSAccessKeyId: AKID, SignatureVersion: '2', SignatureMethod: 'HmacSHA256', Expires: '2099-01-01T00:00:00Z' }, true]] });
  });

  it('parameter names that sort differently raw and encoded still verify (the spec sorts names before encoding)', async () => {
    for (const names of [['a.b', 'a/b'], ['x~', 'xé'], ['A', 'B\u{1F600}', 'B\uFFFD'], TRICKY_CHARS.filter((c) => c.length > 0).map((c) => `n${wellFormed(c)}`)]) {
      const all: Record<string, string> = { AWSAccessKeyId: AKID, SignatureVersion: '2', SignatureMethod: 'HmacSHA256', Timestamp: '2026-06-01T11:59:00Z' };
      for (const n of names) all[n] = 'v';
      const caller = await authenticate(v2Request('POST', { ...all, Signature: signV2('POST', all, 'HmacSHA256') }), keys(), NOW);
      assert.equal(caller.accessKeyId, AKID, names.join(' '));
    }
  });
});
