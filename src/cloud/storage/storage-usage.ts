// GiB-hours of EBS storage per account for the usage report (admin API `usage`, `ironbark admin
// usage`): each volume and snapshot counts its size for the hours it existed within the period,
// from its creation to its deletion (or now). Deleted snapshots' rows are kept 40 days for this
// (snapshot-reconciler.ts); deleted volumes' rows only an hour (volume-reconciler.ts), so a
// volume deleted earlier in the month no longer counts: the volumes' figure is a lower bound.
import type { Db, Tx } from '../../store/store.ts';

export interface StorageGiBHours { since: string; volumes: number; snapshots: number }

const HOUR = 3_600_000;

/** The start of the current month (UTC): the period the report covers by default. */
export function startOfMonth(now = new Date()): Date {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
}

function hoursWithin(from: string, until: string | null, since: number, now: number): number {
  const start = Math.max(Date.parse(from), since);
  const end = Math.min(until ? Date.parse(until) : now, now);
  return end > start ? (end - start) / HOUR : 0;
}

export async function storageGiBHours(db: Db | Tx, accountIds: string[], since = startOfMonth(), now = new Date()): Promise<Map<string, StorageGiBHours>> {
  const out = new Map<string, StorageGiBHours>(accountIds.map((id) => [id, { since: since.toISOString(), volumes: 0, snapshots: 0 }]));
  if (accountIds.length === 0) return out;
  const t0 = since.getTime();
  const t1 = now.getTime();
  const volumes = await db.selectFrom('volumes').select(['account_id', 'size_gib', 'created_at', 'state', 'state_changed_at'])
    .where('account_id', 'in', accountIds).where('state', '!=', 'error').execute();
  for (const v of volumes) {
    const ended = v.state === 'deleted' ? v.state_changed_at : null;
    out.get(v.account_id)!.volumes += v.size_gib * hoursWithin(v.created_at, ended, t0, t1);
  }
  const snapshots = await db.selectFrom('snapshots').select(['account_id', 'volume_size_gib', 'started_at', 'deleted_at'])
    .where('account_id', 'in', accountIds).where('state', '!=', 'error').execute();
  for (const s of snapshots) out.get(s.account_id)!.snapshots += s.volume_size_gib * hoursWithin(s.started_at, s.deleted_at, t0, t1);
  for (const u of out.values()) {
    u.volumes = Math.round(u.volumes * 1000) / 1000;
    u.snapshots = Math.round(u.snapshots * 1000) / 1000;
  }
  return out;
}
