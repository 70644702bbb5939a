// Per-account limits the operator sets, kept in `settings` as `quota.<accountId>.<name>`, read by
// DescribeAccountAttributes and RunInstances (max-instances) and the admin API. An unset quota
// takes its default: 20 instances, like a new AWS account, and no limit on cores or memory.
import type { Db, Tx } from '../store/store.ts';
import { Ec2Error } from '../protocol/errors.ts';

export const QUOTA_NAMES = ['max-instances', 'max-cores', 'max-memory-mib'] as const;
export type QuotaName = (typeof QUOTA_NAMES)[number];

/** `null` means "no limit". */
export const QUOTA_DEFAULTS: Record<QuotaName, number | null> = {
  'max-instances': 20,
  'max-cores': null,
  'max-memory-mib': null,
};

/** Larger values are surely typing mistakes, and every store holds them exactly. */
const MAX_QUOTA = 2 ** 31 - 1;

export function isQuotaName(name: string): name is QuotaName {
  return (QUOTA_NAMES as readonly string[]).includes(name);
}

export function quotaSettingKey(accountId: string, name: QuotaName): string {
  return `quota.${accountId}.${name}`;
}

function parseStored(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d+$/.test(value)) return undefined;
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** The account's instance limit (it always has one). */
export async function maxInstances(db: Db | Tx, accountId: string): Promise<number> {
  return (await getQuota(db, accountId, 'max-instances')) ?? QUOTA_DEFAULTS['max-instances']!;
}

/** The account's limit, or its default when none is set (null: unlimited). */
export async function getQuota(db: Db | Tx, accountId: string, name: QuotaName): Promise<number | null> {
  const row = await db.selectFrom('settings').select('value').where('key', '=', quotaSettingKey(accountId, name)).executeTakeFirst();
  return parseStored(row?.value) ?? QUOTA_DEFAULTS[name];
}

export interface QuotaView {
  name: QuotaName;
  /** In force: the set value or the default; null is unlimited. */
  value: number | null;
  /** True when the operator has not set it. */
  isDefault: boolean;
}

export async function getQuotas(db: Db | Tx, accountId: string): Promise<QuotaView[]> {
  const keys = QUOTA_NAMES.map((n) => quotaSettingKey(accountId, n));
  const rows = await db.selectFrom('settings').select(['key', 'value']).where('key', 'in', keys).execute();
  const stored = new Map(rows.map((r) => [r.key, parseStored(r.value)]));
  return QUOTA_NAMES.map((name) => {
    const set = stored.get(quotaSettingKey(accountId, name));
    return { name, value: set ?? QUOTA_DEFAULTS[name], isDefault: set === undefined };
  });
}

/** Sets a limit; `null` removes the operator's value so the default applies again. */
export async function setQuota(db: Db | Tx, accountId: string, name: QuotaName, value: number | null): Promise<void> {
  const key = quotaSettingKey(accountId, name);
  if (value === null) {
    await db.deleteFrom('settings').where('key', '=', key).execute();
    return;
  }
  if (!Number.isInteger(value) || value < 0 || value > MAX_QUOTA) {
    throw new Ec2Error('InvalidParameterValue', `The quota ${name} must be a whole number from 0 to ${MAX_QUOTA}, not ${JSON.stringify(value)}.`);
  }
  await db.insertInto('settings').values({ key, value: String(value) })
    .onConflict((oc) => oc.column('key').doUpdateSet({ value: String(value) })).execute();
}

/** Forgets every quota of an account (when the account is deleted). */
export async function deleteQuotas(db: Db | Tx, accountId: string): Promise<void> {
  await db.deleteFrom('settings').where('key', 'in', QUOTA_NAMES.map((n) => quotaSettingKey(accountId, n))).execute();
}
