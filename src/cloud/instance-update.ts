// What a stopped instance carries to its node when it starts again: the attributes
// ModifyInstanceAttribute may change while it is stopped (instance type, user data), and the
// metadata options (a node that missed a ModifyInstanceMetadataOptions gets them here).
import type { Db, Tx } from '../store/store.ts';
import type { InstancesTable } from '../store/schema.ts';
import type { InstanceUpdate } from '../node/node-api.ts';
import { findVmType } from './vm-types.ts';
import { metadataOptionsOf, nodeMetadataOptions } from './instance-metadata-options.ts';

export async function startUpdateFor(db: Db | Tx, row: Pick<InstancesTable, 'instance_type' | 'user_data'> & Partial<Pick<InstancesTable, 'metadata_options'>>): Promise<InstanceUpdate> {
  const vmType = await findVmType(db, row.instance_type);
  // A row read with its metadata options (NULL: the defaults) says them; one read without leaves the node's.
  const metadataOptions = 'metadata_options' in row ? { metadataOptions: nodeMetadataOptions(metadataOptionsOf(row)) } : {};
  return { ...(vmType ? { vmType } : {}), userData: row.user_data ?? null, ...metadataOptions };
}
