// Operation output -> EC2 XML, the inverse of the SDKs' EC2 response parsers. Members sit
// directly under `<{Op}Response xmlns=…>` next to `<requestId>`; an element is named by the
// member's locationName, else its model name; a list is `<name><item>…</item></name>` with the
// element's locationName (EC2's is "item"). Written by string concatenation: this runs on every
// API call.
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
  const op = getOperation(operation);
  if (!op) throw new Error(`EC2 model: unknown operation ${operation}`);
  let xml = XML_DECLARATION + '<' + operation + 'Response xmlns="' + XML_NAMESPACE + '"><requestId>' + escapeXml(requestId) + '</requestId>';
  if (output !== null && output !== undefined) xml += structureContent(op.output, output);
  return xml + '</' + operation + 'Response>';
}

/** The XML content (member elements, no wrapper) of any structure shape, by the same rules as serializeOutput. */
export function serializeStructure(shape: Shape, value: any): string {
  return structureContent(shape, value);
}

/** The EC2 error document; the HTTP status to send with it is `err.status`. */
export function serializeError(err: Ec2Error, requestId: string): string {
  return XML_DECLARATION + '<Response><Errors><Error><Code>' + escapeXml(err.code) + '</Code><Message>' + escapeXml(err.message)
    + '</Message></Error></Errors><RequestID>' + escapeXml(requestId) + '</RequestID></Response>';
}

function structureContent(shape: Shape, value: any): string {
  let xml = '';
  const members = shape.memberList!;
  for (let i = 0; i < members.length; i++) {
    const member = members[i]!;
    const v = value[member.name];
    if (v !== undefined && v !== null) xml += element(member, member.xmlName, v);
  }
  return xml;
}

function element(ref: Ref, name: string, value: any): string {
  const shape = ref.shape;
  switch (shape.type) {
    case 'structure':
      return '<' + name + '>' + structureContent(shape, value) + '</' + name + '>';
    case 'list': {
      if (!Array.isArray(value)) throw new TypeError(`EC2 output: ${name} must be a list`);
      const item = shape.member!;
      if (ref.flattened || shape.flattened) {
        const itemName = item.locationName ?? name;
        let xml = '';
        for (const v of value) if (v !== undefined && v !== null) xml += element(item, itemName, v);
        return xml;
      }
      const itemName = item.locationName ?? 'member';
      let xml = '<' + name + '>';
      for (const v of value) if (v !== undefined && v !== null) xml += element(item, itemName, v);
      return xml + '</' + name + '>';
    }
    case 'map': {
      const keyName = shape.key!.locationName ?? 'key';
      const valueName = shape.value!.locationName ?? 'value';
      const entries = value instanceof Map ? [...value.entries()] : Object.entries(value);
      let xml = '';
      for (const [k, v] of entries) {
        if (v === undefined || v === null) continue;
        const entry = element(shape.key!, keyName, k) + element(shape.value!, valueName, v);
        xml += ref.flattened || shape.flattened ? '<' + name + '>' + entry + '</' + name + '>' : '<entry>' + entry + '</entry>';
      }
      return ref.flattened || shape.flattened ? xml : '<' + name + '>' + xml + '</' + name + '>';
    }
    default:
      return '<' + name + '>' + scalarText(shape, value) + '</' + name + '>';
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
