// EBS volume operations: CreateVolume, DescribeVolumes, AttachVolume, DetachVolume (by VolumeId
// alone, as the AWS docs and euca2ools do it), DeleteVolume, ModifyVolume (grow) with
// DescribeVolumesModifications, DescribeVolumeStatus and Describe/ModifyVolumeAttribute.
// Every call records what is asked and answers at once with EC2's transitional state (creating,
// attaching, detaching, deleting, modifying); the volume reconciler (volume-reconciler.ts) has the
// zone's cluster act and moves the row on.
import type { OperationTable, RequestContext } from '../context.ts';
import type { Db, Tx } from '../../store/store.ts';
import type { VolumesTable, VolumeModificationsTable } from '../../store/schema.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { booleanFromText } from '../../protocol/query-parser.ts';
import { applyFilters, type Filter } from '../../protocol/filters.ts';
import { paginate } from '../../protocol/pagination.ts';
import { newId } from '../ids.ts';
import { tagsByResource, tagsFromSpecifications, writeTags, type TagSpecification } from '../tags.ts';
import { registerTaggable } from '../resource-registry.ts';
import { assertVolumeQuota } from './volume-quotas.ts';
import { usableSnapshot } from './snapshots.ts';
import { attachmentView, reportedIops, reportedThroughput, volumeFilters, volumeView, VOLUME_TYPES, type VolumeItem } from './volume-view.ts';

const VOLUME_ID = /^vol-[0-9a-f]{8}([0-9a-f]{9})?$/;
const INSTANCE_ID = /^i-[0-9a-f]{8}([0-9a-f]{9})?$/;
/** EBS device names a Linux instance takes (the root disk is /dev/vda here). */
export const EBS_DEVICE_NAME = /^\/dev\/(sd[b-z]|xvd[b-z]|vd[b-z])$/;
/** The hot-plug ports each VM has (node/storage/qmp-volumes.ts): at most this many volumes per instance. */
export const MAX_VOLUMES_PER_INSTANCE = 8;
/** Instance states a volume may be attached in (EC2: running or stopped). */
const ATTACHABLE_INSTANCE_STATES = new Set(['running', 'stopped', 'pending', 'stopping']);

// ---- lookups --------------------------------------------------------------------------------

function checkVolumeId(id: string): void {
  if (!VOLUME_ID.test(id)) throw new Ec2Error('InvalidParameterValue', `Invalid id: "${id}" (expecting "vol-...")`);
}

function volumesNotFound(ids: string[]): Ec2Error {
  return new Ec2Error('InvalidVolume.NotFound', ids.length === 1 ? `The volume '${ids[0]}' does not exist.` : `The volumes '${ids.join(', ')}' do not exist.`);
}

/** The caller's live volumes by id, in the order asked; deleted and foreign ones are not found. */
async function volumesByIds(db: Db | Tx, accountId: string, ids: string[]): Promise<VolumesTable[]> {
  const unique = [...new Set(ids)];
  for (const id of unique) checkVolumeId(id);
  const found = new Map<string, VolumesTable>();
  for (let i = 0; i < unique.length; i += 500) {
    const rows = await db.selectFrom('volumes').selectAll().where('account_id', '=', accountId)
      .where('id', 'in', unique.slice(i, i + 500)).where('state', '!=', 'deleted').execute();
    for (const r of rows) found.set(r.id, r);
  }
  const missing = unique.filter((id) => !found.has(id));
  if (missing.length > 0) throw volumesNotFound(missing);
  return unique.map((id) => found.get(id)!);
}

async function volumeById(db: Db | Tx, accountId: string, id: string | undefined, parameter = 'VolumeId'): Promise<VolumesTable> {
  if (!id) throw new Ec2Error('MissingParameter', `The request must contain the parameter ${parameter}`);
  return (await volumesByIds(db, accountId, [id]))[0]!;
}

