// The EC2 endpoint's request limits through real HTTP (issue 11, item 3): one account's flood is
// throttled with RequestLimitExceeded while another account's calls in the same window all
// succeed; the operator changes an account's limit with `ironbark admin rate-limit`; too many
// parameters, an oversize header section, too many connections from one address and a flood of
// bad signatures are refused. The buckets' clock is frozen, so what is admitted depends only on
// the counts, never on how fast this machine is.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { XMLParser } from 'fast-xml-parser';
import { DescribeInstancesCommand, DescribeSecurityGroupsCommand, EC2Client } from '@aws-sdk/client-ec2';
import { startCloudController, type RunningCloud } from '../../src/cloud/cloud-controller.ts';
import { ensureZone } from '../../src/cloud/provision.ts';
import { AdminClient } from '../../src/cli/admin-client.ts';
import type { EndpointLimitOptions } from '../../src/cloud/limits/request-limiter.ts';
import { REGION, REPO_ROOT } from '../helpers/cloud.ts';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

interface Creds { accessKeyId: string; secretAccessKey: string }

async function startCloud(limits: EndpointLimitOptions): Promise<{ cloud: RunningCloud; dataDir: string; admin: AdminClient; stop(): Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'ironbark-limits-'));
  const cloud = await startCloudController({
    dataDir, host: '127.0.0.1', port: 0, region: REGION, log: pino({ level: 'silent' }), limits: { clock: () => 0, ...limits },
  });
  await ensureZone(cloud.store, { name: `${REGION}a`, cidr: '10.1.0.0/16', region: REGION });
  const admin = new AdminClient({ endpoint: cloud.url, accessKeyId: cloud.admin.accessKeyId, secretAccessKey: cloud.admin.secretAccessKey, region: REGION });
  return { cloud, dataDir, admin, async stop() { await cloud.close(); rmSync(dataDir, { recursive: true, force: true }); } };
}

async function newAccount(admin: AdminClient, name: string): Promise<{ id: string; creds: Creds }> {
  const created = await admin.request('POST', '/accounts', { body: { name } });
  return { id: created.account.id, creds: { accessKeyId: created.accessKey.accessKeyId, secretAccessKey: created.accessKey.secretAccessKey } };
}

function client(url: string, creds: Creds): EC2Client {
  // No retries: every refusal is seen, as the flood's counts need.
  return new EC2Client({ endpoint: url, region: REGION, credentials: creds, maxAttempts: 1 });
}

