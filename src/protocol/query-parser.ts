// EC2 Query parameters -> typed operation input, the inverse of the SDKs' EC2 serializers.
// Wire rules (aws-sdk v2 query_param_serializer with protocol "ec2", botocore EC2Serializer):
// a member is named by its queryName, else its capitalized locationName, else its model name;
// structures nest as `Name.Member`; lists are always flattened as `Name.N` (N from 1), their
// structure elements as `Name.N.Member`; maps as `Name.entry.N.key` / `.value`.
import { Ec2Error, excerpt } from './errors.ts';
import { getOperation, type Member, type Ref, type Shape } from './model.ts';

/** Parameters of the request envelope and its signature, never part of an operation's input. */
const ENVELOPE_PARAMS = new Set([
  'Action', 'Version', 'AWSAccessKeyId', 'Signature', 'SignatureMethod', 'SignatureVersion', 'Timestamp', 'Expires', 'SecurityToken',
]);

/** Parameters as a tree of their dot-separated name segments. */
interface ParamNode {
  value?: string;
  children?: Map<string, ParamNode>;
}

const wireIndexCache = new WeakMap<Shape, Map<string, Member>>();

function membersByWireName(shape: Shape): Map<string, Member> {
  let index = wireIndexCache.get(shape);
  if (!index) {
    index = new Map();
    for (const m of shape.memberList!) index.set(m.wireName, m);
    wireIndexCache.set(shape, index);
  }
  return index;
}

function isEnvelopeParam(key: string): boolean {
  return ENVELOPE_PARAMS.has(key) || (key.length > 6 && key.slice(0, 6).toLowerCase() === 'x-amz-');
}

function buildTree(params: Record<string, string>): ParamNode {
  const root: ParamNode = { children: new Map() };
  for (const key of Object.keys(params)) {
    if (isEnvelopeParam(key)) continue;
    let node = root;
    let start = 0;
    for (;;) {
      const dot = key.indexOf('.', start);
      const segment = dot === -1 ? key.slice(start) : key.slice(start, dot);
      node.children ??= new Map();
      let child = node.children.get(segment);
      if (!child) {
        child = {};
        node.children.set(segment, child);
      }
      node = child;
      if (dot === -1) break;
      start = dot + 1;
    }
    node.value = params[key];
  }
  return root;
}

// Parameter names and values come from the caller: messages quote only their beginning. Names
// get more room, as the model's own nested names run past 64 characters.
const NAME_MAX_CHARS = 200;

function unknown(path: string): Ec2Error {
  return new Ec2Error('UnknownParameter', `The parameter ${excerpt(path, NAME_MAX_CHARS)} is not recognized`);
}

function invalid(value: string, path: string): Ec2Error {
  return new Ec2Error('InvalidParameterValue', `Invalid value '${excerpt(value)}' for ${excerpt(path, NAME_MAX_CHARS)}`);
}

/**
 * The typed input of `operation` from its decoded query/form parameters. Throws Ec2Error for a
 * parameter the operation does not have, a value of the wrong type, a malformed list index or a
 * missing required parameter.
 */
export function parseInput(operation: string, params: Record<string, string>): Record<string, any> {
  const op = getOperation(operation);
  if (!op) throw new Ec2Error('InvalidAction', `The action ${excerpt(operation)} is not valid for this web service.`);
  return parseParams(op.input, params);
}

/** The value of any structure shape from query parameters, by the same rules as parseInput. */
export function parseParams(shape: Shape, params: Record<string, string>): Record<string, any> {
  return parseStructure(shape, buildTree(params), '');
}

function parseStructure(shape: Shape, node: ParamNode, path: string): Record<string, any> {
  if (node.value !== undefined) throw unknown(path);
  const result: Record<string, any> = {};
  const byWire = membersByWireName(shape);
  if (node.children) {
    for (const [segment, child] of node.children) {
      const member = byWire.get(segment);
      const childPath = path ? `${path}.${segment}` : segment;
      if (!member) throw unknown(childPath);
      result[member.name] = parseValue(member, child, childPath);
    }
  }
  for (const name of shape.required!) {
    if (result[name] === undefined) {
      const wire = shape.members![name]!.wireName;
      throw new Ec2Error('MissingParameter', `The request must contain the parameter ${path ? `${path}.${wire}` : wire}`);
    }
  }
  return result;
}

function parseValue(ref: Ref, node: ParamNode, path: string): any {
  const shape = ref.shape;
  switch (shape.type) {
    case 'structure': return parseStructure(shape, node, path);
    case 'list': return parseList(shape, node, path);
    case 'map': return parseMap(shape, node, path);
    default:
      if (node.children) throw unknown(`${path}.${node.children.keys().next().value}`);
      return parseScalar(shape, node.value!, path);
  }
}

const LIST_INDEX = /^[1-9][0-9]{0,8}$/;

function badIndex(segment: string, path: string): Ec2Error {
  return new Ec2Error('InvalidParameterValue', `Invalid list index '${excerpt(segment)}' in parameter ${excerpt(path, NAME_MAX_CHARS)}: list indexes are whole numbers starting at 1`);
}

