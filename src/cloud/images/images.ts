// Images: the kernel (aki-), ramdisk (ari-) and machine (ami-) images instances boot from, their
// registration from files the operator provides, and DescribeImages. Public images are visible
// to every account; private ones to their owner and the accounts they are shared with
// (launch-permissions.ts). Machine images either boot with a kernel the cloud gives (aki-/ari-)
// or, when imported with a boot mode, from their own disk's boot loader (SeaBIOS or UEFI).
import type { OperationTable, RequestContext } from '../context.ts';
import type { Db, Store, Tx } from '../../store/store.ts';
import type { ImagesTable } from '../../store/schema.ts';
import type { ImageRef } from '../../node/node-api.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { applyFilters, type Filter } from '../../protocol/filters.ts';
import { paginate } from '../../protocol/pagination.ts';
import { newId } from '../ids.ts';
import { tagsByResource, type Tag } from '../tags.ts';
import { registerTaggable } from '../resource-registry.ts';
import { viewFilters } from '../view-filters.ts';
import { cloudAdminAccountId } from '../admin-auth.ts';
import { ACCOUNT_ID, imagesVisibleTo, sharedAccounts } from './launch-permissions.ts';
import { blockDeviceView } from './ebs-images.ts';
import { settlePendingImages } from './image-create.ts';

export type ImageKind = 'machine' | 'kernel' | 'ramdisk';

const PREFIX_BY_KIND: Record<ImageKind, string> = { machine: 'ami', kernel: 'aki', ramdisk: 'ari' };
const IMAGE_ID = /^(ami|aki|ari)-[0-9a-f]{8}([0-9a-f]{9})?$/;

export const ROOT_DEVICE_NAME = '/dev/vda';
export const ARCHITECTURE = 'x86_64';
export const VIRTUALIZATION_TYPE = 'paravirtual';
/** Images that boot from their own disk are full virtual machines in EC2's words. */
export const OWN_BOOT_LOADER_VIRTUALIZATION_TYPE = 'hvm';
export const BOOT_MODES = ['legacy-bios', 'uefi'] as const;
export type BootMode = (typeof BOOT_MODES)[number];
/** The owner alias EC2 shows on its own public images; here: those of the cloud's admin account. */
export const CLOUD_OWNER_ALIAS = 'amazon';
export const HYPERVISOR = 'kvm';

export interface ImageFile { path: string; sha256: string; sizeBytes: number }

export interface ImageFilesSpec {
  name: string;
  description?: string;
  kernel: ImageFile;
  ramdisk?: ImageFile;
  rootfs: ImageFile & { format: 'raw' | 'qcow2' };
  kernelCmdline: string;
  public: boolean;
  ownerAccountId: string;
}

export interface RegisteredImage { imageId: string; kernelId: string; ramdiskId?: string }

// ---- errors and lookups ---------------------------------------------------------------------

export function imageNotFound(ids: string[]): Ec2Error {
  return ids.length === 1
    ? new Ec2Error('InvalidAMIID.NotFound', `The image id '[${ids[0]}]' does not exist`)
    : new Ec2Error('InvalidAMIID.NotFound', `The image ids '[${ids.join(', ')}]' do not exist`);
}

export function checkImageId(id: string): void {
  if (!IMAGE_ID.test(id)) {
    const prefix = id.startsWith('aki-') ? 'aki' : id.startsWith('ari-') ? 'ari' : 'ami';
    throw new Ec2Error('InvalidAMIID.Malformed', `Invalid id: "${id}" (expecting "${prefix}-...")`);
  }
}

const visibleImages = imagesVisibleTo;

export function virtualizationTypeOf(row: Pick<ImagesTable, 'boot_mode'>): string {
  return row.boot_mode ? OWN_BOOT_LOADER_VIRTUALIZATION_TYPE : VIRTUALIZATION_TYPE;
}

/**
 * The image `id` of kind `kind` as the account sees it, or EC2's error: Malformed for a bad id,
 * NotFound for a missing, foreign private, deregistered or wrong-kind image.
 */
export async function findVisibleImage(db: Db | Tx, accountId: string, id: string, kind: ImageKind): Promise<ImagesTable> {
  checkImageId(id);
  let row = await visibleImages(db, accountId).where('id', '=', id).executeTakeFirst();
  if (row?.state === 'pending') {
    // An image being made (CreateImage, CopyImage) is ready once its snapshots are.
    await settlePendingImages(db);
    row = await visibleImages(db, accountId).where('id', '=', id).executeTakeFirst();
  }
  if (!row || row.kind !== kind || row.state !== 'available') throw imageNotFound([id]);
  return row;
}

