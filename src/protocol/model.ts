// The official EC2 service model (aws-sdk v2's apis/ec2-2016-11-15.min.json), resolved into
// linked shapes once, so the query parser and the XML serializer can walk it without lookups.
// The minified model omits `type` for strings and shares shapes through `{shape: "Sxx"}`
// references; a reference may add its own `locationName`/`queryName`, which win over the
// referenced shape's.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export type ScalarType = 'string' | 'integer' | 'long' | 'float' | 'double' | 'boolean' | 'timestamp' | 'blob';
export type ShapeType = 'structure' | 'list' | 'map' | ScalarType;

/** A raw shape or shape reference as written in the model JSON. */
export interface RawShape {
  shape?: string;
  type?: string;
  members?: Record<string, RawShape>;
  member?: RawShape;
  key?: RawShape;
  value?: RawShape;
  required?: string[];
  locationName?: string;
  queryName?: string;
  flattened?: boolean;
  idempotencyToken?: boolean;
  sensitive?: boolean;
  deprecated?: boolean;
}

/** A resolved shape. Names that belong to a use of the shape live on the `Ref` that points to it. */
export interface Shape {
  type: ShapeType;
  /** structure: members by model name */
  members?: Record<string, Member>;
  /** structure: the same members, in model order */
  memberList?: Member[];
  /** structure: names of required members */
  required?: string[];
  /** list: the element */
  member?: Ref;
  /** map: key and value */
  key?: Ref;
  value?: Ref;
  flattened: boolean;
}

/** A use of a shape: a list element, a map key/value, or (as Member) a structure member. */
export interface Ref {
  shape: Shape;
  locationName?: string;
  queryName?: string;
  flattened: boolean;
}

export interface Member extends Ref {
  /** the model's member name, used as the key of inputs and outputs */
  name: string;
  /** the name of this member on the EC2 query wire: queryName, else capitalized locationName, else name */
  wireName: string;
  /** the element name of this member in EC2 XML: locationName, else name */
  xmlName: string;
  required: boolean;
  idempotencyToken: boolean;
}

export interface OperationModel {
  name: string;
  /** always a structure; an operation without input gets an empty one */
  input: Shape;
  /** always a structure; an operation without output gets an empty one */
  output: Shape;
  deprecated: boolean;
}

export interface Paginator {
  input_token?: string;
  output_token?: string;
  limit_key?: string;
  result_key?: string;
}

interface RawModel {
  metadata: { apiVersion: string; xmlNamespace: string };
  operations: Record<string, { input?: RawShape; output?: RawShape; deprecated?: boolean }>;
  shapes: Record<string, RawShape>;
}

const raw: RawModel = require('aws-sdk/apis/ec2-2016-11-15.min.json');
const rawPaginators: { pagination: Record<string, Paginator> } = require('aws-sdk/apis/ec2-2016-11-15.paginators.json');

export const API_VERSION = raw.metadata.apiVersion;
/** EC2 answers with a trailing slash on its namespace, unlike the model's metadata. */
export const XML_NAMESPACE = raw.metadata.xmlNamespace.endsWith('/') ? raw.metadata.xmlNamespace : raw.metadata.xmlNamespace + '/';

const SCALAR_TYPES = new Set<string>(['string', 'integer', 'long', 'float', 'double', 'boolean', 'timestamp', 'blob']);

const namedShapes = new Map<string, Shape>();
const inlineShapes = new WeakMap<RawShape, Shape>();
const operations = new Map<string, OperationModel>();

/**
 * The shape a raw shape or reference stands for. Named shapes are resolved once and shared,
 * and a shape is cached before its members are filled in, so recursive shapes terminate.
 */
export function resolveShape(ref: RawShape): Shape {
  if (ref.shape !== undefined) {
    let shape = namedShapes.get(ref.shape);
    if (!shape) {
      const target = raw.shapes[ref.shape];
      if (!target) throw new Error(`EC2 model: unknown shape ${ref.shape}`);
      shape = emptyShape(target);
      namedShapes.set(ref.shape, shape);
      fillShape(shape, target);
    }
    return shape;
  }
  let shape = inlineShapes.get(ref);
  if (!shape) {
    shape = emptyShape(ref);
    inlineShapes.set(ref, shape);
    fillShape(shape, ref);
  }
  return shape;
}

function typeOf(def: RawShape): ShapeType {
  if (def.type) {
    if (def.type === 'structure' || def.type === 'list' || def.type === 'map' || SCALAR_TYPES.has(def.type)) return def.type as ShapeType;
    throw new Error(`EC2 model: unsupported shape type ${def.type}`);
  }
  if (def.members) return 'structure';
  if (def.member) return 'list';
  if (def.key) return 'map';
  return 'string';
}

function emptyShape(def: RawShape): Shape {
  return { type: typeOf(def), flattened: def.flattened === true };
}

function toRef(def: RawShape): Ref {
  const target = def.shape !== undefined ? raw.shapes[def.shape] : undefined;
  return {
    shape: resolveShape(def),
    locationName: def.locationName ?? target?.locationName,
    queryName: def.queryName ?? target?.queryName,
    flattened: def.flattened === true || target?.flattened === true,
  };
}

function fillShape(shape: Shape, def: RawShape): void {
  if (shape.type === 'structure') {
    const required = new Set(def.required ?? []);
    shape.members = {};
    shape.memberList = [];
    shape.required = def.required ?? [];
    for (const [name, memberDef] of Object.entries(def.members ?? {})) {
      const ref = toRef(memberDef);
      const member: Member = {
        ...ref,
        name,
        wireName: ref.queryName ?? (ref.locationName ? ref.locationName[0]!.toUpperCase() + ref.locationName.slice(1) : name),
        xmlName: ref.locationName ?? name,
        required: required.has(name),
        idempotencyToken: memberDef.idempotencyToken === true,
      };
      shape.members[name] = member;
      shape.memberList.push(member);
    }
  } else if (shape.type === 'list') {
    shape.member = toRef(def.member ?? {});
  } else if (shape.type === 'map') {
    shape.key = toRef(def.key ?? {});
    shape.value = toRef(def.value ?? {});
  }
}

const EMPTY_STRUCTURE: Shape = { type: 'structure', members: {}, memberList: [], required: [], flattened: false };

/** The operation with its input and output resolved, or undefined when EC2 has no such action. */
export function getOperation(name: string): OperationModel | undefined {
  let op = operations.get(name);
  if (op) return op;
  if (!Object.prototype.hasOwnProperty.call(raw.operations, name)) return undefined;
  const def = raw.operations[name]!;
  op = {
    name,
    input: def.input ? resolveShape(def.input) : EMPTY_STRUCTURE,
    output: def.output ? resolveShape(def.output) : EMPTY_STRUCTURE,
    deprecated: def.deprecated === true,
  };
  operations.set(name, op);
  return op;
}

const names = Object.keys(raw.operations);

/** Every EC2 action in the model, in model order. */
export function operationNames(): string[] {
  return names.slice();
}

/** The paginator of an operation (which members carry the token, the page size and the results). */
export function paginatorOf(name: string): Paginator | undefined {
  return Object.prototype.hasOwnProperty.call(rawPaginators.pagination, name) ? rawPaginators.pagination[name] : undefined;
}
