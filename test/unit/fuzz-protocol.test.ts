// Hostile input fuzzed over the protocol layer (issue 11, item 6), with fast-check: the query
// parser and the XML serializer. Any parameter set for any operation (names that follow the
// operation's input shape, gone astray, duplicated; values oversized and Unicode-tricky) parses
// to an input or throws an Ec2Error whose bounded message serializes to a well-formed EC2 error
// document; any output the model allows, with such strings inside, serializes to a well-formed
// document whose text comes back as written (lone surrogates aside: UTF-8 cannot carry them).
// Run counts are bounded so the file takes seconds.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseInput } from '../../src/protocol/query-parser.ts';
import { serializeError, serializeOutput } from '../../src/protocol/xml-serializer.ts';
import { Ec2Error, MESSAGE_MAX_CHARS } from '../../src/protocol/errors.ts';
import { getOperation, operationNames, type Shape } from '../../src/protocol/model.ts';
import { hostileParams, hostileString, hostileValue, parseWellFormed } from '../helpers/hostile-input.ts';

const OPERATIONS = operationNames();
/** Operations clients use most, fuzzed more often than the rest of the 600. */
const COMMON = ['RunInstances', 'DescribeInstances', 'CreateTags', 'AuthorizeSecurityGroupIngress', 'DescribeImages', 'CreateVolume',
  'ModifyInstanceAttribute', 'DescribeSecurityGroups', 'ImportKeyPair', 'RegisterImage', 'CreateLaunchTemplate', 'DescribeTags'];
const RUNS = Number(process.env.IRONBARK_FUZZ_RUNS ?? 400);

const operation = fc.oneof({ weight: 2, arbitrary: fc.constantFrom(...COMMON) }, { weight: 3, arbitrary: fc.constantFrom(...OPERATIONS) });

/** The EC2 error document of `err`, checked and parsed. */
function errorDocument(err: Ec2Error): { Code: string; Message: string } {
  const doc = parseWellFormed(serializeError(err, 'req-fuzz'));
  const error = doc?.Response?.Errors?.Error;
  assert.ok(error && typeof error.Code === 'string' && error.Code.length > 0, 'an error document with a code');
  assert.equal(doc.Response.RequestID, 'req-fuzz');
  return error;
}

function assertTypedLike(shape: Shape, value: unknown, path: string): void {
  if (value === undefined) return;
  switch (shape.type) {
    case 'structure':
      assert.equal(typeof value, 'object', path);
      for (const [k, v] of Object.entries(value as object)) {
        const member = shape.members?.[k];
        assert.ok(member, `${path}.${k} is a member of the shape`);
        assertTypedLike(member.shape, v, `${path}.${k}`);
      }
      return;
    case 'list':
      assert.ok(Array.isArray(value), path);
      (value as unknown[]).forEach((v, i) => assertTypedLike(shape.member!.shape, v, `${path}[${i}]`));
      return;
    case 'map':
      assert.equal(Object.getPrototypeOf(value), Object.prototype, `${path} is a plain object`);
      return;
    case 'integer': case 'long': assert.ok(Number.isSafeInteger(value), `${path}: ${String(value)}`); return;
    case 'float': case 'double': assert.ok(Number.isFinite(value), `${path}: ${String(value)}`); return;
    case 'boolean': assert.equal(typeof value, 'boolean', path); return;
    case 'timestamp': assert.ok(value instanceof Date && Number.isFinite(value.getTime()), `${path} is a valid date (${String(value)})`); return;
    case 'blob': assert.ok(Buffer.isBuffer(value), path); return;
    default: assert.equal(typeof value, 'string', path);
  }
}

