// The EC2 endpoint's request limits, applied before any handler runs:
// - parameters per request (a refused request is never parsed);
// - per client address, a budget of failed authentications: an address that spent it is refused
//   before its signature is even checked, until the budget refills, so a flood of bad signatures
//   cannot crowd out the cloud's users;
// - per account, EC2's token buckets (rate-families.ts), sized by the operator (rate-limit-settings.ts),
//   answering RequestLimitExceeded like EC2;
// - per account, a bounded number of requests running at once, the rest queued and served in turn
//   with other accounts' (fair-scheduler.ts), so one account's flood of slow calls cannot occupy the
//   process while others wait.
import type { Logger } from 'pino';
import type { Store } from '../../store/store.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { monotonicClock, TokenBucket, type BucketLimit, type Clock } from '../../http/token-bucket.ts';
import { FairScheduler, QUEUE_FULL, type Release } from '../../http/fair-scheduler.ts';
import { clientKey } from '../../http/connection-limits.ts';
import { cloudAdminAccountId } from '../admin-auth.ts';
import { requestFamily, resourceCharge } from './rate-families.ts';
import type { ServerLimitOptions } from './endpoint-server.ts';
import { CLOUD_SCOPE, readRateLimits, resolveLimit, type FamilyLimit } from './rate-limit-settings.ts';

/**
 * Most parameters in one request, by default. The largest calls clients make stay far below:
 * DescribeInstances of 1,000 ids, CreateTags on 1,000 resources with 50 tags, 50 filters of 200
 * values each (EC2's own bounds) is about 10,050.
 */
export const DEFAULT_MAX_REQUEST_PARAMS = 16_384;
/** Requests of one account running at once, by default. */
export const DEFAULT_IN_FLIGHT_PER_ACCOUNT = 4;
/** Requests of all accounts running at once, by default. */
export const DEFAULT_IN_FLIGHT_TOTAL = 64;
/** Requests of one account waiting for a slot, by default; one more is refused. */
export const DEFAULT_QUEUED_PER_ACCOUNT = 512;
/** Failed authentications one client address may make: a burst, then this many a second. */
export const DEFAULT_AUTH_FAILURES_PER_ADDRESS: BucketLimit = { capacity: 100, refillPerSecond: 10 };

export interface RequestLimitOptions {
  maxRequestParams?: number;
  inFlightPerAccount?: number;
  inFlightTotal?: number;
  queuedPerAccount?: number;
  authFailuresPerAddress?: BucketLimit;
  /** How long rate limits read from the store are used before they are read again (other controllers may change them). */
  settingsTtlMs?: number;
  /** The buckets' clock (milliseconds); tests pass their own. */
  clock?: Clock;
}

/** Every limit of the cloud controller's endpoint, as `ironbark cloud` and `up` set them. */
export interface EndpointLimitOptions extends RequestLimitOptions, ServerLimitOptions {}

export interface RequestLimiterDeps extends RequestLimitOptions {
  store: Pick<Store, 'db'>;
  log?: Pick<Logger, 'warn'>;
}

export function requestLimitExceeded(): Ec2Error {
  return new Ec2Error('RequestLimitExceeded', 'Request limit exceeded.');
}

/** Number of `&`-separated parameters in a query string or form body. */
export function countParams(text: string): number {
  let n = 0;
  let segmentStart = 0;
  for (let i = 0; i <= text.length; i++) {
    if (i === text.length || text.charCodeAt(i) === 38 /* & */) {
      if (i > segmentStart) n++;
      segmentStart = i + 1;
    }
  }
  return n;
}

interface AccountPolicy {
  own: Map<string, FamilyLimit>;
  expiresAt: number;
}

interface CloudPolicy {
  limits: Map<string, FamilyLimit>;
  adminAccountId: string | undefined;
  expiresAt: number;
}

export interface LimiterCounts {
  admitted: number;
  /** Refused by an account's token bucket. */
  throttled: number;
  /** Refused because the account already had its most requests queued. */
  queueFull: number;
  /** Refused before authentication: the address spent its failed-authentication budget. */
  addressThrottled: number;
  /** Refused for too many parameters. */
  tooManyParams: number;
}

const REFUSAL_LOG_INTERVAL_MS = 60_000;
const MAX_ADDRESS_BUCKETS = 50_000;