/** What a node needs to fetch an image; `urlFor` says where the cluster serves it (default: the file path). */
export function imageRefFor(row: ImagesTable, urlFor?: (imageId: string) => string): ImageRef {
  return {
    id: row.id,
    url: urlFor ? urlFor(row.id) : row.location,
    sha256: row.sha256,
    sizeBytes: Number(row.size_bytes),
    format: row.format === 'qcow2' ? 'qcow2' : 'raw',
  };
}

// ---- registration from files ----------------------------------------------------------------

async function ensureImage(tx: Tx, row: Omit<ImagesTable, 'id' | 'created_at' | 'state'>): Promise<string> {
  const same = await tx.selectFrom('images').select('id')
    .where('account_id', '=', row.account_id).where('kind', '=', row.kind).where('name', '=', row.name)
    .where('sha256', '=', row.sha256).where('state', '=', 'available').executeTakeFirst();
  if (same) {
    await tx.updateTable('images').set({ is_public: row.is_public, location: row.location, description: row.description }).where('id', '=', same.id).execute();
    return same.id;
  }
  // A rebuilt image keeps its name: the older build under that name is retired, as a user would
  // deregister an AMI before registering its successor.
  await tx.updateTable('images').set({ state: 'deregistered' })
    .where('account_id', '=', row.account_id).where('kind', '=', row.kind).where('name', '=', row.name)
    .where('state', '!=', 'deregistered').execute();
  const id = newId(PREFIX_BY_KIND[row.kind as ImageKind]);
  await tx.insertInto('images').values({ ...row, id, state: 'available', created_at: new Date().toISOString() }).execute();
  return id;
}

/**
 * Registers a guest image made of files on the cloud's disk (`ironbark up`'s default image):
 * an aki- kernel, an optional ari- ramdisk and the ami- machine image that boots with them.
 * Registering the same files (name and checksums) again returns the same ids.
 */
export async function registerImageFiles(store: Store, spec: ImageFilesSpec): Promise<RegisteredImage> {
  if (!spec.name || spec.name.length > 128) throw new Error(`an image name must have 1 to 128 characters, not ${JSON.stringify(spec.name)}`);
  for (const f of [spec.kernel, spec.rootfs, ...(spec.ramdisk ? [spec.ramdisk] : [])]) {
    if (!/^[0-9a-f]{64}$/.test(f.sha256)) throw new Error(`image file ${f.path}: sha256 must be 64 lower-case hex digits`);
    if (!Number.isInteger(f.sizeBytes) || f.sizeBytes <= 0) throw new Error(`image file ${f.path}: size must be a positive number of bytes`);
  }
  const common = {
    account_id: spec.ownerAccountId, architecture: ARCHITECTURE, is_public: spec.public ? 1 : 0,
    root_device_name: null, kernel_cmdline: null, kernel_id: null, ramdisk_id: null, boot_mode: null,
  };
  return store.transaction(async (tx) => {
    const kernelId = await ensureImage(tx, {
      ...common, name: `${spec.name}-kernel`, description: `Kernel of ${spec.name}`, kind: 'kernel',
      location: spec.kernel.path, sha256: spec.kernel.sha256, size_bytes: spec.kernel.sizeBytes, format: 'raw',
    });
    const ramdiskId = spec.ramdisk ? await ensureImage(tx, {
      ...common, name: `${spec.name}-ramdisk`, description: `Ramdisk of ${spec.name}`, kind: 'ramdisk',
      location: spec.ramdisk.path, sha256: spec.ramdisk.sha256, size_bytes: spec.ramdisk.sizeBytes, format: 'raw',
    }) : undefined;
    const imageId = await ensureImage(tx, {
      ...common, name: spec.name, description: spec.description ?? null, kind: 'machine',
      kernel_id: kernelId, ramdisk_id: ramdiskId ?? null, root_device_name: ROOT_DEVICE_NAME, kernel_cmdline: spec.kernelCmdline,
      location: spec.rootfs.path, sha256: spec.rootfs.sha256, size_bytes: spec.rootfs.sizeBytes, format: spec.rootfs.format,
    });
    // The machine image must point at this kernel and ramdisk even when it already existed.
    await tx.updateTable('images').set({ kernel_id: kernelId, ramdisk_id: ramdiskId ?? null, kernel_cmdline: spec.kernelCmdline })
      .where('id', '=', imageId).execute();
    return ramdiskId ? { imageId, kernelId, ramdiskId } : { imageId, kernelId };
  });
}

// ---- DescribeImages -------------------------------------------------------------------------

interface ImageItem { row: ImagesTable; tags: Tag[]; ownerAlias?: string }

