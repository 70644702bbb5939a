// What a cluster controller asks of a node controller, and what the node reports back. The same
// interface is served in-process (`ironbark up`) and over authenticated HTTP/JSON (separate hosts).
import type { FirewallApplyResult, FirewallDocument } from './network/firewall-document.ts';
import type { NetworkDiagnosis } from './network/diagnosis.ts';
import type { ZonePeers } from './network/overlay.ts';
import type { RootVolumeSpec } from './storage/root-volume.ts';

/** How a VM whose disk carries its own boot loader starts: EC2's BootMode values. */
export type BootMode = 'legacy-bios' | 'uefi';

/** A base image a node fetches once (through its cluster controller) and caches by checksum. */
export interface ImageRef {
  /** ami-/aki-/ari- id. */
  id: string;
  /** Where the node fetches it: an http(s) URL served by the cluster controller, or a local file path. */
  url: string;
  sha256: string;
  sizeBytes: number;
  format: 'raw' | 'qcow2';
}

export interface VmTypeSpec { name: string; cores: number; memoryMiB: number; diskGiB: number }

/**
 * How the instance's metadata service answers it: RunInstances' MetadataOptions, changed by
 * ModifyInstanceMetadataOptions at any time (the node applies a change at once).
 */
export interface InstanceMetadataOptions {
  /** 'required': IMDSv1 requests (without a session token) are refused. */
  httpTokens: 'optional' | 'required';
  /** The IP TTL token answers leave with, 1 to 64. */
  httpPutResponseHopLimit: number;
  /** 'disabled': the service refuses the instance altogether. */
  httpEndpoint: 'enabled' | 'disabled';
}

/** Everything a node needs to run one instance, including what its metadata service serves. */
export interface InstanceSpec {
  instanceId: string;
  reservationId: string;
  accountId: string;
  imageId: string;
  /** The kernel QEMU loads directly; absent when the root disk boots with its own boot loader. */
  kernel?: ImageRef;
  ramdisk?: ImageRef;
  /** The image the root disk is made from; with rootVolume the node does not fetch or use it. */
  root: ImageRef;
  /** Boot from this EBS volume of the zone (an EBS-backed image); the cluster fills in its NBD location. */
  rootVolume?: RootVolumeSpec;
  kernelCmdline: string;
  /** Set (and kernel absent) when the image carries its own boot loader: BIOS (SeaBIOS) or UEFI (OVMF). */
  bootMode?: BootMode;
  vmType: VmTypeSpec;
  zone: string;
  region: string;
  /** The zone's private network, e.g. 10.1.0.0/16; the instance's address lies in it. */
  subnetCidr: string;
  subnetId: string;
  vpcId: string;
  privateIp: string;
  privateDnsName: string;
  publicIp?: string;
  mac: string;
  /** base64, as the user gave it (already decoded once from the API's base64). */
  userData?: string;
  publicKeys: { name: string; openssh: string }[];
  securityGroups: { id: string; name: string }[];
  launchIndex: number;
  launchTime: string;
  /** Absent: EC2's defaults (tokens optional, hop limit 1, endpoint enabled). */
  metadataOptions?: InstanceMetadataOptions;
}

/** Actual state of an instance on a node, as EC2 names states. */
export type NodeInstanceState = 'pending' | 'running' | 'stopping' | 'stopped' | 'shutting-down' | 'terminated' | 'crashed';

/** The reason a node gives for an instance whose guest powered itself off (EC2's own wording). */
export const GUEST_SHUTDOWN_REASON = 'Client.InstanceInitiatedShutdown: Instance initiated shutdown';

export interface NodeInstanceStatus {
  instanceId: string;
  state: NodeInstanceState;
  /** Why it is in this state when that is not the expected one (e.g. "image checksum mismatch"). */
  reason?: string;
  accelerator?: 'kvm' | 'tcg' | 'none';
  since: string;
}

export interface NodeResources {
  nodeId: string;
  hypervisor: 'qemu' | 'fake';
  accelerator: 'kvm' | 'tcg' | 'none';
  acceleratorReason?: string;
  capacity: { cores: number; memoryMiB: number; diskGiB: number };
  free: { cores: number; memoryMiB: number; diskGiB: number };
  instanceCount: number;
  /** Instance records this node set aside as unreadable or damaged (node-state.ts): their VMs are kept. */
  quarantined?: Array<{ instanceId: string; file: string; reason: string; at: string }>;
}

/** What may change while an instance is stopped (ModifyInstanceAttribute) and applies at its next start. */
export interface InstanceUpdate {
  vmType?: VmTypeSpec;
  /** base64; null removes the user data. */
  userData?: string | null;
  metadataOptions?: InstanceMetadataOptions;
}

/** Where a node reaches a volume: an NBD export of the zone's storage host (cluster/storage/). */
export interface NbdLocation {
  host: string;
  port: number;
  exportName: string;
  /** TLS with a pre-shared key: the identity the server knows and the key, hex. */
  tls?: { identity: string; pskHex: string };
}

/** An EBS volume attached to an instance (AttachVolume): kept with the instance, plugged while it runs. */
export interface NodeVolumeAttachment {
  volumeId: string;
  /** The EC2 device name asked for (/dev/sdf); the guest names the disk itself (its serial is the volume id). */
  device: string;
  nbd: NbdLocation;
}

export interface NodeApi {
  describeResources(): Promise<NodeResources>;
  describeInstances(): Promise<NodeInstanceStatus[]>;
  /** Idempotent: running an instance the node already has is a no-op that returns its status. */
  runInstance(spec: InstanceSpec): Promise<NodeInstanceStatus>;
  /** Boots a stopped instance again from its kept root disk. */
  startInstance(instanceId: string, update?: InstanceUpdate): Promise<NodeInstanceStatus>;
  stopInstance(instanceId: string, force?: boolean): Promise<NodeInstanceStatus>;
  rebootInstance(instanceId: string): Promise<void>;
  /** Idempotent: terminating an unknown instance succeeds. Removes the VM, disk, tap and DHCP entry. */
  terminateInstance(instanceId: string): Promise<void>;
  consoleOutput(instanceId: string): Promise<string>;
  /**
   * Takes the zone's firewall document (security groups, their members, each instance's groups)
   * and makes this node's rules follow it; idempotent. Optional: a node without it runs no groups.
   */
  applyFirewall?(doc: FirewallDocument): Promise<FirewallApplyResult>;
  /**
   * New metadata options for an instance in any state (ModifyInstanceMetadataOptions): its metadata
   * service honours them from the next request. Optional: a node without it keeps launch-time options.
   */
  setMetadataOptions?(instanceId: string, options: InstanceMetadataOptions): Promise<void>;
  /**
   * Attaches a volume to an instance (idempotent): hot-plugged now if it runs, kept and plugged at
   * every boot otherwise. Optional: a node without it has no volumes.
   */
  attachVolume?(instanceId: string, attachment: NodeVolumeAttachment): Promise<void>;
  /** Unplugs (the guest lets go) and forgets a volume; idempotent. `force`: forgotten even if the guest holds on. */
  detachVolume?(instanceId: string, volumeId: string, force?: boolean): Promise<void>;
  /** The zone's other nodes as the cluster knows them: the zone network's tunnel follows them. Optional. */
  setZonePeers?(peers: ZonePeers): Promise<void>;
  /** The host networking this node made, against what it should be (ok, missing, extra). Optional. */
  diagnoseNetwork?(): Promise<NetworkDiagnosis>;
}
