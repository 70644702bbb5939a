// EBS-backed images: an image whose root device is a volume made from a snapshot at every launch
// (RootDeviceType ebs), with the block devices EC2 lists in BlockDeviceMappings. RegisterImage
// makes one from snapshots the caller may use; DescribeImages shows them (images.ts); RunInstances
// makes the volumes (storage/launch-volumes.ts). DeregisterImage leaves the snapshots, as EC2 does.
import type { OperationTable, RequestContext } from '../context.ts';
import type { Db, Tx } from '../../store/store.ts';
import type { ImagesTable } from '../../store/schema.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { newId } from '../ids.ts';
import { tagsFromSpecifications, writeTags, type TagSpecification } from '../tags.ts';
import { usableSnapshot } from '../storage/snapshots.ts';
import { checkShape, refuseUnoffered } from '../storage/volumes.ts';
import type { BlockDeviceMappingInput } from '../storage/launch-volumes.ts';
import { ARCHITECTURE, BOOT_MODES, findVisibleImage } from './images.ts';

/** One block device of an EBS-backed image, as stored and as EC2 shows it. */
export interface ImageBlockDevice {
  DeviceName: string;
  Ebs?: { SnapshotId?: string; VolumeSize: number; VolumeType: string; DeleteOnTermination: boolean; Iops?: number; Throughput?: number; Encrypted: false };
  VirtualName?: string;
  NoDevice?: string;
}