const IMAGE_FILTERS = {
  'image-id': (i: ImageItem) => i.row.id,
  name: (i: ImageItem) => i.row.name,
  description: (i: ImageItem) => i.row.description ?? undefined,
  state: (i: ImageItem) => i.row.state,
  'owner-id': (i: ImageItem) => i.row.account_id,
  'owner-alias': (i: ImageItem) => i.ownerAlias,
  'is-public': (i: ImageItem) => String(i.row.is_public === 1),
  'image-type': (i: ImageItem) => i.row.kind,
  architecture: (i: ImageItem) => i.row.architecture,
  'kernel-id': (i: ImageItem) => i.row.kernel_id ?? undefined,
  'ramdisk-id': (i: ImageItem) => i.row.ramdisk_id ?? undefined,
  'root-device-type': (i: ImageItem) => blockDeviceView(i.row).RootDeviceType,
  'root-device-name': (i: ImageItem) => i.row.root_device_name ?? undefined,
  'virtualization-type': (i: ImageItem) => virtualizationTypeOf(i.row),
  hypervisor: () => HYPERVISOR,
  'platform-details': () => 'Linux/UNIX',
  'creation-date': (i: ImageItem) => i.row.created_at,
  'manifest-location': (i: ImageItem) => imageLocation(i.row),
  // The rest EC2 documents, as the Image structure DescribeImages shows them (most are absent here).
  ...viewFilters(imageView, {
    'block-device-mapping.delete-on-termination': 'BlockDeviceMappings.Ebs.DeleteOnTermination',
    'block-device-mapping.device-name': 'BlockDeviceMappings.DeviceName',
    'block-device-mapping.encrypted': 'BlockDeviceMappings.Ebs.Encrypted',
    'block-device-mapping.snapshot-id': 'BlockDeviceMappings.Ebs.SnapshotId',
    'block-device-mapping.volume-size': 'BlockDeviceMappings.Ebs.VolumeSize',
    'block-device-mapping.volume-type': 'BlockDeviceMappings.Ebs.VolumeType',
    'boot-mode': 'BootMode',
    'ena-support': 'EnaSupport',
    'free-tier-eligible': 'FreeTierEligible',
    'image-allowed': 'ImageAllowed',
    'platform': 'Platform',
    'product-code': 'ProductCodes.ProductCodeId',
    'product-code.type': 'ProductCodes.ProductCodeType',
    'source-image-id': 'SourceImageId',
    'source-image-region': 'SourceImageRegion',
    'source-instance-id': 'SourceInstanceId',
    'sriov-net-support': 'SriovNetSupport',
    'state-reason-code': 'StateReason.Code',
    'state-reason-message': 'StateReason.Message',
  }),
};

function imageLocation(row: ImagesTable): string {
  return `${row.account_id}/${row.name}`;
}

function imageView(i: ImageItem) {
  const r = i.row;
  const machine = r.kind === 'machine';
  return {
    ImageId: r.id,
    ImageLocation: imageLocation(r),
    State: r.state,
    OwnerId: r.account_id,
    ...(i.ownerAlias ? { ImageOwnerAlias: i.ownerAlias } : {}),
    CreationDate: new Date(r.created_at).toISOString(),
    Public: r.is_public === 1,
    Architecture: r.architecture,
    ImageType: r.kind,
    ...(machine && r.kernel_id ? { KernelId: r.kernel_id } : {}),
    ...(machine && r.ramdisk_id ? { RamdiskId: r.ramdisk_id } : {}),
    Name: r.name,
    ...(r.description !== null ? { Description: r.description } : {}),
    ...(machine ? { RootDeviceName: r.root_device_name ?? ROOT_DEVICE_NAME } : {}),
    // RootDeviceType and BlockDeviceMappings: EBS-backed images list their block devices.
    ...blockDeviceView(r),
    VirtualizationType: virtualizationTypeOf(r),
    ...(r.boot_mode ? { BootMode: r.boot_mode } : {}),
    Hypervisor: HYPERVISOR,
    PlatformDetails: 'Linux/UNIX',
    UsageOperation: 'RunInstances',
    EnaSupport: false,
    Tags: i.tags,
  };
}

/**
 * Owners: `self`, 12-digit account ids, and EC2's aliases: `amazon` names the cloud's own public
 * images (those of its admin account, as EC2's official images are Amazon's); `aws-marketplace`
 * and `aws-backup-vault` own nothing here.
 */
function ownedBy(owners: string[], callerId: string, aliasOf: (row: ImagesTable) => string | undefined): (row: ImagesTable) => boolean {
  const accounts = new Set<string>();
  let cloudAlias = false;
  for (const owner of owners) {
    if (owner === 'self') accounts.add(callerId);
    else if (ACCOUNT_ID.test(owner)) accounts.add(owner);
    else if (owner === CLOUD_OWNER_ALIAS) cloudAlias = true;
    else if (owner !== 'aws-marketplace' && owner !== 'aws-backup-vault') {
      throw new Ec2Error('InvalidUserID.Malformed', `Invalid user id: "${owner}"`);
    }
  }
  return (row) => accounts.has(row.account_id) || (cloudAlias && aliasOf(row) === CLOUD_OWNER_ALIAS);
}

