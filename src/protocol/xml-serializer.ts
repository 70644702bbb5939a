// Operation output -> EC2 XML, the inverse of the SDKs' EC2 response parsers. Members sit
// directly under `<{Op}Response xmlns=…>` next to `<requestId>`; an element is named by the
// member's locationName, else its model name; a list is `<name><item>…</item></name>` with the
// element's locationName (EC2's is "item"). Written as plain strings without an XML library: this
// runs on every API call.
import type { Ec2Error } from './errors.ts';
import { getOperation, XML_NAMESPACE, type Ref, type Shape } from './model.ts';

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
  for (const pieces of documentPieces(operation, output, requestId, chunkChars, new Sink(false))) yield (pieces as string[]).join('');
}

/** serializeOutputChunks as UTF-8 bytes, the form in which an answer is sent. */
export function* serializeOutputBytes(operation: string, output: any, requestId: string, chunkChars = 1 << 20): Generator<Buffer, void> {
  for (const pieces of documentPieces(operation, output, requestId, chunkChars, new Sink(true))) {
    yield pieces.length === 1 ? pieces[0] as Buffer : Buffer.concat(pieces as Buffer[]);
  }
}

function* documentPieces(operation: string, output: any, requestId: string, chunkChars: number, w: Sink): Generator<Array<string | Buffer>, void> {
  const op = getOperation(operation);
  if (!op) throw new Error(`EC2 model: unknown operation ${operation}`);
  w.s = XML_DECLARATION + '<' + operation + 'Response xmlns="' + XML_NAMESPACE + '"><requestId>' + escapeXml(requestId) + '</requestId>';
  if (output !== null && output !== undefined) {
    for (const m of op.output.memberList!) {
      const value = output[m.name];
      if (value === undefined || value === null) continue;
      const list = m.shape;
      const chunkable = list.type === 'list' && list.member!.shape.type === 'structure' && !(m.flattened || list.flattened) && Array.isArray(value);
      if (!chunkable) {
        elementWriterOf(m, m.xmlName)(w, value);
        continue;
      }
      const item = list.member!;
      const itemName = item.locationName ?? 'member';
      const itemOpen = '<' + itemName + '>';
      const itemClose = '</' + itemName + '>';
      const content = contentWriterOf(item.shape);
      w.s += '<' + m.xmlName + '>';
      let size = 0;
      for (const v of value) {
        if (v === undefined || v === null) continue;
        const before = w.length;
        w.s += itemOpen;
        content(w, v);
        w.s += itemClose;
        size += w.length - before;
        if (w.s.length >= CUT_CHARS) w.cut();
        if (size >= chunkChars) {
          yield w.take();
          size = 0;
        }
      }
      w.s += '</' + m.xmlName + '>';
    }
  }
  w.s += '</' + operation + 'Response>';
  yield w.take();
}

/** The XML content (member elements, no wrapper) of any structure shape, by the same rules as serializeOutput. */
export function serializeStructure(shape: Shape, value: any): string {
  const w = new Sink(false);
  contentWriterOf(shape)(w, value);
  return w.take().join('');
}

/** The EC2 error document; the HTTP status to send with it is `err.status`. */
export function serializeError(err: Ec2Error, requestId: string): string {
  return XML_DECLARATION + '<Response><Errors><Error><Code>' + escapeXml(err.code) + '</Code><Message>' + escapeXml(err.message)
    + '</Message></Error></Errors><RequestID>' + escapeXml(requestId) + '</RequestID></Response>';
}

// Writers are compiled from the model, once per structure shape and once per use of a list or
// map under an element name, into functions that append to one string with `+=` and have every
// tag and scalar conversion inlined: walking the model generically per value, and collecting
// millions of small pieces in arrays to join, is what made a 1,000-instance answer slow.
//
// The text is cut after a list item once it passes CUT_CHARS and, for an answer being sent,
// made into bytes there. A long string built with `+=` is a tree of small pieces that V8 must
// flatten before it can be encoded; flattening a few megabytes at once, into one large string,
// cost three times as much as writing the text (DescribeInstances of 1,000 instances: 3.3 MB),
// and flattening pieces of a few tens of kilobytes while they are fresh costs little.

const CUT_CHARS = 32 * 1024;

/** Where writers append: `s` is the text not yet cut; `pieces` what was cut (bytes, when the answer is sent). */
class Sink {
  s = '';
  #cutChars = 0;
  #pieces: Array<string | Buffer> = [];
  constructor(readonly bytes: boolean) {}

  /** Characters written so far. */
  get length(): number {
    return this.#cutChars + this.s.length;
  }

  cut(): void {
    if (this.s.length === 0) return;
    this.#cutChars += this.s.length;
    this.#pieces.push(this.bytes ? Buffer.from(this.s, 'utf8') : this.s);
    this.s = '';
  }

  /** Everything written since the last take. */
  take(): Array<string | Buffer> {
    this.cut();
    const pieces = this.#pieces;
    this.#pieces = [];
    return pieces;
  }
}

type Writer = (w: Sink, value: any) => void;

/** Structure shape -> its member elements. */
const contentWriters = new WeakMap<Shape, Writer>();
/** Use of a shape -> element name -> the whole element. */
const elementWriters = new WeakMap<Ref, Map<string, Writer>>();

