// The account's volume quotas (quotas.ts: max-volumes and max-volume-gib), checked inside the
// transaction that writes a new or grown volume, so a refusal leaves nothing behind. Every volume
// that is not deleted counts, attached or not, as EC2's storage limits do.
import { PostgresAdapter } from 'kysely';
import type { Tx } from '../../store/store.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { getQuota } from '../quotas.ts';

export async function volumeUsage(tx: Tx, accountId: string): Promise<{ volumes: number; gib: number }> {
  const row = await tx.selectFrom('volumes')
    .select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.sum<number>('size_gib').as('gib')])
    .where('account_id', '=', accountId).where('state', 'not in', ['deleted', 'error']).executeTakeFirst();
  return { volumes: Number(row?.n ?? 0), gib: Number(row?.gib ?? 0) };
}

/** Throws VolumeLimitExceeded unless `adding` volumes of `addingGiB` GiB together fit the account's quotas. */
export async function assertVolumeQuota(tx: Tx, accountId: string, adding: number, addingGiB: number): Promise<void> {
  if (tx.getExecutor().adapter instanceof PostgresAdapter) {
    // Two controllers cannot both admit a volume only one of them has room for.
    await tx.selectFrom('accounts').select('id').where('id', '=', accountId).forNoKeyUpdate().execute();
  }
  const used = await volumeUsage(tx, accountId);
  const maxVolumes = await getQuota(tx, accountId, 'max-volumes');
  if (maxVolumes !== null && adding > 0 && used.volumes + adding > maxVolumes) {
    throw new Ec2Error('VolumeLimitExceeded', `You have reached your limit of ${maxVolumes} volumes (${used.volumes} in use); ask the operator of this cloud to raise it.`);
  }
  const maxGiB = await getQuota(tx, accountId, 'max-volume-gib');
  if (maxGiB !== null && addingGiB > 0 && used.gib + addingGiB > maxGiB) {
    throw new Ec2Error('VolumeLimitExceeded',
      `You have exceeded your maximum storage limit of ${maxGiB} GiB in this region: ${used.gib} GiB are in use and the request needs ${addingGiB} GiB more.`);
  }
}
