// Generators of hostile EC2 Query input for the property-based fuzz tests (fast-check): parameter
// names that follow an operation's own input shape (so requests get past the first unknown name
// and reach the deep rules) with hostile segments mixed in (huge, zero and negative list indexes,
// prototype names, empty segments, deep nesting), values that are oversized, duplicated or
// Unicode-tricky (lone surrogates, NUL, bidirectional overrides, non-characters), and checks that
// an answer is a well-formed EC2 document.
import fc from 'fast-check';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import type { Member, Shape } from '../../src/protocol/model.ts';

/** Characters that have broken parsers, serializers and terminals. */
export const TRICKY_CHARS = [
  '\u0000', '\u0001', '\u0008', '\u000B', '\u001F', '\u007F', '\u0085', '\u00A0', '\u200B', '\u200D', '\u200E', '\u200F',
  '\u202A', '\u202E', '\u2066', '\u2069', '\u2028', '\u2029', '\uD800', '\uDBFF', '\uDC00', '\uDFFF', '\uFEFF', '\uFFFE', '\uFFFF',
  '\uD83D\uDE00', '&', '<', '>', '"', "'", ']]>', '%', '+', '=', '.', '\r', '\n', '\t', '\\', '/', '*', '?', '${', '{{', '</x>',
];

const trickyChar = fc.constantFrom(...TRICKY_CHARS);

/** Strings of every code unit (lone surrogates too), tricky characters, and a few large ones. */
export const hostileString: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 3, arbitrary: fc.array(fc.oneof(trickyChar, fc.string({ maxLength: 3 })), { maxLength: 12 }).map((parts) => parts.join('')) },
  { weight: 1, arbitrary: fc.constantFrom('', ' ', 'true', 'FALSE', '-1', '0', '1e308', '9'.repeat(40), 'NaN', 'Infinity', '2026-13-40T25:61:61Z', '99999999999999999999', 'AAAA====', 'i-0123456789abcdef0') },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('A', '\uD800', '<', '\u202E', 'é'), fc.integer({ min: 1000, max: 70_000 })).map(([c, n]) => c.repeat(n)) },
);

/** A list index as a hostile client writes one. */
export const hostileIndex = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: 1, max: 3 }).map(String) },
  { weight: 2, arbitrary: fc.constantFrom('0', '-1', '00', '01', '1.5', '99999999', '999999999', '9999999999', '1e3', '0x1', ' 1', '١', '', '__proto__', 'constructor', 'entry') },
);

/** Values aimed at one scalar type's parser: out of range, almost right, and huge. */
const VALUES_FOR: Record<string, readonly string[]> = {
  integer: ['9007199254740993', '-9223372036854775809', '-0', '+1', '0x10', '1.0', '1e3', ' 1', '1'.repeat(400), '٣'],
  float: ['1e309', '-1e-400', '.', '1e', '+.5e-3', '0x1p3', 'Infinity', '-NaN', '1'.repeat(400)],
  boolean: ['TRUE', 'yes', '1', '', 'true\u0000', 'tru\u0000e'],
  timestamp: ['99999999999999999999', '8640000000000.001', '8640000000001', '-1', '0000-01-01', '0099-01-01', '9999-12-31T23:59:60Z', '2024-02-30',
    '2024-01-01T00:00:00+99:99', '2024-01-01T24:00:00Z', '2024-01-01T00:00:00.99999999999999999999Z', '1e3', '+275760-09-13T00:00:00Z'],
  blob: ['====', 'A', 'AA=', '@@@', 'QUJD\nREVG', 'A'.repeat(100_001)],
};
VALUES_FOR['long'] = VALUES_FOR['integer']!;
VALUES_FOR['double'] = VALUES_FOR['float']!;

/** A value for a parameter whose model shape is `leaf` (when the name reached one). */
export function hostileValue(leaf: Shape | undefined): fc.Arbitrary<string> {
  const aimed = leaf ? VALUES_FOR[leaf.type] : undefined;
  return aimed ? fc.oneof({ weight: 1, arbitrary: hostileString }, { weight: 2, arbitrary: fc.constantFrom(...aimed) }) : hostileString;
}