function parseList(shape: Shape, node: ParamNode, path: string): any[] {
  if (node.value !== undefined || !node.children) throw unknown(path);
  const entries: [number, ParamNode, string][] = [];
  for (const [segment, child] of node.children) {
    const itemPath = `${path}.${segment}`;
    if (!LIST_INDEX.test(segment)) throw badIndex(segment, itemPath);
    entries.push([Number(segment), child, itemPath]);
  }
  entries.sort((a, b) => a[0] - b[0]);
  const member = shape.member!;
  return entries.map(([, child, itemPath]) => parseValue(member, child, itemPath));
}

function parseMap(shape: Shape, node: ParamNode, path: string): Record<string, any> {
  if (node.value !== undefined || !node.children) throw unknown(path);
  let entriesNode: ParamNode = node;
  let entriesPath = path;
  if (!shape.flattened) {
    const entry = node.children.get('entry');
    if (!entry || node.children.size !== 1) throw unknown(`${path}.${[...node.children.keys()].find((k) => k !== 'entry')}`);
    entriesNode = entry;
    entriesPath = `${path}.entry`;
  }
  const keyName = shape.key!.locationName ?? 'key';
  const valueName = shape.value!.locationName ?? 'value';
  const pairs: [number, string, any][] = [];
  for (const [segment, child] of entriesNode.children ?? []) {
    const entryPath = `${entriesPath}.${segment}`;
    if (!LIST_INDEX.test(segment)) throw badIndex(segment, entryPath);
    for (const k of child.children?.keys() ?? []) if (k !== keyName && k !== valueName) throw unknown(`${entryPath}.${k}`);
    const keyNode = child.children?.get(keyName);
    if (keyNode === undefined) throw new Ec2Error('MissingParameter', `The request must contain the parameter ${entryPath}.${keyName}`);
    const valueNode = child.children?.get(valueName);
    const key = parseValue(shape.key!, keyNode, `${entryPath}.${keyName}`);
    const value = valueNode === undefined ? undefined : parseValue(shape.value!, valueNode, `${entryPath}.${valueName}`);
    pairs.push([Number(segment), String(key), value]);
  }
  pairs.sort((a, b) => a[0] - b[0]);
  // fromEntries defines own properties, so a key like "__proto__" stays a plain key.
  return Object.fromEntries(pairs.map(([, k, v]) => [k, v]));
}

const INTEGER = /^[+-]?[0-9]+$/;
const DECIMAL = /^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/;
const EPOCH_SECONDS = /^[0-9]+(\.[0-9]+)?$/;
const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?([Zz]|[+-]\d{2}:?\d{2})?)?$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;

function parseScalar(shape: Shape, value: string, path: string): any {
  switch (shape.type) {
    case 'string':
      return value;
    case 'integer':
    case 'long': {
      if (!INTEGER.test(value)) throw invalid(value, path);
      const n = Number(value);
      if (!Number.isSafeInteger(n)) throw invalid(value, path);
      return n;
    }
    case 'float':
    case 'double': {
      if (!DECIMAL.test(value)) throw invalid(value, path);
      const n = Number(value);
      if (!Number.isFinite(n)) throw invalid(value, path);
      return n;
    }
    case 'boolean': {
      const flag = booleanFromText(value);
      if (flag === undefined) throw invalid(value, path);
      return flag;
    }
    case 'timestamp':
      return parseTimestamp(value, path);
    case 'blob': {
      // Clients may wrap base64 across lines.
      const compact = value.replace(/\s+/g, '');
      if (!BASE64.test(compact)) throw invalid(value, path);
      return Buffer.from(compact, 'base64');
    }
    default:
      throw new Error(`EC2 model: ${shape.type} is not a scalar`);
  }
}

/**
 * A boolean as EC2 reads one from a query parameter: `true` or `false` in any case (clients send
 * `True`, `FALSE`), anything else undefined. Also for attribute values that the model types as
 * strings but that hold a boolean (ModifyInstanceAttribute `Value`).
 */
export function booleanFromText(value: string): boolean | undefined {
  const lower = value.toLowerCase();
  if (lower === 'true') return true;
  if (lower === 'false') return false;
  return undefined;
}

function parseTimestamp(value: string, path: string): Date {
  if (EPOCH_SECONDS.test(value)) {
    // Past ±8.64e15 ms a Date is invalid, and an invalid Date breaks whoever formats it later.
    const date = new Date(Number(value) * 1000);
    if (!Number.isFinite(date.getTime())) throw invalid(value, path);
    return date;
  }
  const m = ISO_8601.exec(value);
  if (!m) throw invalid(value, path);
  const [, y, mo, d, h = '00', mi = '00', s = '00', frac = '', zone = 'Z'] = m;
  const ms = frac ? Math.floor(Number(`0.${frac}`) * 1000) : 0;
  let time = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), ms);
  // Date.UTC rolls over out-of-range fields (month 13, day 32); EC2 refuses them.
  const check = new Date(time);
  if (check.getUTCFullYear() !== Number(y) || check.getUTCMonth() !== Number(mo) - 1 || check.getUTCDate() !== Number(d)
    || Number(h) > 23 || Number(mi) > 59 || Number(s) > 59) {
    throw invalid(value, path);
  }
  if (zone !== 'Z' && zone !== 'z') {
    const sign = zone[0] === '-' ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    time -= sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2))) * 60_000;
  }
  return new Date(time);
}