/** The volumes a Describe call looks at: the ids asked for, or all of the account's. */
async function describedVolumes(ctx: RequestContext, input: { VolumeIds?: string[]; MaxResults?: number }): Promise<VolumeItem[]> {
  const db = ctx.store.db;
  const accountId = ctx.caller.accountId;
  const ids = input.VolumeIds ?? [];
  if (ids.length > 0 && input.MaxResults !== undefined) {
    throw new Ec2Error('InvalidParameterCombination', 'The parameter volumeSet cannot be used with the parameter maxResults');
  }
  const rows = ids.length > 0 ? await volumesByIds(db, accountId, ids)
    : await db.selectFrom('volumes').selectAll().where('account_id', '=', accountId).where('state', '!=', 'deleted')
      .orderBy('created_at').orderBy('id').execute();
  const tags = await tagsByResource(db, accountId, rows.map((r) => r.id));
  return rows.map((row) => ({ row, tags: tags.get(row.id) ?? [] }));
}

async function tagsOf(ctx: RequestContext, id: string) {
  return (await tagsByResource(ctx.store.db, ctx.caller.accountId, [id])).get(id) ?? [];
}

// ---- checks ---------------------------------------------------------------------------------

interface VolumeShape { type: string; sizeGiB: number; iops: number | null; throughput: number | null }

/** A volume type, size, IOPS and throughput EC2 would accept together; the values to record. */
export function checkShape(type: string, sizeGiB: number, iops: number | undefined, throughput: number | undefined): VolumeShape {
  const limits = VOLUME_TYPES[type];
  if (!limits) throw new Ec2Error('InvalidParameterValue', `Value (${type}) for parameter volumeType is invalid. Valid values: ${Object.keys(VOLUME_TYPES).join(', ')}.`);
  if (!Number.isInteger(sizeGiB)) throw new Ec2Error('InvalidParameterValue', `Value (${sizeGiB}) for parameter size is invalid. Expected a whole number of GiB.`);
  if (sizeGiB < limits.minGiB) throw new Ec2Error('InvalidParameterValue', `Volume of ${sizeGiB}GiB is too small; minimum is ${limits.minGiB}GiB.`);
  if (sizeGiB > limits.maxGiB) throw new Ec2Error('InvalidParameterValue', `Volume of ${sizeGiB}GiB is too large for volume type ${type}; maximum is ${limits.maxGiB}GiB.`);
  if (iops !== undefined) {
    if (!limits.iops) throw new Ec2Error('InvalidParameterCombination', `The parameter iops is not supported for ${type} volumes.`);
    if (!Number.isInteger(iops) || iops < limits.iops[0] || iops > limits.iops[1]) {
      throw new Ec2Error('InvalidParameterValue', `Volume iops of ${iops} is out of range for ${type}: it must be from ${limits.iops[0]} to ${limits.iops[1]}.`);
    }
  } else if (limits.iopsRequired) {
    throw new Ec2Error('MissingParameter', `The request must contain the parameter iops for ${type} volumes.`);
  }
  if (throughput !== undefined) {
    if (!limits.throughput) throw new Ec2Error('InvalidParameterCombination', `The parameter throughput is not supported for ${type} volumes.`);
    if (!Number.isInteger(throughput) || throughput < limits.throughput[0] || throughput > limits.throughput[1]) {
      throw new Ec2Error('InvalidParameterValue', `Throughput of ${throughput} MiB/s is out of range for ${type}: it must be from ${limits.throughput[0]} to ${limits.throughput[1]}.`);
    }
  }
  return { type, sizeGiB, iops: iops ?? null, throughput: throughput ?? null };
}

/** What this cloud does not offer, said clearly rather than ignored. */
export function refuseUnoffered(input: { Encrypted?: boolean; KmsKeyId?: string; MultiAttachEnabled?: boolean; OutpostArn?: string }): void {
  if (input.Encrypted === true || input.KmsKeyId) {
    throw new Ec2Error('UnsupportedOperation', 'Encrypted volumes are not offered by this cloud: create the volume without Encrypted and KmsKeyId, or encrypt inside the instance.');
  }
  if (input.MultiAttachEnabled === true) throw new Ec2Error('UnsupportedOperation', 'Multi-Attach is not offered by this cloud: a volume attaches to one instance at a time.');
  if (input.OutpostArn) throw new Ec2Error('UnsupportedOperation', 'This cloud has no Outposts.');
}

function incorrectVolumeState(row: VolumesTable): Ec2Error {
  return new Ec2Error('IncorrectState', `The volume '${row.id}' is in the '${row.state}' state.`);
}