/** Outcome of each call: 'ok' or the EC2 error code. */
async function outcomes(calls: Array<Promise<unknown>>): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const r of await Promise.allSettled(calls)) {
    const key = r.status === 'fulfilled' ? 'ok' : String((r.reason as { name?: string }).name);
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

interface RawAnswer { status: number; body: string }

/** A signed POST of `body` (form parameters) to the endpoint, optionally from another loopback address. */
async function signedPost(url: string, creds: Creds, body: string, opts: { localAddress?: string; headers?: Record<string, string> } = {}): Promise<RawAnswer> {
  const u = new URL(url);
  const signer = new SignatureV4({ service: 'ec2', region: REGION, sha256: Hash.bind(null, 'sha256'), credentials: creds });
  const signed = await signer.sign({
    method: 'POST', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: '/',
    headers: { host: u.host, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8', ...opts.headers }, body,
  });
  return rawRequest(u, { method: 'POST', path: '/', headers: signed.headers as Record<string, string>, localAddress: opts.localAddress }, body);
}

function rawRequest(u: URL, options: http.RequestOptions, body?: string): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, agent: false, ...options }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const xml = new XMLParser();
const errorCode = (a: RawAnswer): string | undefined => xml.parse(a.body)?.Response?.Errors?.Error?.Code;

describe('rate limits per account', () => {
  let env: Awaited<ReturnType<typeof startCloud>>;
  let a: Awaited<ReturnType<typeof newAccount>>;
  let b: Awaited<ReturnType<typeof newAccount>>;

  before(async () => {
    env = await startCloud({ maxRequestParams: 2000, maxHeaderBytes: 8 * 1024 });
    a = await newAccount(env.admin, 'flooder');
    b = await newAccount(env.admin, 'neighbour');
  });
  after(async () => { await env.stop(); });

  test('a flood of 300 DescribeInstances is throttled past the burst of 50 while the other account\'s calls all succeed', async () => {
    const ecA = client(env.cloud.url, a.creds);
    const ecB = client(env.cloud.url, b.creds);
    try {
      const flood = Array.from({ length: 300 }, () => ecA.send(new DescribeInstancesCommand({})));
      const neighbour = Array.from({ length: 40 }, (_, i) => (i % 2 === 0
        ? ecB.send(new DescribeInstancesCommand({}))
        : ecB.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'group-name', Values: ['default'] }] }))));
      const [floodResult, neighbourResult] = await Promise.all([outcomes(flood), outcomes(neighbour)]);
      // EC2's bucket for unfiltered DescribeInstances: 50 at once (and 10 a second: the clock is frozen).
      assert.deepEqual(floodResult, { ok: 50, RequestLimitExceeded: 250 });
      assert.deepEqual(neighbourResult, { ok: 40 });

      // The SDK sees EC2's throttling answer: 503, RequestLimitExceeded, "Request limit exceeded.".
      const err = await ecA.send(new DescribeInstancesCommand({})).catch((e) => e);
      assert.equal(err.name, 'RequestLimitExceeded');
      assert.equal(err.message, 'Request limit exceeded.');
      assert.equal(err.$metadata.httpStatusCode, 503);
      // A filtered call draws from another bucket (non-mutating, 100 at once).
      await ecA.send(new DescribeInstancesCommand({ Filters: [{ Name: 'instance-state-name', Values: ['running'] }] }));

      const view = await env.admin.request('GET', `/accounts/${a.id}/rate-limits`);
      assert.equal(view.throttled, 251);
      assert.deepEqual(view.rateLimits.find((l: { family: string }) => l.family === 'unfiltered-describe'),
        { family: 'unfiltered-describe', covers: view.rateLimits.find((l: { family: string }) => l.family === 'unfiltered-describe').covers, capacity: 50, refillPerSecond: 10, source: 'ec2' });
      const stats = env.cloud.limiter.stats();
      assert.equal(stats.running, 0);
      assert.equal(stats.waiting, 0);
    } finally {
      ecA.destroy();
      ecB.destroy();
    }
  });

  test('`ironbark admin rate-limit set` raises the flooding account\'s limit, and its next 300 calls pass', async () => {
    const run = (args: string[]) => new Promise<{ code: number | null; out: string }>((resolve) => {
      const envVars: Record<string, string> = {};
      for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AWS_') && !k.startsWith('IRONBARK_') && v !== undefined) envVars[k] = v;
      const child = spawn(join(REPO_ROOT, 'bin/ironbark'), ['admin', '--data-dir', env.dataDir, ...args], { env: envVars, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d) => { out += d; });
      child.stderr.on('data', (d) => { out += d; });
      child.on('close', (code) => resolve({ code, out }));
    });
    const set = await run(['rate-limit', 'set', 'unfiltered-describe', '--account', 'flooder', '--burst', '400', '--refill', '10']);
    assert.equal(set.code, 0, set.out);
    assert.match(set.out, /unfiltered-describe\s+400\s+10\s+account's own/);
    const ecA = client(env.cloud.url, a.creds);
    try {
      // The bucket was empty; raising it to 400 gives 350 at once.
      assert.deepEqual(await outcomes(Array.from({ length: 300 }, () => ecA.send(new DescribeInstancesCommand({})))), { ok: 300 });
      assert.deepEqual(await outcomes(Array.from({ length: 60 }, () => ecA.send(new DescribeInstancesCommand({})))), { ok: 50, RequestLimitExceeded: 10 });
    } finally {
      ecA.destroy();
    }
    // The other account keeps EC2's default; the cloud's view shows EC2's numbers.
    const other = await env.admin.request('GET', `/accounts/${b.id}/rate-limits`);
    assert.equal(other.rateLimits.find((l: { family: string }) => l.family === 'unfiltered-describe').capacity, 50);
    const get = await run(['--json', 'rate-limit', 'get', '--account', a.id]);
    assert.equal(get.code, 0, get.out);
    const json = JSON.parse(get.out);
    assert.equal(json.rateLimits.find((l: { family: string }) => l.family === 'unfiltered-describe').source, 'account');

    // Bad values are refused by the admin API in one sentence.
    await assert.rejects(env.admin.request('PUT', `/accounts/${a.id}/rate-limits`, { body: { Describe: { capacity: 1, refillPerSecond: 1 } } }),
      (e: { code?: string }) => e.code === 'InvalidParameterValue');
    // The cloud-wide default applies to accounts without their own value.
    await env.admin.request('PUT', '/rate-limits', { body: { 'non-mutating': { capacity: 3, refillPerSecond: 1 } } });
    const ecB = client(env.cloud.url, b.creds);
    try {
      const filtered = () => ecB.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'group-name', Values: ['default'] }] }));
      // The smaller bucket keeps what fits of B's tokens: three calls.
      assert.deepEqual(await outcomes(Array.from({ length: 5 }, filtered)), { ok: 3, RequestLimitExceeded: 2 });
      await env.admin.request('PUT', '/rate-limits', { body: { 'non-mutating': null } });
      assert.deepEqual(await outcomes(Array.from({ length: 5 }, filtered)), { ok: 5 });
    } finally {
      ecB.destroy();
    }
  });

  test('a request with too many parameters is refused unparsed; a header section over the limit is answered 431', async () => {
    const ids = (n: number) => Array.from({ length: n }, (_, i) => `InstanceId.${i + 1}=i-${i.toString(16).padStart(17, '0')}`).join('&');
    const base = 'Action=DescribeInstances&Version=2016-11-15';
    // 2 + 1998 = 2000: at the limit, parsed and answered by the handler.
    const atLimit = await signedPost(env.cloud.url, b.creds, `${base}&${ids(1998)}`);
    assert.equal(errorCode(atLimit), 'InvalidInstanceID.NotFound');
    const over = await signedPost(env.cloud.url, b.creds, `${base}&${ids(1999)}`);
    assert.equal(over.status, 400);
    assert.equal(errorCode(over), 'InvalidQueryParameter');
    assert.match(over.body, /2001 parameters; this endpoint accepts at most 2000/);

    const u = new URL(env.cloud.url);
    const big = await rawRequest(u, { method: 'GET', path: '/?Action=DescribeRegions', headers: { 'x-padding': 'p'.repeat(9000) } });
    assert.equal(big.status, 431);
    assert.equal(errorCode(big), 'RequestHeaderSectionTooLarge');
    const small = await rawRequest(u, { method: 'GET', path: '/?Action=DescribeRegions', headers: { 'x-padding': 'p'.repeat(4000) } });
    assert.equal(small.status, 401, 'a header section within the limit reaches authentication');
    assert.equal(errorCode(small), 'MissingAuthenticationToken');
  });
});

