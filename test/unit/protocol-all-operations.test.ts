// Every operation of the model, both directions, with the real SDKs as the oracle: a random input
// is serialized by AWS SDK v3 and by aws-sdk v2 and must parse back to itself; a random output is
// serialized by us and must deserialize in SDK v3 to itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as ec2 from '@aws-sdk/client-ec2';
import { getOperation, operationNames, type Shape, type Ref } from '../../src/protocol/model.ts';
import { parseInput } from '../../src/protocol/query-parser.ts';
import { serializeOutput } from '../../src/protocol/xml-serializer.ts';
import { offlineEc2Client } from '../helpers/sdk-oracle.ts';

const require = createRequire(import.meta.url);
const EC2v2 = require('aws-sdk/clients/ec2');
const queryProtocol = require('aws-sdk/lib/protocol/query');

/** mulberry32: a small seeded generator, so a failure reproduces. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Characters that stress URL encoding and XML escaping, plus non-ASCII.
const ALPHABET = 'abcXYZ019 -_.~!*\'()&<>"=+/%?#;:,@$é€日本😀\t\n';
const MAX_DEPTH = 5;

interface GenOptions { wholeSecondDates: boolean }

function generator(random: () => number, opts: GenOptions) {
  const int = (n: number) => Math.floor(random() * n);
  function string(): string {
    const len = 1 + int(12);
    const chars = [...ALPHABET];
    // SDK v3's XML parser reads whitespace-only text with a newline as empty, whatever the encoding.
    let s = 'x';
    for (let i = 0; i < len; i++) s += chars[int(chars.length)];
    return s;
  }
  function value(ref: Ref, depth: number): unknown {
    const shape = ref.shape;
    switch (shape.type) {
      case 'structure': return shape.memberList!.length === 0 ? undefined : structure(shape, depth + 1);
      case 'list': {
        const n = 1 + int(2);
        const out: unknown[] = [];
        for (let i = 0; i < n; i++) out.push(value(shape.member!, depth + 1));
        return out.includes(undefined) ? undefined : out;
      }
      case 'map': return { k1: value(shape.value!, depth + 1) };
      case 'string': return string();
      case 'integer': case 'long': return int(200_000) - 1000;
      case 'float': case 'double': return (int(20_000) - 100) / 4;
      case 'boolean': return random() < 0.5;
      case 'timestamp': {
        const seconds = 1_000_000_000 + int(900_000_000);
        return new Date(seconds * 1000 + (opts.wholeSecondDates ? 0 : int(1000)));
      }
      case 'blob': return Buffer.from(Array.from({ length: 1 + int(20) }, () => int(256)));
    }
  }
  const isComposite = (r: Ref) => r.shape.type === 'structure' || r.shape.type === 'list' || r.shape.type === 'map';
  /** A random structure; never empty when the shape has members, since an empty one has no wire form. */
  function structure(shape: Shape, depth: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const m of shape.memberList!) {
      // SDK v3's newer model marks more ClientTokens as idempotency tokens and fills them in.
      const wanted = m.required || m.idempotencyToken || m.name === 'ClientToken' || (random() < 0.6 && (!isComposite(m) || depth < MAX_DEPTH));
      if (!wanted) continue;
      const v = value(m, depth);
      if (v !== undefined) out[m.name] = v;
    }
    if (Object.keys(out).length === 0) {
      for (const m of [...shape.memberList!.filter((x) => !isComposite(x)), ...shape.memberList!.filter(isComposite)]) {
        const v = value(m, depth);
        if (v !== undefined) { out[m.name] = v; break; }
      }
    }
    return out;
  }
  return { structure };
}

/** Bytes as base64 and Dates as ISO strings, so SDK v3's Uint8Array compares with our Buffer. */
function normalize(v: unknown): unknown {
  if (v instanceof Uint8Array) return `blob:${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64')}`;
  if (v instanceof Date) return `date:${v.toISOString()}`;
  if (Array.isArray(v)) return v.map(normalize);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalize(x)]));
  return v;
}