describe('fuzz: the query parser', () => {
  it('any parameters for any operation: a typed input, or an Ec2Error that serializes well-formed', () => {
    const cases = operation.chain((op) => hostileParams(getOperation(op)!.input).map((pairs) => ({ op, pairs })));
    fc.assert(fc.property(cases, ({ op, pairs }) => {
      const params: Record<string, string> = {};
      for (const [k, v] of pairs) params[k] = v;
      let input: Record<string, any>;
      try {
        input = parseInput(op, params);
      } catch (err) {
        if (!(err instanceof Ec2Error)) throw new Error(`${op} ${JSON.stringify(pairs).slice(0, 400)} threw a ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
        assert.ok(err.status >= 400 && err.status < 600);
        assert.ok(err.message.length <= MESSAGE_MAX_CHARS, `bounded message (${err.message.length} characters)`);
        const doc = errorDocument(err);
        assert.equal(doc.Code, err.code);
        return;
      }
      assertTypedLike(getOperation(op)!.input, input, op);
    }), { numRuns: RUNS * 4 });
  });

  it('every non-string scalar parameter of the model, given values aimed at its parser', () => {
    // Top-level parameters (and those one list down) whose type is not a string: the scalar parsers
    // must refuse, never pass on an out-of-range number or an invalid Date.
    const targets: Array<{ op: string; name: string; shape: Shape }> = [];
    for (const op of OPERATIONS) {
      for (const m of getOperation(op)!.input.memberList ?? []) {
        if (m.shape.type === 'list' && m.shape.member!.shape.type !== 'structure') targets.push({ op, name: `${m.wireName}.1`, shape: m.shape.member!.shape });
        else if (!['structure', 'list', 'map', 'string'].includes(m.shape.type)) targets.push({ op, name: m.wireName, shape: m.shape });
      }
    }
    const cases = fc.constantFrom(...targets.filter((t) => t.shape.type !== 'string')).chain((t) => hostileValue(t.shape).map((value) => ({ ...t, value })));
    fc.assert(fc.property(cases, ({ op, name, shape, value }) => {
      let input: Record<string, any>;
      try {
        input = parseInput(op, { [name]: value });
      } catch (err) {
        if (!(err instanceof Ec2Error)) throw err;
        errorDocument(err);
        return;
      }
      assertTypedLike(getOperation(op)!.input, input, `${op} ${name}=${JSON.stringify(value).slice(0, 60)} (${shape.type})`);
    }), { numRuns: RUNS, examples: [[{ op: 'DescribeSpotPriceHistory', name: 'StartTime', shape: getOperation('DescribeSpotPriceHistory')!.input.members!['StartTime']!.shape, value: '99999999999999999999' }]] });
  });

  it('unknown and hostile action names are InvalidAction', () => {
    fc.assert(fc.property(hostileString, (name) => {
      fc.pre(getOperation(name) === undefined);
      assert.throws(() => parseInput(name, {}), (err: unknown) => err instanceof Ec2Error && err.code === 'InvalidAction' && errorDocument(err).Code === 'InvalidAction');
    }), { numRuns: RUNS });
  });
});

// ---- outputs ---------------------------------------------------------------------------------

/** A value of `shape` as a handler could return it, with hostile strings; depth-bounded. */
function valueOf(shape: Shape, depth: number): fc.Arbitrary<unknown> {
  switch (shape.type) {
    case 'structure': {
      if (depth > 4) return fc.constant({});
      const members = shape.memberList ?? [];
      const picked = members.slice(0, 12);
      return fc.record(Object.fromEntries(picked.map((m) => [m.name, valueOf(m.shape, depth + 1)])), { requiredKeys: [] });
    }
    case 'list': return depth > 4 ? fc.constant([]) : fc.array(valueOf(shape.member!.shape, depth + 1), { maxLength: 3 });
    case 'map': return depth > 4 ? fc.constant({}) : fc.dictionary(hostileString, valueOf(shape.value!.shape, depth + 1), { maxKeys: 3 });
    case 'integer': case 'long': return fc.integer();
    case 'float': case 'double': return fc.double({ noNaN: true, noDefaultInfinity: true });
    case 'boolean': return fc.boolean();
    case 'timestamp': return fc.date({ min: new Date(0), max: new Date('9999-12-31T23:59:59Z'), noInvalidDate: true });
    case 'blob': return fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a));
    default: return hostileString;
  }
}

/** Every string a value holds. */
function stringsIn(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) value.forEach((v) => stringsIn(v, out));
  else if (value && typeof value === 'object' && !(value instanceof Date) && !Buffer.isBuffer(value)) Object.values(value).forEach((v) => stringsIn(v, out));
  return out;
}

/** What a client reads back for `text`: UTF-8 makes lone surrogates U+FFFD; XML cannot carry the rest of the C0 controls. */
function asReceived(text: string): string {
  return Buffer.from(text, 'utf8').toString('utf8').replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, '\uFFFD');
}

function textsIn(parsed: unknown, out: string[] = []): string[] {
  if (typeof parsed === 'string') out.push(parsed);
  else if (Array.isArray(parsed)) parsed.forEach((v) => textsIn(v, out));
  else if (parsed && typeof parsed === 'object') Object.values(parsed).forEach((v) => textsIn(v, out));
  return out;
}

const entities = (s: string) => s.replace(/&#x([0-9a-fA-F]+);/g, (_, h) => String.fromCodePoint(parseInt(h, 16)))
  .replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');

describe('fuzz: the XML serializer', () => {
  it('any output the model allows, with hostile strings, is a well-formed document that keeps the text', () => {
    const cases = operation.chain((op) => valueOf(getOperation(op)!.output, 0).map((output) => ({ op, output })));
    fc.assert(fc.property(cases, hostileString, ({ op, output }, requestId) => {
      const doc = parseWellFormed(serializeOutput(op, output, requestId));
      const root = doc[`${op}Response`];
      assert.ok(root !== undefined, `the root element is ${op}Response`);
      // Each string the output holds comes back as written (in the form a client can receive).
      const texts = new Set(textsIn(root).map(entities));
      for (const s of stringsIn(output)) {
        if (s === '' || s.trim() !== s) continue; // empty and padded values: the parser leaves them out or trims; not a loss
        const expected = asReceived(s);
        assert.ok([...texts].some((t) => t === expected), `${JSON.stringify(s).slice(0, 80)} comes back`);
      }
    }), { numRuns: RUNS });
  });

  it('any error message and code serialize to a well-formed error document', () => {
    fc.assert(fc.property(hostileString, hostileString, (code, message) => {
      const doc = parseWellFormed(serializeError(new Ec2Error(code || 'X', message), 'req-fuzz'));
      assert.ok(doc.Response.Errors.Error !== undefined);
    }), { numRuns: RUNS });
  });
});
