// EBS snapshot operations: CreateSnapshot, CreateSnapshots (every volume of an instance),
// DescribeSnapshots (OwnerIds, RestorableByUserIds, filters, paging), DeleteSnapshot, CopySnapshot
// (same region) and Modify/Describe/ResetSnapshotAttribute (createVolumePermission). Like volumes,
// every call records what is asked and answers at once: a new snapshot is `pending` with 0%
// progress; the snapshot reconciler (snapshot-reconciler.ts) has the zone's storage take it
// (crash-consistent while the volume is attached) and marks it `completed` at 100%.
//
// For other parts of the cloud (EBS-backed images, volumes from snapshots):
// - Table `snapshots` (schema.ts SnapshotsTable): id, account_id (owner), volume_id (the source;
//   vol-ffffffff for a copy), zone (whose storage keeps the data: a volume is made from it there),
//   volume_size_gib, description, state (pending | completed | error; deleting | deleted are
//   not shown), progress, started_at, completed_at, source_snapshot_id (copies).
//   Table `snapshot_volume_permissions` (snapshot_id, grantee: an account id or `all`).
// - `usableSnapshot(db, accountId, id)`: the row if the account owns it or may make volumes from
//   it, else InvalidSnapshot.NotFound. `recordSnapshot(tx, ...)`: a new pending snapshot of a
//   volume (CreateImage can call it in its own transaction, quotas checked).
// - `snapshotInUseByImage(db, id)`: the image that uses the snapshot, which DeleteSnapshot then
//   refuses (InvalidSnapshot.InUse); the images code fills it in once images have block devices.
// - The zone's cluster makes a volume from a snapshot with ClusterApi.createVolumeFromSnapshot
//   (copy-on-write); CreateVolume with SnapshotId does this through the volume reconciler.
import type { OperationTable, RequestContext } from '../context.ts';
import type { Db, Tx } from '../../store/store.ts';
import type { SnapshotsTable, VolumesTable } from '../../store/schema.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { applyFilters, type Filter } from '../../protocol/filters.ts';
import { paginate } from '../../protocol/pagination.ts';
import { newId } from '../ids.ts';
import { tagsByResource, tagsFromSpecifications, writeTags, type Tag, type TagSpecification } from '../tags.ts';
import { registerTaggable } from '../resource-registry.ts';
import { assertSnapshotQuota, LIVE_SNAPSHOT_STATES } from './snapshot-quotas.ts';
import { snapshotFilters, snapshotInfoView, snapshotView, type SnapshotItem } from './snapshot-view.ts';

const SNAPSHOT_ID = /^snap-[0-9a-f]{8}([0-9a-f]{9})?$/;
const VOLUME_ID = /^vol-[0-9a-f]{8}([0-9a-f]{9})?$/;
const INSTANCE_ID = /^i-[0-9a-f]{8}([0-9a-f]{9})?$/;
const ACCOUNT_ID = /^\d{12}$/;
/** EC2 shows this volume id for a snapshot that was copied rather than taken of a volume. */
export const COPIED_VOLUME_ID = 'vol-ffffffff';
/** Aliases EC2 takes in OwnerIds; no snapshot here is owned by one. */
const OWNER_ALIASES = new Set(['amazon', 'aws-marketplace', 'aws-backup']);
/** Volume states a snapshot can be taken in (EC2: the volume holds data). */
const SNAPSHOTTABLE_VOLUME_STATES = new Set(['available', 'in-use']);

// ---- lookups --------------------------------------------------------------------------------

function checkSnapshotId(id: string, parameter = 'SnapshotId'): void {
  if (!SNAPSHOT_ID.test(id)) throw new Ec2Error('InvalidSnapshotID.Malformed', `Invalid id: "${id}" (expecting "snap-...") for parameter ${parameter}`);
}

export function snapshotsNotFound(ids: string[]): Ec2Error {
  return new Ec2Error('InvalidSnapshot.NotFound', ids.length === 1 ? `The snapshot '${ids[0]}' does not exist.` : `The snapshots '${ids.join(', ')}' do not exist.`);
}

