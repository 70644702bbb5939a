// The cluster's half of EBS: its zone's volumes live in its storage back-end, and attaching one
// means exporting it there and telling the instance's node where to find it (NBD over the zone's
// network, the zone's TLS key). Back-end errors become EC2's, so the cloud can tell a volume that
// is gone from one that is busy.
import { Ec2Error } from '../../protocol/errors.ts';
import type { NodeApi } from '../../node/node-api.ts';
import { SnapshotNotFoundError, VolumeNotFoundError, VolumeSizeError, type SnapshotBackendInfo, type VolumeBackend, type VolumeBackendInfo } from './volume-backend.ts';
import { ExportInUseError } from './nbd-export-server.ts';

/** How the cluster sends a command to the node of an instance (ClusterController.command). */
export type NodeCommand = (instanceId: string, what: string, fn: (node: NodeApi) => Promise<void>) => Promise<void>;

export class ClusterVolumes {
  readonly #backend: VolumeBackend | undefined;
  readonly #zone: string;
  readonly #command: NodeCommand;
  /** Whether the cluster knows the instance's node (an instance it never heard of is not attached anywhere). */
  readonly #placed: (instanceId: string) => boolean;

  constructor(opts: { backend?: VolumeBackend; zone: string; command: NodeCommand; placed: (instanceId: string) => boolean }) {
    this.#backend = opts.backend;
    this.#zone = opts.zone;
    this.#command = opts.command;
    this.#placed = opts.placed;
  }

  get backend(): VolumeBackend | undefined {
    return this.#backend;
  }

  create(volumeId: string, sizeGiB: number): Promise<VolumeBackendInfo> {
    return this.#storage((b) => b.create(volumeId, sizeGiB));
  }

  delete(volumeId: string): Promise<void> {
    return this.#storage((b) => b.delete(volumeId));
  }

  resize(volumeId: string, sizeGiB: number): Promise<VolumeBackendInfo> {
    return this.#storage((b) => b.resize(volumeId, sizeGiB));
  }

  info(volumeId: string): Promise<VolumeBackendInfo | undefined> {
    return this.#storage((b) => b.info(volumeId));
  }

  snapshot(volumeId: string, snapshotId: string): Promise<SnapshotBackendInfo> {
    return this.#storage((b) => this.#snapshots(b).snapshot!(volumeId, snapshotId));
  }

  createFromSnapshot(volumeId: string, snapshotId: string, sizeGiB: number): Promise<VolumeBackendInfo> {
    return this.#storage((b) => this.#snapshots(b).createFromSnapshot!(volumeId, snapshotId, sizeGiB));
  }

  copySnapshot(sourceSnapshotId: string, snapshotId: string): Promise<SnapshotBackendInfo> {
    return this.#storage((b) => this.#snapshots(b).copySnapshot!(sourceSnapshotId, snapshotId));
  }

  deleteSnapshot(snapshotId: string): Promise<void> {
    return this.#storage((b) => this.#snapshots(b).deleteSnapshot!(snapshotId));
  }

  /** The back-end, if it keeps snapshots (every snapshot word), else EC2's UnsupportedOperation. */
  #snapshots(b: VolumeBackend): VolumeBackend {
    if (!b.snapshot || !b.createFromSnapshot || !b.copySnapshot || !b.deleteSnapshot) {
      throw new Ec2Error('UnsupportedOperation', `The storage of zone ${this.#zone} (${b.kind}) keeps no snapshots.`);
    }
    return b;
  }

  async attach(instanceId: string, volumeId: string, device: string): Promise<void> {
    const nbd = await this.#storage((b) => b.export(volumeId));
    await this.#command(instanceId, 'attachVolume', async (node) => {
      if (!node.attachVolume) throw new Ec2Error('UnsupportedOperation', `The node of ${instanceId} cannot attach volumes.`);
      await node.attachVolume(instanceId, { volumeId, device, nbd });
    });
  }

  /**
   * Detaches from the instance's node. An instance the cluster does not know has nothing attached.
   * `force` also cuts the instance off at the storage host, whether or not its guest let go.
   */
  async detach(instanceId: string, volumeId: string, force: boolean): Promise<void> {
    try {
      if (this.#placed(instanceId)) {
        await this.#command(instanceId, 'detachVolume', async (node) => {
          if (!node.detachVolume) throw new Ec2Error('UnsupportedOperation', `The node of ${instanceId} cannot detach volumes.`);
          await node.detachVolume(instanceId, volumeId, force);
        });
      }
    } finally {
      if (force) await this.#storage((b) => b.unexport(volumeId, { force: true }));
    }
  }

  async #storage<T>(work: (backend: VolumeBackend) => Promise<T>): Promise<T> {
    if (!this.#backend) throw new Ec2Error('UnsupportedOperation', `The cluster of zone ${this.#zone} keeps no volumes (it was started without a storage back-end).`);
    try {
      return await work(this.#backend);
    } catch (err) {
      if (err instanceof SnapshotNotFoundError) throw new Ec2Error('InvalidSnapshot.NotFound', `The snapshot '${err.snapshotId}' does not exist.`);
      if (err instanceof VolumeNotFoundError) throw new Ec2Error('InvalidVolume.NotFound', `The volume '${err.volumeId}' does not exist.`);
      if (err instanceof VolumeSizeError) throw new Ec2Error('InvalidParameterValue', err.message);
      if (err instanceof ExportInUseError) throw new Ec2Error('IncorrectState', `The volume '${err.exportName}' is attached; it grows once detached.`);
      throw err;
    }
  }
}