function contentWriterOf(shape: Shape): Writer {
  let write = contentWriters.get(shape);
  if (write === undefined) {
    // A recursive shape reaches itself while it is compiled: it calls itself through this stand-in.
    let compiled: Writer | undefined;
    contentWriters.set(shape, (w, value) => compiled!(w, value));
    compiled = compileContentWriter(shape);
    contentWriters.set(shape, compiled);
    write = compiled;
  }
  return write;
}

function elementWriterOf(ref: Ref, name: string): Writer {
  let byName = elementWriters.get(ref);
  if (byName === undefined) elementWriters.set(ref, byName = new Map());
  let write = byName.get(name);
  if (write === undefined) {
    let compiled: Writer | undefined;
    byName.set(name, (w, value) => compiled!(w, value));
    compiled = compileElementWriter(ref, name);
    byName.set(name, compiled);
    write = compiled;
  }
  return write;
}

/** Values the generated code refers to (other writers), passed in as `refs`. */
class Linked {
  readonly values: unknown[] = [];
  ref(value: unknown): string {
    this.values.push(value);
    return `refs[${this.values.length - 1}]`;
  }
}

function build(linked: Linked, body: string): Writer {
  const factory = new Function('refs', 'escapeXml', 'timestampText', 'blobText', 'CUT_CHARS', `return function write(w, value) {\n${body}\n};`);
  return factory(linked.values, escapeXml, timestampText, blobText, CUT_CHARS) as Writer;
}

/** JavaScript statements that append the element `name` of `ref` holding the value in variable `v`. */
function elementStatements(ref: Ref, name: string, v: string, linked: Linked): string {
  const shape = ref.shape;
  const open = JSON.stringify('<' + name + '>');
  const close = JSON.stringify('</' + name + '>');
  switch (shape.type) {
    case 'string': return `w.s += ${open} + escapeXml(typeof ${v} === 'string' ? ${v} : String(${v})) + ${close};`;
    case 'boolean': return `w.s += ${open} + (${v} === true || ${v} === 'true' ? 'true' : 'false') + ${close};`;
    case 'integer': case 'long': case 'float': case 'double': return `w.s += ${open} + String(${v}) + ${close};`;
    case 'timestamp': return `w.s += ${open} + timestampText(${v}) + ${close};`;
    case 'blob': return `w.s += ${open} + blobText(${v}) + ${close};`;
    case 'structure': return `w.s += ${open}; ${linked.ref(contentWriterOf(shape))}(w, ${v}); w.s += ${close};`;
    default: return `${linked.ref(elementWriterOf(ref, name))}(w, ${v});`;
  }
}

function compileContentWriter(shape: Shape): Writer {
  const linked = new Linked();
  const lines = ['let x;'];
  for (const m of shape.memberList!) {
    lines.push(`x = value[${JSON.stringify(m.name)}];`,
      `if (x !== undefined && x !== null) { ${elementStatements(m, m.xmlName, 'x', linked)} }`);
  }
  return build(linked, lines.join('\n'));
}

function compileElementWriter(ref: Ref, name: string): Writer {
  const shape = ref.shape;
  const flattened = ref.flattened || shape.flattened;
  if (shape.type === 'list') {
    const item = shape.member!;
    const linked = new Linked();
    const itemName = item.locationName ?? (flattened ? name : 'member');
    // Items that are structures are where a long text is cut.
    const cut = item.shape.type === 'structure' ? ' if (w.s.length >= CUT_CHARS) w.cut();' : '';
    return build(linked, [
      `if (!Array.isArray(value)) throw new TypeError(${JSON.stringify(`EC2 output: ${name} must be a list`)});`,
      flattened ? '' : `w.s += ${JSON.stringify('<' + name + '>')};`,
      `for (const v of value) if (v !== undefined && v !== null) { ${elementStatements(item, itemName, 'v', linked)}${cut} }`,
      flattened ? '' : `w.s += ${JSON.stringify('</' + name + '>')};`,
    ].join('\n'));
  }
  if (shape.type === 'map') return mapWriter(ref, name);
  const linked = new Linked();
  return build(linked, elementStatements(ref, name, 'value', linked));
}

function mapWriter(ref: Ref, name: string): Writer {
  const shape = ref.shape;
  const flattened = ref.flattened || shape.flattened;
  const open = '<' + name + '>';
  const close = '</' + name + '>';
  const key = elementWriterOf(shape.key!, shape.key!.locationName ?? 'key');
  const value = elementWriterOf(shape.value!, shape.value!.locationName ?? 'value');
  return (w, map) => {
    const entries: Iterable<[unknown, unknown]> = map instanceof Map ? [...map.entries()] : Object.entries(map);
    if (!flattened) w.s += open;
    for (const [k, v] of entries) {
      if (v === undefined || v === null) continue;
      w.s += flattened ? open : '<entry>';
      key(w, k);
      value(w, v);
      w.s += flattened ? close : '</entry>';
    }
    if (!flattened) w.s += close;
  };
}
function timestampText(value: any): string {
  return (value instanceof Date ? value : new Date(value)).toISOString();
}

function blobText(value: any): string {
  if (Buffer.isBuffer(value)) return value.toString('base64');
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
  return Buffer.from(String(value), 'utf8').toString('base64');
}