/** Snapshots an account may see and make volumes from: its own, public ones and those shared with it. */
function snapshotsVisibleTo(db: Db | Tx, accountId: string) {
  return db.selectFrom('snapshots').selectAll()
    .where('state', 'in', [...LIVE_SNAPSHOT_STATES])
    .where((eb) => eb.or([
      eb('account_id', '=', accountId),
      eb.exists(eb.selectFrom('snapshot_volume_permissions').select('snapshot_volume_permissions.snapshot_id')
        .whereRef('snapshot_volume_permissions.snapshot_id', '=', 'snapshots.id')
        .where('snapshot_volume_permissions.grantee', 'in', [accountId, 'all'])),
    ]));
}

/** The snapshot if the account owns it or may make volumes from it; else InvalidSnapshot.NotFound. */
export async function usableSnapshot(db: Db | Tx, accountId: string, id: string | undefined, parameter = 'SnapshotId'): Promise<SnapshotsTable> {
  if (!id) throw new Ec2Error('MissingParameter', `The request must contain the parameter ${parameter}`);
  checkSnapshotId(id, parameter);
  const row = await snapshotsVisibleTo(db, accountId).where('id', '=', id).executeTakeFirst();
  if (!row) throw snapshotsNotFound([id]);
  return row;
}

/** The caller's own snapshot (for changes only the owner may make). */
async function ownSnapshot(db: Db | Tx, accountId: string, id: string | undefined): Promise<SnapshotsTable> {
  const row = await usableSnapshot(db, accountId, id);
  if (row.account_id !== accountId) {
    throw new Ec2Error('UnauthorizedOperation', `You are not authorized to change snapshot '${row.id}': it belongs to another account.`);
  }
  return row;
}

/**
 * The image whose block devices use the snapshot, if any: DeleteSnapshot refuses while one does
 * (a deregistered image lets go of its snapshots, as in EC2). The mappings are the image's JSON
 * (images/ebs-images.ts writes them); the LIKE only narrows the rows read.
 */
export async function snapshotInUseByImage(db: Db | Tx, snapshotId: string): Promise<string | undefined> {
  const rows = await db.selectFrom('images').select(['id', 'block_device_mappings']).where('root_device_type', '=', 'ebs')
    .where('state', '!=', 'deregistered').where('block_device_mappings', 'like', `%"${snapshotId}"%`).execute();
  for (const row of rows) {
    const mappings = JSON.parse(row.block_device_mappings ?? '[]') as Array<{ Ebs?: { SnapshotId?: string } }>;
    if (mappings.some((m) => m.Ebs?.SnapshotId === snapshotId)) return row.id;
  }
  return undefined;
}

// ---- recording ------------------------------------------------------------------------------

function checkDescription(description: string | undefined): string {
  const text = description ?? '';
  if (text.length > 255) throw new Ec2Error('InvalidParameterValue', 'Value for parameter description is invalid: it must be at most 255 characters.');
  return text;
}

/**
 * Records a new pending snapshot of the volume (the reconciler has the storage take it), checking
 * the volume's state and the account's quotas, inside the caller's transaction.
 */
export async function recordSnapshot(tx: Tx, opts: { accountId: string; volume: VolumesTable; description: string; tags: Tag[] }): Promise<SnapshotsTable> {
  const { volume } = opts;
  if (!SNAPSHOTTABLE_VOLUME_STATES.has(volume.state)) {
    throw new Ec2Error('IncorrectState', `The volume '${volume.id}' is in the '${volume.state}' state; a snapshot needs it available or in-use.`);
  }
  await assertSnapshotQuota(tx, opts.accountId, 1, volume.size_gib);
  const now = new Date().toISOString();
  const row: SnapshotsTable = {
    id: newId('snap'), account_id: opts.accountId, volume_id: volume.id, zone: volume.zone, volume_size_gib: volume.size_gib,
    description: opts.description, state: 'pending', progress: 0, state_message: null, source_snapshot_id: null, stored_bytes: null,
    started_at: now, completed_at: null, state_changed_at: now, deleted_at: null,
  };
  await tx.insertInto('snapshots').values(row).execute();
  await writeTags(tx, opts.accountId, row.id, opts.tags);
  return row;
}

async function ownVolume(tx: Tx, accountId: string, id: string | undefined): Promise<VolumesTable> {
  if (!id) throw new Ec2Error('MissingParameter', 'The request must contain the parameter VolumeId');
  if (!VOLUME_ID.test(id)) throw new Ec2Error('InvalidParameterValue', `Invalid id: "${id}" (expecting "vol-...")`);
  const row = await tx.selectFrom('volumes').selectAll().where('id', '=', id).where('account_id', '=', accountId)
    .where('state', '!=', 'deleted').executeTakeFirst();
  if (!row) throw new Ec2Error('InvalidVolume.NotFound', `The volume '${id}' does not exist.`);
  return row;
}

