// The account's snapshot quotas (quotas.ts: max-snapshots and max-snapshot-gib), checked inside
// the transaction that writes a new snapshot, so a refusal leaves nothing behind. Every snapshot
// not deleted counts, pending or failed included, at the size of the volume it was taken of.
import { PostgresAdapter } from 'kysely';
import type { Db, Tx } from '../../store/store.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { getQuota } from '../quotas.ts';

/** States of a snapshot that still holds (or will hold) data. */
export const LIVE_SNAPSHOT_STATES = ['pending', 'completed', 'error'] as const;

export async function snapshotUsage(db: Db | Tx, accountId: string): Promise<{ snapshots: number; gib: number }> {
  const row = await db.selectFrom('snapshots')
    .select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.sum<number>('volume_size_gib').as('gib')])
    .where('account_id', '=', accountId).where('state', 'in', [...LIVE_SNAPSHOT_STATES]).executeTakeFirst();
  return { snapshots: Number(row?.n ?? 0), gib: Number(row?.gib ?? 0) };
}

/** Throws SnapshotLimitExceeded unless `adding` snapshots of `addingGiB` GiB together fit the account's quotas. */
export async function assertSnapshotQuota(tx: Tx, accountId: string, adding: number, addingGiB: number): Promise<void> {
  if (tx.getExecutor().adapter instanceof PostgresAdapter) {
    // Two controllers cannot both admit a snapshot only one of them has room for.
    await tx.selectFrom('accounts').select('id').where('id', '=', accountId).forNoKeyUpdate().execute();
  }
  const used = await snapshotUsage(tx, accountId);
  const max = await getQuota(tx, accountId, 'max-snapshots');
  if (max !== null && adding > 0 && used.snapshots + adding > max) {
    throw new Ec2Error('SnapshotLimitExceeded', `The maximum number of snapshots (${max}) has been reached: ${used.snapshots} exist; delete some or ask the operator of this cloud to raise the limit.`);
  }
  const maxGiB = await getQuota(tx, accountId, 'max-snapshot-gib');
  if (maxGiB !== null && addingGiB > 0 && used.gib + addingGiB > maxGiB) {
    throw new Ec2Error('SnapshotLimitExceeded',
      `You have exceeded your snapshot storage limit of ${maxGiB} GiB: ${used.gib} GiB are in snapshots and the request needs ${addingGiB} GiB more.`);
  }
}
