// Hostile input fuzzed against a live in-process EC2 endpoint (issue 11, item 6), with fast-check:
// signed requests for implemented and unimplemented actions with parameters that follow each
// operation's input shape and then go astray (huge and zero list indexes, duplicated names,
// oversized and Unicode-tricky values: lone surrogates, NUL, bidirectional marks), and unsigned
// junk (percent-encoding that does not decode, invalid UTF-8 bodies, odd methods and paths,
// hostile Authorization headers). Every answer must come within a generous bound, be XML with
// an EC2 shape (the operation's response, or Response/Errors/Error with a code) and show no stack
// trace; the endpoint must keep answering a plain call afterwards.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fc from 'fast-check';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { getOperation, operationNames } from '../../src/protocol/model.ts';
import { startInProcessCloud, REGION, type TestCloud } from '../helpers/cloud.ts';
import { hostileParams, hostileString, parseWellFormed } from '../helpers/hostile-input.ts';

const RUNS = Number(process.env.IRONBARK_FUZZ_RUNS ?? 300);
/** How long an answer may take before the request counts as a hang: generous, never a timing assertion. */
const ANSWER_BOUND_MS = 30_000;
const IMPLEMENTED = ['DescribeRegions', 'DescribeAvailabilityZones', 'DescribeInstances', 'RunInstances', 'TerminateInstances', 'StopInstances',
  'StartInstances', 'DescribeImages', 'CreateTags', 'DeleteTags', 'DescribeTags', 'CreateKeyPair', 'ImportKeyPair', 'DescribeKeyPairs',
  'CreateSecurityGroup', 'AuthorizeSecurityGroupIngress', 'DescribeSecurityGroups', 'DescribeVpcs', 'DescribeSubnets', 'ModifyInstanceAttribute',
  'DescribeInstanceStatus', 'DescribeInstanceTypes', 'DescribeAccountAttributes', 'RegisterImage', 'ModifyInstanceMetadataOptions'];
const OPERATIONS = operationNames();

interface Answer { status: number; contentType: string; body: string }

let cloud: TestCloud;
let port = 0;

function send(method: string, path: string, headers: Record<string, string>, body: string | Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d)).on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode!, contentType: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks).toString('utf8') });
      });
    });
    const timer = setTimeout(() => { req.destroy(); reject(new Error(`no answer within ${ANSWER_BOUND_MS} ms: ${method} ${path.slice(0, 200)}`)); }, ANSWER_BOUND_MS);
    req.on('error', (err) => { clearTimeout(timer); reject(err); });
    req.end(body);
  });
}

async function signedPost(pairs: Array<[string, string]>): Promise<Answer> {
  const signer = new SignatureV4({ service: 'ec2', region: REGION, sha256: Hash.bind(null, 'sha256'),
    credentials: { accessKeyId: cloud.accessKeyId, secretAccessKey: cloud.secretAccessKey } });
  const body = new URLSearchParams(pairs).toString();
  const signed = await signer.sign({ method: 'POST', protocol: 'http:', hostname: '127.0.0.1', port, path: '/',
    headers: { host: `127.0.0.1:${port}`, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }, body });
  return send('POST', '/', signed.headers as Record<string, string>, body);
}

/** The answer is EC2's: XML, the operation's response or an error document with a code; no stack trace. */
function assertEc2Answer(answer: Answer, action: string | undefined, what: string): void {
  const context = `${what} -> ${answer.status} ${answer.body.slice(0, 300)}`;
  assert.match(answer.contentType, /xml/, context);
  let doc: any;
  try {
    doc = parseWellFormed(answer.body);
  } catch (err) {
    throw new Error(`${context}: ${(err as Error).message}`);
  }
  if (answer.status === 200) {
    assert.ok(action && doc[`${action}Response`] !== undefined, `${context}: a success names its action`);
    return;
  }
  assert.ok(answer.status >= 400 && answer.status < 600, context);
  const error = doc?.Response?.Errors?.Error;
  assert.ok(error && typeof error.Code === 'string' && /^[A-Za-z][A-Za-z0-9.]*$/.test(error.Code), `${context}: an EC2 error code`);
  assert.ok(typeof doc.Response.RequestID === 'string' && doc.Response.RequestID.length > 0, `${context}: a request id`);
  // An internal error tells the client nothing of the server's insides.
  if (error.Code === 'InternalError') assert.doesNotMatch(String(error.Message), /TypeError|ReferenceError|RangeError|undefined|\bat \w/, context);
}