/** One parameter (name and value) that follows `shape` from its root for a few steps, then may go astray. */
export function hostileParam(shape: Shape): fc.Arbitrary<[string, string]> {
  return fc.array(fc.nat(), { minLength: 8, maxLength: 8 }).chain((choices) => {
    let at = 0;
    const next = () => choices[at++ % choices.length]!;
    return fc.tuple(hostileIndex, hostileIndex, fc.oneof({ weight: 8, arbitrary: fc.constant('') },
      { weight: 2, arbitrary: fc.constantFrom('.', '..', '.x', '.__proto__', '.1', '.99999999', '.Value.0', '.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a') }), fc.nat({ max: 9 }))
      .chain(([indexA, indexB, tail, astray]) => {
        const segments: string[] = [];
        let current: Shape | undefined = shape;
        const indexes = [indexA, indexB];
        for (let depth = 0; current && depth < 6; depth++) {
          if (current.type === 'structure') {
            const members: Member[] = current.memberList ?? [];
            if (members.length === 0) break;
            const m: Member = members[next() % members.length]!;
            segments.push(m.wireName);
            current = m.shape;
          } else if (current.type === 'list') {
            segments.push(indexes.shift() ?? '1');
            current = current.member!.shape;
          } else if (current.type === 'map') {
            segments.push('entry', indexes.shift() ?? '1', next() % 2 ? 'key' : 'value');
            current = undefined;
          } else {
            break;
          }
        }
        // Now and then a segment of nonsense in the middle, as if the client misspelt the model.
        if (astray === 0 && segments.length > 1) segments.splice(1, 0, 'Nonsense');
        const name = segments.join('.') + tail;
        return hostileValue(tail === '' && astray !== 0 ? current : undefined).map((value) => [name, value] as [string, string]);
      });
  });
}

/** Query parameters for an operation: names from its shape and a few wild ones, hostile values, duplicates. */
export function hostileParams(shape: Shape): fc.Arbitrary<Array<[string, string]>> {
  const param = fc.oneof({ weight: 6, arbitrary: hostileParam(shape) }, { weight: 1, arbitrary: fc.tuple(hostileString, hostileString) });
  return fc.array(param, { maxLength: 5 })
    // Duplicated names: the same parameter twice with different values.
    .chain((pairs) => fc.boolean().map((dup) => (dup && pairs.length > 0 ? [...pairs, [pairs[0]![0], `${pairs[0]![1]}-again`] as [string, string]] : pairs)));
}

/** Characters XML 1.0 documents may contain (the Char production). */
const XML_CHAR = /^[\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]*$/u;

const parser = new XMLParser({ ignoreAttributes: false, parseTagValue: false, trimValues: false });

/**
 * The document as a client receives it (UTF-8 on the wire), checked: only XML characters, well
 * formed, no stack trace. Returns it parsed.
 */
export function parseWellFormed(document: string): any {
  const received = Buffer.from(document, 'utf8').toString('utf8');
  if (!XML_CHAR.test(received)) {
    const bad = [...received].find((c) => !XML_CHAR.test(c))!;
    throw new Error(`the document holds U+${bad.codePointAt(0)!.toString(16).padStart(4, '0')}, which XML 1.0 cannot carry: ${JSON.stringify(received.slice(0, 300))}`);
  }
  const valid = XMLValidator.validate(received);
  if (valid !== true) throw new Error(`not well-formed XML (${valid.err.msg} at line ${valid.err.line}): ${JSON.stringify(received.slice(0, 300))}`);
  if (/\n\s+at [^\n]*\((?:file:|node:|\/)/.test(received) || /node_modules|\.ts:\d+:\d+/.test(received)) {
    throw new Error(`the document shows a stack trace: ${JSON.stringify(received.slice(0, 500))}`);
  }
  return parser.parse(received);
}
