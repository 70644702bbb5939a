// The compiled XML serializer writes, byte for byte, what the serializer before it wrote
// (test/helpers/xml-serializer-reference.ts): for every operation of the model, random outputs
// with odd values (nulls in lists, numbers as strings, strings for booleans, Maps and objects for
// maps, timestamps as numbers and strings, blobs as text, Buffers and typed arrays, text that needs
// escaping), whole, cut into pieces and as bytes; and both fail alike on values of the wrong kind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getOperation, operationNames, type Ref, type Shape } from '../../src/protocol/model.ts';
import * as current from '../../src/protocol/xml-serializer.ts';
import * as reference from '../helpers/xml-serializer-reference.ts';

/** mulberry32: a small seeded generator, so a failure reproduces. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TEXTS = ['', 'plain', 'a & b <c> "d" \'e\'', 'cr\r\nlf', 'nul\u0000bell\u0007', '\u0085\u2028\uFFFE\uFFFF', '日本 😀 é', '\uD800 lone', ' padded ', 'x'.repeat(300)];

function generator(random: () => number) {
  const int = (n: number) => Math.floor(random() * n);
  const pick = <T>(xs: T[]): T => xs[int(xs.length)]!;
  function scalar(shape: Shape): unknown {
    switch (shape.type) {
      case 'string': return random() < 0.9 ? pick(TEXTS) + int(1000) : pick([42, true, 1.5]);
      case 'boolean': return pick([true, false, 'true', 'false', 0, 1]);
      case 'integer': case 'long': return random() < 0.8 ? int(2_000_000) - 1000 : pick(['7', -0, 2 ** 53]);
      case 'float': case 'double': return random() < 0.8 ? (int(20_000) - 100) / 8 : pick([1e21, 1e-7, '3.25']);
      case 'timestamp': {
        const ms = 1_000_000_000_000 + int(900_000_000_000);
        return pick([new Date(ms), ms, new Date(ms).toISOString()]);
      }
      case 'blob': return pick([Buffer.from([int(256), int(256), 0]), new Uint8Array([1, 2, 3, int(256)]), 'text blob é']);
      default: throw new Error(shape.type);
    }
  }
  function value(ref: Ref, depth: number): unknown {
    const shape = ref.shape;
    switch (shape.type) {
      case 'structure': return depth > 6 ? {} : structure(shape, depth + 1);
      case 'list': {
        const out: unknown[] = [];
        const n = depth > 6 ? 0 : int(4);
        for (let i = 0; i < n; i++) out.push(random() < 0.1 ? pick([null, undefined]) : value(shape.member!, depth + 1));
        return out;
      }
      case 'map': {
        const entries: Array<[string, unknown]> = [['k1', value(shape.value!, depth + 1)], ['k&2', null], ['k3', value(shape.value!, depth + 1)]];
        return random() < 0.5 ? new Map(entries) : Object.fromEntries(entries);
      }
      default: return scalar(shape);
    }
  }
  function structure(shape: Shape, depth: number): Record<string, unknown> {
    const out: Record<string, unknown> = { NotInTheModel: 'ignored' };
    for (const m of shape.memberList!) {
      const r = random();
      if (r < 0.3) continue;
      out[m.name] = r < 0.35 ? null : value(m, depth);
    }
    return out;
  }
  return { structure };
}

function outcome(write: () => string | string[]): string | string[] {
  try {
    return write();
  } catch (e) {
    return `threw ${(e as Error).constructor.name}: ${(e as Error).message}`;
  }
}

test('every operation: the compiled serializer writes what the reference one wrote, whole and in pieces', () => {
  let compared = 0;
  for (const seed of [1, 20161115, 424242]) {
    const { structure } = generator(rng(seed));
    for (const name of operationNames()) {
      const output = structure(getOperation(name)!.output, 0);
      const requestId = `req-${name}-${seed} & <id>`;
      assert.equal(current.serializeOutput(name, output, requestId), reference.serializeOutput(name, output, requestId), name);
      const pieces = (chunks: typeof current.serializeOutputChunks) => outcome(() => [...chunks(name, output, requestId, 64)]);
      const expected = pieces(reference.serializeOutputChunks);
      assert.deepEqual(pieces(current.serializeOutputChunks), expected, `${name} in pieces`);
      // As bytes (what is sent): the same pieces, UTF-8 encoded.
      const bytes = outcome(() => [...current.serializeOutputBytes(name, output, requestId, 64)].map((b) => b.toString('base64')));
      assert.deepEqual(bytes, typeof expected === 'string' ? expected : expected.map((p) => Buffer.from(p).toString('base64')), `${name} as bytes`);
      compared++;
    }
  }
  assert.ok(compared > 1500);
});

test('structures on their own, empty and absent outputs, and errors', () => {
  const { structure } = generator(rng(99));
  const itemOf = (operation: string, list: string) => getOperation(operation)!.output.members![list]!.shape.member!.shape;
  const instance = itemOf('DescribeInstances', 'Reservations').members!.Instances!.shape.member!.shape;
  const shapes = { instance, group: itemOf('DescribeSecurityGroups', 'SecurityGroups'), image: itemOf('DescribeImages', 'Images'), volume: itemOf('DescribeVolumes', 'Volumes') };
  for (const [name, shape] of Object.entries(shapes)) {
    for (let i = 0; i < 20; i++) {
      const v = structure(shape, 0);
      assert.equal(current.serializeStructure(shape, v), reference.serializeStructure(shape, v), name);
    }
  }
  for (const output of [undefined, null, {}, 'text', 5]) {
    assert.equal(current.serializeOutput('DescribeInstances', output, 'r'), reference.serializeOutput('DescribeInstances', output, 'r'));
  }
  const err = { code: 'Bad<Code>', message: 'm & \u0000', status: 400 } as never;
  assert.equal(current.serializeError(err, 'r&'), reference.serializeError(err, 'r&'));
});

test('values of the wrong kind fail alike', () => {
  const cases: Array<[string, unknown]> = [
    ['DescribeInstances', { Reservations: 'not a list' }],
    ['DescribeInstances', { Reservations: [{ Instances: { not: 'a list' } }] }],
    ['DescribeInstances', { Reservations: [{ Instances: [{ LaunchTime: 'not a date' }] }] }],
    ['DescribeSecurityGroups', { SecurityGroups: [{ IpPermissions: [{ IpRanges: 7 }] }] }],
    ['DescribeTags', { Tags: [{ Key: Symbol('s') }] }],
  ];
  for (const [name, output] of cases) {
    assert.deepEqual(outcome(() => current.serializeOutput(name, output, 'r')), outcome(() => reference.serializeOutput(name, output, 'r')), JSON.stringify(output));
  }
  assert.throws(() => current.serializeOutput('NoSuchOperation', {}, 'r'), /unknown operation/);
});
