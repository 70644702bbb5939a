// How EC2 shows a volume (DescribeVolumes' Volume, its attachment), an instance's volumes
// (DescribeInstances' BlockDeviceMappings), the documented DescribeVolumes filters, and the
// figures EC2 reports for each volume type (sizes, IOPS, throughput).
import type { VolumesTable } from '../../store/schema.ts';
import type { FilterAccessors } from '../../protocol/filters.ts';
import type { Tag } from '../tags.ts';
import { noValueFilters } from '../view-filters.ts';

export interface VolumeItem { row: VolumesTable; tags: Tag[] }

/** EC2's limits per volume type: size in GiB, and whether IOPS and throughput may be given. */
export const VOLUME_TYPES: Record<string, { minGiB: number; maxGiB: number; iops?: [number, number]; iopsRequired?: boolean; throughput?: [number, number] }> = {
  standard: { minGiB: 1, maxGiB: 1024 },
  gp2: { minGiB: 1, maxGiB: 16_384 },
  gp3: { minGiB: 1, maxGiB: 16_384, iops: [3000, 16_000], throughput: [125, 1000] },
  io1: { minGiB: 4, maxGiB: 16_384, iops: [100, 64_000], iopsRequired: true },
  io2: { minGiB: 4, maxGiB: 65_536, iops: [100, 256_000], iopsRequired: true },
  st1: { minGiB: 125, maxGiB: 16_384 },
  sc1: { minGiB: 125, maxGiB: 16_384 },
};

/** The IOPS EC2 reports: given for io1/io2/gp3 (gp3: 3000 by default), gp2's baseline of 3 per GiB (100 to 16,000). */
export function reportedIops(row: Pick<VolumesTable, 'volume_type' | 'iops' | 'size_gib'>): number | undefined {
  if (row.iops !== null) return row.iops;
  if (row.volume_type === 'gp3') return 3000;
  if (row.volume_type === 'gp2') return Math.min(16_000, Math.max(100, 3 * row.size_gib));
  return undefined;
}

export function reportedThroughput(row: Pick<VolumesTable, 'volume_type' | 'throughput'>): number | undefined {
  if (row.volume_type !== 'gp3') return undefined;
  return row.throughput ?? 125;
}

export function attachmentView(row: VolumesTable) {
  if (!row.instance_id || !row.attach_state) return undefined;
  return {
    AttachTime: new Date(row.attach_time ?? row.state_changed_at),
    Device: row.device ?? '',
    InstanceId: row.instance_id,
    State: row.attach_state,
    VolumeId: row.id,
    DeleteOnTermination: row.delete_on_termination === 1,
  };
}

/** EC2's Volume structure. */
export function volumeView(row: VolumesTable, tags: Tag[]) {
  const attachment = attachmentView(row);
  const iops = reportedIops(row);
  const throughput = reportedThroughput(row);
  return {
    Attachments: attachment ? [attachment] : [],
    AvailabilityZone: row.zone,
    CreateTime: new Date(row.created_at),
    Encrypted: false,
    Size: row.size_gib,
    SnapshotId: row.snapshot_id ?? '',
    State: row.state,
    VolumeId: row.id,
    ...(iops !== undefined ? { Iops: iops } : {}),
    ...(tags.length > 0 ? { Tags: tags } : {}),
    VolumeType: row.volume_type,
    MultiAttachEnabled: false,
    ...(throughput !== undefined ? { Throughput: throughput } : {}),
  };
}

/** DescribeInstances' BlockDeviceMappings entry for an attached volume. */
export function blockDeviceMappingView(row: VolumesTable) {
  return {
    DeviceName: row.device ?? '',
    Ebs: {
      AttachTime: new Date(row.attach_time ?? row.state_changed_at),
      DeleteOnTermination: row.delete_on_termination === 1,
      Status: row.attach_state ?? 'detached',
      VolumeId: row.id,
    },
  };
}

/** The documented DescribeVolumes filters (tag:*, tag-key and tag-value come with the tags). */
export function volumeFilters(): FilterAccessors<VolumeItem> {
  const att = (i: VolumeItem) => attachmentView(i.row);
  return {
    'attachment.attach-time': (i) => att(i)?.AttachTime,
    'attachment.delete-on-termination': (i) => att(i)?.DeleteOnTermination,
    'attachment.device': (i) => att(i)?.Device,
    'attachment.instance-id': (i) => att(i)?.InstanceId,
    'attachment.status': (i) => att(i)?.State,
    'availability-zone': (i) => i.row.zone,
    'create-time': (i) => new Date(i.row.created_at),
    'encrypted': () => false,
    'fast-restored': () => false,
    'multi-attach-enabled': () => false,
    'size': (i) => String(i.row.size_gib),
    'snapshot-id': (i) => i.row.snapshot_id ?? undefined,
    'status': (i) => i.row.state,
    'volume-id': (i) => i.row.id,
    'volume-type': (i) => i.row.volume_type,
    'iops': (i) => reportedIops(i.row)?.toString(),
    'throughput': (i) => reportedThroughput(i.row)?.toString(),
    // No volume is managed by a service operator here.
    ...noValueFilters(['operator.managed', 'operator.principal']),
  };
}