export class RequestLimiter {
  readonly maxRequestParams: number;
  private readonly clock: Clock;
  private readonly settingsTtlMs: number;
  private readonly authFailureLimit: BucketLimit;
  private readonly scheduler: FairScheduler;
  private readonly buckets = new Map<string, Map<string, TokenBucket>>();
  private readonly addressBuckets = new Map<string, TokenBucket>();
  private readonly accounts = new Map<string, AccountPolicy>();
  private readonly loading = new Map<string, Promise<AccountPolicy>>();
  private cloud: CloudPolicy | undefined;
  private cloudLoading: Promise<CloudPolicy> | undefined;
  private readonly throttledByAccount = new Map<string, number>();
  private readonly lastRefusalLog = new Map<string, number>();
  private readonly counts: LimiterCounts = { admitted: 0, throttled: 0, queueFull: 0, addressThrottled: 0, tooManyParams: 0 };

  constructor(private readonly deps: RequestLimiterDeps) {
    this.maxRequestParams = deps.maxRequestParams ?? DEFAULT_MAX_REQUEST_PARAMS;
    this.clock = deps.clock ?? monotonicClock;
    this.settingsTtlMs = deps.settingsTtlMs ?? 10_000;
    this.authFailureLimit = deps.authFailuresPerAddress ?? DEFAULT_AUTH_FAILURES_PER_ADDRESS;
    this.scheduler = new FairScheduler({
      perKey: deps.inFlightPerAccount ?? DEFAULT_IN_FLIGHT_PER_ACCOUNT,
      total: deps.inFlightTotal ?? DEFAULT_IN_FLIGHT_TOTAL,
      queuePerKey: deps.queuedPerAccount ?? DEFAULT_QUEUED_PER_ACCOUNT,
    });
  }

  // ---- before authentication ----------------------------------------------------------------

  /** Throws InvalidQueryParameter when the query string and form body hold too many parameters. */
  checkParameterCount(rawQuery: string, formBody: string): void {
    const n = countParams(rawQuery) + countParams(formBody);
    if (n > this.maxRequestParams) {
      this.counts.tooManyParams++;
      throw new Ec2Error('InvalidQueryParameter',
        `The request has ${n} parameters; this endpoint accepts at most ${this.maxRequestParams} in one request.`);
    }
  }

  /** Throws RequestLimitExceeded when `address` has spent its failed-authentication budget. */
  checkAddress(address: string | undefined): void {
    const bucket = this.addressBuckets.get(clientKey(address));
    if (bucket && !bucket.canTake(1)) {
      this.counts.addressThrottled++;
      this.noteRefusal(`address ${clientKey(address)}`, { address: clientKey(address) }, 'a client address is refused after too many failed authentications');
      throw requestLimitExceeded();
    }
  }

  /** Counts a failed authentication against `address`. */
  authenticationFailed(address: string | undefined): void {
    const key = clientKey(address);
    let bucket = this.addressBuckets.get(key);
    if (!bucket) {
      if (this.addressBuckets.size >= MAX_ADDRESS_BUCKETS) this.pruneAddressBuckets();
      bucket = new TokenBucket(this.authFailureLimit, this.clock);
      this.addressBuckets.set(key, bucket);
    }
    bucket.tryTake(1);
  }

  // ---- after authentication -----------------------------------------------------------------

  /**
   * Admits a call of `action` by `accountId`: takes its tokens (or throws RequestLimitExceeded),
   * then waits for a slot among the account's running requests. Call the returned function when
   * the handler is done.
   */
  async admit(accountId: string, action: string, params: Record<string, string>): Promise<Release> {
    const cloud = this.freshCloud() ?? await this.loadCloud();
    const policy = this.freshAccount(accountId) ?? await this.loadAccount(accountId);
    const isAdmin = cloud.adminAccountId === accountId;
    const family = requestFamily(action, params);
    const request = this.bucketFor(accountId, family, resolveLimit(family, policy.own, cloud.limits, isAdmin).value);
    const charge = resourceCharge(action, params);
    const resource = charge && this.bucketFor(accountId, charge.family, resolveLimit(charge.family, policy.own, cloud.limits, isAdmin).value);
    // Both or neither: a call refused by one bucket takes nothing from the other.
    if ((request && !request.canTake(1)) || (resource && !resource.canTake(charge!.tokens))) {
      this.counts.throttled++;
      this.throttledByAccount.set(accountId, (this.throttledByAccount.get(accountId) ?? 0) + 1);
      this.noteRefusal(`account ${accountId}`, { accountId, family: request && !request.canTake(1) ? family : charge!.family },
        'an account is throttled: its calls are refused with RequestLimitExceeded');
      throw requestLimitExceeded();
    }
    request?.tryTake(1);
    resource?.tryTake(charge!.tokens);
    const slot = this.scheduler.acquire(accountId);
    if (slot === QUEUE_FULL) {
      this.counts.queueFull++;
      this.noteRefusal(`queue ${accountId}`, { accountId }, 'an account has too many requests waiting: further ones are refused with RequestLimitExceeded');
      throw requestLimitExceeded();
    }
    const release = typeof slot === 'function' ? slot : await slot;
    this.counts.admitted++;
    return release;
  }

