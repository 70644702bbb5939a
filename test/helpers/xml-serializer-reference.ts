// The XML serializer as it was before it was compiled into one string-building function per shape
// (kept only so that protocol-serializer-equivalence.test.ts can prove the new one byte-identical).
// Operation output -> EC2 XML, the inverse of the SDKs' EC2 response parsers. Members sit
// directly under `<{Op}Response xmlns=…>` next to `<requestId>`; an element is named by the
// member's locationName, else its model name; a list is `<name><item>…</item></name>` with the
// element's locationName (EC2's is "item"). Written as plain strings without an XML library: this
// runs on every API call.
import type { Ec2Error } from '../../src/protocol/errors.ts';
import { getOperation, XML_NAMESPACE, type Ref, type Shape } from '../../src/protocol/model.ts';

const XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n';

const NEEDS_ESCAPE = /[&<>\r\u0000-\u0008\u000B\u000C\u000E-\u001F\u0085\u2028\uFFFE\uFFFF]/;
// XML 1.0 cannot carry these at all, not even as references; they become U+FFFD.
const NOT_XML = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g;

/** Text as XML element content; carriage returns are written as references so parsers do not fold them. */
export function escapeXml(text: string): string {
  if (!NEEDS_ESCAPE.test(text)) return text;
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/\r/g, '&#x0D;')
    .replace(/\u0085/g, '&#x85;')
    .replace(/\u2028/g, '&#x2028;')
    .replace(NOT_XML, '\uFFFD');
}

/** The EC2 XML response of `operation` for `output` (model member names; unknown members are ignored). */
export function serializeOutput(operation: string, output: any, requestId: string): string {
  return serializeOutputChunks(operation, output, requestId, Infinity).next().value as string;
}

/**
 * The same document in pieces of about `chunkChars` characters, cut between the items of the
 * answer's top-level lists (DescribeInstances' reservations, say), so that a large answer can be
 * sent while the rest is still being written. Pieces are produced as they are asked for.
 */
export function* serializeOutputChunks(operation: string, output: any, requestId: string, chunkChars = 1 << 20): Generator<string, void> {
  const op = getOperation(operation);
  if (!op) throw new Error(`EC2 model: unknown operation ${operation}`);
  let out = [XML_DECLARATION + '<' + operation + 'Response xmlns="' + XML_NAMESPACE + '"><requestId>' + escapeXml(requestId) + '</requestId>'];
  if (output !== null && output !== undefined) {
    for (const m of planOf(op.output)) {
      const value = output[m.key];
      if (value === undefined || value === null) continue;
      const list = m.ref.shape;
      const chunkable = list.type === 'list' && list.member!.shape.type === 'structure' && !(m.ref.flattened || list.flattened) && Array.isArray(value);
      if (!chunkable) {
        element(out, m.ref, m.name, m.tags, value);
        continue;
      }
      const item = list.member!;
      const itemTags = tagsOf(item.locationName ?? 'member');
      out.push(m.tags.open);
      let size = 0;
      for (const v of value) {
        if (v === undefined || v === null) continue;
        const parts = [itemTags.open];
        structureContent(parts, item.shape, v);
        parts.push(itemTags.close);
        const text = parts.join('');
        out.push(text);
        size += text.length;
        if (size >= chunkChars) {
          yield out.join('');
          out = [];
          size = 0;
        }
      }
      out.push(m.tags.close);
    }
  }
  out.push('</' + operation + 'Response>');
  yield out.join('');
}

/** The XML content (member elements, no wrapper) of any structure shape, by the same rules as serializeOutput. */
export function serializeStructure(shape: Shape, value: any): string {
  const out: string[] = [];
  structureContent(out, shape, value);
  return out.join('');
}

/** The EC2 error document; the HTTP status to send with it is `err.status`. */
export function serializeError(err: Ec2Error, requestId: string): string {
  return XML_DECLARATION + '<Response><Errors><Error><Code>' + escapeXml(err.code) + '</Code><Message>' + escapeXml(err.message)
    + '</Message></Error></Errors><RequestID>' + escapeXml(requestId) + '</RequestID></Response>';
}

