// Requests from outside meant to hurt the cloud (issue 8, items 1, 2 and 4), each sent as it was
// found: a filter value that made a backtracking RegExp freeze the process, filter names that are
// JavaScript built-ins, request bodies far over any real call (read whole, before authentication,
// by every server), a huge value echoed back in an error, and a second call on a keep-alive socket
// after the client left it idle longer than Node's default server timeout.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AddressInfo } from 'node:net';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { XMLParser } from 'fast-xml-parser';
import { Hono } from 'hono';
import { serve, type ServerType } from '@hono/node-server';
import pino from 'pino';
import { startInProcessCloud, REGION, type TestCloud } from '../helpers/cloud.ts';
import { serveEc2OnNode, ec2HonoRoute, type Ec2Handler } from '../../src/cloud/ec2-endpoint.ts';
import { createClusterHttpServer } from '../../src/cluster/cluster-http-server.ts';
import { JoinedNodes } from '../../src/cluster/joined-nodes.ts';
import { createNodeHttpListener } from '../../src/node/node-http-server.ts';
import type { NodeApi } from '../../src/node/node-api.ts';
import { createPeerRpcHandler, PeerClient } from '../../src/auth/peer-rpc.ts';
import { PeerVerifier, newPeerSecret } from '../../src/auth/peer-auth.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';
import { DEFAULT_MAX_REQUEST_BYTES } from '../../src/http/request-body.ts';
import { KEEP_ALIVE_TIMEOUT_MS } from '../../src/http/server-timeouts.ts';
import { parseByteSize } from '../../src/cli/request-limit-option.ts';

const xml = new XMLParser();
const MiB = 1024 * 1024;
/** How long a refusal may take before the test gives up: generous, never a timing assertion. */
const ANSWER_BOUND_MS = 30_000;

// ---- helpers ----------------------------------------------------------------------------------

interface RawAnswer {
  /** Status line, headers and body as received. */
  text: string;
  status: number;
  body: string;
  /** The server closed the connection. */
  closed: boolean;
}

/**
 * Sends a request head and as much of its body as `bodyBytes` over a raw socket, never finishing
 * the body the head announces, and collects the answer until the server closes the connection.
 * An old server, waiting for the rest of the body, would never answer: the bound then fails it.
 */
async function sendPartial(port: number, head: string, bodyBytes: number, chunked = false): Promise<RawAnswer> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {}); // the server may reset while the client is still writing
  let text = '';
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('data', (d) => { text += d.toString('latin1'); });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write(head);
  const piece = Buffer.alloc(64 * 1024, 'a');
  for (let sent = 0; sent < bodyBytes && !socket.destroyed; sent += piece.length) {
    socket.write(chunked ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]) : piece);
  }
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<'bound'>((resolve) => { timer = setTimeout(() => resolve('bound'), ANSWER_BOUND_MS); });
  const outcome = await Promise.race([closed.then(() => 'closed' as const), bound]);
  clearTimeout(timer);
  socket.destroy();
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
  return { text, status, body: text.slice(text.indexOf('\r\n\r\n') + 4), closed: outcome === 'closed' };
}

function postHead(path: string, contentLength: number | 'chunked', contentType = 'application/x-www-form-urlencoded'): string {
  const length = contentLength === 'chunked' ? 'Transfer-Encoding: chunked' : `Content-Length: ${contentLength}`;
  return `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${contentType}\r\n${length}\r\n\r\n`;
}

function ec2Code(body: string): string | undefined {
  return xml.parse(body)?.Response?.Errors?.Error?.Code;
}

const servers: Array<() => Promise<void>> = [];

async function listenOnLoopback(listener: http.RequestListener): Promise<number> {
  const server = http.createServer(listener);
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  servers.push(() => new Promise((done) => { server.close(() => done()); server.closeAllConnections(); }));
  return (server.address() as AddressInfo).port;
}

after(async () => { for (const close of servers) await close(); });

// ---- the cloud ---------------------------------------------------------------------------------