  /** Makes the next request read the limits from the store again (after the admin API changed them). */
  invalidate(accountId?: string): void {
    if (accountId === undefined) {
      this.cloud = undefined;
      this.accounts.clear();
    } else {
      this.accounts.delete(accountId);
    }
  }

  /** Counts since start, and per account the calls its buckets refused. */
  stats(): LimiterCounts & { running: number; waiting: number } {
    return { ...this.counts, ...this.scheduler.stats() };
  }

  throttledCount(accountId: string): number {
    return this.throttledByAccount.get(accountId) ?? 0;
  }

  // ---- internals ----------------------------------------------------------------------------

  private bucketFor(accountId: string, family: string, limit: FamilyLimit): TokenBucket | undefined {
    let families = this.buckets.get(accountId);
    if (limit === 'unlimited') {
      families?.delete(family);
      return undefined;
    }
    if (!families) {
      families = new Map();
      this.buckets.set(accountId, families);
    }
    let bucket = families.get(family);
    if (!bucket) {
      bucket = new TokenBucket(limit, this.clock);
      families.set(family, bucket);
    } else if (bucket.capacity !== limit.capacity || bucket.refillPerSecond !== limit.refillPerSecond) {
      bucket.setLimit(limit);
    }
    return bucket;
  }

  private freshCloud(): CloudPolicy | undefined {
    return this.cloud && this.cloud.expiresAt > this.clock() ? this.cloud : undefined;
  }

  private freshAccount(accountId: string): AccountPolicy | undefined {
    const p = this.accounts.get(accountId);
    return p && p.expiresAt > this.clock() ? p : undefined;
  }

  private loadCloud(): Promise<CloudPolicy> {
    this.cloudLoading ??= (async () => {
      try {
        const [limits, adminAccountId] = await Promise.all([readRateLimits(this.deps.store.db, CLOUD_SCOPE), cloudAdminAccountId(this.deps.store)]);
        this.cloud = { limits, adminAccountId, expiresAt: this.clock() + this.settingsTtlMs };
        return this.cloud;
      } finally {
        this.cloudLoading = undefined;
      }
    })();
    return this.cloudLoading;
  }

  private loadAccount(accountId: string): Promise<AccountPolicy> {
    let pending = this.loading.get(accountId);
    if (!pending) {
      pending = (async () => {
        try {
          const policy = { own: await readRateLimits(this.deps.store.db, accountId), expiresAt: this.clock() + this.settingsTtlMs };
          this.accounts.set(accountId, policy);
          return policy;
        } finally {
          this.loading.delete(accountId);
        }
      })();
      this.loading.set(accountId, pending);
    }
    return pending;
  }

  /** Drops the buckets that are full again (they hold nothing a new one would not), else the oldest. */
  private pruneAddressBuckets(): void {
    for (const [key, bucket] of this.addressBuckets) if (bucket.isFull()) this.addressBuckets.delete(key);
    while (this.addressBuckets.size >= MAX_ADDRESS_BUCKETS) {
      this.addressBuckets.delete(this.addressBuckets.keys().next().value!);
    }
  }

  /** One log line per refused party a minute, not one per refused request. */
  private noteRefusal(key: string, fields: Record<string, unknown>, message: string): void {
    const now = this.clock();
    const last = this.lastRefusalLog.get(key);
    if (last !== undefined && now - last < REFUSAL_LOG_INTERVAL_MS) return;
    if (this.lastRefusalLog.size > 10_000) this.lastRefusalLog.clear();
    this.lastRefusalLog.set(key, now);
    this.deps.log?.warn(fields, message);
  }
}
