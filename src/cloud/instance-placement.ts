// Placing instances whose rows are already written. RunInstances commits its pending rows before it
// asks the cluster to place them; when that is cut short (the cloud is killed while it waits, or the
// answer is lost) the rows stay `pending` with no node. A ClientToken replay and the reconciler then
// place them again from what the rows say, so a launch is never left hanging. One cloud process
// never asks twice at once: placements under way are kept in the directory (PlacementsUnderWay), and
// the cluster itself joins a request for instances it is already placing.
import type { Db, Store, Tx } from '../store/store.ts';
import type { InstancesTable } from '../store/schema.ts';
import type { InstanceSpec } from '../node/node-api.ts';
import type { ClusterApi, Placement } from '../cluster/cluster-api.ts';
import { bootModeOf, imageRefFor } from './images/images.ts';
import { findVmType } from './vm-types.ts';
import { privateDnsName } from './ip-allocation.ts';
import { metadataOptionsSpec } from './instance-metadata-options.ts';

/** A pending instance no node has taken yet: its placement was asked for and not (yet) answered. */
export function isUnplaced(row: Pick<InstancesTable, 'state' | 'node_id'>): boolean {
  return row.state === 'pending' && row.node_id === null;
}

/** What a node needs to run an instance, read back from its row (the launch's request is gone). */
export async function specFromRow(db: Db | Tx, row: InstancesTable, imageUrl?: (imageId: string) => string): Promise<InstanceSpec> {
  const image = async (id: string | null) => {
    if (id === null) return undefined;
    const found = await db.selectFrom('images').selectAll().where('id', '=', id).executeTakeFirst();
    if (!found) throw new Error(`image ${id} of instance ${row.id} no longer exists`);
    return found;
  };
  const root = (await image(row.image_id))!;
  const kernel = root.boot_mode ? undefined : await image(row.kernel_id ?? root.kernel_id);
  if (!kernel && !root.boot_mode) throw new Error(`instance ${row.id} names no kernel`);
  const ramdisk = await image(row.ramdisk_id);
  const vmType = await findVmType(db, row.instance_type);
  if (!vmType) throw new Error(`instance type ${row.instance_type} of instance ${row.id} no longer exists`);
  const subnet = await db.selectFrom('subnets').select(['id', 'cidr', 'vpc_id']).where('id', '=', row.subnet_id).executeTakeFirst();
  if (!subnet) throw new Error(`subnet ${row.subnet_id} of instance ${row.id} no longer exists`);
  const zone = await db.selectFrom('zones').select('region').where('name', '=', row.zone).executeTakeFirst();
  const region = zone?.region ?? '';
  const key = row.key_name === null ? undefined : await db.selectFrom('key_pairs').select(['name', 'public_key'])
    .where('account_id', '=', row.account_id).where('name', '=', row.key_name).executeTakeFirst();
  return {
    instanceId: row.id, reservationId: row.reservation_id, accountId: row.account_id, imageId: row.image_id,
    ...(kernel ? { kernel: imageRefFor(kernel, imageUrl) } : { bootMode: bootModeOf(root) }),
    ...(ramdisk ? { ramdisk: imageRefFor(ramdisk, imageUrl) } : {}),
    root: imageRefFor(root, imageUrl),
    ...(row.root_volume_id ? { rootVolume: { volumeId: row.root_volume_id } } : {}),
    kernelCmdline: root.kernel_cmdline ?? '',
    vmType, zone: row.zone, region, subnetCidr: subnet.cidr, subnetId: subnet.id, vpcId: subnet.vpc_id,
    privateIp: row.private_ip!, privateDnsName: privateDnsName(row.private_ip!, region), mac: row.mac,
    ...(row.user_data ? { userData: row.user_data } : {}),
    ...(row.public_ip ? { publicIp: row.public_ip } : {}),
    publicKeys: key ? [{ name: key.name, openssh: key.public_key }] : [],
    securityGroups: JSON.parse(row.security_groups) as { id: string; name: string }[],
    launchIndex: row.launch_index, launchTime: row.launch_time,
    ...metadataOptionsSpec(row),
  };
}

/** Writes which node took each instance (rows an earlier answer already placed keep theirs). */
export async function recordPlacements(store: Store, placements: Placement[]): Promise<void> {
  const byNode = new Map<string, string[]>();
  for (const p of placements) {
    const list = byNode.get(p.nodeId) ?? [];
    list.push(p.instanceId);
    byNode.set(p.nodeId, list);
  }
  await store.transaction(async (tx) => {
    for (const [nodeId, ids] of byNode) {
      for (let i = 0; i < ids.length; i += 500) {
        await tx.updateTable('instances').set({ node_id: nodeId }).where('id', 'in', ids.slice(i, i + 500)).where('node_id', 'is', null).execute();
      }
    }
  });
}

/**
 * Asks the cluster to place these stored pending instances (one reservation's; all or none, as a
 * launch is) and records where they went. Throws what the cluster answered when it does not place them.
 */
export async function placeStoredInstances(store: Store, cluster: ClusterApi, rows: InstancesTable[],
  imageUrl?: (imageId: string) => string): Promise<Placement[]> {
  const specs: InstanceSpec[] = [];
  for (const row of rows) specs.push(await specFromRow(store.db, row, imageUrl));
  const placements = await cluster.runInstances(specs);
  await recordPlacements(store, placements);
  return placements;
}
