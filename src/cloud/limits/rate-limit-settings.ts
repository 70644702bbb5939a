// The operator's request rate limits, kept in `settings` beside the quotas (quotas.ts):
// `rate-limit.<scope>.<family>` = `<capacity>/<refill per second>` or `unlimited`, where the scope
// is an account id or `default` (the whole cloud). What applies to an account's family is, first
// found: the account's own value; nothing for the cloud's admin account (the operator's own calls
// are not throttled unless the operator sets a limit on that account); the cloud's value; EC2's.
import type { Db, Tx } from '../../store/store.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import type { BucketLimit } from '../../http/token-bucket.ts';
import { FAMILIES, familyInfo } from './rate-families.ts';

export const CLOUD_SCOPE = 'default';
const PREFIX = 'rate-limit.';

/** A bucket's size, or no throttling at all. */
export type FamilyLimit = BucketLimit | 'unlimited';

export type LimitSource = 'account' | 'cloud-admin' | 'cloud' | 'ec2';

export interface EffectiveLimit {
  family: string;
  covers: string;
  /** null when the family is not throttled. */
  capacity: number | null;
  refillPerSecond: number | null;
  /** Where the value comes from: the account's own, the admin account's exemption, the cloud's default, EC2's. */
  source: LimitSource;
}

/** Bounds that keep values sane; a larger limit is "unlimited". */
export const MAX_CAPACITY = 1_000_000;
export const MAX_REFILL_PER_SECOND = 1_000_000;

function settingKey(scope: string, family: string): string {
  return `${PREFIX}${scope}.${family}`;
}

export function formatLimit(value: FamilyLimit): string {
  return value === 'unlimited' ? value : `${value.capacity}/${value.refillPerSecond}`;
}

export function parseStoredLimit(value: string): FamilyLimit | undefined {
  if (value === 'unlimited') return value;
  const m = /^(\d+)\/(\d+(?:\.\d+)?)$/.exec(value);
  if (!m) return undefined;
  const capacity = Number(m[1]);
  const refillPerSecond = Number(m[2]);
  if (capacity < 1 || capacity > MAX_CAPACITY || !(refillPerSecond > 0) || refillPerSecond > MAX_REFILL_PER_SECOND) return undefined;
  return { capacity, refillPerSecond };
}

/** Checks a value the operator gives (a number pair, "unlimited", or null for the default). */
export function validateLimit(family: string, value: unknown): FamilyLimit | null {
  if (!familyInfo(family)) {
    throw new Ec2Error('InvalidParameterValue', `Unknown rate limit family "${family}": the families are ${FAMILIES.map((f) => f.name).join(', ')}.`);
  }
  if (value === null || value === 'unlimited') return value;
  const v = value as { capacity?: unknown; refillPerSecond?: unknown };
  if (typeof value !== 'object' || Array.isArray(value)
    || typeof v.capacity !== 'number' || !Number.isInteger(v.capacity) || v.capacity < 1 || v.capacity > MAX_CAPACITY
    || typeof v.refillPerSecond !== 'number' || !(v.refillPerSecond > 0) || v.refillPerSecond > MAX_REFILL_PER_SECOND) {
    throw new Ec2Error('InvalidParameterValue',
      `The rate limit of ${family} must be {"capacity": N, "refillPerSecond": R} with a whole capacity from 1 to ${MAX_CAPACITY} ` +
      `and a refill rate above 0 and at most ${MAX_REFILL_PER_SECOND} a second, "unlimited", or null for the default; not ${JSON.stringify(value)}.`);
  }
  // Stored as text: a refill rate keeps at most three decimals.
  return { capacity: v.capacity, refillPerSecond: Math.max(0.001, Math.round(v.refillPerSecond * 1000) / 1000) };
}

/** The values set for `scope` (an account id or CLOUD_SCOPE), by family. */
export async function readRateLimits(db: Db | Tx, scope: string): Promise<Map<string, FamilyLimit>> {
  const rows = await db.selectFrom('settings').select(['key', 'value']).where('key', 'like', `${PREFIX}${scope}.%`).execute();
  const limits = new Map<string, FamilyLimit>();
  for (const r of rows) {
    const family = r.key.slice(PREFIX.length + scope.length + 1);
    const value = parseStoredLimit(r.value);
    if (value !== undefined && familyInfo(family)) limits.set(family, value);
  }
  return limits;
}

/** Sets (or with null removes) the value of one family for `scope`. */
export async function setRateLimit(db: Db | Tx, scope: string, family: string, value: FamilyLimit | null): Promise<void> {
  const key = settingKey(scope, family);
  if (value === null) {
    await db.deleteFrom('settings').where('key', '=', key).execute();
    return;
  }
  const text = formatLimit(value);
  await db.insertInto('settings').values({ key, value: text })
    .onConflict((oc) => oc.column('key').doUpdateSet({ value: text })).execute();
}

/** Forgets every value of an account (when the account is deleted). */
export async function deleteRateLimits(db: Db | Tx, accountId: string): Promise<void> {
  await db.deleteFrom('settings').where('key', 'like', `${PREFIX}${accountId}.%`).execute();
}

/** What applies to one family of an account (see the head of this file). */
export function resolveLimit(family: string, own: ReadonlyMap<string, FamilyLimit> | undefined, cloud: ReadonlyMap<string, FamilyLimit>,
  isCloudAdmin: boolean): { value: FamilyLimit; source: LimitSource } {
  const set = own?.get(family);
  if (set !== undefined) return { value: set, source: 'account' };
  if (isCloudAdmin) return { value: 'unlimited', source: 'cloud-admin' };
  const cloudValue = cloud.get(family);
  if (cloudValue !== undefined) return { value: cloudValue, source: 'cloud' };
  return { value: familyInfo(family)!.ec2Default, source: 'ec2' };
}

/** Every family with what applies to it; `own` undefined for the cloud-wide view. */
export function effectiveLimits(own: ReadonlyMap<string, FamilyLimit> | undefined, cloud: ReadonlyMap<string, FamilyLimit>,
  isCloudAdmin: boolean): EffectiveLimit[] {
  return FAMILIES.map((f) => {
    const { value, source } = resolveLimit(f.name, own, cloud, isCloudAdmin);
    return {
      family: f.name, covers: f.covers,
      capacity: value === 'unlimited' ? null : value.capacity,
      refillPerSecond: value === 'unlimited' ? null : value.refillPerSecond,
      source,
    };
  });
}
