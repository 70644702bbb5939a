// What an image's owner changes after registration: DeregisterImage, and the attributes
// Describe/Modify/ResetImageAttribute read and write (description, launchPermission; the rest
// are shown as this cloud has them). Only the owner changes an image; another account that can
// see it (public or shared) gets AuthFailure, one that cannot gets InvalidAMIID.NotFound.
import type { OperationTable, RequestContext } from '../context.ts';
import type { Db, Tx } from '../../store/store.ts';
import type { ImagesTable } from '../../store/schema.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { checkImageId, imageNotFound } from './images.ts';
import {
  applyLaunchPermissionChange, imagesVisibleTo, launchPermissionChange, launchPermissionsOf, resetLaunchPermissions,
} from './launch-permissions.ts';

/** Attributes DescribeImageAttribute answers (the model's ImageAttributeName values). */
const DESCRIBABLE = [
  'description', 'kernel', 'ramdisk', 'launchPermission', 'productCodes', 'blockDeviceMapping', 'sriovNetSupport',
  'bootMode', 'tpmSupport', 'uefiData', 'lastLaunchedTime', 'imdsSupport', 'deregistrationProtection',
] as const;
type DescribableAttribute = (typeof DESCRIBABLE)[number];

const DESCRIPTION_MAX = 255;

function notAuthorized(id: string): Ec2Error {
  return new Ec2Error('AuthFailure', `Not authorized for image:${id}`);
}

async function visibleImage(db: Db | Tx, accountId: string, id: string | undefined): Promise<ImagesTable> {
  if (!id) throw new Ec2Error('MissingParameter', 'The request must contain the parameter ImageId');
  checkImageId(id);
  const row = await imagesVisibleTo(db, accountId).where('id', '=', id).executeTakeFirst();
  if (!row) throw imageNotFound([id]);
  return row;
}

async function ownImage(db: Db | Tx, accountId: string, id: string | undefined): Promise<ImagesTable> {
  const row = await visibleImage(db, accountId, id);
  if (row.account_id !== accountId) throw notAuthorized(row.id);
  return row;
}

function invalidAttribute(name: string | undefined): Ec2Error {
  return new Ec2Error('InvalidParameterValue', `Value (${name ?? ''}) for parameter attribute is invalid. Unknown attribute.`);
}

/** Deregistering keeps running instances running: their nodes hold their own copy of the disk. */
async function DeregisterImage(ctx: RequestContext, input: { ImageId: string }) {
  const accountId = ctx.caller.accountId;
  await ctx.store.transaction(async (tx) => {
    const row = await ownImage(tx, accountId, input.ImageId);
    await tx.updateTable('images').set({ state: 'deregistered' }).where('id', '=', row.id).execute();
    await tx.deleteFrom('image_launch_permissions').where('image_id', '=', row.id).execute();
  });
  return {};
}

async function DescribeImageAttribute(ctx: RequestContext, input: { ImageId: string; Attribute: string }) {
  const accountId = ctx.caller.accountId;
  const db = ctx.store.db;
  if (!(DESCRIBABLE as readonly string[]).includes(input.Attribute)) throw invalidAttribute(input.Attribute);
  const attribute = input.Attribute as DescribableAttribute;
  // Who else may launch an image is the owner's business only, as in EC2.
  const row = attribute === 'launchPermission'
    ? await ownImage(db, accountId, input.ImageId)
    : await visibleImage(db, accountId, input.ImageId);
  const value = (v: string | null | undefined) => (v === null || v === undefined ? {} : { Value: v });
  const out: Record<string, unknown> = { ImageId: row.id };
  switch (attribute) {
    case 'description': out.Description = value(row.description); break;
    case 'kernel': out.KernelId = value(row.kernel_id); break;
    case 'ramdisk': out.RamdiskId = value(row.ramdisk_id); break;
    case 'launchPermission': out.LaunchPermissions = await launchPermissionsOf(db, row); break;
    case 'productCodes': out.ProductCodes = []; break;
    case 'blockDeviceMapping': out.BlockDeviceMappings = []; break;
    case 'sriovNetSupport': out.SriovNetSupport = {}; break;
    case 'bootMode': out.BootMode = value(row.boot_mode); break;
    case 'tpmSupport': out.TpmSupport = {}; break;
    case 'uefiData': out.UefiData = {}; break;
    case 'lastLaunchedTime': out.LastLaunchedTime = await lastLaunchedTime(db, row.id); break;
    case 'imdsSupport': out.ImdsSupport = {}; break;
    case 'deregistrationProtection': out.DeregistrationProtection = { Value: 'disabled' }; break;
  }
  return out;
}

