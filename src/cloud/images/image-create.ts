// CreateImage (an EBS-backed image of an instance that boots from a volume) and CopyImage (same
// region: the snapshots are copied, a new image id). Both record what is asked and answer at once:
// the image is `pending`, its snapshots are taken (or copied) by the snapshot reconciler, and the
// image becomes `available` once all of them have completed (`failed` if one fails), which
// settlePendingImages records whenever images are read.
import type { OperationTable, RequestContext } from '../context.ts';
import type { Db, Tx } from '../../store/store.ts';
import type { ImagesTable, SnapshotsTable } from '../../store/schema.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { newId } from '../ids.ts';
import { tagsFromSpecifications, writeTags, type TagSpecification } from '../tags.ts';
import { COPIED_VOLUME_ID, recordSnapshot } from '../storage/snapshots.ts';
import { assertSnapshotQuota } from '../storage/snapshot-quotas.ts';
import type { BlockDeviceMappingInput } from '../storage/launch-volumes.ts';
import { ROOT_VOLUME_DEVICE } from '../storage/launch-volumes.ts';
import { checkDescription, checkImageMappings, checkNameFree, imageBlockDevices, imageSnapshotIds, isEbsImage, type ImageBlockDevice } from './ebs-images.ts';
import { findVisibleImage } from './images.ts';