describe('the cloud against hostile requests', () => {
  let cloud: TestCloud;
  let port: number;

  async function signedPost(body: string, agent?: http.Agent): Promise<{ status: number; text: string; reusedSocket: boolean }> {
    const signer = new SignatureV4({
      service: 'ec2', region: REGION, sha256: Hash.bind(null, 'sha256'),
      credentials: { accessKeyId: cloud.accessKeyId, secretAccessKey: cloud.secretAccessKey },
    });
    const signed = await signer.sign({
      method: 'POST', protocol: 'http:', hostname: '127.0.0.1', port, path: '/',
      headers: { host: `127.0.0.1:${port}`, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }, body,
    });
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/', headers: signed.headers as Record<string, string>, agent }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (d) => { text += d; }).on('end', () => resolve({ status: res.statusCode!, text, reusedSocket: req.reusedSocket }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  before(async () => {
    cloud = await startInProcessCloud();
    port = Number(new URL(cloud.url).port);
  });
  after(async () => cloud.stop());

  it('answers the 26-stars-and-# filter at once, with no match (item 1)', async () => {
    const { status, text } = await signedPost(`Action=DescribeRegions&Version=2016-11-15&Filter.1.Name=region-name&Filter.1.Value.1=${'*'.repeat(26)}%23`);
    assert.equal(status, 200, text);
    assert.equal(xml.parse(text).DescribeRegionsResponse.regionInfo, '');
    // Far worse for a backtracking matcher, nothing for this one; the wildcard still works.
    const worse = await signedPost(`Action=DescribeRegions&Filter.1.Name=region-name&Filter.1.Value.1=${'*%3F'.repeat(5000)}%23`);
    assert.equal(worse.status, 200, worse.text);
    const matching = await signedPost(`Action=DescribeRegions&Filter.1.Name=region-name&Filter.1.Value.1=${'*'.repeat(26)}-%3F`);
    assert.equal(xml.parse(matching.text).DescribeRegionsResponse.regionInfo.item.regionName, REGION);
  });

  it('refuses filter names that are JavaScript built-ins as unknown filters (item 1)', async () => {
    for (const name of ['hasOwnProperty', '__proto__', 'valueOf', 'constructor', 'toString']) {
      const { status, text } = await signedPost(`Action=DescribeRegions&Filter.1.Name=${name}&Filter.1.Value.1=x`);
      assert.equal(status, 400, `${name}: ${text}`);
      const error = xml.parse(text).Response.Errors.Error;
      assert.equal(error.Code, 'InvalidParameterValue', name);
      assert.equal(error.Message, `The filter '${name}' is invalid`);
    }
  });

  it('refuses an oversize POST without reading it, and closes the connection (item 2)', async () => {
    // Declared too large: refused on the head alone, though only 64 KiB of the 4 MiB ever come.
    const declared = await sendPartial(port, postHead('/', 4 * MiB), 64 * 1024);
    assert.equal(declared.status, 413, declared.text);
    assert.equal(ec2Code(declared.body), 'RequestEntityTooLarge');
    assert.match(declared.text, /\r\nconnection: close\r\n/i);
    assert.ok(declared.closed, 'the server closes the connection');
    // Chunked, so the size is only known while reading: refused once past the limit, body unfinished.
    const chunked = await sendPartial(port, postHead('/', 'chunked'), 2 * MiB, true);
    assert.equal(chunked.status, 413, chunked.text);
    assert.equal(ec2Code(chunked.body), 'RequestEntityTooLarge');
    assert.match(xml.parse(chunked.body).Response.RequestID, /^[0-9a-f-]{36}$/);
    assert.ok(chunked.closed);
    // And the cloud goes on answering.
    assert.equal((await signedPost('Action=DescribeRegions')).status, 200);
  });

  it('refuses oversize admin API bodies the same way, in the admin format (item 2)', async () => {
    const answer = await sendPartial(port, postHead('/admin/v1/accounts', 4 * MiB, 'application/json'), 64 * 1024);
    assert.equal(answer.status, 413, answer.text);
    assert.equal(JSON.parse(answer.body).error.code, 'RequestEntityTooLarge');
    assert.ok(answer.closed);
    const chunked = await sendPartial(port, postHead('/admin/v1/accounts', 'chunked', 'application/json'), 2 * MiB, true);
    assert.equal(chunked.status, 413, chunked.text);
    assert.ok(chunked.closed);
  });

  it('quotes only the beginning of a huge value in an error (item 2)', async () => {
    const huge = 'x'.repeat(300_000);
    const parsed = await signedPost(`Action=DescribeRegions&DryRun=${huge}`);
    assert.equal(parsed.status, 400);
    const error = xml.parse(parsed.text).Response.Errors.Error;
    assert.equal(error.Code, 'InvalidParameterValue');
    assert.equal(error.Message, `Invalid value '${'x'.repeat(64)}…' for DryRun`);
    // A handler quoting an id whole is still bounded by the message limit.
    const id = await signedPost(`Action=DescribeInstances&InstanceId.1=i-${huge}`);
    assert.equal(id.status, 400, id.text.slice(0, 500));
    assert.ok(id.text.length < 2048, `the error is ${id.text.length} characters`);
    // So is an unknown parameter's name.
    const name = await signedPost(`Action=DescribeRegions&${huge}=1`);
    assert.equal(ec2Code(name.text), 'UnknownParameter');
    assert.ok(name.text.length < 2048, `the error is ${name.text.length} characters`);
  });

  it('keeps an idle keep-alive connection open longer than clients do (item 4)', { timeout: 120_000 }, async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await signedPost('Action=DescribeRegions', agent);
      assert.equal(first.status, 200);
      // Past Node's default 5 s keep-alive timeout, well within ours.
      await sleep(7_000);
      const second = await signedPost('Action=DescribeRegions', agent);
      assert.equal(second.status, 200, second.text);
      assert.equal(second.reusedSocket, true, 'the second call went out on the first call\'s socket');
    } finally {
      agent.destroy();
    }
    assert.ok(KEEP_ALIVE_TIMEOUT_MS > 60_000);
  });
});

// ---- the EC2 endpoint on its own: the limit is configurable ------------------------------------

