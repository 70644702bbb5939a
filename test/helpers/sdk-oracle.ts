// The real AWS SDKs as the oracle for the protocol tests, with nothing leaving the process: an
// SDK v3 EC2 client over an in-memory transport, and aws-sdk v2's own query serializer and XML
// parser applied to a shape of our model.
import { createRequire } from 'node:module';
import { EC2Client } from '@aws-sdk/client-ec2';
import type { RawShape } from '../../src/protocol/model.ts';

const require = createRequire(import.meta.url);

export interface TransportReply {
  /** HTTP status; 200 unless given. */
  status?: number;
  xml: string;
}

/** An SDK v3 EC2 client whose transport hands `answer` each request's form body and returns its reply. */
export function offlineEc2Client(answer: (formBody: string) => TransportReply): EC2Client {
  return new EC2Client({
    region: 'us-east-1',
    endpoint: 'http://127.0.0.1:1',
    credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' },
    maxAttempts: 1,
    requestHandler: {
      handle: async (req: { body?: string }) => {
        const reply = answer(String(req.body ?? ''));
        return { response: { statusCode: reply.status ?? 200, headers: { 'content-type': 'text/xml;charset=UTF-8' }, body: Buffer.from(reply.xml) } };
      },
    } as any,
  });
}

/** aws-sdk v2's core, loaded the way its Node entry point loads it. */
function awsSdkV2(): any {
  const AWS = require('aws-sdk/lib/core');
  require('aws-sdk/lib/node_loader');
  return AWS;
}

function sdkV2Shape(raw: RawShape): unknown {
  return awsSdkV2().Model.Shape.create(structuredClone(raw), { api: { protocol: 'ec2' } });
}

/** The query parameters aws-sdk v2 sends for `value` of shape `raw` (EC2 protocol). */
export function sdkV2QueryParams(raw: RawShape, value: unknown): Record<string, string> {
  const QueryParamSerializer = require('aws-sdk/lib/query/query_param_serializer');
  const params: Record<string, string> = {};
  new QueryParamSerializer().serialize(value, sdkV2Shape(raw), (k: string, v: string) => { params[k] = v; });
  return params;
}

/** What aws-sdk v2 reads from `xml` as shape `raw` (EC2 protocol). */
export function sdkV2ParseXml(raw: RawShape, xml: string): unknown {
  return new (awsSdkV2().XML.Parser)().parse(xml, sdkV2Shape(raw));
}
