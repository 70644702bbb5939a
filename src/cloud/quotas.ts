// Per-account limits the operator sets, kept in `settings` as `quota.<accountId>.<name>`, read by
// DescribeAccountAttributes and the admin API, and enforced here for RunInstances and
// StartInstances. An unset quota takes its default: 20 instances, like a new AWS account, and no
// limit on cores or memory.
import { PostgresAdapter } from 'kysely';
import type { Db, Tx } from '../store/store.ts';
import { Ec2Error } from '../protocol/errors.ts';

export const QUOTA_NAMES = ['max-instances', 'max-cores', 'max-memory-mib', 'max-elastic-ips', 'max-volumes', 'max-volume-gib', 'max-snapshots', 'max-snapshot-gib'] as const;
export type QuotaName = (typeof QUOTA_NAMES)[number];
/** The quotas a launch or a start is checked against (max-elastic-ips is AllocateAddress's: network/addresses.ts). */
const INSTANCE_QUOTA_NAMES = ['max-instances', 'max-cores', 'max-memory-mib'] as const;
type InstanceQuotaName = (typeof INSTANCE_QUOTA_NAMES)[number];

/** `null` means "no limit". */
export const QUOTA_DEFAULTS: Record<QuotaName, number | null> = {
  'max-instances': 20,
  'max-cores': null,
  'max-memory-mib': null,
  'max-elastic-ips': 5,
  // EBS volumes (storage/volume-quotas.ts): 50 TiB is a new AWS account's gp2/gp3 storage per region.
  'max-volumes': 5000,
  'max-volume-gib': 51_200,
  // EBS snapshots (storage/snapshot-quotas.ts): 100,000 per region as AWS; their GiB unlimited unless set.
  'max-snapshots': 100_000,
  'max-snapshot-gib': null,
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

// ---- enforcement ----------------------------------------------------------------------------

/**
 * What counts against each limit, the same as `ironbark admin usage` shows it:
 * - max-instances counts every instance that is not terminated, stopped ones included: a stopped
 *   instance keeps its disk on a node and its private address, and can be started at any time.
 * - max-cores and max-memory-mib count only the instances that hold a node's cores and memory
 *   (these states), as EC2's vCPU limits count only running instances. So stopping an instance
 *   frees its cores and memory for others, and StartInstances must find room for them again.
 */
export const STATES_HOLDING_RESOURCES: ReadonlySet<string> = new Set(['pending', 'running', 'stopping', 'shutting-down']);

/** What a launch or a start adds to an account. */
export interface QuotaDemand {
  instances: number;
  cores: number;
  memoryMiB: number;
}

const DEMAND_OF: Record<InstanceQuotaName, keyof QuotaDemand> = {
  'max-instances': 'instances', 'max-cores': 'cores', 'max-memory-mib': 'memoryMiB',
};

interface Standing {
  limits: Record<QuotaName, number | null>;
  used: QuotaDemand;
}

/**
 * The account's limits and what counts against them now. On PostgreSQL the account's row is
 * locked until the transaction ends, so two controllers cannot both admit a launch that only
 * one of them has room for (SQLite runs one transaction at a time anyway).
 */
async function standing(tx: Tx, accountId: string): Promise<Standing> {
  if (tx.getExecutor().adapter instanceof PostgresAdapter) {
    await tx.selectFrom('accounts').select('id').where('id', '=', accountId).forNoKeyUpdate().execute();
  }
  const limits = Object.fromEntries((await getQuotas(tx, accountId)).map((q) => [q.name, q.value])) as Record<QuotaName, number | null>;
  const rows = await tx.selectFrom('instances')
    .leftJoin('vm_types', 'vm_types.name', 'instances.instance_type')
    .select((eb) => ['instances.state', 'vm_types.cores', 'vm_types.memory_mib', eb.fn.countAll<number>().as('n')])
    .where('instances.account_id', '=', accountId).where('instances.state', '!=', 'terminated')
    .groupBy(['instances.state', 'vm_types.cores', 'vm_types.memory_mib'])
    .execute();
  const used: QuotaDemand = { instances: 0, cores: 0, memoryMiB: 0 };
  for (const r of rows) {
    const n = Number(r.n);
    used.instances += n;
    if (STATES_HOLDING_RESOURCES.has(r.state)) {
      used.cores += n * Number(r.cores ?? 0);
      used.memoryMiB += n * Number(r.memory_mib ?? 0);
    }
  }
  return { limits, used };
}

/** EC2's answer when `adding` does not fit under the quota `name`. */
function refusal(name: InstanceQuotaName, limit: number, used: number, adding: number): Ec2Error {
  switch (name) {
    case 'max-instances':
      return new Ec2Error('InstanceLimitExceeded', `Your quota allows for ${Math.max(0, limit - used)} more running instance(s). You requested at least ${adding}`);
    case 'max-cores':
      return new Ec2Error('VcpuLimitExceeded',
        `You have requested more vCPU capacity than your current vCPU limit of ${limit} allows for the instance bucket that the specified instance type belongs to. ` +
        `${used} vCPUs are in use and the request needs ${adding} more; ask the operator of this cloud to adjust this limit.`);
    case 'max-memory-mib':
      return new Ec2Error('InstanceLimitExceeded',
        `You have requested more memory than your current memory limit of ${limit} MiB allows. ` +
        `${used} MiB are in use and the request needs ${adding} MiB more; ask the operator of this cloud to adjust this limit.`);
  }
}

function firstExceeded({ limits, used }: Standing, adding: QuotaDemand): Ec2Error | undefined {
  for (const name of INSTANCE_QUOTA_NAMES) {
    const limit = limits[name];
    const key = DEMAND_OF[name];
    // Nothing added never fails, even when the operator lowered a limit below what is in use.
    if (limit !== null && adding[key] > 0 && used[key] + adding[key] > limit) return refusal(name, limit, used[key], adding[key]);
  }
  return undefined;
}

/**
 * Throws the EC2 error of the first quota that `adding` would exceed. Call it inside the
 * transaction that then writes the change, so a refusal leaves nothing behind.
 */
export async function assertWithinQuotas(tx: Tx, accountId: string, adding: QuotaDemand): Promise<void> {
  const error = firstExceeded(await standing(tx, accountId), adding);
  if (error) throw error;
}

/**
 * How many instances of `each` a launch of `min`..`max` may start: as many as every quota leaves
 * room for, up to `max`. When not even `min` fit it throws, as assertWithinQuotas does for `min`.
 */
export async function launchableCount(tx: Tx, accountId: string, each: { cores: number; memoryMiB: number }, min: number, max: number): Promise<number> {
  const now = await standing(tx, accountId);
  const per: QuotaDemand = { instances: 1, cores: each.cores, memoryMiB: each.memoryMiB };
  const error = firstExceeded(now, { instances: min, cores: min * each.cores, memoryMiB: min * each.memoryMiB });
  if (error) throw error;
  let count = max;
  for (const name of INSTANCE_QUOTA_NAMES) {
    const limit = now.limits[name];
    const key = DEMAND_OF[name];
    if (limit !== null && per[key] > 0) count = Math.min(count, Math.floor((limit - now.used[key]) / per[key]));
  }
  // At least `min`: each quota passed the check above for `min` instances.
  return count;
}
