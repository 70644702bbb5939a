// RunInstances' BlockDeviceMappings: EBS volumes made for each new instance and attached to it.
// The launch checks every mapping as CreateVolume checks its parameters, and writes the volumes in
// the same transaction as the instances (counted against the account's volume quotas), each one
// `creating` and `attaching` to its instance; the volume reconciler makes and attaches them once the
// cluster has placed the instance (it waits for the placement, so a launch that fails removes the
// rows of volumes no storage has made yet: nothing is left behind). A new volume keeps the
// mapping's DeleteOnTermination, which ModifyInstanceAttribute can change later.
//
// Mappings EC2 also takes: VirtualName (ephemeralN, instance-store disks) is accepted and ignored,
// as EC2 does for an instance type without instance store (none of this cloud's has one); NoDevice
// suppresses a device the image maps, and on a device the image does not map there is nothing to
// suppress.
import type { Db, Store, Tx } from '../../store/store.ts';
import type { VolumesTable } from '../../store/schema.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { newId } from '../ids.ts';
import { writeTags, type Tag } from '../tags.ts';
import { assertVolumeQuota } from './volume-quotas.ts';
import { checkShape, EBS_DEVICE_NAME, MAX_VOLUMES_PER_INSTANCE, refuseUnoffered } from './volumes.ts';

/** One BlockDeviceMapping of RunInstances (and RegisterImage), as the parser hands it over. */
export interface BlockDeviceMappingInput {
  DeviceName?: string;
  VirtualName?: string;
  NoDevice?: string;
  Ebs?: {
    DeleteOnTermination?: boolean; Iops?: number; SnapshotId?: string; VolumeSize?: number; VolumeType?: string;
    KmsKeyId?: string; Throughput?: number; OutpostArn?: string; Encrypted?: boolean;
  };
}

/** A volume every instance of the launch gets. */
export interface LaunchVolume {
  device: string;
  sizeGiB: number;
  type: string;
  iops: number | null;
  throughput: number | null;
  deleteOnTermination: boolean;
  snapshotId: string | null;
  /** The instance boots from it (an EBS-backed image's root device). */
  root?: boolean;
}

/**
 * The snapshot a mapping names, as the launch may use it (its size sets the volume's default
 * size). Undefined: no such snapshot visible to the account.
 */
export type SnapshotLookup = (snapshotId: string, viaImage?: boolean) => Promise<{ id: string; sizeGiB: number } | undefined>;

/** A lookup for a cloud with no snapshots: every id is not found. */
export const NO_SNAPSHOTS: SnapshotLookup = async () => undefined;

function invalidMapping(message: string): Ec2Error {
  return new Ec2Error('InvalidBlockDeviceMapping', message);
}

/**
 * The volumes a launch makes from its BlockDeviceMappings, checked as EC2 checks them.
 * `rootDeviceName` is the image's root device: an instance-store image's root cannot be an EBS
 * mapping (boot-from-volume images map it themselves).
 */
