// Who may see and launch an image (EC2's launchPermission): its owner always, every account when
// the image is public (group `all`, images.is_public), and the accounts it is shared with one by
// one (image_launch_permissions). An image nobody shared with an account does not exist for it:
// lookups answer InvalidAMIID.NotFound, as EC2 does for a private image of another account.
import type { Db, Tx } from '../../store/store.ts';
import type { ImagesTable } from '../../store/schema.ts';
import { Ec2Error } from '../../protocol/errors.ts';

export const ACCOUNT_ID = /^\d{12}$/;

export interface LaunchPermissionItem { Group?: 'all'; UserId?: string }

/** Images an account may see and launch: its own, public ones and those shared with it; never deregistered ones. */
export function imagesVisibleTo(db: Db | Tx, accountId: string) {
  return db.selectFrom('images').selectAll()
    .where('state', '!=', 'deregistered')
    .where((eb) => eb.or([
      eb('account_id', '=', accountId),
      eb('is_public', '=', 1),
      eb.exists(eb.selectFrom('image_launch_permissions').select('image_launch_permissions.image_id')
        .whereRef('image_launch_permissions.image_id', '=', 'images.id')
        .where('image_launch_permissions.account_id', '=', accountId)),
    ]));
}

/** The accounts each image is shared with one by one, sorted, for the images' owner. */
export async function sharedAccounts(db: Db | Tx, imageIds: string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  if (imageIds.length === 0) return out;
  const rows = await db.selectFrom('image_launch_permissions').select(['image_id', 'account_id'])
    .where('image_id', 'in', imageIds).orderBy('account_id').execute();
  for (const r of rows) out.set(r.image_id, [...(out.get(r.image_id) ?? []), r.account_id]);
  return out;
}

/** The launchPermission attribute as DescribeImageAttribute shows it: `all` first, then account ids. */
export async function launchPermissionsOf(db: Db | Tx, image: ImagesTable): Promise<LaunchPermissionItem[]> {
  const accounts = (await sharedAccounts(db, [image.id])).get(image.id) ?? [];
  return [...(image.is_public === 1 ? [{ Group: 'all' as const }] : []), ...accounts.map((UserId) => ({ UserId }))];
}

export interface LaunchPermissionChange {
  addAccounts: string[];
  removeAccounts: string[];
  /** true: group `all` added; false: removed; undefined: untouched. */
  public?: boolean;
}

function badItem(kind: 'userId' | 'group', value: string): Ec2Error {
  return new Ec2Error('InvalidAMIAttributeItemValue', `Invalid attribute item value "${value}" for ${kind} item type.`);
}

/**
 * Reads ModifyImageAttribute's two spellings of a launchPermission change into one: the
 * structured `LaunchPermission.Add/Remove` lists, and the older `OperationType` with
 * `UserId.N` / `UserGroup.N`. Organization ARNs are refused: this cloud has no organizations.
 */
export function launchPermissionChange(input: {
  LaunchPermission?: { Add?: Array<Record<string, string>>; Remove?: Array<Record<string, string>> };
  OperationType?: string; UserIds?: string[]; UserGroups?: string[];
  OrganizationArns?: string[]; OrganizationalUnitArns?: string[];
}): LaunchPermissionChange {
  const change: LaunchPermissionChange = { addAccounts: [], removeAccounts: [] };
  const take = (items: Array<Record<string, string>>, add: boolean) => {
    for (const item of items) {
      if (item.OrganizationArn !== undefined || item.OrganizationalUnitArn !== undefined) {
        throw new Ec2Error('InvalidParameterValue', 'Sharing an image with an organization or organizational unit is not offered by this cloud; share it with account ids.');
      }
      if (item.Group !== undefined) {
        if (item.Group !== 'all') throw badItem('group', item.Group);
        change.public = add;
      }
      if (item.UserId !== undefined) {
        if (!ACCOUNT_ID.test(item.UserId)) throw badItem('userId', item.UserId);
        (add ? change.addAccounts : change.removeAccounts).push(item.UserId);
      }
      if (item.Group === undefined && item.UserId === undefined) {
        throw new Ec2Error('InvalidParameterValue', 'Each launch permission names a UserId or the Group "all".');
      }
    }
  };
  take(input.LaunchPermission?.Add ?? [], true);
  take(input.LaunchPermission?.Remove ?? [], false);
  if (input.OrganizationArns?.length || input.OrganizationalUnitArns?.length) {
    throw new Ec2Error('InvalidParameterValue', 'Sharing an image with an organization or organizational unit is not offered by this cloud; share it with account ids.');
  }
  if (input.UserIds?.length || input.UserGroups?.length) {
    if (input.OperationType !== 'add' && input.OperationType !== 'remove') {
      throw new Ec2Error('InvalidParameterValue', `Value (${input.OperationType ?? ''}) for parameter operationType is invalid. It must be add or remove.`);
    }
    const add = input.OperationType === 'add';
    take([...(input.UserIds ?? []).map((UserId) => ({ UserId })), ...(input.UserGroups ?? []).map((Group) => ({ Group }))], add);
  }
  return change;
}

/** Applies a change to the owner's image inside the caller's transaction. */
export async function applyLaunchPermissionChange(tx: Tx, image: ImagesTable, change: LaunchPermissionChange): Promise<void> {
  const now = new Date().toISOString();
  // The owner always may launch its image; naming it changes nothing, as in EC2.
  const others = (ids: string[]) => [...new Set(ids)].filter((id) => id !== image.account_id);
  const add = others(change.addAccounts);
  const remove = others(change.removeAccounts);
  if (remove.length > 0) {
    await tx.deleteFrom('image_launch_permissions').where('image_id', '=', image.id).where('account_id', 'in', remove).execute();
  }
  for (const accountId of add) {
    const exists = await tx.selectFrom('image_launch_permissions').select('account_id')
      .where('image_id', '=', image.id).where('account_id', '=', accountId).executeTakeFirst();
    if (!exists) await tx.insertInto('image_launch_permissions').values({ image_id: image.id, account_id: accountId, created_at: now }).execute();
  }
  if (change.public !== undefined) {
    await tx.updateTable('images').set({ is_public: change.public ? 1 : 0 }).where('id', '=', image.id).execute();
  }
}

/** ResetImageAttribute launchPermission: private again, shared with nobody. */
export async function resetLaunchPermissions(tx: Tx, imageId: string): Promise<void> {
  await tx.deleteFrom('image_launch_permissions').where('image_id', '=', imageId).execute();
  await tx.updateTable('images').set({ is_public: 0 }).where('id', '=', imageId).execute();
}