// ---- operations -----------------------------------------------------------------------------

interface CreateVolumeInput {
  AvailabilityZone?: string; Size?: number; SnapshotId?: string; VolumeType?: string; Iops?: number; Throughput?: number;
  Encrypted?: boolean; KmsKeyId?: string; MultiAttachEnabled?: boolean; OutpostArn?: string; TagSpecifications?: TagSpecification[];
  ClientToken?: string;
}

export function volumeOperations(): OperationTable {
  async function CreateVolume(ctx: RequestContext, input: CreateVolumeInput) {
    if (!input.AvailabilityZone) throw new Ec2Error('MissingParameter', 'The request must contain the parameter AvailabilityZone');
    refuseUnoffered(input);
    const snapshotId = input.SnapshotId || null;
    // A volume from a snapshot is at least the snapshot's size, and that size by default.
    const snapshot = snapshotId ? await usableSnapshot(ctx.store.db, ctx.caller.accountId, snapshotId) : undefined;
    if (snapshot) {
      if (snapshot.state !== 'completed') throw new Ec2Error('IncorrectState', `Snapshot '${snapshot.id}' is in the '${snapshot.state}' state; a volume is made from a completed snapshot.`);
      if (input.Size !== undefined && input.Size < snapshot.volume_size_gib) {
        throw new Ec2Error('InvalidParameterValue', `Volume of size ${input.Size}GiB is smaller than snapshot '${snapshot.id}', expect size >= ${snapshot.volume_size_gib}GiB`);
      }
      if (snapshot.zone !== input.AvailabilityZone) {
        // The snapshot's data is in the storage of the zone it was taken in; no zone copies it to another yet.
        throw new Ec2Error('InvalidParameterValue', `Snapshot '${snapshot.id}' is kept in ${snapshot.zone}: this cloud makes volumes from it in that availability zone only.`);
      }
    }
    const size = input.Size ?? snapshot?.volume_size_gib;
    if (size === undefined) throw new Ec2Error('MissingParameter', 'The request must contain the parameter size or snapshotId');
    const shape = checkShape(input.VolumeType || 'gp2', size, input.Iops, input.Throughput);
    const tags = tagsFromSpecifications(input.TagSpecifications, ['volume']).get('volume') ?? [];
    const token = input.ClientToken || null;
    if (token !== null && token.length > 64) throw new Ec2Error('InvalidParameterValue', 'The ClientToken must have at most 64 characters.');
    const row = await ctx.store.transaction(async (tx) => {
      if (token !== null) {
        // A retry of a call that was answered (or not) answers the same volume, as EC2 does.
        const earlier = await tx.selectFrom('volumes').selectAll().where('account_id', '=', ctx.caller.accountId).where('client_token', '=', token).executeTakeFirst();
        if (earlier) {
          const same = earlier.zone === input.AvailabilityZone && earlier.size_gib === shape.sizeGiB && earlier.volume_type === shape.type
            && earlier.iops === shape.iops && earlier.throughput === shape.throughput && earlier.snapshot_id === snapshotId;
          if (!same) throw new Ec2Error('IdempotentParameterMismatch', `The client token ${token} was used before with other parameters.`);
          return earlier;
        }
      }
      const zone = await tx.selectFrom('zones').select('name').where('name', '=', input.AvailabilityZone!).executeTakeFirst();
      if (!zone) throw new Ec2Error('InvalidParameterValue', `Invalid availability zone: [${input.AvailabilityZone}]`);
      await assertVolumeQuota(tx, ctx.caller.accountId, 1, shape.sizeGiB);
      const now = new Date().toISOString();
      const volume: VolumesTable = {
        id: newId('vol'), account_id: ctx.caller.accountId, zone: zone.name, size_gib: shape.sizeGiB, volume_type: shape.type,
        iops: shape.iops, throughput: shape.throughput, snapshot_id: snapshotId, state: 'creating', created_at: now, state_changed_at: now,
        auto_enable_io: 0, instance_id: null, device: null, attach_state: null, attach_time: null, delete_on_termination: 0, detach_force: 0,
        client_token: token,
      };
      await tx.insertInto('volumes').values(volume).execute();
      await writeTags(tx, ctx.caller.accountId, volume.id, tags);
      return volume;
    });
    const view = volumeView(row, await tagsOf(ctx, row.id));
    const { Attachments: _none, ...created } = view;
    return created;
  }

  async function DescribeVolumes(ctx: RequestContext, input: { VolumeIds?: string[]; Filters?: Filter[]; MaxResults?: number; NextToken?: string }) {
    const items = applyFilters(await describedVolumes(ctx, input), input.Filters, volumeFilters(), (i) => i.tags);
    const { page, nextToken } = paginate(items, input, JSON.stringify(['volumes', input.Filters ?? []]), { min: 5, max: 500 });
    return { Volumes: page.map((i) => volumeView(i.row, i.tags)), NextToken: nextToken };
  }

  async function DeleteVolume(ctx: RequestContext, input: { VolumeId?: string }) {
    await ctx.store.transaction(async (tx) => {
      const row = await volumeById(tx, ctx.caller.accountId, input.VolumeId);
      if (row.instance_id) throw new Ec2Error('VolumeInUse', `Volume ${row.id} is currently attached to ${row.instance_id}`);
      if (row.state === 'deleting') return;
      if (row.state !== 'available' && row.state !== 'creating' && row.state !== 'error') throw incorrectVolumeState(row);
      await tx.updateTable('volumes').set({ state: 'deleting', state_changed_at: new Date().toISOString() })
        .where('id', '=', row.id).where('state', '=', row.state).execute();
    });
    return {};
  }

  async function AttachVolume(ctx: RequestContext, input: { Device?: string; InstanceId?: string; VolumeId?: string }) {
    if (!input.Device) throw new Ec2Error('MissingParameter', 'The request must contain the parameter device');
    if (!input.InstanceId) throw new Ec2Error('MissingParameter', 'The request must contain the parameter InstanceId');
    if (!EBS_DEVICE_NAME.test(input.Device)) {
      throw new Ec2Error('InvalidParameterValue', `Value (${input.Device}) for parameter device is invalid. ${input.Device} is not a valid EBS device name.`);
    }
    if (!INSTANCE_ID.test(input.InstanceId)) throw new Ec2Error('InvalidInstanceID.Malformed', `Invalid id: "${input.InstanceId}"`);
    const row = await ctx.store.transaction(async (tx) => {
      const volume = await volumeById(tx, ctx.caller.accountId, input.VolumeId);
      const instance = await tx.selectFrom('instances').select(['id', 'state', 'zone']).where('id', '=', input.InstanceId!)
        .where('account_id', '=', ctx.caller.accountId).executeTakeFirst();
      if (!instance || instance.state === 'terminated') throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${input.InstanceId}' does not exist`);
      if (volume.instance_id) throw new Ec2Error('VolumeInUse', `${volume.id} is already attached to an instance`);
      if (volume.state !== 'available') throw incorrectVolumeState(volume);
      if (volume.zone !== instance.zone) {
        throw new Ec2Error('InvalidVolume.ZoneMismatch', `The volume '${volume.id}' is not in the same availability zone as instance '${instance.id}'`);
      }
      if (!ATTACHABLE_INSTANCE_STATES.has(instance.state)) {
        throw new Ec2Error('IncorrectInstanceState', `Instance '${instance.id}' is not 'running' or 'stopped'.`);
      }
      const others = await tx.selectFrom('volumes').select(['id', 'device']).where('instance_id', '=', instance.id).execute();
      if (others.some((o) => o.device === input.Device)) throw new Ec2Error('InvalidParameterValue', `Attachment point ${input.Device} is already in use`);
      if (others.length >= MAX_VOLUMES_PER_INSTANCE) {
        throw new Ec2Error('AttachmentLimitExceeded', `Instance '${instance.id}' already has ${others.length} volumes attached, the most an instance of this cloud takes.`);
      }
      const now = new Date().toISOString();
      const set = { instance_id: instance.id, device: input.Device!, attach_state: 'attaching', attach_time: now, state: 'in-use', state_changed_at: now, delete_on_termination: 0, detach_force: 0 };
      const { numUpdatedRows } = await tx.updateTable('volumes').set(set).where('id', '=', volume.id).where('state', '=', 'available')
        .where('instance_id', 'is', null).executeTakeFirst();
      if (Number(numUpdatedRows) !== 1) throw new Ec2Error('VolumeInUse', `${volume.id} is already attached to an instance`);
      return { ...volume, ...set };
    });
    return attachmentView(row)!;
  }

  async function DetachVolume(ctx: RequestContext, input: { VolumeId?: string; InstanceId?: string; Device?: string; Force?: boolean }) {
    const row = await ctx.store.transaction(async (tx) => {
      const volume = await volumeById(tx, ctx.caller.accountId, input.VolumeId);
      if (!volume.instance_id) throw new Ec2Error('IncorrectState', `Volume '${volume.id}' is in the '${volume.state}' state.`);
      // An instance that boots from a volume keeps it for as long as it exists.
      const root = await tx.selectFrom('instances').select('id').where('id', '=', volume.instance_id).where('root_volume_id', '=', volume.id).executeTakeFirst();
      if (root) throw new Ec2Error('OperationNotPermitted', `Unable to detach root volume '${volume.id}' from instance '${volume.instance_id}'.`);
      if (input.InstanceId && input.InstanceId !== volume.instance_id) {
        throw new Ec2Error('InvalidAttachment.NotFound', `The volume '${volume.id}' is not attached to instance '${input.InstanceId}'.`);
      }
      if (input.Device && input.Device !== volume.device) {
        throw new Ec2Error('InvalidAttachment.NotFound', `The volume '${volume.id}' is not attached at ${input.Device}.`);
      }
      const set = { attach_state: 'detaching', detach_force: input.Force === true || volume.detach_force === 1 ? 1 : 0 };
      await tx.updateTable('volumes').set(set).where('id', '=', volume.id).where('instance_id', '=', volume.instance_id).execute();
      return { ...volume, ...set };
    });
    return attachmentView(row)!;
  }

  async function ModifyVolume(ctx: RequestContext, input: { VolumeId?: string; Size?: number; VolumeType?: string; Iops?: number; Throughput?: number; MultiAttachEnabled?: boolean }) {
    refuseUnoffered({ MultiAttachEnabled: input.MultiAttachEnabled });
    const modification = await ctx.store.transaction(async (tx) => {
      const volume = await volumeById(tx, ctx.caller.accountId, input.VolumeId);
      if (volume.state !== 'available' && volume.state !== 'in-use') throw incorrectVolumeState(volume);
      const previous = await tx.selectFrom('volume_modifications').selectAll().where('volume_id', '=', volume.id).executeTakeFirst();
      if (previous && (previous.state === 'modifying' || previous.state === 'optimizing')) {
        throw new Ec2Error('IncorrectModificationState', `Volume ${volume.id} is already being modified.`);
      }
      const type = input.VolumeType || volume.volume_type;
      const size = input.Size ?? volume.size_gib;
      if (size < volume.size_gib) throw new Ec2Error('InvalidParameterValue', `New size (${size}) cannot be smaller than existing size (${volume.size_gib}).`);
      // IOPS and throughput carry over to a type that takes them, unless given anew.
      const iops = input.Iops ?? (VOLUME_TYPES[type]?.iops ? volume.iops ?? undefined : undefined);
      const throughput = input.Throughput ?? (VOLUME_TYPES[type]?.throughput ? volume.throughput ?? undefined : undefined);
      const shape = checkShape(type, size, iops, throughput);
      if (shape.sizeGiB === volume.size_gib && shape.type === volume.volume_type && shape.iops === volume.iops && shape.throughput === volume.throughput) {
        throw new Ec2Error('InvalidParameterCombination', `Modification of volume ${volume.id} requests no change.`);
      }
      if (shape.sizeGiB > volume.size_gib) await assertVolumeQuota(tx, ctx.caller.accountId, 0, shape.sizeGiB - volume.size_gib);
      const now = new Date().toISOString();
      const growing = shape.sizeGiB > volume.size_gib;
      const row: VolumeModificationsTable = {
        volume_id: volume.id, account_id: volume.account_id,
        // Type, IOPS and throughput are figures this cloud records; only a size waits for the storage.
        state: growing ? 'modifying' : 'completed', status_message: null,
        original_size: volume.size_gib, target_size: shape.sizeGiB,
        original_type: volume.volume_type, target_type: shape.type,
        original_iops: reportedIops(volume) ?? null, target_iops: reportedIops({ volume_type: shape.type, iops: shape.iops, size_gib: shape.sizeGiB }) ?? null,
        progress: growing ? 0 : 100, start_time: now, end_time: growing ? null : now,
      };
      await tx.deleteFrom('volume_modifications').where('volume_id', '=', volume.id).execute();
      await tx.insertInto('volume_modifications').values(row).execute();
      await tx.updateTable('volumes').set({ volume_type: shape.type, iops: shape.iops, throughput: shape.throughput }).where('id', '=', volume.id).execute();
      return { row, throughput: { from: reportedThroughput(volume), to: reportedThroughput({ volume_type: shape.type, throughput: shape.throughput }) } };
    });
    return { VolumeModification: modificationView(modification.row, modification.throughput) };
  }

  async function DescribeVolumesModifications(ctx: RequestContext, input: { VolumeIds?: string[]; Filters?: Filter[]; MaxResults?: number; NextToken?: string }) {
    const db = ctx.store.db;
    const ids = input.VolumeIds ?? [];
    let rows: VolumeModificationsTable[];
    if (ids.length > 0) {
      await volumesByIds(db, ctx.caller.accountId, ids);
      rows = await db.selectFrom('volume_modifications').selectAll().where('account_id', '=', ctx.caller.accountId).where('volume_id', 'in', ids).execute();
      const missing = [...new Set(ids)].filter((id) => !rows.some((r) => r.volume_id === id));
      if (missing.length > 0) {
        throw new Ec2Error('InvalidVolumeModification.NotFound', `Modification for volume '${missing[0]}' does not exist.`);
      }
    } else {
      rows = await db.selectFrom('volume_modifications').selectAll().where('account_id', '=', ctx.caller.accountId).orderBy('start_time').orderBy('volume_id').execute();
    }
    const filtered = applyFilters(rows, input.Filters, {
      'modification-state': (r) => r.state,
      'original-iops': (r) => r.original_iops?.toString(),
      'original-size': (r) => String(r.original_size),
      'original-volume-type': (r) => r.original_type,
      'original-multi-attach-enabled': () => false,
      'start-time': (r) => new Date(r.start_time),
      'target-iops': (r) => r.target_iops?.toString(),
      'target-size': (r) => String(r.target_size),
      'target-volume-type': (r) => r.target_type,
      'target-multi-attach-enabled': () => false,
      'volume-id': (r) => r.volume_id,
    });
    const { page, nextToken } = paginate(filtered, input, JSON.stringify(['volume-modifications', input.Filters ?? []]), { min: 5, max: 500 });
    return { VolumesModifications: page.map((r) => modificationView(r)), NextToken: nextToken };
  }

  async function DescribeVolumeStatus(ctx: RequestContext, input: { VolumeIds?: string[]; Filters?: Filter[]; MaxResults?: number; NextToken?: string }) {
    const items = (await describedVolumes(ctx, input)).map((i) => ({ ...i, status: volumeStatus(i.row) }));
    type Item = (typeof items)[number];
    const none = () => undefined;
    const filtered = applyFilters(items, input.Filters, {
      'availability-zone': (i: Item) => i.row.zone,
      'volume-status.status': (i: Item) => i.status.Status,
      'volume-status.details-name': (i: Item) => i.status.Details.map((d) => d.Name),
      'volume-status.details-status': (i: Item) => i.status.Details.map((d) => d.Status),
      // No scheduled events or actions: the storage of this cloud has no maintenance windows.
      'action.code': none, 'action.description': none, 'action.event-id': none,
      'event.description': none, 'event.event-id': none, 'event.event-type': none, 'event.not-after': none, 'event.not-before': none,
    });
    const { page, nextToken } = paginate(filtered, input, JSON.stringify(['volume-status', input.Filters ?? []]), { min: 5, max: 1000 });
    return {
      VolumeStatuses: page.map((i) => ({
        Actions: [],
        AvailabilityZone: i.row.zone,
        Events: [],
        VolumeId: i.row.id,
        VolumeStatus: i.status,
        ...(i.row.instance_id ? { AttachmentStatuses: [{ InstanceId: i.row.instance_id, IoPerformance: ioPerformance(i.row) }] } : {}),
      })),
      NextToken: nextToken,
    };
  }

  async function DescribeVolumeAttribute(ctx: RequestContext, input: { VolumeId?: string; Attribute?: string }) {
    if (!input.Attribute) throw new Ec2Error('MissingParameter', 'The request must contain the parameter attribute');
    const row = await volumeById(ctx.store.db, ctx.caller.accountId, input.VolumeId);
    switch (input.Attribute) {
      case 'autoEnableIO': return { VolumeId: row.id, AutoEnableIO: { Value: row.auto_enable_io === 1 } };
      case 'productCodes': return { VolumeId: row.id, ProductCodes: [] };
      default: throw new Ec2Error('InvalidParameterValue', `Value (${input.Attribute}) for parameter attribute is invalid. Valid values: autoEnableIO, productCodes.`);
    }
  }

  async function ModifyVolumeAttribute(ctx: RequestContext, input: { VolumeId?: string; AutoEnableIO?: { Value?: boolean | string } }) {
    const raw = input.AutoEnableIO?.Value;
    const value = typeof raw === 'string' ? booleanFromText(raw) : raw;
    if (value === undefined) throw new Ec2Error('MissingParameter', 'The request must contain the parameter AutoEnableIO');
    const row = await volumeById(ctx.store.db, ctx.caller.accountId, input.VolumeId);
    await ctx.store.db.updateTable('volumes').set({ auto_enable_io: value ? 1 : 0 }).where('id', '=', row.id).execute();
    return {};
  }

  return {
    CreateVolume, DescribeVolumes, DeleteVolume, AttachVolume, DetachVolume, ModifyVolume, DescribeVolumesModifications,
    DescribeVolumeStatus, DescribeVolumeAttribute, ModifyVolumeAttribute,
  };
}

