// The AWS Query protocol as STS and IAM speak it, driven by their official models (aws-sdk v2's
// apis/sts-2011-06-15.min.json and iam-2010-05-08.min.json, the same package as the EC2 model):
// input members are top-level query parameters, an answer is
// `<OpResponse xmlns=NS><OpResult>…</OpResult><ResponseMetadata><RequestId>…` with lists as
// `<Name><member>…</member></Name>`, and an error is
// `<ErrorResponse xmlns=NS><Error><Type>Sender|Receiver</Type><Code>…</Code><Message>…</Message></Error><RequestId>…`.
import { createRequire } from 'node:module';
import { escapeXml } from '../../protocol/xml-serializer.ts';
import { boundedMessage } from '../../protocol/errors.ts';

const require = createRequire(import.meta.url);

interface RawShape {
  shape?: string;
  type?: string;
  members?: Record<string, RawShape>;
  member?: RawShape;
  required?: string[];
  locationName?: string;
  resultWrapper?: string;
}

interface RawModel {
  metadata: { apiVersion: string; xmlNamespace: string; endpointPrefix: string; serviceId: string };
  operations: Record<string, { input?: RawShape; output?: RawShape }>;
  shapes: Record<string, RawShape>;
}

export interface QueryService {
  /** The signing name clients put in the SigV4 credential scope: `sts`, `iam`. */
  readonly signingName: string;
  readonly apiVersion: string;
  readonly xmlNamespace: string;
  hasOperation(action: string): boolean;
  /** The operation's input members that are given, as strings (the members STS and IAM take here are all scalars). */
  readInput(action: string, params: Record<string, string>): Record<string, string>;
  serializeOutput(action: string, output: Record<string, unknown>, requestId: string): string;
  serializeError(error: QueryError, requestId: string): string;
}

/** An error of an AWS Query service: its code, message and HTTP status (Sender below 500, else Receiver). */
export class QueryError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(code: string, message: string, status = 400) {
    // The same bound as Ec2Error's: a name quoted from the request never comes back whole.
    super(boundedMessage(message));
    this.name = 'QueryError';
    this.code = code;
    this.status = status;
  }
}

const XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n';

function isoSeconds(value: unknown): string {
  const date = value instanceof Date ? value : new Date(String(value));
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function loadQueryService(modelFile: string): QueryService {
  const model = require(`aws-sdk/apis/${modelFile}.min.json`) as RawModel;
  const { apiVersion, xmlNamespace, endpointPrefix } = model.metadata;
  const resolve = (ref: RawShape): RawShape => (ref.shape ? { ...model.shapes[ref.shape]!, ...ref, shape: undefined } : ref);

  function value(ref: RawShape, v: unknown, out: string[]): void {
    const shape = resolve(ref);
    switch (shape.type) {
      case 'structure': members(shape, v as Record<string, unknown>, out); return;
      case 'list':
        for (const item of v as unknown[]) {
          out.push('<member>');
          value(shape.member!, item, out);
          out.push('</member>');
        }
        return;
      case 'timestamp': out.push(isoSeconds(v)); return;
      default: out.push(escapeXml(String(v)));
    }
  }

  function members(shape: RawShape, v: Record<string, unknown>, out: string[]): void {
    for (const [name, ref] of Object.entries(shape.members ?? {})) {
      const member = v[name];
      if (member === undefined || member === null) continue;
      const tag = ref.locationName ?? name;
      out.push(`<${tag}>`);
      value(ref, member, out);
      out.push(`</${tag}>`);
    }
  }

  return {
    signingName: endpointPrefix,
    apiVersion,
    xmlNamespace,
    hasOperation: (action) => Object.hasOwn(model.operations, action),
    readInput(action, params) {
      const input: Record<string, string> = {};
      for (const name of Object.keys(resolve(model.operations[action]?.input ?? {}).members ?? {})) {
        if (params[name] !== undefined) input[name] = params[name]!;
      }
      return input;
    },
    serializeOutput(action, output, requestId) {
      const shape = resolve(model.operations[action]?.output ?? {});
      const out: string[] = [XML_DECLARATION, `<${action}Response xmlns="${xmlNamespace}">`];
      if (shape.resultWrapper) out.push(`<${shape.resultWrapper}>`);
      members(shape, output, out);
      if (shape.resultWrapper) out.push(`</${shape.resultWrapper}>`);
      out.push(`<ResponseMetadata><RequestId>${escapeXml(requestId)}</RequestId></ResponseMetadata></${action}Response>`);
      return out.join('');
    },
    serializeError(error, requestId) {
      return `${XML_DECLARATION}<ErrorResponse xmlns="${xmlNamespace}"><Error><Type>${error.status >= 500 ? 'Receiver' : 'Sender'}</Type>`
        + `<Code>${escapeXml(error.code)}</Code><Message>${escapeXml(error.message)}</Message></Error>`
        + `<RequestId>${escapeXml(requestId)}</RequestId></ErrorResponse>`;
    },
  };
}
