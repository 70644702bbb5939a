// Large answers are streamed in pieces with chunked transfer encoding (small ones keep a
// Content-Length): the endpoint here cuts answers into pieces of 2,000 characters, so forty key
// pairs make a many-piece answer, which the AWS SDK must read exactly as a whole one.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { CreateKeyPairCommand, DescribeKeyPairsCommand, DescribeRegionsCommand } from '@aws-sdk/client-ec2';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { openStore, type Store } from '../../src/store/store.ts';
import { ensureAdminAccount, type AdminCredentials } from '../../src/cloud/bootstrap.ts';
import { createKeyResolver } from '../../src/auth/key-cache.ts';
import { createEc2Handler, serveEc2OnNode } from '../../src/cloud/ec2-endpoint.ts';
import { allOperations } from '../../src/cloud/operations.ts';
import { ComputeDirectory } from '../../src/cloud/compute-directory.ts';
import { serializeOutput, serializeOutputChunks } from '../../src/protocol/xml-serializer.ts';
import { ec2Client, REGION } from '../helpers/cloud.ts';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

const KEYS = 40;

describe('streamed answers', () => {
  let dir = '';
  let store: Store;
  let admin: AdminCredentials;
  let server: http.Server;
  let url = '';

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ib-stream-'));
    store = await openStore({ url: ':memory:' });
    const log = pino({ level: 'silent' });
    server = http.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const settings = { region: REGION, endpoint: url };
    admin = await ensureAdminAccount(store, dir, settings);
    const handler = createEc2Handler({
      store, settings, keys: createKeyResolver(store), log, answerChunkChars: 2000,
      operations: allOperations({ directory: new ComputeDirectory(), log, imageUrl: (id) => `${url}/images/${id}` }),
    });
    server.on('request', serveEc2OnNode(() => handler, log));
  });

  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function rawCall(action: string): Promise<{ headers: http.IncomingHttpHeaders; body: string }> {
    const endpoint = new URL(url);
    const body = `Action=${action}&Version=2016-11-15`;
    const signer = new SignatureV4({ service: 'ec2', region: REGION, sha256: Hash.bind(null, 'sha256'),
      credentials: { accessKeyId: admin.accessKeyId, secretAccessKey: admin.secretAccessKey } });
    const signed = await signer.sign({ method: 'POST', protocol: 'http:', hostname: endpoint.hostname, port: Number(endpoint.port), path: '/',
      headers: { host: endpoint.host, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }, body });
    return new Promise((resolve, reject) => {
      const req = http.request({ host: endpoint.hostname, port: endpoint.port, method: 'POST', path: '/', headers: signed.headers as Record<string, string> }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => { text += d; });
        res.on('end', () => resolve({ headers: res.headers, body: text }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  it('sends a small answer whole, with its length', async () => {
    const small = await rawCall('DescribeRegions');
    assert.equal(small.headers['content-length'], String(Buffer.byteLength(small.body)));
    assert.equal(small.headers['transfer-encoding'], undefined);
  });

  it('streams a large answer in chunks that the AWS SDK reads whole', async () => {
    const ec2 = ec2Client({ url }, admin);
    const names: string[] = [];
    for (let i = 0; i < KEYS; i++) {
      const name = `key-${String(i).padStart(2, '0')}`;
      await ec2.send(new CreateKeyPairCommand({ KeyName: name, KeyType: 'ed25519' }));
      names.push(name);
    }
    const raw = await rawCall('DescribeKeyPairs');
    assert.equal(raw.headers['transfer-encoding'], 'chunked');
    assert.equal(raw.headers['content-length'], undefined);
    assert.equal(raw.body.split('<keyName>').length - 1, KEYS);
    assert.ok(raw.body.endsWith('</DescribeKeyPairsResponse>'));

    const described = await ec2.send(new DescribeKeyPairsCommand({}));
    assert.deepEqual(described.KeyPairs!.map((k) => k.KeyName).sort(), names);
    assert.equal((await ec2.send(new DescribeRegionsCommand({}))).Regions![0]!.RegionName, REGION);
  });

  it('cuts between list items only: the pieces join into the document serializeOutput writes', () => {
    const output = { KeyPairs: Array.from({ length: 25 }, (_, i) => ({ KeyPairId: `key-${i}`, KeyName: `k<${i}>`, KeyFingerprint: 'ab:cd', Tags: [] })) };
    const pieces = [...serializeOutputChunks('DescribeKeyPairs', output, 'req-1', 300)];
    assert.ok(pieces.length > 5, `${pieces.length} pieces`);
    assert.equal(pieces.join(''), serializeOutput('DescribeKeyPairs', output, 'req-1'));
    for (const piece of pieces.slice(1, -1)) assert.match(piece, /^<item>.*<\/item>$/s, 'every middle piece is whole items');
  });
});
