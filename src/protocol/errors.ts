// EC2 errors as values. Clients branch on `code`; `status` is the HTTP status EC2 uses for it.

const STATUS_BY_CODE: Record<string, number> = {
  AuthFailure: 401,
  SignatureDoesNotMatch: 403,
  RequestExpired: 400,
  IncompleteSignature: 400,
  MissingAuthenticationToken: 401,
  InvalidClientTokenId: 403,
  OptInRequired: 403,
  UnauthorizedOperation: 403,
  DryRunOperation: 412,
  InvalidAction: 400,
  UnsupportedOperation: 400,
  MissingParameter: 400,
  MissingAction: 400,
  InvalidParameter: 400,
  InvalidParameterValue: 400,
  InvalidParameterCombination: 400,
  InvalidQueryParameter: 400,
  MalformedQueryString: 404,
  InvalidFilter: 400,
  InvalidPaginationToken: 400,
  InvalidNextToken: 400,
  ValidationError: 400,
  IdempotentParameterMismatch: 400,
  InternalError: 500,
  InternalFailure: 500,
  ServiceUnavailable: 503,
  Unavailable: 503,
  RequestLimitExceeded: 503,
  InsufficientInstanceCapacity: 500,
  // EC2 lists no code of its own for an oversize request; AWS's front ends answer such a request
  // with HTTP 413, and this is the name AWS services give that error.
  RequestEntityTooLarge: 413,
};

/** How much of a caller's value an error message may quote. */
export const QUOTED_VALUE_MAX_CHARS = 64;

/**
 * Longest message an error carries. Messages quote identifiers and values; this bounds them even
 * where a value was quoted whole, so a request can never make its answer large.
 */
export const MESSAGE_MAX_CHARS = 1024;

/** `value` as an error message may quote it: at most `max` characters, then an ellipsis. */
export function excerpt(value: unknown, max = QUOTED_VALUE_MAX_CHARS): string {
  const s = String(value);
  if (s.length <= max) return s;
  // Not cut inside a surrogate pair.
  const end = /[\uD800-\uDBFF]/.test(s[max - 1]!) ? max - 1 : max;
  return `${s.slice(0, end)}…`;
}

/** A message cut to MESSAGE_MAX_CHARS (head and tail kept), for every error a client is sent. */
export function boundedMessage(message: string): string {
  if (message.length <= MESSAGE_MAX_CHARS) return message;
  // Head and tail: an over-long value sits in the middle of most messages, their point at the end.
  const tail = 200;
  let head = MESSAGE_MAX_CHARS - tail - 1;
  if (/[\uD800-\uDBFF]/.test(message[head - 1]!)) head--;
  let from = message.length - tail;
  if (/[\uDC00-\uDFFF]/.test(message[from]!)) from++;
  return `${message.slice(0, head)}…${message.slice(from)}`;
}

export class Ec2Error extends Error {
  readonly code: string;
  readonly status: number;
  constructor(code: string, message: string, status?: number) {
    super(boundedMessage(message));
    this.name = 'Ec2Error';
    this.code = code;
    // Resource-level errors (*.NotFound, *.Duplicate, *.InUse, *.Malformed, limits) are 400 in EC2.
    this.status = status ?? (Object.hasOwn(STATUS_BY_CODE, code) ? STATUS_BY_CODE[code] : undefined) ?? 400;
  }
}

export function ec2Error(code: string, message: string, status?: number): Ec2Error {
  return new Ec2Error(code, message, status);
}

export function isEc2Error(e: unknown): e is Ec2Error {
  return e instanceof Ec2Error;
}

/**
 * InsufficientInstanceCapacity as EC2 words it for tenants: the instance type and the zone, never
 * the scheduler's view of nodes (names, free cores, wake failures). That detail is for the
 * operator: the cluster's log and `ironbark admin node list` (each node's last placement reason).
 */
export function insufficientCapacity(instanceType: string | undefined, zone: string, otherZones: readonly string[] = []): Ec2Error {
  const type = instanceType ? `${instanceType} ` : '';
  const elsewhere = otherZones.length > 0 ? otherZones.join(', ') : 'another Availability Zone';
  return new Ec2Error('InsufficientInstanceCapacity',
    `We currently do not have sufficient ${type}capacity in the Availability Zone you requested (${zone}). ` +
    `Our system will be working on provisioning additional capacity. You can currently get ${type}capacity by not specifying ` +
    `an Availability Zone in your request or choosing ${elsewhere}.`);
}
