// One endpoint, several services: a SigV4 request names the service it was signed for in its
// credential scope (`<key>/<date>/<region>/<service>/aws4_request`). `ec2` goes on to the EC2
// handler, `sts` and `iam` are answered here in their own protocol (tools such as Terraform's AWS
// provider and Ansible call STS GetCallerIdentity and IAM GetUser on the endpoint they were given),
// and a scope naming a service or region this cloud does not serve is refused. SigV2 and unsigned
// requests are EC2's.
import type { Logger } from 'pino';
import { authenticate, type KeyResolver } from '../../auth/authenticate.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { serializeError } from '../../protocol/xml-serializer.ts';
import type { Store } from '../../store/store.ts';
import type { CloudSettings } from '../context.ts';
import { newRequestId } from '../ids.ts';
import type { Ec2HttpRequest, Ec2HttpResponse } from '../ec2-endpoint.ts';
import { loadQueryService, QueryError, type QueryService } from './query-protocol.ts';
import { stsOperations, type IdentityOperation } from './sts.ts';
import { iamOperations } from './iam.ts';

export interface ServiceRouterDeps {
  store: Store;
  settings: CloudSettings;
  keys: KeyResolver;
  log: Pick<Logger, 'error' | 'warn'>;
}

/**
 * The answer to a request for another service than EC2, or undefined (at once, without a promise:
 * EC2 requests are the hot path) to let the EC2 handler answer it.
 */
export type ServiceRouter = (req: Ec2HttpRequest) => Promise<Ec2HttpResponse> | undefined;

/**
 * STS and IAM are global services: SDKs and tools sign them for `us-east-1` whatever region they
 * were configured with (the signing region of their global endpoints), so that scope is taken
 * beside the cloud's own region.
 */
const GLOBAL_SIGNING_REGION = 'us-east-1';

interface Served {
  service: QueryService;
  operations: Record<string, IdentityOperation>;
}

let served: Record<string, Served> | undefined;

function services(): Record<string, Served> {
  served ??= {
    sts: { service: loadQueryService('sts-2011-06-15'), operations: stsOperations },
    iam: { service: loadQueryService('iam-2010-05-08'), operations: iamOperations },
  };
  return served;
}

export interface CredentialScope { region: string; service: string }

/**
 * The region and service a SigV4 request was signed for, from its Authorization header or its
 * presigned X-Amz-Credential; undefined for SigV2, unsigned or malformed requests (the EC2
 * handler's authentication says what is wrong with those).
 */
export function credentialScope(headers: Record<string, string>, rawQuery: string): CredentialScope | undefined {
  let credential: string | undefined;
  const authorization = headers['authorization'];
  if (authorization !== undefined && authorization.startsWith('AWS4-HMAC-SHA256 ')) {
    const at = authorization.indexOf('Credential=');
    if (at < 0) return undefined;
    credential = /^[^,\s]*/.exec(authorization.slice(at + 'Credential='.length))![0];
  } else if (authorization === undefined || authorization.trim() === '') {
    if (!rawQuery.includes('X-Amz-Credential=')) return undefined;
    credential = new URLSearchParams(rawQuery).get('X-Amz-Credential') ?? undefined;
  }
  const parts = credential?.split('/');
  if (!parts || parts.length !== 5 || parts[2] === '' || parts[3] === '') return undefined;
  return { region: parts[2]!, service: parts[3]! };
}

/** A caller's scope part as a message may quote it. */
function quoted(value: string): string {
  return value.length <= 64 ? value : `${value.slice(0, 64)}…`;
}

const xmlHeaders = (requestId: string) => ({ 'Content-Type': 'text/xml;charset=UTF-8', 'x-amzn-requestid': requestId });

function ec2Refusal(error: Ec2Error): Ec2HttpResponse {
  const requestId = newRequestId();
  return { status: error.status, headers: xmlHeaders(requestId), body: serializeError(error, requestId) };
}

/** Query and form body as one map, the body winning, as the EC2 handler reads them. */
function requestParams(rawQuery: string, body: Buffer, contentType: string): Record<string, string> {
  const params: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(rawQuery)) params[k] = v;
  if (body.length > 0 && (contentType === '' || contentType.startsWith('application/x-www-form-urlencoded'))) {
    for (const [k, v] of new URLSearchParams(body.toString('utf8'))) params[k] = v;
  }
  return params;
}