export async function launchVolumesFrom(mappings: BlockDeviceMappingInput[] | undefined, rootDeviceName: string,
  snapshots: SnapshotLookup = NO_SNAPSHOTS): Promise<LaunchVolume[]> {
  const out: LaunchVolume[] = [];
  const seen = new Set<string>();
  for (const [i, m] of (mappings ?? []).entries()) {
    const n = i + 1;
    const device = m?.DeviceName;
    if (!device) throw new Ec2Error('MissingParameter', `The request must contain the parameter BlockDeviceMapping.${n}.DeviceName`);
    if (seen.has(device)) throw invalidMapping(`The device '${device}' is used in more than one block-device mapping`);
    seen.add(device);
    const kinds = [m.Ebs !== undefined, m.VirtualName !== undefined && m.VirtualName !== '', m.NoDevice !== undefined].filter(Boolean).length;
    if (kinds > 1) throw invalidMapping(`The block-device mapping for ${device} may give only one of Ebs, VirtualName and NoDevice.`);
    if (m.NoDevice !== undefined) {
      if (device === rootDeviceName) throw invalidMapping(`The root device ${device} cannot be suppressed with NoDevice.`);
      continue;
    }
    if (m.VirtualName) {
      if (!/^ephemeral([0-9]|1[0-9]|2[0-3])$/.test(m.VirtualName)) {
        throw invalidMapping(`Invalid virtual name ${m.VirtualName} for ${device}: expected ephemeral0 to ephemeral23.`);
      }
      // No instance type of this cloud has instance-store disks: EC2 ignores such a mapping.
      continue;
    }
    if (!m.Ebs) throw invalidMapping(`The block-device mapping for ${device} must give Ebs, VirtualName or NoDevice.`);
    if (device === rootDeviceName) {
      throw invalidMapping(`The image's root device ${device} is not an EBS volume: it cannot be given an Ebs mapping.`);
    }
    if (!EBS_DEVICE_NAME.test(device)) {
      throw new Ec2Error('InvalidParameterValue', `Value (${device}) for parameter device is invalid. ${device} is not a valid EBS device name.`);
    }
    const ebs = m.Ebs;
    refuseUnoffered(ebs);
    let snapshotId: string | null = null;
    let size = ebs.VolumeSize;
    if (ebs.SnapshotId) {
      const snapshot = await snapshots(ebs.SnapshotId);
      if (!snapshot) throw new Ec2Error('InvalidSnapshot.NotFound', `The snapshot '${ebs.SnapshotId}' does not exist.`);
      snapshotId = snapshot.id;
      if (size === undefined) size = snapshot.sizeGiB;
      if (size < snapshot.sizeGiB) {
        throw new Ec2Error('InvalidParameterValue', `Volume of ${size}GiB is smaller than snapshot '${snapshot.id}', expect size >= ${snapshot.sizeGiB}GiB`);
      }
    }
    if (size === undefined) throw invalidMapping(`The Ebs mapping for ${device} must give VolumeSize or SnapshotId.`);
    const shape = checkShape(ebs.VolumeType || 'gp2', size, ebs.Iops, ebs.Throughput);
    out.push({ device, sizeGiB: shape.sizeGiB, type: shape.type, iops: shape.iops, throughput: shape.throughput,
      // EC2's default for a volume made at launch: it goes with the instance.
      deleteOnTermination: ebs.DeleteOnTermination ?? true, snapshotId });
  }
  if (out.length > MAX_VOLUMES_PER_INSTANCE) {
    throw new Ec2Error('AttachmentLimitExceeded', `An instance of this cloud takes at most ${MAX_VOLUMES_PER_INSTANCE} volumes; the launch maps ${out.length}.`);
  }
  return out;
}

/** Writes the launch's volumes for each of its instances (quota first), attaching to it. */
export async function writeLaunchVolumes(tx: Tx, accountId: string, zone: string, instanceIds: string[], volumes: LaunchVolume[],
  tags: Tag[]): Promise<VolumesTable[]> {
  // An EBS-backed image's root volume is made by the launch itself (makeRootVolumes), attached.
  if (volumes.length === 0 || instanceIds.length === 0) return [];
  const perInstanceGiB = volumes.reduce((sum, v) => sum + v.sizeGiB, 0);
  await assertVolumeQuota(tx, accountId, volumes.length * instanceIds.length, perInstanceGiB * instanceIds.length);
  const now = new Date().toISOString();
  const rows: VolumesTable[] = [];
  for (const instanceId of instanceIds) {
    for (const v of volumes) {
      rows.push({
        id: newId('vol'), account_id: accountId, zone, size_gib: v.sizeGiB, volume_type: v.type, iops: v.iops, throughput: v.throughput,
        snapshot_id: v.snapshotId, state: 'creating', created_at: now, state_changed_at: now, auto_enable_io: 0,
        instance_id: instanceId, device: v.device, attach_state: 'attaching', attach_time: now,
        delete_on_termination: v.deleteOnTermination ? 1 : 0, detach_force: 0, client_token: null,
      });
    }
  }
  for (let i = 0; i < rows.length; i += 200) await tx.insertInto('volumes').values(rows.slice(i, i + 200)).execute();
  const root = volumes.find((v) => v.root);
  if (root) {
    for (const row of rows.filter((r) => r.device === root.device)) {
      await tx.updateTable('instances').set({ root_volume_id: row.id }).where('id', '=', row.instance_id!).execute();
    }
  }
  if (tags.length > 0) for (const row of rows) await writeTags(tx, accountId, row.id, tags);
  return rows;
}

/**
 * Removes the volumes a failed launch wrote for these instances. The reconciler makes a launch's
 * volumes only once their instance is placed, so none of these exists in any storage yet.
 */
export async function removeLaunchVolumes(tx: Tx, instanceIds: string[]): Promise<void> {
  for (let i = 0; i < instanceIds.length; i += 500) {
    const chunk = instanceIds.slice(i, i + 500);
    const ids = (await tx.selectFrom('volumes').select('id').where('instance_id', 'in', chunk).where('state', '=', 'creating').execute()).map((r) => r.id);
    if (ids.length === 0) continue;
    await tx.deleteFrom('tags').where('resource_id', 'in', ids).execute();
    await tx.deleteFrom('volumes').where('id', 'in', ids).execute();
  }
}

/**
 * ModifyInstanceAttribute BlockDeviceMappings: a new DeleteOnTermination for volumes attached to
 * the instance, by device name (the only part of a mapping EC2 lets one change there).
 */