// ---- createVolumePermission -----------------------------------------------------------------

interface PermissionItem { Group?: string; UserId?: string }

/** ModifySnapshotAttribute's two spellings of a change (CreateVolumePermission.Add/Remove, or OperationType with UserIds/GroupNames) as one. */
function permissionChange(input: {
  CreateVolumePermission?: { Add?: PermissionItem[]; Remove?: PermissionItem[] }; OperationType?: string; UserIds?: string[]; GroupNames?: string[];
}): { add: string[]; remove: string[] } {
  const change = { add: [] as string[], remove: [] as string[] };
  const take = (items: PermissionItem[], add: boolean) => {
    for (const item of items) {
      const grantees: string[] = [];
      if (item.Group !== undefined) {
        if (item.Group !== 'all') throw new Ec2Error('InvalidParameterValue', `Value (${item.Group}) for parameter group is invalid. Only "all" is a group.`);
        grantees.push('all');
      }
      if (item.UserId !== undefined) {
        if (!ACCOUNT_ID.test(item.UserId)) throw new Ec2Error('InvalidUserID.Malformed', `Invalid user id: "${item.UserId}" (an account id is 12 digits).`);
        grantees.push(item.UserId);
      }
      if (grantees.length === 0) throw new Ec2Error('InvalidParameterValue', 'Each createVolumePermission names a UserId or the Group "all".');
      (add ? change.add : change.remove).push(...grantees);
    }
  };
  take(input.CreateVolumePermission?.Add ?? [], true);
  take(input.CreateVolumePermission?.Remove ?? [], false);
  if (input.UserIds?.length || input.GroupNames?.length) {
    if (input.OperationType !== 'add' && input.OperationType !== 'remove') {
      throw new Ec2Error('InvalidParameterValue', `Value (${input.OperationType ?? ''}) for parameter operationType is invalid. It must be add or remove.`);
    }
    take([...(input.UserIds ?? []).map((UserId) => ({ UserId })), ...(input.GroupNames ?? []).map((Group) => ({ Group }))], input.OperationType === 'add');
  }
  if (change.add.length === 0 && change.remove.length === 0) {
    throw new Ec2Error('MissingParameter', 'The request must contain the parameter createVolumePermission (Add or Remove) or OperationType with UserId or Group.');
  }
  return change;
}

function checkAttribute(attribute: string | undefined, allowed: string[]): string {
  if (!attribute) throw new Ec2Error('MissingParameter', 'The request must contain the parameter attribute');
  if (!allowed.includes(attribute)) throw new Ec2Error('InvalidParameterValue', `Value (${attribute}) for parameter attribute is invalid. Valid values: ${allowed.join(', ')}.`);
  return attribute;
}

// ---- operations -----------------------------------------------------------------------------

interface DescribeSnapshotsInput {
  SnapshotIds?: string[]; OwnerIds?: string[]; RestorableByUserIds?: string[]; Filters?: Filter[]; MaxResults?: number; NextToken?: string;
}

