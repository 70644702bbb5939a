import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { authenticate, type HttpRequestParts } from '../../src/auth/authenticate.ts';
import { sigV2StringToSign } from '../../src/auth/sigv2.ts';
import { rejectsWith, resolvedKey, staticResolver } from './auth-helpers.ts';

const AKID = 'AKIAIOSFODNN7EXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';

function keys() {
  return staticResolver([resolvedKey(AKID, SECRET), resolvedKey('AKIAINACTIVEKEY00000', SECRET, 'Inactive')]);
}

// The client side, written from the SigV2 specification independently of src/auth/sigv2.ts.
function rfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

function clientSign(method: string, host: string, path: string, params: Record<string, string>, secret: string, algo: 'HmacSHA256' | 'HmacSHA1'): string {
  const query = Object.keys(params).sort().map((k) => `${rfc3986(k)}=${rfc3986(params[k]!)}`).join('&');
  const toSign = `${method}\n${host.toLowerCase()}\n${path}\n${query}`;
  return createHmac(algo === 'HmacSHA256' ? 'sha256' : 'sha1', secret).update(toSign).digest('base64');
}

function isoSeconds(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

interface SignOptions {
  method?: 'GET' | 'POST';
  host?: string;
  akid?: string;
  secret?: string;
  algo?: 'HmacSHA256' | 'HmacSHA1';
  extra?: Record<string, string>;
  signedHost?: string;
}

/** A request as euca2ools sends it: every parameter in the query (GET) or in a form body (POST). */
function signedRequest(action: Record<string, string>, o: SignOptions = {}): HttpRequestParts {
  const method = o.method ?? 'GET';
  const host = o.host ?? '127.0.0.1:8773';
  const params: Record<string, string> = {
    ...action,
    AWSAccessKeyId: o.akid ?? AKID,
    SignatureVersion: '2',
    SignatureMethod: o.algo ?? 'HmacSHA256',
    ...(o.extra ?? { Timestamp: isoSeconds(new Date()) }),
  };
  params['Signature'] = clientSign(method, o.signedHost ?? host, '/', params, o.secret ?? SECRET, o.algo ?? 'HmacSHA256');
  const encoded = new URLSearchParams(params).toString();
  const headers: Record<string, string> = { host };
  if (method === 'POST') headers['content-type'] = 'application/x-www-form-urlencoded; charset=UTF-8';
  return {
    method, host, path: '/',
    rawQuery: method === 'GET' ? encoded : '',
    headers,
    body: method === 'POST' ? Buffer.from(encoded) : Buffer.alloc(0),
    params: Object.fromEntries(new URLSearchParams(encoded)),
  };
}

describe('SigV2', () => {
  test('the string to sign matches the worked example of the AWS SigV2 documentation', () => {
    const params = {
      Action: 'DescribeJobFlows', Version: '2009-03-31', AWSAccessKeyId: AKID,
      SignatureVersion: '2', SignatureMethod: 'HmacSHA256', Timestamp: '2011-10-03T15:19:30',
    };
    const toSign = sigV2StringToSign('GET', 'elasticmapreduce.amazonaws.com', '/', params);
    assert.equal(toSign, 'GET\nelasticmapreduce.amazonaws.com\n/\n' +
      'AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Action=DescribeJobFlows&SignatureMethod=HmacSHA256&SignatureVersion=2&Timestamp=2011-10-03T15%3A19%3A30&Version=2009-03-31');
    assert.equal(createHmac('sha256', SECRET).update(toSign).digest('base64'), 'i91nKc4PWAt0JJIdXwz9HxZCJDdiy6cf/Mj6vPxyYIs=');
  });

  test('the documented example request authenticates at its own time', async () => {
    const params: Record<string, string> = {
      Action: 'DescribeJobFlows', Version: '2009-03-31', AWSAccessKeyId: AKID, SignatureVersion: '2',
      SignatureMethod: 'HmacSHA256', Timestamp: '2011-10-03T15:19:30', Signature: 'i91nKc4PWAt0JJIdXwz9HxZCJDdiy6cf/Mj6vPxyYIs=',
    };
    const rawQuery = new URLSearchParams(params).toString();
    const req: HttpRequestParts = {
      method: 'GET', host: 'elasticmapreduce.amazonaws.com', path: '/', rawQuery,
      headers: { host: 'elasticmapreduce.amazonaws.com' }, body: Buffer.alloc(0), params,
    };
    const caller = await authenticate(req, keys(), new Date('2011-10-03T15:21:00Z'));
    assert.equal(caller.accessKeyId, AKID);
    await rejectsWith(authenticate(req, keys(), new Date('2011-10-03T16:00:00Z')), 'RequestExpired', 400);
  });

  test('GET and POST requests signed with HmacSHA256 and HmacSHA1 authenticate', async () => {
    const action = { Action: 'DescribeInstances', Version: '2016-11-15', 'InstanceId.1': 'i-0123456789abcdef0', 'Filter.1.Value.1': 'a b+c/~*' };
    for (const method of ['GET', 'POST'] as const) {
      for (const algo of ['HmacSHA256', 'HmacSHA1'] as const) {
        const caller = await authenticate(signedRequest(action, { method, algo }), keys());
        assert.equal(caller.accessKeyId, AKID, `${method} ${algo}`);
      }
    }
  });

  test('the host is signed in lower case and an explicit default port may be left out', async () => {
    const upper = signedRequest({ Action: 'DescribeRegions' }, { host: 'Cloud.Example:8773' });
    assert.equal((await authenticate(upper, keys())).accessKeyId, AKID);
    const defaultPort = signedRequest({ Action: 'DescribeRegions' }, { host: 'cloud.example:80', signedHost: 'cloud.example' });
    assert.equal((await authenticate(defaultPort, keys())).accessKeyId, AKID);
    const otherPort = signedRequest({ Action: 'DescribeRegions' }, { host: 'cloud.example:8773', signedHost: 'cloud.example' });
    await rejectsWith(authenticate(otherPort, keys()), 'SignatureDoesNotMatch', 403);
  });

  test('a signature whose "+" arrived as a space still verifies', async () => {
    // Find a request whose signature contains '+', as a sloppy client would leave unencoded.
    for (let i = 0; i < 200; i++) {
      const req = signedRequest({ Action: 'DescribeRegions', Nonce: String(i) });
      if (!req.params['Signature']!.includes('+')) continue;
      req.params['Signature'] = req.params['Signature']!.replace(/\+/g, ' ');
      assert.equal((await authenticate(req, keys())).accessKeyId, AKID);
      return;
    }
    assert.fail('no signature with "+" among 200 requests');
  });

  test('Expires in the future is accepted, in the past answers RequestExpired', async () => {
    const future = signedRequest({ Action: 'DescribeRegions' }, { extra: { Expires: isoSeconds(new Date(Date.now() + 3600_000)) } });
    assert.equal((await authenticate(future, keys())).accessKeyId, AKID);
    const past = signedRequest({ Action: 'DescribeRegions' }, { extra: { Expires: isoSeconds(new Date(Date.now() - 1000)) } });
    await rejectsWith(authenticate(past, keys()), 'RequestExpired', 400, /^Request has expired\.$/);
  });

  test('an Expires more than a week ahead answers RequestExpired, like a SigV4 presigned URL would', async () => {
    const now = new Date('2030-06-01T12:00:00Z');
    const at = (ms: number) => signedRequest({ Action: 'DescribeRegions' }, { extra: { Expires: isoSeconds(new Date(now.getTime() + ms)) } });
    const week = 7 * 24 * 3600_000;
    assert.equal((await authenticate(at(week), keys(), now)).accessKeyId, AKID);
    await rejectsWith(authenticate(at(week + 3600_000), keys(), now), 'RequestExpired', 400, /more than 7 days/);
    const forever = signedRequest({ Action: 'DescribeRegions' }, { extra: { Expires: '2099-12-31T23:59:59Z' } });
    await rejectsWith(authenticate(forever, keys()), 'RequestExpired', 400, /Expires parameter \(2099-12-31T23:59:59Z\)/);
  });

  test('a Timestamp more than five minutes off answers RequestExpired', async () => {
    const req = signedRequest({ Action: 'DescribeRegions' });
    await rejectsWith(authenticate(req, keys(), new Date(Date.now() + 6 * 60_000)), 'RequestExpired', 400);
    await rejectsWith(authenticate(req, keys(), new Date(Date.now() - 6 * 60_000)), 'RequestExpired', 400);
  });

  test('unknown key, inactive key, wrong secret, tampered parameter', async () => {
    await rejectsWith(authenticate(signedRequest({ Action: 'DescribeRegions' }, { akid: 'AKIANOSUCHKEY0000000' }), keys()), 'AuthFailure', 401);
    await rejectsWith(authenticate(signedRequest({ Action: 'DescribeRegions' }, { akid: 'AKIAINACTIVEKEY00000' }), keys()), 'AuthFailure', 401);
    await rejectsWith(authenticate(signedRequest({ Action: 'DescribeRegions' }, { secret: 'wrong' }), keys()), 'SignatureDoesNotMatch', 403);
    const tampered = signedRequest({ Action: 'TerminateInstances', 'InstanceId.1': 'i-0123456789abcdef0' });
    tampered.params['InstanceId.1'] = 'i-0fffffffffffffff0';
    await rejectsWith(authenticate(tampered, keys()), 'SignatureDoesNotMatch', 403);
    const added = signedRequest({ Action: 'DescribeRegions' });
    added.params['RegionName.1'] = 'x';
    await rejectsWith(authenticate(added, keys()), 'SignatureDoesNotMatch', 403);
  });

  test('missing or unsupported pieces are refused with clear errors', async () => {
    const noSig = signedRequest({ Action: 'DescribeRegions' });
    delete noSig.params['Signature'];
    await rejectsWith(authenticate(noSig, keys()), 'IncompleteSignature', 400, /Signature/);
    const noTime = signedRequest({ Action: 'DescribeRegions' }, { extra: {} });
    await rejectsWith(authenticate(noTime, keys()), 'IncompleteSignature', 400, /Timestamp or Expires/);
    const v1 = signedRequest({ Action: 'DescribeRegions' });
    v1.params['SignatureVersion'] = '1';
    await rejectsWith(authenticate(v1, keys()), 'AuthFailure', 401, /version 1 is not supported/);
    const md5 = signedRequest({ Action: 'DescribeRegions' });
    md5.params['SignatureMethod'] = 'HmacMD5';
    await rejectsWith(authenticate(md5, keys()), 'InvalidParameterValue', 400, /SignatureMethod/);
    const badTime = signedRequest({ Action: 'DescribeRegions' }, { extra: { Timestamp: 'yesterday' } });
    await rejectsWith(authenticate(badTime, keys()), 'InvalidParameterValue', 400, /Timestamp/);
  });
});
