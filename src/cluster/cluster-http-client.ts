// ClusterApi over HTTP: how the cloud controller drives the cluster controller of a zone on another
// host. Calls are signed with the zone's shared secret (key id = the zone); errors come back as
// Ec2Error with the cluster's code, and a cluster that does not answer fails with Unavailable.
import type { ClusterApi, ClusterInstanceStatus, ClusterNodeStatus, ClusterSnapshotInfo, ClusterVolumeInfo, Placement } from './cluster-api.ts';
import type { InstanceMetadataOptions, InstanceSpec, InstanceUpdate } from '../node/node-api.ts';
import type { FirewallDocument, FirewallPushResult } from '../node/network/firewall-document.ts';
import type { NetworkDiagnosis } from '../node/network/diagnosis.ts';
import type { JoinedNodeView } from './cluster-http-server.ts';
import { PeerClient } from '../auth/peer-rpc.ts';

export interface ClusterHttpClientOptions {
  zone: string;
  /** Base URL of the cluster controller, e.g. http://192.168.250.2:8774. */
  url: string;
  secret: string;
  timeoutMs?: number;
  /** How long a launch may take: the cluster waits for its nodes to accept the instances. */
  runTimeoutMs?: number;
}

export class ClusterHttpClient implements ClusterApi {
  readonly zone: string;
  readonly url: string;
  readonly #peer: PeerClient;

  constructor(opts: ClusterHttpClientOptions) {
    this.zone = opts.zone;
    this.url = opts.url.replace(/\/+$/, '');
    const credentials = { keyId: opts.zone, secret: opts.secret };
    const runTimeoutMs = opts.runTimeoutMs ?? 5 * 60_000;
    this.#peer = new PeerClient({
      baseUrl: this.url,
      peerName: `cluster ${opts.zone}`,
      credentials: () => credentials,
      timeoutMs: opts.timeoutMs,
      timeoutsMs: { runInstances: runTimeoutMs, startInstance: runTimeoutMs, stopInstance: 3 * 60_000, rebootInstance: 3 * 60_000, terminateInstance: 3 * 60_000, applyFirewall: 2 * 60_000,
        createVolume: 3 * 60_000, deleteVolume: 3 * 60_000, resizeVolume: 3 * 60_000, attachVolume: 3 * 60_000, detachVolume: 3 * 60_000 },
    });
  }

  runInstances(specs: InstanceSpec[]): Promise<Placement[]> {
    return this.#peer.call('runInstances', { specs });
  }

  async startInstance(instanceId: string, update?: InstanceUpdate): Promise<void> {
    await this.#peer.call('startInstance', { instanceId, update });
  }

  async stopInstance(instanceId: string, force?: boolean): Promise<void> {
    await this.#peer.call('stopInstance', { instanceId, force });
  }

  async rebootInstance(instanceId: string): Promise<void> {
    await this.#peer.call('rebootInstance', { instanceId });
  }

  async setMetadataOptions(instanceId: string, options: InstanceMetadataOptions): Promise<void> {
    await this.#peer.call('setMetadataOptions', { instanceId, options });
  }

  createVolume(volumeId: string, sizeGiB: number): Promise<ClusterVolumeInfo> {
    return this.#peer.call('createVolume', { volumeId, sizeGiB });
  }

  async deleteVolume(volumeId: string): Promise<void> {
    await this.#peer.call('deleteVolume', { volumeId });
  }

  resizeVolume(volumeId: string, sizeGiB: number): Promise<ClusterVolumeInfo> {
    return this.#peer.call('resizeVolume', { volumeId, sizeGiB });
  }

  async attachVolume(instanceId: string, volumeId: string, device: string): Promise<void> {
    await this.#peer.call('attachVolume', { instanceId, volumeId, device });
  }

  async detachVolume(instanceId: string, volumeId: string, force?: boolean): Promise<void> {
    await this.#peer.call('detachVolume', { instanceId, volumeId, force });
  }

  createSnapshot(volumeId: string, snapshotId: string): Promise<ClusterSnapshotInfo> {
    return this.#peer.call('createSnapshot', { volumeId, snapshotId });
  }

  createVolumeFromSnapshot(volumeId: string, snapshotId: string, sizeGiB: number): Promise<ClusterVolumeInfo> {
    return this.#peer.call('createVolumeFromSnapshot', { volumeId, snapshotId, sizeGiB });
  }

  copySnapshot(sourceSnapshotId: string, snapshotId: string): Promise<ClusterSnapshotInfo> {
    return this.#peer.call('copySnapshot', { sourceSnapshotId, snapshotId });
  }

  async deleteSnapshot(snapshotId: string): Promise<void> {
    await this.#peer.call('deleteSnapshot', { snapshotId });
  }

  async terminateInstance(instanceId: string): Promise<void> {
    await this.#peer.call('terminateInstance', { instanceId });
  }

  async consoleOutput(instanceId: string): Promise<string> {
    return (await this.#peer.call<{ output: string }>('consoleOutput', { instanceId })).output;
  }

  describeInstances(): Promise<ClusterInstanceStatus[]> {
    return this.#peer.call('describeInstances');
  }

  describeNodes(): Promise<ClusterNodeStatus[]> {
    return this.#peer.call('describeNodes');
  }

  applyFirewall(doc: FirewallDocument): Promise<FirewallPushResult> {
    return this.#peer.call('applyFirewall', { doc });
  }

  diagnoseNode(nodeId: string): Promise<NetworkDiagnosis> {
    return this.#peer.call('diagnoseNode', { nodeId });
  }

  /** The nodes that joined the zone (without their secrets). */
  listJoinedNodes(): Promise<JoinedNodeView[]> {
    return this.#peer.call('listJoinedNodes');
  }

  /** Makes the cluster forget the node's secret and stop using it. */
  async revokeNode(nodeId: string): Promise<void> {
    await this.#peer.call('revokeNode', { nodeId });
  }
}