export function snapshotOperations(): OperationTable {
  async function CreateSnapshot(ctx: RequestContext, input: { VolumeId?: string; Description?: string; OutpostArn?: string; TagSpecifications?: TagSpecification[] }) {
    if (input.OutpostArn) throw new Ec2Error('UnsupportedOperation', 'This cloud has no Outposts.');
    const description = checkDescription(input.Description);
    const tags = tagsFromSpecifications(input.TagSpecifications, ['snapshot']).get('snapshot') ?? [];
    const row = await ctx.store.transaction(async (tx) => {
      const volume = await ownVolume(tx, ctx.caller.accountId, input.VolumeId);
      return recordSnapshot(tx, { accountId: ctx.caller.accountId, volume, description, tags });
    });
    return snapshotView(row, tags);
  }

  async function CreateSnapshots(ctx: RequestContext, input: {
    InstanceSpecification?: { InstanceId?: string; ExcludeBootVolume?: boolean; ExcludeDataVolumeIds?: string[] };
    Description?: string; OutpostArn?: string; TagSpecifications?: TagSpecification[]; CopyTagsFromSource?: string;
  }) {
    if (input.OutpostArn) throw new Ec2Error('UnsupportedOperation', 'This cloud has no Outposts.');
    const spec = input.InstanceSpecification;
    if (!spec?.InstanceId) throw new Ec2Error('MissingParameter', 'The request must contain the parameter InstanceSpecification.InstanceId');
    if (!INSTANCE_ID.test(spec.InstanceId)) throw new Ec2Error('InvalidInstanceID.Malformed', `Invalid id: "${spec.InstanceId}"`);
    if (input.CopyTagsFromSource !== undefined && input.CopyTagsFromSource !== 'volume') {
      throw new Ec2Error('InvalidParameterValue', `Value (${input.CopyTagsFromSource}) for parameter CopyTagsFromSource is invalid. Valid value: volume.`);
    }
    const description = checkDescription(input.Description);
    const tags = tagsFromSpecifications(input.TagSpecifications, ['snapshot']).get('snapshot') ?? [];
    const excluded = new Set(spec.ExcludeDataVolumeIds ?? []);
    const accountId = ctx.caller.accountId;
    const made = await ctx.store.transaction(async (tx) => {
      const instance = await tx.selectFrom('instances').select(['id', 'state']).where('id', '=', spec.InstanceId!)
        .where('account_id', '=', accountId).executeTakeFirst();
      if (!instance || instance.state === 'terminated') throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${spec.InstanceId}' does not exist`);
      // Every attached EBS volume; the instance's root disk here is its image's (not a volume) unless
      // it boots from one, which ExcludeBootVolume leaves out (the device names the image's root).
      const volumes = await tx.selectFrom('volumes').selectAll().where('instance_id', '=', instance.id).where('account_id', '=', accountId)
        .orderBy('device').execute();
      for (const id of excluded) {
        if (!volumes.some((v) => v.id === id)) throw new Ec2Error('InvalidParameterValue', `The volume '${id}' is not attached to instance '${instance.id}'.`);
      }
      const chosen = volumes.filter((v) => !excluded.has(v.id) && !(spec.ExcludeBootVolume === true && isBootDevice(v.device)));
      const sourceTags = input.CopyTagsFromSource === 'volume' ? await tagsByResource(tx, accountId, chosen.map((v) => v.id)) : new Map<string, Tag[]>();
      const out: { row: SnapshotsTable; tags: Tag[] }[] = [];
      for (const volume of chosen) {
        const own = mergeTags(sourceTags.get(volume.id) ?? [], tags);
        out.push({ row: await recordSnapshot(tx, { accountId, volume, description, tags: own }), tags: own });
      }
      return out;
    });
    return { Snapshots: made.map((m) => snapshotInfoView(m.row, m.tags)) };
  }

  async function DescribeSnapshots(ctx: RequestContext, input: DescribeSnapshotsInput) {
    const db = ctx.store.db;
    const me = ctx.caller.accountId;
    const ids = [...new Set(input.SnapshotIds ?? [])];
    for (const id of ids) checkSnapshotId(id);
    if (ids.length > 0 && input.MaxResults !== undefined) {
      throw new Ec2Error('InvalidParameterCombination', 'The parameter snapshotSet cannot be used with the parameter maxResults');
    }
    let query = snapshotsVisibleTo(db, me);
    if (ids.length > 0) query = query.where('id', 'in', ids);
    let rows = await query.orderBy('started_at').orderBy('id').execute();
    if (ids.length > 0) {
      const missing = ids.filter((id) => !rows.some((r) => r.id === id));
      if (missing.length > 0) throw snapshotsNotFound(missing);
    }
    if (input.OwnerIds?.length) {
      const owners = new Set<string>();
      for (const o of input.OwnerIds) {
        if (o === 'self') owners.add(me);
        else if (ACCOUNT_ID.test(o)) owners.add(o);
        else if (!OWNER_ALIASES.has(o)) throw new Ec2Error('InvalidUserID.Malformed', `Invalid user id: "${o}"`);
      }
      rows = rows.filter((r) => owners.has(r.account_id));
    }
    if (input.RestorableByUserIds?.length) {
      const users = input.RestorableByUserIds.map((u) => {
        if (u === 'self') return me;
        if (u === 'all' || ACCOUNT_ID.test(u)) return u;
        throw new Ec2Error('InvalidUserID.Malformed', `Invalid user id: "${u}"`);
      });
      const grants = await grantsOf(db, rows.map((r) => r.id));
      rows = rows.filter((r) => users.some((u) => (u !== 'all' && r.account_id === u) || (grants.get(r.id) ?? []).some((g) => g === 'all' || g === u)));
    }
    const tags = await tagsByResource(db, me, rows.map((r) => r.id));
    const items: SnapshotItem[] = rows.map((row) => ({ row, tags: tags.get(row.id) ?? [] }));
    const filtered = applyFilters(items, input.Filters, snapshotFilters(), (i) => i.tags);
    const fingerprint = JSON.stringify(['snapshots', input.Filters ?? [], input.OwnerIds ?? [], input.RestorableByUserIds ?? []]);
    const { page, nextToken } = paginate(filtered, input, fingerprint, { min: 5, max: 1000 });
    return { Snapshots: page.map((i) => snapshotView(i.row, i.tags)), NextToken: nextToken };
  }

  async function DeleteSnapshot(ctx: RequestContext, input: { SnapshotId?: string }) {
    await ctx.store.transaction(async (tx) => {
      const row = await ownSnapshot(tx, ctx.caller.accountId, input.SnapshotId);
      const image = await snapshotInUseByImage(tx, row.id);
      if (image) throw new Ec2Error('InvalidSnapshot.InUse', `The snapshot ${row.id} is currently in use by ${image}`);
      const now = new Date().toISOString();
      // Gone for its users at once; the reconciler has the storage let go of it (its data stays
      // while volumes made from it need it).
      await tx.updateTable('snapshots').set({ state: 'deleting', state_changed_at: now, deleted_at: now }).where('id', '=', row.id).execute();
      await tx.deleteFrom('snapshot_volume_permissions').where('snapshot_id', '=', row.id).execute();
      await tx.deleteFrom('tags').where('resource_id', '=', row.id).execute();
    });
    return {};
  }

  async function CopySnapshot(ctx: RequestContext, input: {
    SourceSnapshotId?: string; SourceRegion?: string; DestinationRegion?: string; Description?: string; Encrypted?: boolean; KmsKeyId?: string;
    PresignedUrl?: string; DestinationOutpostArn?: string; TagSpecifications?: TagSpecification[];
  }) {
    const region = ctx.settings.region;
    if (!input.SourceRegion) throw new Ec2Error('MissingParameter', 'The request must contain the parameter SourceRegion');
    if (input.SourceRegion !== region || (input.DestinationRegion && input.DestinationRegion !== region)) {
      throw new Ec2Error('InvalidParameterValue', `This cloud has one region, ${region}: CopySnapshot copies within it (SourceRegion ${input.SourceRegion}).`);
    }
    if (input.Encrypted === true || input.KmsKeyId) {
      throw new Ec2Error('UnsupportedOperation', 'Encrypted snapshots are not offered by this cloud: copy the snapshot without Encrypted and KmsKeyId.');
    }
    if (input.DestinationOutpostArn) throw new Ec2Error('UnsupportedOperation', 'This cloud has no Outposts.');
    const tags = tagsFromSpecifications(input.TagSpecifications, ['snapshot']).get('snapshot') ?? [];
    const accountId = ctx.caller.accountId;
    const row = await ctx.store.transaction(async (tx) => {
      const source = await usableSnapshot(tx, accountId, input.SourceSnapshotId, 'SourceSnapshotId');
      if (source.state !== 'completed') {
        throw new Ec2Error('IncorrectState', `The snapshot '${source.id}' is in the '${source.state}' state; only a completed snapshot can be copied.`);
      }
      const description = checkDescription(input.Description ?? `[Copied ${source.id} from ${region}]`);
      await assertSnapshotQuota(tx, accountId, 1, source.volume_size_gib);
      const now = new Date().toISOString();
      const copy: SnapshotsTable = {
        id: newId('snap'), account_id: accountId, volume_id: COPIED_VOLUME_ID, zone: source.zone, volume_size_gib: source.volume_size_gib,
        description, state: 'pending', progress: 0, state_message: null, source_snapshot_id: source.id, stored_bytes: null,
        started_at: now, completed_at: null, state_changed_at: now, deleted_at: null,
      };
      await tx.insertInto('snapshots').values(copy).execute();
      await writeTags(tx, accountId, copy.id, tags);
      return copy;
    });
    return { SnapshotId: row.id, ...(tags.length > 0 ? { Tags: tags } : {}) };
  }

  async function ModifySnapshotAttribute(ctx: RequestContext, input: {
    SnapshotId?: string; Attribute?: string; CreateVolumePermission?: { Add?: PermissionItem[]; Remove?: PermissionItem[] };
    OperationType?: string; UserIds?: string[]; GroupNames?: string[];
  }) {
    if (input.Attribute !== undefined) checkAttribute(input.Attribute, ['createVolumePermission']);
    const change = permissionChange(input);
    await ctx.store.transaction(async (tx) => {
      const row = await ownSnapshot(tx, ctx.caller.accountId, input.SnapshotId);
      // The owner may always make volumes from its snapshot; naming it changes nothing.
      const others = (ids: string[]) => [...new Set(ids)].filter((id) => id !== row.account_id);
      const remove = others(change.remove);
      if (remove.length > 0) await tx.deleteFrom('snapshot_volume_permissions').where('snapshot_id', '=', row.id).where('grantee', 'in', remove).execute();
      const now = new Date().toISOString();
      for (const grantee of others(change.add)) {
        const exists = await tx.selectFrom('snapshot_volume_permissions').select('grantee').where('snapshot_id', '=', row.id)
          .where('grantee', '=', grantee).executeTakeFirst();
        if (!exists) await tx.insertInto('snapshot_volume_permissions').values({ snapshot_id: row.id, grantee, created_at: now }).execute();
      }
    });
    return {};
  }

  async function DescribeSnapshotAttribute(ctx: RequestContext, input: { SnapshotId?: string; Attribute?: string }) {
    const attribute = checkAttribute(input.Attribute, ['createVolumePermission', 'productCodes']);
    const row = await ownSnapshot(ctx.store.db, ctx.caller.accountId, input.SnapshotId);
    if (attribute === 'productCodes') return { SnapshotId: row.id, ProductCodes: [] };
    const grants = (await grantsOf(ctx.store.db, [row.id])).get(row.id) ?? [];
    return {
      SnapshotId: row.id,
      CreateVolumePermissions: [
        ...(grants.includes('all') ? [{ Group: 'all' }] : []),
        ...grants.filter((g) => g !== 'all').map((UserId) => ({ UserId })),
      ],
    };
  }

  async function ResetSnapshotAttribute(ctx: RequestContext, input: { SnapshotId?: string; Attribute?: string }) {
    checkAttribute(input.Attribute, ['createVolumePermission']);
    await ctx.store.transaction(async (tx) => {
      const row = await ownSnapshot(tx, ctx.caller.accountId, input.SnapshotId);
      await tx.deleteFrom('snapshot_volume_permissions').where('snapshot_id', '=', row.id).execute();
    });
    return {};
  }

  return {
    CreateSnapshot, CreateSnapshots, DescribeSnapshots, DeleteSnapshot, CopySnapshot,
    ModifySnapshotAttribute, DescribeSnapshotAttribute, ResetSnapshotAttribute,
  };
}

