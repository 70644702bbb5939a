// Who sent this request? Detects the signing scheme (SigV4 header, SigV4 presigned URL, SigV2),
// checks freshness, resolves the access key and verifies the signature, or throws EC2's error.
import { Ec2Error, excerpt } from '../protocol/errors.ts';
import type { Caller } from '../cloud/context.ts';
import { SIGV4_ALGORITHM, checkSigV4Time, parseAuthorizationHeader, parsePresignedQuery, parseQueryPairs, verifySigV4, type SigV4Claim, type QueryPairs } from './sigv4.ts';
import { parseSigV2, verifySigV2 } from './sigv2.ts';

export interface HttpRequestParts {
  method: string;
  /** Host the client addressed (with :port if not the default); used when no Host header is present. */
  host: string;
  /** Path as received, without the query string. */
  path: string;
  /** Query string as received, without the leading '?'. */
  rawQuery: string;
  /** Header names in lower case. */
  headers: Record<string, string>;
  body: Buffer;
  /** Decoded query and form parameters. */
  params: Record<string, string>;
}

export interface ResolvedKey {
  accessKeyId: string;
  secretAccessKey: string;
  /** Active | Inactive. Inactive also when the key's account is disabled. */
  status: string;
  caller: Caller;
}

export type KeyResolver = (accessKeyId: string) => Promise<ResolvedKey | undefined>;

const SIGNATURE_MISMATCH = 'The request signature we calculated does not match the signature you provided. ' +
  'Check your AWS Secret Access Key and signing method. Consult the service documentation for details.';

async function activeKey(keys: KeyResolver, accessKeyId: string): Promise<ResolvedKey> {
  const key = await keys(accessKeyId);
  if (key === undefined || key.status !== 'Active') {
    throw new Ec2Error('AuthFailure', 'AWS was not able to validate the provided access credentials');
  }
  return key;
}

async function authenticateSigV4(req: HttpRequestParts, claim: SigV4Claim, pairs: QueryPairs, keys: KeyResolver, now: Date): Promise<Caller> {
  checkSigV4Time(claim, now);
  const key = await activeKey(keys, claim.accessKeyId);
  if (!verifySigV4(req, claim, pairs, key.secretAccessKey)) throw new Ec2Error('SignatureDoesNotMatch', SIGNATURE_MISMATCH);
  return key.caller;
}

function isPresigned(pairs: QueryPairs): boolean {
  return pairs.some(([k]) => k === 'X-Amz-Algorithm' || k === 'X-Amz-Credential' || k === 'X-Amz-Signature');
}

export async function authenticate(req: HttpRequestParts, keys: KeyResolver, now: Date = new Date()): Promise<Caller> {
  const authorization = req.headers['authorization'];
  if (authorization !== undefined && authorization.trim() !== '') {
    if (!authorization.startsWith(`${SIGV4_ALGORITHM} `)) {
      const scheme = authorization.split(/\s/, 1)[0];
      throw new Ec2Error('IncompleteSignature', `Unsupported Authorization Type "${excerpt(scheme)}"; sign requests with ${SIGV4_ALGORITHM}.`);
    }
    return authenticateSigV4(req, parseAuthorizationHeader(authorization, req.headers), parseQueryPairs(req.rawQuery), keys, now);
  }
  const pairs = parseQueryPairs(req.rawQuery);
  if (isPresigned(pairs)) return authenticateSigV4(req, parsePresignedQuery(pairs), pairs, keys, now);

  const p = req.params;
  if (p['AWSAccessKeyId'] !== undefined || p['Signature'] !== undefined || p['SignatureVersion'] !== undefined) {
    const claim = parseSigV2(p, now);
    const key = await activeKey(keys, claim.accessKeyId);
    if (!verifySigV2(req, claim, key.secretAccessKey)) throw new Ec2Error('SignatureDoesNotMatch', SIGNATURE_MISMATCH);
    return key.caller;
  }
  throw new Ec2Error('MissingAuthenticationToken', 'Request is missing Authentication Token');
}