/** Root device names an EBS image may give (EC2's Linux names, and this cloud's /dev/vda). */
const ROOT_DEVICE = /^\/dev\/(sda1?|xvda|vda)$/;
const DEVICE = /^\/dev\/(sd[a-z][1-9]?|xvd[a-z]|vd[a-z])$/;
const IMAGE_NAME = /^[A-Za-z0-9()[\] ./'@_-]{3,128}$/;

export function isEbsImage(row: Pick<ImagesTable, 'root_device_type'>): boolean {
  return row.root_device_type === 'ebs';
}

/** The image's block devices (none for an instance-store image). */
export function imageBlockDevices(row: Pick<ImagesTable, 'block_device_mappings'>): ImageBlockDevice[] {
  if (!row.block_device_mappings) return [];
  const parsed = JSON.parse(row.block_device_mappings) as ImageBlockDevice[];
  return Array.isArray(parsed) ? parsed : [];
}

/** The root device's mapping of an EBS image. */
export function rootBlockDevice(row: Pick<ImagesTable, 'block_device_mappings' | 'root_device_name'>): ImageBlockDevice | undefined {
  return imageBlockDevices(row).find((m) => m.DeviceName === row.root_device_name && m.Ebs);
}

/** The snapshots an image's block devices name. */
export function imageSnapshotIds(row: Pick<ImagesTable, 'block_device_mappings'>): string[] {
  return imageBlockDevices(row).map((m) => m.Ebs?.SnapshotId).filter((id): id is string => id !== undefined);
}

/** RegisterImage's and CreateImage's mappings, checked, as the image keeps them. */
export async function checkImageMappings(db: Db | Tx, accountId: string, mappings: BlockDeviceMappingInput[], rootDeviceName: string): Promise<ImageBlockDevice[]> {
  const out: ImageBlockDevice[] = [];
  const seen = new Set<string>();
  for (const [i, m] of mappings.entries()) {
    const device = m?.DeviceName;
    if (!device) throw new Ec2Error('MissingParameter', `The request must contain the parameter BlockDeviceMapping.${i + 1}.DeviceName`);
    if (!DEVICE.test(device)) throw new Ec2Error('InvalidBlockDeviceMapping', `Invalid device name ${device}`);
    if (seen.has(device)) throw new Ec2Error('InvalidBlockDeviceMapping', `The device '${device}' is used in more than one block-device mapping`);
    seen.add(device);
    if (m.NoDevice !== undefined) { out.push({ DeviceName: device, NoDevice: '' }); continue; }
    if (m.VirtualName) { out.push({ DeviceName: device, VirtualName: m.VirtualName }); continue; }
    if (!m.Ebs) throw new Ec2Error('InvalidBlockDeviceMapping', `The block-device mapping for ${device} must give Ebs, VirtualName or NoDevice.`);
    refuseUnoffered(m.Ebs);
    let size = m.Ebs.VolumeSize;
    let snapshotId: string | undefined;
    if (m.Ebs.SnapshotId) {
      const snapshot = await usableSnapshot(db, accountId, m.Ebs.SnapshotId, `BlockDeviceMapping.${i + 1}.Ebs.SnapshotId`);
      if (snapshot.state === 'error') throw new Ec2Error('IncorrectState', `Snapshot '${snapshot.id}' failed; an image cannot use it.`);
      snapshotId = snapshot.id;
      size ??= snapshot.volume_size_gib;
      if (size < snapshot.volume_size_gib) {
        throw new Ec2Error('InvalidBlockDeviceMapping', `Volume of ${size}GiB is smaller than snapshot '${snapshot.id}', expect size >= ${snapshot.volume_size_gib}GiB`);
      }
    }
    if (size === undefined) throw new Ec2Error('InvalidBlockDeviceMapping', `The Ebs mapping for ${device} must give VolumeSize or SnapshotId.`);
    const shape = checkShape(m.Ebs.VolumeType || 'gp2', size, m.Ebs.Iops, m.Ebs.Throughput);
    out.push({
      DeviceName: device,
      Ebs: {
        ...(snapshotId ? { SnapshotId: snapshotId } : {}), VolumeSize: shape.sizeGiB, VolumeType: shape.type,
        DeleteOnTermination: m.Ebs.DeleteOnTermination ?? true,
        ...(shape.iops !== null ? { Iops: shape.iops } : {}), ...(shape.throughput !== null ? { Throughput: shape.throughput } : {}), Encrypted: false,
      },
    });
  }
  const root = out.find((m) => m.DeviceName === rootDeviceName);
  if (!root?.Ebs?.SnapshotId) {
    throw new Ec2Error('InvalidBlockDeviceMapping', `The root device ${rootDeviceName} must be an Ebs mapping with a SnapshotId.`);
  }
  return out;
}

function checkName(name: string | undefined): string {
  if (!name) throw new Ec2Error('MissingParameter', 'The request must contain the parameter name');
  if (!IMAGE_NAME.test(name)) {
    throw new Ec2Error('InvalidAMIName.Malformed', `AMI names must be between 3 and 128 characters long, and may contain letters, numbers, '(', ')', '.', '-', '/' and '_'`);
  }
  return name;
}

/** The caller has no other live image of this name (EC2's names are unique per account). */
export async function checkNameFree(db: Db | Tx, accountId: string, name: string): Promise<void> {
  const clash = await db.selectFrom('images').select('id').where('account_id', '=', accountId).where('name', '=', name)
    .where('state', '!=', 'deregistered').executeTakeFirst();
  if (clash) throw new Ec2Error('InvalidAMIName.Duplicate', `AMI name ${name} is already in use by AMI ${clash.id}`);
}

export function checkDescription(description: string | undefined): string | null {
  if (description === undefined || description === '') return null;
  if (description.length > 255) throw new Ec2Error('InvalidParameterValue', 'The description may be at most 255 characters long.');
  return description;
}

interface RegisterImageInput {
  Name?: string; Description?: string; ImageLocation?: string; Architecture?: string; RootDeviceName?: string;
  BlockDeviceMappings?: BlockDeviceMappingInput[]; VirtualizationType?: string; BootMode?: string; KernelId?: string; RamdiskId?: string;
  EnaSupport?: boolean; SriovNetSupport?: string; TpmSupport?: string; UefiData?: string; ImdsSupport?: string; BillingProducts?: string[];
  TagSpecifications?: TagSpecification[];
}

async function RegisterImage(ctx: RequestContext, input: RegisterImageInput) {
  const accountId = ctx.caller.accountId;
  const db = ctx.store.db;
  const name = checkName(input.Name);
  if (input.ImageLocation) {
    throw new Ec2Error('UnsupportedOperation', 'Images from S3 bundles (ImageLocation) are not offered by this cloud: register an EBS image from a snapshot, or import a disk with `ironbark admin image import`.');
  }
  if (input.BillingProducts?.length) throw new Ec2Error('UnsupportedOperation', 'This cloud has no billing products.');
  if (input.TpmSupport || input.UefiData) throw new Ec2Error('UnsupportedOperation', 'NitroTPM and UEFI variable stores are not offered by this cloud.');
  const architecture = input.Architecture || ARCHITECTURE;
  if (architecture !== ARCHITECTURE) {
    throw new Ec2Error('InvalidParameterValue', `Value (${architecture}) for parameter architecture is invalid. This cloud runs ${ARCHITECTURE} only.`);
  }
  if (!input.RootDeviceName) throw new Ec2Error('MissingParameter', 'The request must contain the parameter rootDeviceName');
  if (!ROOT_DEVICE.test(input.RootDeviceName)) throw new Ec2Error('InvalidParameterValue', `Value (${input.RootDeviceName}) for parameter rootDeviceName is invalid.`);
  if (!input.BlockDeviceMappings?.length) throw new Ec2Error('MissingParameter', 'The request must contain the parameter BlockDeviceMapping');
  const virtualization = input.VirtualizationType || (input.KernelId ? 'paravirtual' : 'hvm');
  if (virtualization !== 'hvm' && virtualization !== 'paravirtual') {
    throw new Ec2Error('InvalidParameterValue', `Value (${virtualization}) for parameter virtualizationType is invalid. Valid values: hvm, paravirtual.`);
  }
  // hvm: the disk boots with its own boot loader (BIOS unless BootMode says uefi); paravirtual:
  // the cloud's kernel (KernelId) boots it.
  let bootMode: string | null = null;
  let kernelId: string | null = null;
  let ramdiskId: string | null = null;
  let kernelCmdline: string | null = null;
  if (virtualization === 'hvm') {
    if (input.KernelId || input.RamdiskId) throw new Ec2Error('InvalidParameterCombination', 'KernelId and RamdiskId are for paravirtual images; an hvm image boots its own boot loader.');
    bootMode = input.BootMode || 'legacy-bios';
    if (!(BOOT_MODES as readonly string[]).includes(bootMode)) {
      throw new Ec2Error('InvalidParameterValue', `Value (${bootMode}) for parameter bootMode is invalid. Valid values: ${BOOT_MODES.join(', ')}.`);
    }
  } else {
    if (input.BootMode) throw new Ec2Error('InvalidParameterCombination', 'A paravirtual image boots the kernel the cloud gives; BootMode is for hvm images.');
    if (!input.KernelId) throw new Ec2Error('MissingParameter', 'A paravirtual image must give KernelId.');
    kernelId = (await findVisibleImage(db, accountId, input.KernelId, 'kernel')).id;
    if (input.RamdiskId) ramdiskId = (await findVisibleImage(db, accountId, input.RamdiskId, 'ramdisk')).id;
    // The command line the cloud's machine images boot this kernel with (its root is /dev/vda here too).
    kernelCmdline = (await db.selectFrom('images').select('kernel_cmdline').where('kernel_id', '=', kernelId).where('kind', '=', 'machine')
      .where('kernel_cmdline', 'is not', null).orderBy('created_at').executeTakeFirst())?.kernel_cmdline ?? 'root=/dev/vda console=ttyS0';
  }
  const tags = tagsFromSpecifications(input.TagSpecifications, ['image']).get('image') ?? [];
  const description = checkDescription(input.Description);
  const id = await ctx.store.transaction(async (tx) => {
    const mappings = await checkImageMappings(tx, accountId, input.BlockDeviceMappings!, input.RootDeviceName!);
    await checkNameFree(tx, accountId, name);
    const root = mappings.find((m) => m.DeviceName === input.RootDeviceName)!;
    const row: ImagesTable = {
      id: newId('ami'), account_id: accountId, name, description, kind: 'machine', architecture, state: 'available', is_public: 0,
      kernel_id: kernelId, ramdisk_id: ramdiskId, root_device_name: input.RootDeviceName!, kernel_cmdline: kernelCmdline,
      // No file: every launch makes the root volume from the snapshot.
      location: '', sha256: '', size_bytes: root.Ebs!.VolumeSize * 1024 ** 3, format: 'raw', created_at: new Date().toISOString(),
      boot_mode: bootMode, root_device_type: 'ebs', block_device_mappings: JSON.stringify(mappings), source_instance_id: null,
    };
    await tx.insertInto('images').values(row).execute();
    await writeTags(tx, accountId, row.id, tags);
    return row.id;
  });
  return { ImageId: id };
}

export const ebsImageOperations: OperationTable = { RegisterImage };

/** EC2's view of an image's root device type and block devices (DescribeImages). */
export function blockDeviceView(row: Pick<ImagesTable, 'root_device_type' | 'block_device_mappings'>) {
  return {
    RootDeviceType: isEbsImage(row) ? 'ebs' : 'instance-store',
    BlockDeviceMappings: imageBlockDevices(row),
  };
}

/**
 * Snapshots as a launch looks them up: one an EBS image names needs no permission of the caller
 * (the image's launch permission is enough, as in EC2), any other must be usable by the caller.
 */
export function launchSnapshotLookup(db: Db | Tx, accountId: string) {
  return async (snapshotId: string, viaImage?: boolean) => {
    const row = viaImage
      ? await db.selectFrom('snapshots').selectAll().where('id', '=', snapshotId).where('state', 'in', ['pending', 'completed']).executeTakeFirst()
      : await usableSnapshot(db, accountId, snapshotId).catch((e) => {
        if (e instanceof Ec2Error && e.code === 'InvalidSnapshot.NotFound') return undefined;
        throw e;
      });
    return row ? { id: row.id, sizeGiB: row.volume_size_gib } : undefined;
  };
}
