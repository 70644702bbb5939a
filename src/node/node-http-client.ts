// NodeApi over HTTP: how a cluster controller on another host drives a node controller. Calls are
// signed with the node's secret; a node that does not answer in time fails with Unavailable.
import type { InstanceMetadataOptions, InstanceSpec, InstanceUpdate, NodeApi, NodeInstanceStatus, NodeResources, NodeVolumeAttachment } from './node-api.ts';
import type { FirewallApplyResult, FirewallDocument } from './network/firewall-document.ts';
import type { NetworkDiagnosis } from './network/diagnosis.ts';
import type { ZonePeers } from './network/overlay.ts';
import { PeerClient } from '../auth/peer-rpc.ts';

export interface NodeHttpClientOptions {
  nodeId: string;
  /** Base URL the node advertised when it joined, e.g. http://172.30.0.11:8775. */
  url: string;
  /** The node's secret, read per call: undefined once the node is revoked. */
  secret: () => string | undefined;
  timeoutMs?: number;
  /** How long runInstance may take: the node may first fetch the image. */
  runTimeoutMs?: number;
}

export class NodeHttpClient implements NodeApi {
  readonly nodeId: string;
  readonly #peer: PeerClient;

  constructor(opts: NodeHttpClientOptions) {
    this.nodeId = opts.nodeId;
    const runTimeoutMs = opts.runTimeoutMs ?? 10 * 60_000;
    this.#peer = new PeerClient({
      baseUrl: opts.url,
      peerName: `node ${opts.nodeId}`,
      credentials: () => {
        const secret = opts.secret();
        return secret === undefined ? undefined : { keyId: opts.nodeId, secret };
      },
      timeoutMs: opts.timeoutMs,
      timeoutsMs: { runInstance: runTimeoutMs, startInstance: runTimeoutMs, stopInstance: 2 * 60_000, terminateInstance: 2 * 60_000, rebootInstance: 2 * 60_000, attachVolume: 2 * 60_000, detachVolume: 2 * 60_000 },
    });
  }

  get url(): string {
    return this.#peer.baseUrl;
  }

  describeResources(): Promise<NodeResources> {
    return this.#peer.call('describeResources');
  }

  describeInstances(): Promise<NodeInstanceStatus[]> {
    return this.#peer.call('describeInstances');
  }

  runInstance(spec: InstanceSpec): Promise<NodeInstanceStatus> {
    return this.#peer.call('runInstance', { spec });
  }

  startInstance(instanceId: string, update?: InstanceUpdate): Promise<NodeInstanceStatus> {
    return this.#peer.call('startInstance', { instanceId, update });
  }

  stopInstance(instanceId: string, force?: boolean): Promise<NodeInstanceStatus> {
    return this.#peer.call('stopInstance', { instanceId, force });
  }

  async rebootInstance(instanceId: string): Promise<void> {
    await this.#peer.call('rebootInstance', { instanceId });
  }

  async terminateInstance(instanceId: string): Promise<void> {
    await this.#peer.call('terminateInstance', { instanceId });
  }

  async consoleOutput(instanceId: string): Promise<string> {
    return (await this.#peer.call<{ output: string }>('consoleOutput', { instanceId })).output;
  }

  async setMetadataOptions(instanceId: string, options: InstanceMetadataOptions): Promise<void> {
    await this.#peer.call('setMetadataOptions', { instanceId, options });
  }

  async attachVolume(instanceId: string, attachment: NodeVolumeAttachment): Promise<void> {
    await this.#peer.call('attachVolume', { instanceId, attachment });
  }

  async detachVolume(instanceId: string, volumeId: string, force?: boolean): Promise<void> {
    await this.#peer.call('detachVolume', { instanceId, volumeId, force });
  }

  applyFirewall(doc: FirewallDocument): Promise<FirewallApplyResult> {
    return this.#peer.call('applyFirewall', { doc });
  }

  async setZonePeers(peers: ZonePeers): Promise<void> {
    await this.#peer.call('setZonePeers', { peers });
  }

  diagnoseNetwork(): Promise<NetworkDiagnosis> {
    return this.#peer.call('diagnoseNetwork', {});
  }
}