// The document is collected as pieces in one array and joined at the end. Concatenating with
// `+=` instead builds a tree of millions of intermediate strings for a large answer
// (DescribeInstances of 10,000 instances is ~30 MB) and spends most of its time collecting them.
// Each item of a list of structures is joined on its own: many small joins beat one of millions
// of pieces. Element tags are made once per name.

interface Tags { open: string; close: string }
const tagsByName = new Map<string, Tags>();

function tagsOf(name: string): Tags {
  let tags = tagsByName.get(name);
  if (tags === undefined) tagsByName.set(name, tags = { open: '<' + name + '>', close: '</' + name + '>' });
  return tags;
}

interface MemberPlan { key: string; ref: Ref; name: string; tags: Tags }
const plans = new WeakMap<Shape, MemberPlan[]>();

function planOf(shape: Shape): MemberPlan[] {
  let plan = plans.get(shape);
  if (plan === undefined) {
    plan = shape.memberList!.map((m) => ({ key: m.name, ref: m, name: m.xmlName, tags: tagsOf(m.xmlName) }));
    plans.set(shape, plan);
  }
  return plan;
}

// Each structure shape's writer is compiled once, from the model, into a function that visits its
// members in order with their tags and scalar conversions inlined: walking the model generically
// for every member of every item is what made a 10,000-instance answer slow.
type StructureWriter = (out: string[], value: any) => void;
const writers = new WeakMap<Shape, StructureWriter>();

function structureContent(out: string[], shape: Shape, value: any): void {
  let write = writers.get(shape);
  if (write === undefined) writers.set(shape, write = compileStructureWriter(shape));
  write(out, value);
}

/** JavaScript that appends the element for scalar `expr` of `shape` to `out`, or undefined if it is not an inlinable scalar. */
function inlineScalar(shape: Shape, open: string, close: string, expr: string): string | undefined {
  const o = JSON.stringify(open);
  const c = JSON.stringify(close);
  switch (shape.type) {
    case 'string':
      return `out.push(${o} + escapeXml(typeof ${expr} === 'string' ? ${expr} : String(${expr})) + ${c});`;
    case 'boolean':
      return `out.push(${o} + (${expr} === true || ${expr} === 'true' ? 'true' : 'false') + ${c});`;
    case 'integer': case 'long': case 'float': case 'double':
      return `out.push(${o} + String(${expr}) + ${c});`;
    default:
      return undefined;
  }
}