/** An authentication failure as STS and IAM word it (EC2's AuthFailure is their InvalidClientTokenId). */
function authError(err: Ec2Error): QueryError {
  if (err.code === 'AuthFailure') return new QueryError('InvalidClientTokenId', 'The security token included in the request is invalid.', 403);
  if (err.code === 'IncompleteSignature') return new QueryError(err.code, err.message, 400);
  return new QueryError(err.code, err.message, err.status >= 500 ? err.status : 403);
}

export function createServiceRouter(deps: ServiceRouterDeps): ServiceRouter {
  const { store, settings, keys, log } = deps;

  async function answer(name: string, { service, operations }: Served, req: Ec2HttpRequest, scope: CredentialScope): Promise<Ec2HttpResponse> {
    const requestId = newRequestId();
    try {
      if (scope.region !== settings.region && scope.region !== GLOBAL_SIGNING_REGION) {
        throw new QueryError('SignatureDoesNotMatch',
          `Credential should be scoped to a valid region, not '${quoted(scope.region)}'. This cloud serves ${name} as '${settings.region}' (or '${GLOBAL_SIGNING_REGION}').`, 403);
      }
      const q = req.rawUrl.indexOf('?');
      const path = q < 0 ? req.rawUrl : req.rawUrl.slice(0, q);
      const rawQuery = q < 0 ? '' : req.rawUrl.slice(q + 1);
      const body = req.method === 'GET' || req.method === 'HEAD' ? Buffer.alloc(0) : req.body;
      const params = requestParams(rawQuery, body, req.headers['content-type'] ?? '');
      let caller;
      try {
        caller = await authenticate({ method: req.method, host: req.headers.host ?? '', path, rawQuery, headers: req.headers, body, params }, keys);
      } catch (err) {
        throw err instanceof Ec2Error ? authError(err) : err;
      }
      const action = params.Action;
      if (!action) throw new QueryError('MissingAction', 'Missing Action');
      if (!service.hasOperation(action)) throw new QueryError('InvalidAction', `Could not find operation ${quoted(action)} for version ${service.apiVersion}`);
      const operation = Object.hasOwn(operations, action) ? operations[action] : undefined;
      if (!operation) throw new QueryError('InvalidAction', `The ${name.toUpperCase()} action ${action} is not supported by this cloud.`);
      const output = await operation({ caller, store, requestId }, service.readInput(action, params));
      return { status: 200, headers: xmlHeaders(requestId), body: service.serializeOutput(action, output, requestId) };
    } catch (err) {
      let error: QueryError;
      if (err instanceof QueryError) error = err;
      else if (err instanceof Ec2Error) error = new QueryError(err.code, err.message, err.status);
      else {
        log.error({ err, service: name, requestId }, 'request failed with an unexpected error');
        error = new QueryError('InternalFailure', 'The request processing has failed because of an unknown error.', 500);
      }
      return { status: error.status, headers: xmlHeaders(requestId), body: service.serializeError(error, requestId) };
    }
  }

  return (req) => {
    const q = req.rawUrl.indexOf('?');
    const scope = credentialScope(req.headers, q < 0 ? '' : req.rawUrl.slice(q + 1));
    if (!scope) return undefined;
    if (scope.service === 'ec2') {
      if (scope.region === settings.region) return undefined;
      return Promise.resolve(ec2Refusal(new Ec2Error('SignatureDoesNotMatch',
        `Credential should be scoped to a valid region, not '${quoted(scope.region)}'. This cloud's region is '${settings.region}'.`, 403)));
    }
    const other = Object.hasOwn(services(), scope.service) ? services()[scope.service] : undefined;
    if (!other) {
      return Promise.resolve(ec2Refusal(new Ec2Error('SignatureDoesNotMatch',
        `Credential should be scoped to correct service: this endpoint serves 'ec2', 'sts' and 'iam', not '${quoted(scope.service)}'.`, 403)));
    }
    return answer(scope.service, other, req, scope);
  };
}
