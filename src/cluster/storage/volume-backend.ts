// The seam between a zone's cluster controller and where its EBS volumes live. One small vocabulary
// (create, delete, resize, info, list, export) that a qcow2 directory implements today and that LVM
// or Ceph RBD can implement later; snapshots (take, copy, delete, info, list) and volumes made
// from them are optional, so a back-end that lacks them says so.
//
// A node never opens a volume's file: it reaches every volume over the zone's network as an NBD
// export of the back-end's host, authenticated with the zone's TLS pre-shared key, so the VM and
// its volume need not share a host.
import type { NbdLocation } from '../../node/node-api.ts';

export type { NbdLocation };

export interface VolumeBackendInfo {
  volumeId: string;
  /** Virtual size in GiB, what the guest sees. */
  sizeGiB: number;
  /** Bytes the back-end really holds for it (thin provisioning). */
  allocatedBytes: number;
}

export interface VolumeBackend {
  /** What keeps the volumes, e.g. "qcow2" or "memory". */
  readonly kind: string;
  /** Makes an empty volume; idempotent (a volume that exists with this size is kept as it is). */
  create(volumeId: string, sizeGiB: number): Promise<VolumeBackendInfo>;
  /** Removes the volume and its export (cutting off any client still connected); idempotent. */
  delete(volumeId: string): Promise<void>;
  /** Grows the volume; a smaller size is refused, and so is growing one a node is attached to (ExportInUseError). */
  resize(volumeId: string, sizeGiB: number): Promise<VolumeBackendInfo>;
  info(volumeId: string): Promise<VolumeBackendInfo | undefined>;
  list(): Promise<VolumeBackendInfo[]>;
  /** Where a node of the zone attaches the volume (exporting it first if it is not). */
  export(volumeId: string): Promise<NbdLocation>;
  /**
   * Ends the volume's export; with `force`, connected clients are cut off (a forced detach of a
   * VM that will not let go), else they keep it until they disconnect.
   */
  unexport(volumeId: string, opts?: { force?: boolean }): Promise<void>;
  /** Stops using the back-end (the qcow2 one may leave its NBD server running for attached VMs). */
  close(): Promise<void>;
  // Snapshots (issue 10, item 3): absent means the back-end cannot.
  /**
   * Freezes the volume's data as it is now as the snapshot `snapshotId` (crash-consistent: a
   * point in time of the writes an attached node made); the volume stays usable throughout.
   * Idempotent: a snapshot that exists is answered as it is.
   */
  snapshot?(volumeId: string, snapshotId: string): Promise<SnapshotBackendInfo>;
  /** Makes a new volume holding the snapshot's data, `sizeGiB` at least the snapshot's size; idempotent. */
  createFromSnapshot?(volumeId: string, snapshotId: string, sizeGiB: number): Promise<VolumeBackendInfo>;
  /** A new snapshot with the same data as `sourceSnapshotId` (CopySnapshot); idempotent. */
  copySnapshot?(sourceSnapshotId: string, snapshotId: string): Promise<SnapshotBackendInfo>;
  /**
   * The snapshot is gone for its users at once (info and list no longer show it); a back-end may
   * keep its data while volumes or other snapshots still depend on it. Idempotent.
   */
  deleteSnapshot?(snapshotId: string): Promise<void>;
  snapshotInfo?(snapshotId: string): Promise<SnapshotBackendInfo | undefined>;
  listSnapshots?(): Promise<SnapshotBackendInfo[]>;
}

export interface SnapshotBackendInfo {
  snapshotId: string;
  /** The volume size it was taken at, in GiB: a volume made from it is at least this large. */
  sizeGiB: number;
  /** Bytes this snapshot holds beyond those it shares with the snapshots before it (incremental). */
  allocatedBytes: number;
}

export class SnapshotNotFoundError extends Error {
  constructor(readonly snapshotId: string) {
    super(`snapshot ${snapshotId} does not exist in this zone's storage`);
    this.name = 'SnapshotNotFoundError';
  }
}

export class VolumeNotFoundError extends Error {
  constructor(readonly volumeId: string) {
    super(`volume ${volumeId} does not exist in this zone's storage`);
    this.name = 'VolumeNotFoundError';
  }
}

export class VolumeSizeError extends Error {
  constructor(volumeId: string, message: string) {
    super(`volume ${volumeId}: ${message}`);
    this.name = 'VolumeSizeError';
  }
}

/** Volume ids name files and QEMU nodes: only EC2's own shape is accepted. */
export const VOLUME_ID = /^vol-[0-9a-f]{8}([0-9a-f]{9})?$/;

export function checkVolumeId(volumeId: string): void {
  if (!VOLUME_ID.test(volumeId)) throw new Error(`${JSON.stringify(volumeId)} is not a volume id (vol- and 8 or 17 hex digits)`);
}

/** Snapshot ids name files and QEMU nodes too. */
export const SNAPSHOT_ID = /^snap-[0-9a-f]{8}([0-9a-f]{9})?$/;

export function checkSnapshotId(snapshotId: string): void {
  if (!SNAPSHOT_ID.test(snapshotId)) throw new Error(`${JSON.stringify(snapshotId)} is not a snapshot id (snap- and 8 or 17 hex digits)`);
}

export function checkSize(volumeId: string, sizeGiB: number): void {
  if (!Number.isInteger(sizeGiB) || sizeGiB < 1 || sizeGiB > 65_536) throw new VolumeSizeError(volumeId, `size ${sizeGiB} GiB is not a whole number from 1 to 65536`);
}