/** Who each snapshot is shared with (account ids and `all`), sorted. */
async function grantsOf(db: Db | Tx, snapshotIds: string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (let i = 0; i < snapshotIds.length; i += 500) {
    const rows = await db.selectFrom('snapshot_volume_permissions').select(['snapshot_id', 'grantee'])
      .where('snapshot_id', 'in', snapshotIds.slice(i, i + 500)).orderBy('grantee').execute();
    for (const r of rows) out.set(r.snapshot_id, [...(out.get(r.snapshot_id) ?? []), r.grantee]);
  }
  return out;
}

/** The root device of an instance that boots from a volume (EC2's /dev/sda1 or /dev/xvda; /dev/vda here). */
function isBootDevice(device: string | null): boolean {
  return device === '/dev/sda1' || device === '/dev/xvda' || device === '/dev/vda';
}

/** The volume's tags, then the request's (a key given in both takes the request's value). */
function mergeTags(fromVolume: Tag[], asked: Tag[]): Tag[] {
  const byKey = new Map(fromVolume.map((t) => [t.Key, t]));
  for (const t of asked) byKey.set(t.Key, t);
  return [...byKey.values()];
}

registerTaggable('snap', async (db, accountId, id) => {
  const row = await db.selectFrom('snapshots').select('id').where('id', '=', id).where('account_id', '=', accountId)
    .where('state', 'in', [...LIVE_SNAPSHOT_STATES]).executeTakeFirst();
  return row !== undefined;
}, (id) => snapshotsNotFound([id]));
