// What the cloud controller asks of a cluster controller (one per availability zone). The cloud
// never talks to nodes: the cluster places instances, relays commands and reports actual state.
import type { InstanceMetadataOptions, InstanceSpec, InstanceUpdate, NodeInstanceStatus, NodeResources } from '../node/node-api.ts';
import type { FirewallDocument, FirewallPushResult } from '../node/network/firewall-document.ts';
import type { NetworkDiagnosis } from '../node/network/diagnosis.ts';

export interface Placement { instanceId: string; nodeId: string }

export interface ClusterInstanceStatus extends NodeInstanceStatus {
  nodeId: string;
  /** The node stopped answering: its instances are reported with an impaired status. */
  nodeDown?: boolean;
}

export interface ClusterNodeStatus extends NodeResources {
  name: string;
  address: string;
  /** Hardware address for Wake-on-LAN, when the node has one. */
  mac?: string;
  state: 'up' | 'down' | 'asleep' | 'waking' | 'disabled';
  lastSeen?: string;
  lastPlacementReason?: string;
  /** Why the node is asleep, waking or down when the cluster put it there (power-save). */
  stateReason?: string;
  /** The cluster's allocation policy. */
  policy?: string;
}

export interface ClusterApi {
  readonly zone: string;
  /**
   * Places and starts all of them or none: throws Ec2Error InsufficientInstanceCapacity (with the
   * scheduler's reasons) when they do not all fit.
   */
  runInstances(specs: InstanceSpec[]): Promise<Placement[]>;
  /** Boots a stopped instance on its node, first applying what changed while it was stopped. */
  startInstance(instanceId: string, update?: InstanceUpdate): Promise<void>;
  stopInstance(instanceId: string, force?: boolean): Promise<void>;
  rebootInstance(instanceId: string): Promise<void>;
  terminateInstance(instanceId: string): Promise<void>;
  consoleOutput(instanceId: string): Promise<string>;
  describeInstances(): Promise<ClusterInstanceStatus[]>;
  describeNodes(): Promise<ClusterNodeStatus[]>;
  /**
   * Passes the zone's firewall document (security groups, members, each instance's groups) on to
   * the zone's nodes (firewall-relay.ts). Optional: a cluster without it enforces no groups.
   */
  applyFirewall?(doc: FirewallDocument): Promise<FirewallPushResult>;
  /** One node's host networking against what it should be (`ironbark admin node diagnose`). Optional. */
  diagnoseNode?(nodeId: string): Promise<NetworkDiagnosis>;
  /**
   * Passes new metadata options (ModifyInstanceMetadataOptions) to the instance's node, which
   * honours them at once. Optional: without it, options change only with the next launch.
   */
  setMetadataOptions?(instanceId: string, options: InstanceMetadataOptions): Promise<void>;
  // EBS volumes of the zone (cluster/storage/). Optional: a cluster without a storage back-end has none.
  /** Makes the volume in the zone's storage; idempotent. */
  createVolume?(volumeId: string, sizeGiB: number): Promise<ClusterVolumeInfo>;
  /** Removes it from the zone's storage; idempotent. */
  deleteVolume?(volumeId: string): Promise<void>;
  /** Grows it (while detached: IncorrectState while a node is attached). */
  resizeVolume?(volumeId: string, sizeGiB: number): Promise<ClusterVolumeInfo>;
  /** Attaches it to the instance on the instance's node (idempotent); it is plugged in while the instance runs. */
  attachVolume?(instanceId: string, volumeId: string, device: string): Promise<void>;
  /** Detaches it once the guest lets go (idempotent); `force` cuts the instance off even if it holds on. */
  detachVolume?(instanceId: string, volumeId: string, force?: boolean): Promise<void>;
  // EBS snapshots, kept by the zone's storage beside the volumes (cluster/storage/). Optional.
  /** Freezes the volume's data as it is now (crash-consistent while attached); idempotent. */
  createSnapshot?(volumeId: string, snapshotId: string): Promise<ClusterSnapshotInfo>;
  /** Makes a volume holding the snapshot's data (copy-on-write), `sizeGiB` at least the snapshot's; idempotent. */
  createVolumeFromSnapshot?(volumeId: string, snapshotId: string, sizeGiB: number): Promise<ClusterVolumeInfo>;
  /** A new snapshot with the source's data (CopySnapshot); idempotent. */
  copySnapshot?(sourceSnapshotId: string, snapshotId: string): Promise<ClusterSnapshotInfo>;
  /** Removes it (its data stays while volumes made from it need it); idempotent. */
  deleteSnapshot?(snapshotId: string): Promise<void>;
}

export interface ClusterVolumeInfo { volumeId: string; sizeGiB: number; allocatedBytes: number }
export interface ClusterSnapshotInfo { snapshotId: string; sizeGiB: number; allocatedBytes: number }
