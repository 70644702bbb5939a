// What a stopped instance carries to its node when it starts again: the attributes
// ModifyInstanceAttribute may change while it is stopped (instance type, user data).
import type { Db, Tx } from '../store/store.ts';
import type { InstancesTable } from '../store/schema.ts';
import type { InstanceUpdate } from '../node/node-api.ts';
import { findVmType } from './vm-types.ts';

export async function startUpdateFor(db: Db | Tx, row: Pick<InstancesTable, 'instance_type' | 'user_data'>): Promise<InstanceUpdate> {
  const vmType = await findVmType(db, row.instance_type);
  return { ...(vmType ? { vmType } : {}), userData: row.user_data ?? null };
}
