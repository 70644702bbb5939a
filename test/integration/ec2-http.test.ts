// The EC2 endpoint at the HTTP level: every way a request can be signed or mis-signed, GET and
// POST, and the error documents EC2 clients parse.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';

const Sha256 = Hash.bind(null, 'sha256');
import { XMLParser } from 'fast-xml-parser';
import { startInProcessCloud, type TestCloud, REGION } from '../helpers/cloud.ts';

const xml = new XMLParser();

function rfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

describe('EC2 endpoint over HTTP', () => {
  let cloud: TestCloud;
  let url: URL;
  const signer = () => new SignatureV4({ service: 'ec2', region: REGION, sha256: Sha256, credentials: { accessKeyId: cloud.accessKeyId, secretAccessKey: cloud.secretAccessKey } });

  async function signedPost(body: string, opts: { date?: Date; secret?: string; akid?: string } = {}) {
    const s = new SignatureV4({ service: 'ec2', region: REGION, sha256: Sha256,
      credentials: { accessKeyId: opts.akid ?? cloud.accessKeyId, secretAccessKey: opts.secret ?? cloud.secretAccessKey } });
    const req = await s.sign({ method: 'POST', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: '/',
      headers: { host: url.host, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }, body }, { signingDate: opts.date });
    const res = await fetch(cloud.url + '/', { method: 'POST', headers: req.headers as Record<string, string>, body });
    return { status: res.status, doc: xml.parse(await res.text()) };
  }

  before(async () => { cloud = await startInProcessCloud(); url = new URL(cloud.url); });
  after(async () => cloud.stop());

  it('answers a signed POST with the response document and a request id', async () => {
    const { status, doc } = await signedPost('Action=DescribeRegions&Version=2016-11-15');
    assert.equal(status, 200);
    assert.equal(doc.DescribeRegionsResponse.regionInfo.item.regionName, REGION);
    assert.match(doc.DescribeRegionsResponse.requestId, /^[0-9a-f-]{36}$/);
  });

  it('accepts any API version string the SDKs send', async () => {
    for (const v of ['2016-11-15', '2014-10-01', '2009-04-04']) {
      assert.equal((await signedPost(`Action=DescribeRegions&Version=${v}`)).status, 200);
    }
  });

  it('answers a presigned GET', async () => {
    const presigned = await signer().presign({ method: 'GET', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: '/',
      headers: { host: url.host }, query: { Action: 'DescribeAvailabilityZones', Version: '2016-11-15' } }, { expiresIn: 60 });
    const qs = new URLSearchParams(presigned.query as Record<string, string>).toString();
    const res = await fetch(`${cloud.url}/?${qs}`);
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.equal(xml.parse(text).DescribeAvailabilityZonesResponse.availabilityZoneInfo.item.zoneName, `${REGION}a`);
  });

  it('answers a Signature Version 2 request (euca2ools)', async () => {
    const params: Record<string, string> = {
      Action: 'DescribeRegions', Version: '2016-11-15', AWSAccessKeyId: cloud.accessKeyId,
      SignatureVersion: '2', SignatureMethod: 'HmacSHA256', Timestamp: new Date().toISOString(),
    };
    const canonical = Object.keys(params).sort().map((k) => `${rfc3986(k)}=${rfc3986(params[k]!)}`).join('&');
    const toSign = `POST\n${url.host}\n/\n${canonical}`;
    const signature = createHmac('sha256', cloud.secretAccessKey).update(toSign).digest('base64');
    const body = `${canonical}&Signature=${rfc3986(signature)}`;
    const res = await fetch(cloud.url + '/', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.equal(xml.parse(text).DescribeRegionsResponse.regionInfo.item.regionName, REGION);
    const bad = body.replace('DescribeRegions', 'DescribeAvailabilityZones');
    const res2 = await fetch(cloud.url + '/', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: bad });
    assert.equal(xml.parse(await res2.text()).Response.Errors.Error.Code, 'SignatureDoesNotMatch');
  });

  it('refuses unsigned, unknown-key, wrong-signature and stale requests with EC2 codes', async () => {
    const unsigned = await fetch(cloud.url + '/?Action=DescribeRegions&Version=2016-11-15');
    const u = xml.parse(await unsigned.text());
    assert.equal(u.Response.Errors.Error.Code, 'MissingAuthenticationToken');
    assert.ok(u.Response.RequestID);
    assert.equal((await signedPost('Action=DescribeRegions', { akid: 'AKIAAAAAAAAAAAAAAAAA' })).doc.Response.Errors.Error.Code, 'AuthFailure');
    const wrong = await signedPost('Action=DescribeRegions', { secret: 'not-the-secret' });
    assert.equal(wrong.status, 403);
    assert.equal(wrong.doc.Response.Errors.Error.Code, 'SignatureDoesNotMatch');
    const stale = await signedPost('Action=DescribeRegions', { date: new Date(Date.now() - 20 * 60_000) });
    assert.equal(stale.doc.Response.Errors.Error.Code, 'RequestExpired');
  });

  it('answers bad actions and bad parameters with EC2 errors', async () => {
    const invalid = await signedPost('Action=LaunchRocket&Version=2016-11-15');
    assert.equal(invalid.doc.Response.Errors.Error.Code, 'InvalidAction');
    const unsupported = await signedPost('Action=DescribeFleets&Version=2016-11-15');
    assert.equal(unsupported.doc.Response.Errors.Error.Code, 'UnsupportedOperation');
    assert.match(unsupported.doc.Response.Errors.Error.Message, /DescribeFleets/);
    const missing = await signedPost('Action=CreateKeyPair&Version=2016-11-15');
    assert.equal(missing.doc.Response.Errors.Error.Code, 'MissingParameter');
    const wrongType = await signedPost('Action=DescribeKeyPairs&Version=2016-11-15&DryRun=maybe');
    assert.equal(wrongType.doc.Response.Errors.Error.Code, 'InvalidParameterValue');
    const unknownParam = await signedPost('Action=DescribeRegions&Version=2016-11-15&Bogus=1');
    assert.equal(unknownParam.doc.Response.Errors.Error.Code, 'UnknownParameter');
    const dry = await signedPost('Action=DescribeRegions&Version=2016-11-15&DryRun=true');
    assert.equal(dry.status, 412);
    assert.equal(dry.doc.Response.Errors.Error.Code, 'DryRunOperation');
  });
});