async function lastLaunchedTime(db: Db, imageId: string): Promise<{ Value?: string }> {
  const row = await db.selectFrom('instances').select((eb) => eb.fn.max('launch_time').as('last'))
    .where('image_id', '=', imageId).executeTakeFirst();
  return row?.last ? { Value: new Date(row.last as string).toISOString() } : {};
}

interface ModifyImageAttributeInput {
  ImageId: string;
  Attribute?: string;
  Value?: string;
  Description?: { Value?: string };
  LaunchPermission?: { Add?: Array<Record<string, string>>; Remove?: Array<Record<string, string>> };
  OperationType?: string;
  UserIds?: string[];
  UserGroups?: string[];
  ProductCodes?: string[];
  OrganizationArns?: string[];
  OrganizationalUnitArns?: string[];
  ImdsSupport?: { Value?: string };
}

async function ModifyImageAttribute(ctx: RequestContext, input: ModifyImageAttributeInput) {
  const accountId = ctx.caller.accountId;
  const permissionsAsked = input.LaunchPermission !== undefined || (input.UserIds?.length ?? 0) > 0
    || (input.UserGroups?.length ?? 0) > 0 || (input.OrganizationArns?.length ?? 0) > 0 || (input.OrganizationalUnitArns?.length ?? 0) > 0;
  const descriptionAsked = input.Description !== undefined || (input.Attribute === 'description' && input.Value !== undefined);
  if (input.Attribute !== undefined && !['description', 'launchPermission', 'productCodes', 'imdsSupport'].includes(input.Attribute)) {
    throw invalidAttribute(input.Attribute);
  }
  if (permissionsAsked && descriptionAsked) {
    throw new Ec2Error('InvalidParameterCombination', 'Only one attribute can be modified at a time: launchPermission or description.');
  }
  await ctx.store.transaction(async (tx) => {
    const row = await ownImage(tx, accountId, input.ImageId);
    if (input.ProductCodes?.length || input.Attribute === 'productCodes') {
      throw new Ec2Error('InvalidParameterValue', 'Product codes cannot be attached: this cloud has no marketplace.');
    }
    if (input.ImdsSupport !== undefined || input.Attribute === 'imdsSupport') {
      throw new Ec2Error('InvalidParameterValue', 'imdsSupport cannot be set on images here; use MetadataOptions with HttpTokens=required at RunInstances.');
    }
    if (descriptionAsked) {
      const text = input.Description?.Value ?? input.Value ?? '';
      if (text.length > DESCRIPTION_MAX) {
        throw new Ec2Error('InvalidParameterValue', `The description must be at most ${DESCRIPTION_MAX} characters long.`);
      }
      await tx.updateTable('images').set({ description: text === '' ? null : text }).where('id', '=', row.id).execute();
      return;
    }
    if (!permissionsAsked) throw new Ec2Error('MissingParameter', 'No attributes specified.');
    await applyLaunchPermissionChange(tx, row, launchPermissionChange(input));
  });
  return {};
}

async function ResetImageAttribute(ctx: RequestContext, input: { ImageId: string; Attribute: string }) {
  const accountId = ctx.caller.accountId;
  if (input.Attribute !== 'launchPermission') throw invalidAttribute(input.Attribute);
  await ctx.store.transaction(async (tx) => {
    const row = await ownImage(tx, accountId, input.ImageId);
    await resetLaunchPermissions(tx, row.id);
  });
  return {};
}

export const imageAttributeOperations: OperationTable = {
  DeregisterImage, DescribeImageAttribute, ModifyImageAttribute, ResetImageAttribute,
};