export async function setDeleteOnTermination(tx: Tx, instanceId: string, mappings: unknown): Promise<void> {
  if (!Array.isArray(mappings) || mappings.length === 0) throw new Ec2Error('MissingParameter', 'The request must contain the parameter BlockDeviceMapping');
  const attached = await tx.selectFrom('volumes').select(['id', 'device']).where('instance_id', '=', instanceId).execute();
  const changes: { id: string; flag: boolean }[] = [];
  for (const raw of mappings as { DeviceName?: string; Ebs?: { DeleteOnTermination?: boolean | string; VolumeId?: string }; NoDevice?: string; VirtualName?: string }[]) {
    if (!raw?.DeviceName) throw new Ec2Error('MissingParameter', 'The request must contain the parameter BlockDeviceMapping.N.DeviceName');
    if (raw.NoDevice !== undefined || raw.VirtualName) {
      throw new Ec2Error('InvalidParameterCombination', 'Only DeleteOnTermination of an attached EBS volume can be modified: NoDevice and VirtualName are not modifiable.');
    }
    const volume = attached.find((v) => v.device === raw.DeviceName);
    if (!volume) throw new Ec2Error('InvalidInstanceAttributeValue', `No device is currently mapped at ${raw.DeviceName}`);
    if (raw.Ebs?.VolumeId && raw.Ebs.VolumeId !== volume.id) {
      throw new Ec2Error('InvalidInstanceAttributeValue', `The volume attached at ${raw.DeviceName} is ${volume.id}, not ${raw.Ebs.VolumeId}.`);
    }
    const value = raw.Ebs?.DeleteOnTermination;
    const flag = typeof value === 'string' ? value.toLowerCase() === 'true' ? true : value.toLowerCase() === 'false' ? false : undefined : value;
    if (flag === undefined) throw new Ec2Error('MissingParameter', `The request must contain the parameter BlockDeviceMapping.N.Ebs.DeleteOnTermination for ${raw.DeviceName}`);
    changes.push({ id: volume.id, flag });
  }
  for (const c of changes) {
    await tx.updateTable('volumes').set({ delete_on_termination: c.flag ? 1 : 0 }).where('id', '=', c.id).where('instance_id', '=', instanceId).execute();
  }
}

// ---- EBS-backed images: the root volume and the image's own block devices -------------------

/** The device an instance's root volume is attached at: the first virtio disk, as the guest sees it. */
export const ROOT_VOLUME_DEVICE = '/dev/vda';

/** A mapping an EBS image keeps (images/ebs-images.ts ImageBlockDevice). */
interface ImageMapping {
  DeviceName: string;
  Ebs?: { SnapshotId?: string; VolumeSize: number; VolumeType: string; DeleteOnTermination: boolean; Iops?: number; Throughput?: number };
  VirtualName?: string;
  NoDevice?: string;
}

/**
 * The volumes a launch of an EBS-backed image makes: its root volume (from the image's snapshot,
 * grown, retyped or kept past termination as the request's mapping of the root device asks) and
 * the image's other Ebs devices, with the request's mappings laid over them (NoDevice removes one).
 * The image's snapshots need no permission of the caller: launching the image is the permission.
 */
