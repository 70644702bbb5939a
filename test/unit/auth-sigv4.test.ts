import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { DescribeRegionsCommand, DescribeInstancesCommand, RunInstancesCommand } from '@aws-sdk/client-ec2';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { HttpRequest } from '@smithy/core/protocols';
import { authenticate, type HttpRequestParts } from '../../src/auth/authenticate.ts';
import { canonicalPath, canonicalQueryString, parseQueryPairs } from '../../src/auth/sigv4.ts';
import { captureSdkRequest, rejectsWith, resolvedKey, staticResolver, toParts, REGION } from './auth-helpers.ts';

const AKID = 'AKIAIOSFODNN7EXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const creds = { accessKeyId: AKID, secretAccessKey: SECRET };

function keys() {
  return staticResolver([resolvedKey(AKID, SECRET), resolvedKey('AKIAINACTIVEKEY00000', 'inactive-secret', 'Inactive')]);
}

function signer(credentials = creds, service = 'ec2', region = REGION) {
  return new SignatureV4({ credentials, region, service, sha256: Hash.bind(null, 'sha256') });
}

function getRequest(query: Record<string, string>, path = '/'): HttpRequest {
  return new HttpRequest({ method: 'GET', protocol: 'http:', hostname: '127.0.0.1', port: 8773, path, query, headers: { host: '127.0.0.1:8773' } });
}

describe('SigV4 header form (real SDK requests)', () => {
  test('a POST signed by @aws-sdk/client-ec2 authenticates as the key owner', async () => {
    const req = await captureSdkRequest(creds, new DescribeInstancesCommand({ InstanceIds: ['i-0123456789abcdef0'], MaxResults: 5 }));
    assert.equal(req.method, 'POST');
    assert.match(req.headers['authorization']!, /^AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE\//);
    const caller = await authenticate(req, keys());
    assert.equal(caller.accessKeyId, AKID);
    assert.equal(caller.accountId, '123456789012');
  });

  test('parameters that need percent-encoding (spaces, plus, unicode, slashes) verify', async () => {
    const req = await captureSdkRequest(creds, new RunInstancesCommand({
      ImageId: 'ami-12345678', MinCount: 1, MaxCount: 1,
      UserData: Buffer.from('#!/bin/sh\necho "héllo + wörld" ~ * !').toString('base64'),
      TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'Name', Value: 'a b+c/d=é' }] }],
    }));
    const caller = await authenticate(req, keys());
    assert.equal(caller.accessKeyId, AKID);
  });

  test('a GET with the query string signed in the Authorization header verifies', async () => {
    const signed = await signer().sign(getRequest({ Action: 'DescribeRegions', Version: '2016-11-15', 'RegionName.1': 'x y', 'Filter.1.Name': 'a*b' }));
    const parts = toParts(signed as HttpRequest);
    assert.equal(parts.body.length, 0);
    assert.ok(parts.rawQuery.includes('Action=DescribeRegions'));
    const caller = await authenticate(parts, keys());
    assert.equal(caller.accessKeyId, AKID);
  });

  test('any region and service in the credential scope are accepted when the signature matches', async () => {
    const signed = await signer(creds, 'iam', 'eu-west-9').sign(getRequest({ Action: 'DescribeRegions' }));
    const caller = await authenticate(toParts(signed as HttpRequest), keys());
    assert.equal(caller.accessKeyId, AKID);
  });

  test('the derived signing key is cached but a different secret is still rejected', async () => {
    const req = await captureSdkRequest(creds, new DescribeRegionsCommand({}));
    await authenticate(req, keys());
    await authenticate(req, keys());
    await rejectsWith(authenticate(req, staticResolver([resolvedKey(AKID, 'another-secret')])), 'SignatureDoesNotMatch', 403);
  });
});