const INSTANCE_ID = /^i-[0-9a-f]{8}([0-9a-f]{9})?$/;
const IMAGE_NAME = /^[A-Za-z0-9()[\] ./'@_-]{3,128}$/;

function checkName(name: string | undefined): string {
  if (!name) throw new Ec2Error('MissingParameter', 'The request must contain the parameter name');
  if (!IMAGE_NAME.test(name)) {
    throw new Ec2Error('InvalidAMIName.Malformed', `AMI names must be between 3 and 128 characters long, and may contain letters, numbers, '(', ')', '.', '-', '/' and '_'`);
  }
  return name;
}

/**
 * Pending images whose snapshots have all completed become available; one whose snapshot failed
 * or went away becomes failed. Cheap when nothing is pending (one indexed query).
 */
export async function settlePendingImages(db: Db | Tx): Promise<void> {
  const pending = await db.selectFrom('images').select(['id', 'block_device_mappings']).where('state', '=', 'pending')
    .where('root_device_type', '=', 'ebs').execute();
  for (const image of pending) {
    const ids = imageSnapshotIds(image);
    const snapshots = ids.length === 0 ? [] : await db.selectFrom('snapshots').select(['id', 'state']).where('id', 'in', ids).execute();
    const failed = snapshots.length < ids.length || snapshots.some((s) => s.state !== 'pending' && s.state !== 'completed');
    const done = !failed && snapshots.every((s) => s.state === 'completed');
    if (failed || done) {
      await db.updateTable('images').set({ state: failed ? 'failed' : 'available' }).where('id', '=', image.id).where('state', '=', 'pending').execute();
    }
  }
}

interface CreateImageInput {
  InstanceId?: string; Name?: string; Description?: string; NoReboot?: boolean;
  BlockDeviceMappings?: BlockDeviceMappingInput[]; TagSpecifications?: TagSpecification[];
}

async function CreateImage(ctx: RequestContext, input: CreateImageInput) {
  const accountId = ctx.caller.accountId;
  if (!input.InstanceId) throw new Ec2Error('MissingParameter', 'The request must contain the parameter InstanceId');
  if (!INSTANCE_ID.test(input.InstanceId)) throw new Ec2Error('InvalidInstanceID.Malformed', `Invalid id: "${input.InstanceId}"`);
  const name = checkName(input.Name);
  const description = checkDescription(input.Description);
  const byType = tagsFromSpecifications(input.TagSpecifications, ['image', 'snapshot']);
  const id = await ctx.store.transaction(async (tx) => {
    const instance = await tx.selectFrom('instances').selectAll().where('id', '=', input.InstanceId!).where('account_id', '=', accountId).executeTakeFirst();
    if (!instance || instance.state === 'terminated') throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${input.InstanceId}' does not exist`);
    if (!['running', 'stopped', 'stopping'].includes(instance.state)) {
      throw new Ec2Error('IncorrectInstanceState', `The instance '${instance.id}' is not in a state from which an image can be made (${instance.state}).`);
    }
    if (!instance.root_volume_id) {
      // EC2 too makes images of EBS-backed instances only.
      throw new Ec2Error('InvalidParameterValue', `The instance '${instance.id}' has a root device of type instance-store: CreateImage needs an instance that boots from an EBS volume (launched from an EBS-backed image).`);
    }
    await checkNameFree(tx, accountId, name);
    const attached = await tx.selectFrom('volumes').selectAll().where('instance_id', '=', instance.id).orderBy('device').execute();
    const asked = new Map((input.BlockDeviceMappings ?? []).filter((m) => m?.DeviceName).map((m) => [m.DeviceName!, m]));
    if (asked.get(ROOT_VOLUME_DEVICE)?.NoDevice !== undefined) throw new Ec2Error('InvalidBlockDeviceMapping', 'The root device cannot be left out of the image.');
    const mappings: ImageBlockDevice[] = [];
    // Every attached volume is snapshotted (crash-consistent: the storage snapshots a volume in use),
    // unless the request leaves its device out with NoDevice.
    for (const volume of attached) {
      const ask = asked.get(volume.device ?? '');
      if (ask?.NoDevice !== undefined) continue;
      const snapshot = await recordSnapshot(tx, {
        accountId, volume, description: `Created by CreateImage(${instance.id}) for ${name}`, tags: byType.get('snapshot') ?? [],
      });
      mappings.push({
        DeviceName: volume.device!,
        Ebs: {
          SnapshotId: snapshot.id, VolumeSize: Math.max(volume.size_gib, ask?.Ebs?.VolumeSize ?? 0), VolumeType: ask?.Ebs?.VolumeType || volume.volume_type,
          DeleteOnTermination: ask?.Ebs?.DeleteOnTermination ?? (volume.id === instance.root_volume_id ? true : volume.delete_on_termination === 1),
          ...(volume.iops !== null ? { Iops: volume.iops } : {}), ...(volume.throughput !== null ? { Throughput: volume.throughput } : {}), Encrypted: false,
        },
      });
      asked.delete(volume.device ?? '');
    }
    // New empty volumes the request adds to the image.
    const extra = [...asked.values()].filter((m) => m.NoDevice === undefined);
    if (extra.length > 0) {
      mappings.push(...(await checkImageMappings(tx, accountId, [...extra, { DeviceName: ROOT_VOLUME_DEVICE, Ebs: { SnapshotId: mappings[0]!.Ebs!.SnapshotId } }], ROOT_VOLUME_DEVICE))
        .filter((m) => m.DeviceName !== ROOT_VOLUME_DEVICE));
    }
    const source = await tx.selectFrom('images').selectAll().where('id', '=', instance.image_id).executeTakeFirst();
    const root = mappings.find((m) => m.DeviceName === ROOT_VOLUME_DEVICE)!;
    const row: ImagesTable = {
      id: newId('ami'), account_id: accountId, name, description, kind: 'machine', architecture: source?.architecture ?? 'x86_64',
      state: 'pending', is_public: 0, kernel_id: instance.kernel_id, ramdisk_id: instance.ramdisk_id, root_device_name: ROOT_VOLUME_DEVICE,
      kernel_cmdline: source?.kernel_cmdline ?? null, location: '', sha256: '', size_bytes: root.Ebs!.VolumeSize * 1024 ** 3, format: 'raw',
      created_at: new Date().toISOString(), boot_mode: source?.boot_mode ?? null, root_device_type: 'ebs',
      block_device_mappings: JSON.stringify(mappings), source_instance_id: instance.id,
    };
    await tx.insertInto('images').values(row).execute();
    await writeTags(tx, accountId, row.id, byType.get('image') ?? []);
    return row.id;
  });
  return { ImageId: id };
}

interface CopyImageInput {
  Name?: string; Description?: string; SourceImageId?: string; SourceRegion?: string; ClientToken?: string; Encrypted?: boolean; KmsKeyId?: string;
  DestinationOutpostArn?: string; CopyImageTags?: boolean; TagSpecifications?: TagSpecification[];
}

async function CopyImage(ctx: RequestContext, input: CopyImageInput) {
  const accountId = ctx.caller.accountId;
  const region = ctx.settings.region;
  if (!input.SourceRegion) throw new Ec2Error('MissingParameter', 'The request must contain the parameter SourceRegion');
  if (input.SourceRegion !== region) {
    throw new Ec2Error('InvalidParameterValue', `This cloud has one region, ${region}: CopyImage copies within it (SourceRegion ${input.SourceRegion}).`);
  }
  if (input.Encrypted === true || input.KmsKeyId) throw new Ec2Error('UnsupportedOperation', 'Encrypted images are not offered by this cloud.');
  if (input.DestinationOutpostArn) throw new Ec2Error('UnsupportedOperation', 'This cloud has no Outposts.');
  const name = checkName(input.Name);
  const tags = tagsFromSpecifications(input.TagSpecifications, ['image']).get('image') ?? [];
  const id = await ctx.store.transaction(async (tx) => {
    const source = await findVisibleImage(tx, accountId, input.SourceImageId ?? '', 'machine');
    if (!isEbsImage(source)) {
      throw new Ec2Error('InvalidParameterValue', `The image '${source.id}' is instance-store backed: CopyImage copies EBS-backed images.`);
    }
    if (source.state !== 'available') throw new Ec2Error('InvalidAMIID.Unavailable', `The image '${source.id}' is ${source.state}.`);
    await checkNameFree(tx, accountId, name);
    const description = input.Description !== undefined ? checkDescription(input.Description) : source.description;
    const mappings = imageBlockDevices(source);
    const copied: ImageBlockDevice[] = [];
    const now = new Date().toISOString();
    for (const m of mappings) {
      if (!m.Ebs?.SnapshotId) { copied.push(m); continue; }
      const original = await tx.selectFrom('snapshots').selectAll().where('id', '=', m.Ebs.SnapshotId).executeTakeFirst();
      if (!original || original.state !== 'completed') throw new Ec2Error('InvalidAMIID.Unavailable', `The snapshot ${m.Ebs.SnapshotId} of image '${source.id}' is not available.`);
      await assertSnapshotQuota(tx, accountId, 1, original.volume_size_gib);
      // A copy like CopySnapshot's: the snapshot reconciler has the storage copy it.
      const copy: SnapshotsTable = {
        id: newId('snap'), account_id: accountId, volume_id: COPIED_VOLUME_ID, zone: original.zone, volume_size_gib: original.volume_size_gib,
        description: `Copied for ${name} from ${original.id}`, state: 'pending', progress: 0, state_message: null, source_snapshot_id: original.id,
        stored_bytes: null, started_at: now, completed_at: null, state_changed_at: now, deleted_at: null,
      };
      await tx.insertInto('snapshots').values(copy).execute();
      copied.push({ ...m, Ebs: { ...m.Ebs, SnapshotId: copy.id } });
    }
    const row: ImagesTable = {
      ...source, id: newId('ami'), account_id: accountId, name, description, state: 'pending', is_public: 0, created_at: now,
      block_device_mappings: JSON.stringify(copied), source_instance_id: null,
    };
    await tx.insertInto('images').values(row).execute();
    await writeTags(tx, accountId, row.id, tags);
    return row.id;
  });
  return { ImageId: id };
}

export const imageCreateOperations: OperationTable = { CreateImage, CopyImage };