describe('the EC2 endpoint limit', () => {
  const handler: Ec2Handler = async (req) => ({ status: 200, headers: { 'Content-Type': 'text/plain' }, body: `read ${req.body.length}` });

  it('defaults to 512 KiB, and is the configured size when given', async () => {
    assert.equal(DEFAULT_MAX_REQUEST_BYTES, 512 * 1024);
    const port = await listenOnLoopback(serveEc2OnNode(() => handler, undefined, { maxRequestBytes: 8 * 1024 }));
    const ok = await fetch(`http://127.0.0.1:${port}/`, { method: 'POST', body: 'a'.repeat(8 * 1024) });
    assert.equal(await ok.text(), `read ${8 * 1024}`);
    const refused = await fetch(`http://127.0.0.1:${port}/`, { method: 'POST', body: 'a'.repeat(8 * 1024 + 1) });
    assert.equal(refused.status, 413);
    assert.equal(ec2Code(await refused.text()), 'RequestEntityTooLarge');
  });

  it('is kept when the endpoint is served through Hono', async () => {
    const app = new Hono();
    app.post('/', ec2HonoRoute(handler, { maxRequestBytes: 1024 }));
    assert.equal(await (await app.request('/', { method: 'POST', body: 'a'.repeat(1024) })).text(), 'read 1024');
    const refused = await app.request('/', { method: 'POST', body: new Blob(['a'.repeat(4096)]).stream(), duplex: 'half' } as RequestInit);
    assert.equal(refused.status, 413);
    assert.equal(ec2Code(await refused.text()), 'RequestEntityTooLarge');
  });

  it('is a size on the command line', () => {
    assert.equal(parseByteSize('524288'), 524288);
    assert.equal(parseByteSize('512k'), 512 * 1024);
    assert.equal(parseByteSize('2MiB'), 2 * MiB);
    for (const bad of ['', 'lots', '12', '2g', '-5', '1.5m']) assert.throws(() => parseByteSize(bad), bad);
  });
});

// ---- between roles ------------------------------------------------------------------------------

describe('cluster and node servers against oversize bodies (item 2)', () => {
  let root: string;
  before(async () => { root = await mkdtemp(join(tmpdir(), 'ironbark-hostile-')); });
  after(async () => rm(root, { recursive: true, force: true }));

  it('the cluster refuses a cloud call over its limit and a join over the nodes\' one', async () => {
    const joined = await JoinedNodes.open(join(root, 'nodes.json'));
    // Never reached: the refusal comes before any route.
    const cluster = { zone: 'test-1a', cidr: '10.9.0.0/16' } as unknown as Parameters<typeof createClusterHttpServer>[0]['cluster'];
    const server = createClusterHttpServer({ cluster, cloudSecret: newPeerSecret(), joined, log: pino({ level: 'silent' }), maxRequestBytes: MiB });
    const port = await listenOnLoopback(server.listener);
    const call = await sendPartial(port, postHead('/v1/runInstances', 40 * MiB, 'application/json'), 64 * 1024);
    assert.equal(call.status, 413, call.text);
    assert.equal(JSON.parse(call.body).code, 'RequestEntityTooLarge');
    assert.ok(call.closed);
    const join_ = await sendPartial(port, postHead('/join', 'chunked', 'application/json'), 512 * 1024, true);
    assert.equal(join_.status, 413, join_.text);
    assert.ok(join_.closed);
  });

  it('the node refuses a call over its limit', async () => {
    const port = await listenOnLoopback(createNodeHttpListener({
      agent: {} as NodeApi, identity: () => ({ nodeId: 'nd-1', secret: newPeerSecret() }), log: pino({ level: 'silent' }), maxRequestBytes: MiB,
    }));
    const answer = await sendPartial(port, postHead('/v1/runInstance', 'chunked', 'application/json'), 2 * MiB, true);
    assert.equal(answer.status, 413, answer.text);
    assert.equal(JSON.parse(answer.body).code, 'RequestEntityTooLarge');
    assert.ok(answer.closed);
  });

  it('a peer RPC handler served on its own keeps its limit, and its client reports the refusal', async () => {
    const secret = newPeerSecret();
    const app = new Hono();
    app.post('/v1/:method', createPeerRpcHandler({
      verifier: new PeerVerifier({ secretFor: (id) => (id === 'k' ? secret : undefined) }),
      methods: { echo: async (p) => p }, log: pino({ level: 'silent' }), peerKind: 'test', maxBodyBytes: 4096,
    }));
    const server = await new Promise<ServerType>((ok) => { const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => ok(s)); });
    servers.push(() => new Promise((done) => { server.close(() => done()); (server as http.Server).closeAllConnections(); }));
    const client = new PeerClient({ baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, credentials: () => ({ keyId: 'k', secret }), peerName: 'test peer' });
    assert.deepEqual(await client.call('echo', { a: 'small' }), { a: 'small' });
    await assert.rejects(client.call('echo', { a: 'b'.repeat(8192) }), (e: unknown) => e instanceof Ec2Error && e.code === 'RequestEntityTooLarge' && e.status === 413);
  });
});