describe('SigV4 presigned URLs', () => {
  test('a URL presigned by @smithy/signature-v4 authenticates', async () => {
    const presigned = await signer().presign(getRequest({ Action: 'DescribeRegions', Version: '2016-11-15' }), { expiresIn: 300 });
    const parts = toParts(presigned as HttpRequest);
    assert.equal(parts.headers['authorization'], undefined);
    assert.ok(parts.rawQuery.includes('X-Amz-Signature='));
    const caller = await authenticate(parts, keys());
    assert.equal(caller.accessKeyId, AKID);
  });

  test('an expired presigned URL answers RequestExpired', async () => {
    const signingDate = new Date(Date.now() - 10 * 60 * 1000);
    const presigned = await signer().presign(getRequest({ Action: 'DescribeRegions' }), { expiresIn: 60, signingDate });
    await rejectsWith(authenticate(toParts(presigned as HttpRequest), keys()), 'RequestExpired', 400, /Request has expired/);
    // The same URL was valid within its lifetime.
    const caller = await authenticate(toParts(presigned as HttpRequest), keys(), new Date(signingDate.getTime() + 30_000));
    assert.equal(caller.accessKeyId, AKID);
  });

  test('a presigned URL with a tampered parameter is rejected', async () => {
    const presigned = await signer().presign(getRequest({ Action: 'DescribeRegions', 'RegionName.1': 'a' }), { expiresIn: 300 });
    const parts = toParts(presigned as HttpRequest);
    parts.rawQuery = parts.rawQuery.replace('RegionName.1=a', 'RegionName.1=b');
    await rejectsWith(authenticate(parts, keys()), 'SignatureDoesNotMatch', 403);
  });

  test('a presigned URL missing pieces answers IncompleteSignature', async () => {
    const presigned = await signer().presign(getRequest({ Action: 'DescribeRegions' }), { expiresIn: 300 });
    const parts = toParts(presigned as HttpRequest);
    parts.rawQuery = parts.rawQuery.split('&').filter((p) => !p.startsWith('X-Amz-Credential=')).join('&');
    await rejectsWith(authenticate(parts, keys()), 'IncompleteSignature', 400, /X-Amz-Credential/);
  });
});