before(async () => {
  cloud = await startInProcessCloud();
  port = Number(new URL(cloud.url).port);
});
after(async () => cloud?.stop());

describe('fuzz: the live EC2 endpoint', () => {
  it('signed requests with hostile parameters get an EC2 answer, never a crash, a hang or a stack trace', async () => {
    const action = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...IMPLEMENTED) }, { weight: 1, arbitrary: fc.constantFrom(...OPERATIONS) });
    const cases = action.chain((a) => fc.tuple(fc.constant(a), hostileParams(getOperation(a)!.input), fc.constantFrom('2016-11-15', '', '2099-01-01', '\u202E')));
    await fc.assert(fc.asyncProperty(cases, async ([a, pairs, version]) => {
      const answer = await signedPost([['Action', a], ['Version', version], ...pairs]);
      assertEc2Answer(answer, a, `${a} ${JSON.stringify(pairs).slice(0, 300)}`);
    }), { numRuns: RUNS });
  });

  it('hostile action names, signed: an EC2 error', async () => {
    await fc.assert(fc.asyncProperty(hostileString, fc.boolean(), async (a, twice) => {
      const pairs: Array<[string, string]> = [['Action', a], ['Version', '2016-11-15']];
      if (twice) pairs.push(['Action', 'DescribeRegions']);
      assertEc2Answer(await signedPost(pairs), twice ? 'DescribeRegions' : a, `Action ${JSON.stringify(a).slice(0, 100)}`);
    }), { numRuns: Math.ceil(RUNS / 3) });
  });

  it('unsigned junk (raw query strings, invalid UTF-8 bodies, odd methods, paths and Authorization headers): an EC2 error', async () => {
    const rawQuery = fc.oneof(
      fc.constantFrom('%', '%%', '%E0%A4%A', '%ED%A0%80', '%FF%FE', 'Action=%C0%AF', 'a=%', '&&&=&', '=', 'Action=DescribeRegions&Action=RunInstances',
        'Action=DescribeRegions&X-Amz-Algorithm=AWS4-HMAC-SHA256', 'X-Amz-Signature', `Name.${'9'.repeat(300)}=1`, 'Filter.1.Value.0=x'),
      hostileString.map((s) => s.replace(/\p{Cs}/gu, '\uFFFD').replace(/[^\x21-\x7e]/gu, (ch) => encodeURIComponent(ch))),
    );
    const body = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
      fc.constantFrom(Buffer.from([0xc0, 0xaf, 0x3d]), Buffer.from('Action=DescribeRegions&\xff\xfe', 'latin1'), Buffer.from('Action=Describe%00Regions')),
    );
    const authorization = fc.option(fc.oneof(
      fc.constantFrom('AWS4-HMAC-SHA256', 'AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request, SignedHeaders=host, Signature=00', 'Basic Zm9vOmJhcg==', 'AWS AKIA:sig'),
      fc.string({ unit: fc.constantFrom(...'abcXYZ019 =,/;:-_\u00e9'.split('')), maxLength: 60 }),
    ), { nil: undefined });
    const method = fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS');
    const path = fc.constantFrom('/', '//', '/x', '/%', '/..%2f..%2fetc/passwd', `/${'a'.repeat(3000)}`);
    const contentType = fc.constantFrom('application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=latin1', 'text/xml', 'multipart/form-data; boundary=x', '');
    await fc.assert(fc.asyncProperty(method, path, rawQuery, body, authorization, contentType, async (m, p, q, b, auth, ct) => {
      const headers: Record<string, string> = { host: `127.0.0.1:${port}` };
      if (auth !== undefined) headers['authorization'] = auth;
      if (ct) headers['content-type'] = ct;
      const withBody = m !== 'GET' && m !== 'OPTIONS';
      if (withBody) headers['content-length'] = String(b.length);
      const answer = await send(m, `${p}?${q}`, headers, withBody ? b : '');
      // Paths other than the endpoint's may be someone else's (the admin API answers JSON under /admin).
      if (answer.status === 404 && !/xml/.test(answer.contentType)) return;
      assertEc2Answer(answer, undefined, `${m} ${p.slice(0, 40)}?${q.slice(0, 100)} auth=${JSON.stringify(auth)}`);
    }), { numRuns: RUNS });
  });

  it('still answers a plain call after all that', async () => {
    const answer = await signedPost([['Action', 'DescribeRegions'], ['Version', '2016-11-15']]);
    assert.equal(answer.status, 200, answer.body);
    assert.ok(parseWellFormed(answer.body).DescribeRegionsResponse);
  });
});