/**
 * ExecutableUsers: `all` means public images; `self` (or the caller's id) the images the caller
 * may launch by explicit permission, its own included; another account's id the caller's own
 * images shared with that account (who else shares with it is none of the caller's business).
 */
function executableBy(users: string[], callerId: string, shares: Map<string, string[]>): (row: ImagesTable) => boolean {
  const tests: ((row: ImagesTable) => boolean)[] = [];
  for (const user of users) {
    if (user === 'all') tests.push((row) => row.is_public === 1);
    else if (user === 'self' || user === callerId) {
      tests.push((row) => row.account_id === callerId || (shares.get(row.id) ?? []).includes(callerId));
    } else if (ACCOUNT_ID.test(user)) {
      tests.push((row) => row.account_id === callerId && (shares.get(row.id) ?? []).includes(user));
    } else throw new Ec2Error('InvalidUserID.Malformed', `Invalid user id: "${user}"`);
  }
  return (row) => tests.some((t) => t(row));
}

async function DescribeImages(ctx: RequestContext, input: {
  ImageIds?: string[]; Owners?: string[]; ExecutableUsers?: string[]; Filters?: Filter[];
  IncludeDeprecated?: boolean; IncludeDisabled?: boolean; MaxResults?: number; NextToken?: string;
}) {
  const accountId = ctx.caller.accountId;
  const db = ctx.store.db;
  const ids = input.ImageIds ?? [];
  if (ids.length > 0 && input.MaxResults !== undefined) {
    throw new Ec2Error('InvalidParameterCombination', 'The parameter imageIdsSet cannot be used with the parameter maxResults');
  }
  for (const id of ids) checkImageId(id);
  await settlePendingImages(db);
  let rows = await visibleImages(db, accountId).orderBy('created_at').orderBy('id').execute();
  if (ids.length > 0) {
    const byId = new Map(rows.map((r) => [r.id, r]));
    const missing = [...new Set(ids)].filter((id) => !byId.has(id));
    if (missing.length > 0) throw imageNotFound(missing);
    const wanted = new Set(ids);
    rows = rows.filter((r) => wanted.has(r.id));
  }
  const cloudAccountId = await cloudAdminAccountId(ctx.store);
  // EC2 shows its alias on its own public images; the cloud's admin account stands in for it.
  const ownerAlias = (row: ImagesTable) => (row.account_id === cloudAccountId && row.is_public === 1 ? CLOUD_OWNER_ALIAS : undefined);
  if (input.Owners?.length) rows = rows.filter(ownedBy(input.Owners, accountId, ownerAlias));
  if (input.ExecutableUsers?.length) {
    const shares = await sharedAccounts(db, rows.map((r) => r.id));
    rows = rows.filter(executableBy(input.ExecutableUsers, accountId, shares));
  }
  // Ironbark never deprecates or disables images, so IncludeDeprecated/IncludeDisabled change nothing.
  const tags = await tagsByResource(db, accountId, rows.map((r) => r.id));
  const items = applyFilters(rows.map((row) => ({ row, tags: tags.get(row.id) ?? [], ownerAlias: ownerAlias(row) })), input.Filters, IMAGE_FILTERS, (i) => i.tags);
  const { page, nextToken } = paginate(items, input, JSON.stringify(['images', input.Owners ?? [], input.ExecutableUsers ?? [], input.Filters ?? []]));
  return { Images: page.map(imageView), NextToken: nextToken };
}

export const imageOperations: OperationTable = { DescribeImages };

// Tags on images belong to their owner: another account's public image cannot be tagged.
const ownImageExists = async (db: Db | Tx, accountId: string, id: string) => {
  const row = await db.selectFrom('images').select('id')
    .where('id', '=', id).where('account_id', '=', accountId).where('state', '!=', 'deregistered').executeTakeFirst();
  return row !== undefined;
};
for (const prefix of ['ami', 'aki', 'ari']) registerTaggable(prefix, ownImageExists, (id) => imageNotFound([id]));

/** The boot mode of a machine image that boots from its own disk; undefined for kernel images. */
export function bootModeOf(row: Pick<ImagesTable, 'boot_mode'>): BootMode | undefined {
  return (BOOT_MODES as readonly string[]).includes(row.boot_mode ?? '') ? row.boot_mode as BootMode : undefined;
}