function modificationView(r: VolumeModificationsTable, throughput?: { from?: number; to?: number }) {
  return {
    VolumeId: r.volume_id,
    ModificationState: r.state,
    ...(r.status_message ? { StatusMessage: r.status_message } : {}),
    TargetSize: r.target_size,
    ...(r.target_iops !== null ? { TargetIops: r.target_iops } : {}),
    TargetVolumeType: r.target_type,
    ...(throughput?.to !== undefined ? { TargetThroughput: throughput.to } : {}),
    TargetMultiAttachEnabled: false,
    OriginalSize: r.original_size,
    ...(r.original_iops !== null ? { OriginalIops: r.original_iops } : {}),
    OriginalVolumeType: r.original_type,
    ...(throughput?.from !== undefined ? { OriginalThroughput: throughput.from } : {}),
    OriginalMultiAttachEnabled: false,
    Progress: r.progress,
    StartTime: new Date(r.start_time),
    ...(r.end_time ? { EndTime: new Date(r.end_time) } : {}),
  };
}

/** EC2's volume status: ok once the storage holds it, insufficient-data before, impaired when it could not be made. */
function volumeStatus(row: VolumesTable) {
  const status = row.state === 'error' ? 'impaired' : row.state === 'creating' ? 'insufficient-data' : 'ok';
  const ioEnabled = status === 'impaired' ? 'failed' : status === 'ok' ? 'passed' : 'insufficient-data';
  const details = [{ Name: 'io-enabled', Status: ioEnabled }, { Name: 'io-performance', Status: ioPerformance(row) }];
  return { Details: details, Status: status };
}

/** EC2 rates I/O performance only for provisioned-IOPS volumes. */
function ioPerformance(row: VolumesTable): string {
  return row.volume_type === 'io1' || row.volume_type === 'io2' ? 'normal' : 'not-applicable';
}

registerTaggable('vol', async (db, accountId, id) => {
  const row = await db.selectFrom('volumes').select('id').where('id', '=', id).where('account_id', '=', accountId)
    .where('state', '!=', 'deleted').executeTakeFirst();
  return row !== undefined;
}, (id) => volumesNotFound([id]));
