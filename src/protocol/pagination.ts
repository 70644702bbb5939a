// MaxResults / NextToken paging over an already filtered, stably ordered list.
import { Ec2Error } from './errors.ts';

export interface PageRequest { MaxResults?: number; NextToken?: string }

export interface PageLimits { min?: number; max?: number }

/**
 * Returns one page and the token for the next. The token is opaque to clients: it carries the
 * offset and a fingerprint of the request it belongs to, so a token replayed against a different
 * query is refused rather than silently skipping items.
 */
export function paginate<T>(items: T[], req: PageRequest, queryFingerprint = '', limits: PageLimits = {}): { page: T[]; nextToken?: string } {
  const min = limits.min ?? 5;
  const max = limits.max ?? 1000;
  let start = 0;
  if (req.NextToken !== undefined && req.NextToken !== '') start = decodeToken(req.NextToken, queryFingerprint);
  if (req.MaxResults === undefined) {
    return { page: start === 0 ? items : items.slice(start) };
  }
  if (!Number.isInteger(req.MaxResults) || req.MaxResults < min || req.MaxResults > max) {
    throw new Ec2Error('InvalidParameterValue', `Value ( ${req.MaxResults} ) for parameter maxResults is invalid. Parameter must be between ${min} and ${max}.`);
  }
  const end = start + req.MaxResults;
  const page = items.slice(start, end);
  return end < items.length ? { page, nextToken: encodeToken(end, queryFingerprint) } : { page };
}

function encodeToken(offset: number, fingerprint: string): string {
  return Buffer.from(JSON.stringify({ o: offset, f: fingerprint })).toString('base64url');
}

function decodeToken(token: string, fingerprint: string): number {
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (Number.isInteger(parsed.o) && parsed.o >= 0 && parsed.f === fingerprint) return parsed.o;
  } catch { /* fall through */ }
  throw new Ec2Error('InvalidNextToken', 'The token provided is invalid or does not belong to this request.');
}
