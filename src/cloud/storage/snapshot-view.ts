// How EC2 shows a snapshot (DescribeSnapshots' Snapshot, CreateSnapshots' SnapshotInfo) and the
// documented DescribeSnapshots filters.
import type { SnapshotsTable } from '../../store/schema.ts';
import type { FilterAccessors } from '../../protocol/filters.ts';
import type { Tag } from '../tags.ts';
import { noValueFilters } from '../view-filters.ts';

/** A snapshot as one caller sees it: tags are the caller's own (an owner's tags are not shared). */
export interface SnapshotItem { row: SnapshotsTable; tags: Tag[] }

/** EC2's Snapshot structure. */
export function snapshotView(row: SnapshotsTable, tags: Tag[]) {
  return {
    Description: row.description,
    Encrypted: false,
    OwnerId: row.account_id,
    Progress: `${row.progress}%`,
    SnapshotId: row.id,
    StartTime: new Date(row.started_at),
    State: row.state,
    ...(row.state_message ? { StateMessage: row.state_message } : {}),
    VolumeId: row.volume_id,
    VolumeSize: row.volume_size_gib,
    ...(tags.length > 0 ? { Tags: tags } : {}),
    StorageTier: 'standard',
  };
}

/** CreateSnapshots' SnapshotInfo. */
export function snapshotInfoView(row: SnapshotsTable, tags: Tag[]) {
  return {
    Description: row.description,
    ...(tags.length > 0 ? { Tags: tags } : {}),
    Encrypted: false,
    VolumeId: row.volume_id,
    State: row.state,
    VolumeSize: row.volume_size_gib,
    StartTime: new Date(row.started_at),
    Progress: `${row.progress}%`,
    OwnerId: row.account_id,
    SnapshotId: row.id,
  };
}

/** The documented DescribeSnapshots filters (tag:*, tag-key and tag-value come with the tags). */
export function snapshotFilters(): FilterAccessors<SnapshotItem> {
  return {
    'description': (i) => i.row.description,
    'encrypted': () => false,
    'owner-id': (i) => i.row.account_id,
    'progress': (i) => `${i.row.progress}%`,
    'snapshot-id': (i) => i.row.id,
    'start-time': (i) => new Date(i.row.started_at),
    'status': (i) => i.row.state,
    'storage-tier': () => 'standard',
    'volume-id': (i) => i.row.volume_id,
    'volume-size': (i) => String(i.row.volume_size_gib),
    // No snapshot here is owned by an alias (amazon, aws-marketplace) or by a service operator.
    ...noValueFilters(['owner-alias', 'transfer-type']),
  };
}
