// The volumes attached to an account's instances, as DescribeInstances shows them
// (BlockDeviceMappings) and filters them (block-device-mapping.*).
import type { Db, Tx } from '../../store/store.ts';
import { blockDeviceMappingView } from './volume-view.ts';

export type BlockDeviceMapping = ReturnType<typeof blockDeviceMappingView>;

/** Every attachment of the account's instances in one query: a lookup by instance id. */
export async function instanceVolumeMappings(db: Db | Tx, accountId: string): Promise<(instanceId: string) => BlockDeviceMapping[]> {
  const rows = await db.selectFrom('volumes').selectAll().where('account_id', '=', accountId).where('instance_id', 'is not', null)
    .orderBy('attach_time').orderBy('id').execute();
  const byInstance = new Map<string, BlockDeviceMapping[]>();
  for (const row of rows) {
    let list = byInstance.get(row.instance_id!);
    if (!list) byInstance.set(row.instance_id!, list = []);
    list.push(blockDeviceMappingView(row));
  }
  return (instanceId) => byInstance.get(instanceId) ?? [];
}