export async function launchVolumesForEbsImage(imageMappings: ImageMapping[], imageRootDevice: string,
  requested: BlockDeviceMappingInput[] | undefined, snapshots: SnapshotLookup): Promise<LaunchVolume[]> {
  const asked = new Map((requested ?? []).filter((m) => m?.DeviceName).map((m) => [m.DeviceName!, m]));
  const rootImage = imageMappings.find((m) => m.DeviceName === imageRootDevice && m.Ebs?.SnapshotId);
  if (!rootImage?.Ebs) throw new Ec2Error('InvalidAMIID.Unavailable', `The image's root device ${imageRootDevice} has no snapshot.`);
  const rootAsk = asked.get(imageRootDevice);
  if (rootAsk?.NoDevice !== undefined || rootAsk?.VirtualName) throw invalidMapping(`The root device ${imageRootDevice} cannot be suppressed or replaced.`);
  if (rootAsk?.Ebs?.SnapshotId && rootAsk.Ebs.SnapshotId !== rootImage.Ebs.SnapshotId) {
    throw invalidMapping(`The root device ${imageRootDevice} is made from the image's snapshot ${rootImage.Ebs.SnapshotId}; another snapshot cannot be given.`);
  }
  if (rootAsk?.Ebs) refuseUnoffered(rootAsk.Ebs);
  const rootSize = rootAsk?.Ebs?.VolumeSize ?? rootImage.Ebs.VolumeSize;
  if (rootSize < rootImage.Ebs.VolumeSize) {
    throw new Ec2Error('InvalidBlockDeviceMapping', `Volume of size ${rootSize}GB is smaller than snapshot '${rootImage.Ebs.SnapshotId}', expect size >= ${rootImage.Ebs.VolumeSize}GB`);
  }
  const rootType = rootAsk?.Ebs?.VolumeType || rootImage.Ebs.VolumeType;
  const rootShape = checkShape(rootType, rootSize, rootAsk?.Ebs?.Iops ?? (rootAsk?.Ebs?.VolumeType ? undefined : rootImage.Ebs.Iops),
    rootAsk?.Ebs?.Throughput ?? (rootAsk?.Ebs?.VolumeType ? undefined : rootImage.Ebs.Throughput));
  const root: LaunchVolume = {
    device: ROOT_VOLUME_DEVICE, sizeGiB: rootShape.sizeGiB, type: rootShape.type, iops: rootShape.iops, throughput: rootShape.throughput,
    deleteOnTermination: rootAsk?.Ebs?.DeleteOnTermination ?? rootImage.Ebs.DeleteOnTermination, snapshotId: rootImage.Ebs.SnapshotId!, root: true,
  };
  // The image's other Ebs devices, unless the request maps the device itself.
  const fromImage: BlockDeviceMappingInput[] = imageMappings
    .filter((m) => m.DeviceName !== imageRootDevice && m.Ebs && !asked.has(m.DeviceName))
    .map((m) => ({ DeviceName: m.DeviceName, Ebs: { ...m.Ebs } }));
  const rest = [...fromImage, ...[...asked.values()].filter((m) => m.DeviceName !== imageRootDevice)];
  // The image's snapshots are looked up without the caller's permission; others with it.
  const imageSnapshots = new Set(imageMappings.map((m) => m.Ebs?.SnapshotId).filter(Boolean));
  const others = await launchVolumesFrom(rest, imageRootDevice, async (id) => imageSnapshots.has(id) ? snapshots(id, true) : snapshots(id, false));
  if (others.length + 1 > MAX_VOLUMES_PER_INSTANCE) {
    throw new Ec2Error('AttachmentLimitExceeded', `An instance of this cloud takes at most ${MAX_VOLUMES_PER_INSTANCE} volumes; the launch maps ${others.length + 1}.`);
  }
  return [root, ...others];
}

/** What makes a volume from a snapshot in the zone's storage (ClusterApi.createVolumeFromSnapshot). */
export interface RootVolumeMaker {
  createVolumeFromSnapshot?(volumeId: string, snapshotId: string, sizeGiB: number): Promise<unknown>;
  deleteVolume?(volumeId: string): Promise<void>;
}

/**
 * Makes the root volumes of these instances from their snapshots (copy-on-write in the zone's
 * storage), before the cluster boots them from it, and records them attached.
 */
export async function makeRootVolumes(store: Store, cluster: RootVolumeMaker, instanceIds: string[]): Promise<void> {
  const rows = await rootVolumesOf(store.db, instanceIds);
  for (const row of rows.filter((r) => r.state === 'creating')) {
    if (!cluster.createVolumeFromSnapshot) throw new Ec2Error('UnsupportedOperation', `The zone ${row.zone} keeps no snapshots: an EBS-backed image cannot be launched there.`);
    await cluster.createVolumeFromSnapshot(row.id, row.snapshot_id!, row.size_gib);
    await store.db.updateTable('volumes').set({ state: 'in-use', attach_state: 'attached', state_changed_at: new Date().toISOString() })
      .where('id', '=', row.id).where('state', '=', 'creating').execute();
  }
}

/**
 * A launch that fails after making root volumes: removes them from the storage (their rows go with
 * the instances' rows); one the storage would not remove now is left `deleting` for the reconciler.
 */
export async function discardRootVolumes(store: Store, cluster: RootVolumeMaker, instanceIds: string[]): Promise<void> {
  for (const row of (await rootVolumesOf(store.db, instanceIds)).filter((r) => r.state !== 'creating')) {
    try {
      await cluster.deleteVolume?.(row.id);
      await store.db.updateTable('volumes').set({ state: 'creating' }).where('id', '=', row.id).execute();
    } catch {
      await store.db.updateTable('volumes').set({ state: 'deleting', instance_id: null, device: null, attach_state: null, attach_time: null, state_changed_at: new Date().toISOString() })
        .where('id', '=', row.id).execute();
    }
  }
}

async function rootVolumesOf(db: Db | Tx, instanceIds: string[]): Promise<VolumesTable[]> {
  const out: VolumesTable[] = [];
  for (let i = 0; i < instanceIds.length; i += 500) {
    const chunk = instanceIds.slice(i, i + 500);
    out.push(...await db.selectFrom('volumes').selectAll().where('instance_id', 'in', chunk).where('device', '=', ROOT_VOLUME_DEVICE)
      .where('snapshot_id', 'is not', null).execute());
  }
  return out;
}