function withoutEmptyLists(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutEmptyLists);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).filter(([, x]) => !(Array.isArray(x) && x.length === 0)).map(([k, x]) => [k, withoutEmptyLists(x)]));
  }
  return v;
}

/** Runs one comparison and keeps its failure, so one run reports every operation that breaks. */
function check(failures: string[], label: string, compare: () => void): void {
  try {
    compare();
  } catch (e) {
    failures.push(`${label}: ${(e as Error).message.slice(0, 1500)}`);
  }
}

function formToParams(body: string): Record<string, string> {
  return Object.fromEntries(new URLSearchParams(body));
}

const PRESIGNED_COPY = { PresignedUrl: 'https://ec2.us-east-1.amazonaws.com/?Action=CopySnapshot', DestinationRegion: 'us-east-1' };

const SEEDS = [20161115, 7, 1999];

const commands = ec2 as unknown as Record<string, new (input: unknown) => any>;

test('every operation: SDK v3 input -> parseInput, serializeOutput -> SDK v3 output', async () => {
  let capturedBody = '';
  let responseXml = '';
  const client = offlineEc2Client((body) => {
    capturedBody = body;
    return { xml: responseXml };
  });
  const failures: string[] = [];
  const names = operationNames();
  assert.equal(names.length, 627);
  // Several seeds, because each run leaves out a random part of every shape.
  for (const seed of SEEDS) {
    const gen = generator(rng(seed), { wholeSecondDates: false });
    for (const name of names) {
      const op = getOperation(name)!;
      const input = gen.structure(op.input, 0);
      // The EC2 customization of SDK v3 presigns CopySnapshot unless a PresignedUrl is given.
      if (name === 'CopySnapshot') Object.assign(input, PRESIGNED_COPY);
      const output = gen.structure(op.output, 0);
      responseXml = serializeOutput(name, output, `req-${name}`);
      const result = await client.send(new commands[`${name}Command`]!(input));
      const params = formToParams(capturedBody);
      assert.equal(params.Action, name);
      check(failures, `${name} (seed ${seed}): input round trip`, () => assert.deepEqual(normalize(parseInput(name, params)), normalize(input)));
      const { $metadata: _metadata, ...parsedOutput } = result;
      check(failures, `${name} (seed ${seed}): output round trip`, () => assert.deepEqual(normalize(parsedOutput), normalize(output)));
    }
  }
  assert.deepEqual(failures, []);
});

test('every operation: aws-sdk v2 input -> parseInput, serializeOutput -> aws-sdk v2 output', () => {
  const service = new EC2v2({
    region: 'us-east-1',
    endpoint: 'http://127.0.0.1:1',
    credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' },
    paramValidation: false,
  });
  // v2 writes timestamps to the second.
  const failures: string[] = [];
  for (const seed of SEEDS) {
    const gen = generator(rng(seed + 1), { wholeSecondDates: true });
    for (const name of operationNames()) {
      const input = gen.structure(getOperation(name)!.input, 0);
      // aws-sdk v2 presigns CopySnapshot too, asynchronously, unless a PresignedUrl is given.
      if (name === 'CopySnapshot') Object.assign(input, PRESIGNED_COPY);
      const request = service.makeRequest(name[0]!.toLowerCase() + name.slice(1), input);
      request.removeAllListeners('sign');
      request.build();
      const params = formToParams(request.httpRequest.body);
      assert.equal(params.Action, name);
      check(failures, `${name} (seed ${seed + 1}): input round trip`, () => assert.deepEqual(normalize(parseInput(name, params)), normalize(input)));

      const output = gen.structure(getOperation(name)!.output, 0);
      const response = { request, httpResponse: { body: Buffer.from(serializeOutput(name, output, `req-${name}`)) }, data: undefined as unknown, requestId: '' };
      queryProtocol.extractData(response);
      assert.equal(response.requestId, `req-${name}`);
      // v2 fills every absent list with [].
      check(failures, `${name} (seed ${seed + 1}): output round trip`, () => assert.deepEqual(withoutEmptyLists(normalize(response.data)), withoutEmptyLists(normalize(output))));
    }
  }
  assert.deepEqual(failures, []);
});