describe('limits per client address', () => {
  let env: Awaited<ReturnType<typeof startCloud>>;
  before(async () => {
    env = await startCloud({ maxConnectionsPerAddress: 5, authFailuresPerAddress: { capacity: 5, refillPerSecond: 1 } });
  });
  after(async () => { await env.stop(); });

  test('connections past the cap from one address are closed; those within it are served', async () => {
    const u = new URL(env.cloud.url);
    const sockets: net.Socket[] = [];
    const closed: Promise<number>[] = [];
    for (let i = 0; i < 8; i++) {
      const s = net.connect(Number(u.port), u.hostname);
      sockets.push(s);
      closed.push(new Promise((resolve) => s.once('close', () => resolve(i))));
      s.on('error', () => {});
      await new Promise((resolve) => s.once('connect', resolve));
    }
    // The first five were accepted: a request on each is answered. The rest are closed unanswered.
    const answered = await Promise.all(sockets.slice(0, 5).map((s) => new Promise<string>((resolve) => {
      let text = '';
      s.on('data', (d) => { text += d; if (text.includes('"ok"')) resolve(text.split('\r\n')[0]!); });
      s.write(`GET /healthz HTTP/1.1\r\nHost: ${u.host}\r\n\r\n`);
    })));
    assert.deepEqual(answered, Array(5).fill('HTTP/1.1 200 OK'));
    const firstClosed = await Promise.race(closed);
    assert.ok(firstClosed >= 5, `connection ${firstClosed} was closed`);
    await Promise.all(closed.slice(5));
    for (const s of sockets) s.destroy();
    await Promise.all(closed);
    // Once they are gone, new connections are accepted again (the server counts a close when it sees it).
    let status = 0;
    for (let attempt = 0; attempt < 200 && status !== 200; attempt++) {
      status = await rawRequest(u, { method: 'GET', path: '/healthz' }).then((r) => r.status, () => 0);
    }
    assert.equal(status, 200);
  });

  test('an address that sent too many bad signatures is refused before authentication; another address is not', async () => {
    const bad = { accessKeyId: env.cloud.admin.accessKeyId, secretAccessKey: 'not-the-secret' };
    const good = { accessKeyId: env.cloud.admin.accessKeyId, secretAccessKey: env.cloud.admin.secretAccessKey };
    const body = 'Action=DescribeRegions&Version=2016-11-15';
    const codes: string[] = [];
    for (let i = 0; i < 7; i++) codes.push(errorCode(await signedPost(env.cloud.url, bad, body))!);
    assert.deepEqual(codes, [...Array(5).fill('SignatureDoesNotMatch'), 'RequestLimitExceeded', 'RequestLimitExceeded']);
    const blocked = await signedPost(env.cloud.url, good, body);
    assert.equal(blocked.status, 503);
    assert.equal(errorCode(blocked), 'RequestLimitExceeded');
    const elsewhere = await signedPost(env.cloud.url, good, body, { localAddress: '127.0.0.2' });
    assert.equal(elsewhere.status, 200, elsewhere.body);
    assert.equal(env.cloud.limiter.stats().addressThrottled, 3);
  });
});