function compileStructureWriter(shape: Shape): StructureWriter {
  const refs: unknown[] = [];
  const refOf = (value: unknown) => { refs.push(value); return `refs[${refs.length - 1}]`; };
  const lines: string[] = ['let x;'];
  for (const m of planOf(shape)) {
    const ref = m.ref;
    const member = ref.shape;
    lines.push(`x = value[${JSON.stringify(m.key)}];`, 'if (x !== undefined && x !== null) {');
    const scalar = inlineScalar(member, m.tags.open, m.tags.close, 'x');
    if (scalar) lines.push(scalar);
    else if (member.type === 'structure') {
      lines.push(`out.push(${JSON.stringify(m.tags.open)}); structureContent(out, ${refOf(member)}, x); out.push(${JSON.stringify(m.tags.close)});`);
    } else if (member.type === 'list' && (member.member!.shape.type === 'structure' || inlineScalar(member.member!.shape, '', '', 'v'))) {
      const item = member.member!;
      const flattened = ref.flattened || member.flattened;
      const itemTags = tagsOf(item.locationName ?? (flattened ? m.name : 'member'));
      lines.push(`if (!Array.isArray(x)) throw new TypeError(${JSON.stringify(`EC2 output: ${m.name} must be a list`)});`);
      if (!flattened) lines.push(`out.push(${JSON.stringify(m.tags.open)});`);
      lines.push('for (let i = 0; i < x.length; i++) {', 'const v = x[i];', 'if (v === undefined || v === null) continue;');
      if (item.shape.type === 'structure') {
        // Each item of a long list is joined on its own: many small joins beat one of millions of pieces.
        lines.push(`if (x.length > 1) { const parts = [${JSON.stringify(itemTags.open)}]; structureContent(parts, ${refOf(item.shape)}, v); parts.push(${JSON.stringify(itemTags.close)}); out.push(parts.join('')); }`,
          `else { out.push(${JSON.stringify(itemTags.open)}); structureContent(out, ${refOf(item.shape)}, v); out.push(${JSON.stringify(itemTags.close)}); }`);
      } else {
        lines.push(inlineScalar(item.shape, itemTags.open, itemTags.close, 'v')!);
      }
      lines.push('}');
      if (!flattened) lines.push(`out.push(${JSON.stringify(m.tags.close)});`);
    } else {
      lines.push(`element(out, ${refOf(ref)}, ${JSON.stringify(m.name)}, ${refOf(m.tags)}, x);`);
    }
    lines.push('}');
  }
  const body = lines.join('\n');
  const factory = new Function('refs', 'escapeXml', 'structureContent', 'element', `return function writeStructure(out, value) {\n${body}\n};`);
  return factory(refs, escapeXml, structureContent, element) as StructureWriter;
}

function element(out: string[], ref: Ref, name: string, tags: Tags, value: any): void {
  const shape = ref.shape;
  switch (shape.type) {
    case 'structure':
      out.push(tags.open);
      structureContent(out, shape, value);
      out.push(tags.close);
      return;
    case 'list': {
      if (!Array.isArray(value)) throw new TypeError(`EC2 output: ${name} must be a list`);
      const item = shape.member!;
      const flattened = ref.flattened || shape.flattened;
      const itemName = item.locationName ?? (flattened ? name : 'member');
      const itemTags = tagsOf(itemName);
      if (!flattened) out.push(tags.open);
      if (item.shape.type === 'structure' && value.length > 1) {
        for (const v of value) {
          if (v === undefined || v === null) continue;
          const parts: string[] = [];
          element(parts, item, itemName, itemTags, v);
          out.push(parts.join(''));
        }
      } else {
        for (const v of value) if (v !== undefined && v !== null) element(out, item, itemName, itemTags, v);
      }
      if (!flattened) out.push(tags.close);
      return;
    }
    case 'map': {
      const keyName = shape.key!.locationName ?? 'key';
      const valueName = shape.value!.locationName ?? 'value';
      const flattened = ref.flattened || shape.flattened;
      const entries = value instanceof Map ? [...value.entries()] : Object.entries(value);
      if (!flattened) out.push(tags.open);
      for (const [k, v] of entries) {
        if (v === undefined || v === null) continue;
        out.push(flattened ? tags.open : '<entry>');
        element(out, shape.key!, keyName, tagsOf(keyName), k);
        element(out, shape.value!, valueName, tagsOf(valueName), v);
        out.push(flattened ? tags.close : '</entry>');
      }
      if (!flattened) out.push(tags.close);
      return;
    }
    default:
      out.push(tags.open, scalarText(shape, value), tags.close);
  }
}

function scalarText(shape: Shape, value: any): string {
  switch (shape.type) {
    case 'string':
      return escapeXml(typeof value === 'string' ? value : String(value));
    case 'boolean':
      return value === true || value === 'true' ? 'true' : 'false';
    case 'integer':
    case 'long':
    case 'float':
    case 'double':
      return String(value);
    case 'timestamp':
      return (value instanceof Date ? value : new Date(value)).toISOString();
    case 'blob':
      if (Buffer.isBuffer(value)) return value.toString('base64');
      if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
      return Buffer.from(String(value), 'utf8').toString('base64');
    default:
      throw new Error(`EC2 model: ${shape.type} is not a scalar`);
  }
}