describe('SigV4 failures', () => {
  test('no credentials at all answers MissingAuthenticationToken', async () => {
    const req: HttpRequestParts = {
      method: 'POST', host: '127.0.0.1:8773', path: '/', rawQuery: '',
      headers: { host: '127.0.0.1:8773', 'content-type': 'application/x-www-form-urlencoded' },
      body: Buffer.from('Action=DescribeRegions&Version=2016-11-15'), params: { Action: 'DescribeRegions', Version: '2016-11-15' },
    };
    await rejectsWith(authenticate(req, keys()), 'MissingAuthenticationToken', 401);
  });

  test('an unknown access key answers AuthFailure without revealing more', async () => {
    const req = await captureSdkRequest({ accessKeyId: 'AKIANOSUCHKEY0000000', secretAccessKey: SECRET }, new DescribeRegionsCommand({}));
    await rejectsWith(authenticate(req, keys()), 'AuthFailure', 401, /^AWS was not able to validate the provided access credentials$/);
  });

  test('an inactive access key answers AuthFailure even with the right secret', async () => {
    const req = await captureSdkRequest({ accessKeyId: 'AKIAINACTIVEKEY00000', secretAccessKey: 'inactive-secret' }, new DescribeRegionsCommand({}));
    await rejectsWith(authenticate(req, keys()), 'AuthFailure', 401);
  });

  test('a wrong secret answers SignatureDoesNotMatch', async () => {
    const req = await captureSdkRequest({ accessKeyId: AKID, secretAccessKey: 'not-the-secret' }, new DescribeRegionsCommand({}));
    await rejectsWith(authenticate(req, keys()), 'SignatureDoesNotMatch', 403, /^The request signature we calculated does not match the signature you provided\. Check your AWS Secret Access Key and signing method\. Consult the service documentation for details\.$/);
  });

  test('a tampered body answers SignatureDoesNotMatch', async () => {
    const req = await captureSdkRequest(creds, new DescribeInstancesCommand({ InstanceIds: ['i-0123456789abcdef0'] }));
    req.body = Buffer.from(req.body.toString().replace('i-0123456789abcdef0', 'i-0fffffffffffffff0'));
    await rejectsWith(authenticate(req, keys()), 'SignatureDoesNotMatch', 403);
    // Also when the client's own payload-hash header is removed, so only our hash of the body counts.
    delete req.headers['x-amz-content-sha256'];
    await rejectsWith(authenticate(req, keys()), 'SignatureDoesNotMatch', 403);
  });

  test('a tampered query parameter answers SignatureDoesNotMatch', async () => {
    const signed = await signer().sign(getRequest({ Action: 'DescribeRegions', 'RegionName.1': 'a' }));
    const parts = toParts(signed as HttpRequest);
    parts.rawQuery += '&RegionName.2=b';
    await rejectsWith(authenticate(parts, keys()), 'SignatureDoesNotMatch', 403);
  });

  test('a tampered signed header answers SignatureDoesNotMatch', async () => {
    const req = await captureSdkRequest(creds, new DescribeRegionsCommand({}));
    req.headers['host'] = 'evil.example:8773';
    await rejectsWith(authenticate(req, keys()), 'SignatureDoesNotMatch', 403);
  });

  test('an X-Amz-Date more than five minutes off answers RequestExpired, either way', async () => {
    const req = await captureSdkRequest(creds, new DescribeRegionsCommand({}));
    await rejectsWith(authenticate(req, keys(), new Date(Date.now() + 6 * 60 * 1000)), 'RequestExpired', 400, /^Request has expired\.$/);
    await rejectsWith(authenticate(req, keys(), new Date(Date.now() - 6 * 60 * 1000)), 'RequestExpired', 400);
    // Within the allowed skew it still passes.
    assert.equal((await authenticate(req, keys(), new Date(Date.now() + 4 * 60 * 1000))).accessKeyId, AKID);
  });

  test('a stale request is refused before the key store is consulted', async () => {
    const req = await captureSdkRequest(creds, new DescribeRegionsCommand({}));
    const resolver = keys();
    await rejectsWith(authenticate(req, resolver, new Date(Date.now() + 3600_000)), 'RequestExpired', 400);
    assert.equal(resolver.lookups, 0);
  });

  test('a credential scope date that differs from X-Amz-Date is rejected', async () => {
    const req = await captureSdkRequest(creds, new DescribeRegionsCommand({}));
    const scopeDate = /Credential=[^/]+\/(\d{8})\//.exec(req.headers['authorization']!)![1]!;
    const other = scopeDate === '20200101' ? '20200102' : '20200101';
    req.headers['authorization'] = req.headers['authorization']!.replace(`/${scopeDate}/`, `/${other}/`);
    await rejectsWith(authenticate(req, keys()), 'SignatureDoesNotMatch', 403, /Date in Credential scope does not match/);
  });

  test('a malformed Authorization header answers IncompleteSignature', async () => {
    const req = await captureSdkRequest(creds, new DescribeRegionsCommand({}));
    const original = req.headers['authorization']!;
    req.headers['authorization'] = original.replace(/, Signature=[0-9a-f]+/, '');
    await rejectsWith(authenticate(req, keys()), 'IncompleteSignature', 400, /requires 'Signature' parameter/);
    req.headers['authorization'] = original.replace('/aws4_request', '/aws5_request');
    await rejectsWith(authenticate(req, keys()), 'IncompleteSignature', 400, /terminator/);
    req.headers['authorization'] = original.replace(/Credential=[^,]+/, 'Credential=AKIAIOSFODNN7EXAMPLE');
    await rejectsWith(authenticate(req, keys()), 'IncompleteSignature', 400, /Credential is malformed/);
    req.headers['authorization'] = 'Basic dXNlcjpwYXNz';
    await rejectsWith(authenticate(req, keys()), 'IncompleteSignature', 400, /Unsupported Authorization Type/);
  });

  test('a request that did not sign the Host header is refused', async () => {
    const signed = await signer().sign(getRequest({ Action: 'DescribeRegions' }), { unsignableHeaders: new Set(['host']) });
    const parts = toParts(signed as HttpRequest);
    assert.doesNotMatch(parts.headers['authorization']!, /SignedHeaders=[^,]*host/);
    await rejectsWith(authenticate(parts, keys()), 'IncompleteSignature', 400, /Host/);
  });

  test('a missing X-Amz-Date answers IncompleteSignature', async () => {
    const req = await captureSdkRequest(creds, new DescribeRegionsCommand({}));
    delete req.headers['x-amz-date'];
    await rejectsWith(authenticate(req, keys()), 'IncompleteSignature', 400, /X-Amz-Date/);
  });
});

describe('SigV4 canonical forms', () => {
  test('query strings are decoded, re-encoded per RFC 3986 and sorted by name then value', () => {
    const pairs = parseQueryPairs('b=2&a=z&a=y&c=%7E%20%2B+&X-Amz-Signature=abc&d');
    assert.equal(canonicalQueryString(pairs), 'a=y&a=z&b=2&c=~%20%2B%20&d=');
  });

  test('paths drop empty and dot segments and are encoded once more', () => {
    assert.equal(canonicalPath(''), '/');
    assert.equal(canonicalPath('/'), '/');
    assert.equal(canonicalPath('/a//b/./c/../d/'), '/a/b/d/');
    assert.equal(canonicalPath('/a%20b'), '/a%2520b');
  });
});
