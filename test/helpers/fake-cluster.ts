// An in-memory ClusterApi for cloud controller tests: records every call, keeps instances in
// the states a real cluster would report, moves them along when told (or at once with
// `autoProgress`), refuses launches beyond its capacity, and can be made unreachable.
import type { ClusterApi, ClusterInstanceStatus, ClusterNodeStatus, Placement } from '../../src/cluster/cluster-api.ts';
import type { InstanceSpec, NodeInstanceState } from '../../src/node/node-api.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';

export interface FakeInstance {
  spec: InstanceSpec;
  state: NodeInstanceState;
  nodeId: string;
  reason?: string;
  since: string;
}

export interface FakeClusterOptions {
  /** How many instances (of any type) fit; beyond it runInstances refuses with InsufficientInstanceCapacity. */
  capacity?: number;
  /** Finish every transition at once (pending → running, stopping → stopped, shutting-down → gone). */
  autoProgress?: boolean;
  nodeId?: string;
}

export class FakeCluster implements ClusterApi {
  readonly zone: string;
  readonly calls: { method: string; args: unknown[] }[] = [];
  readonly instances = new Map<string, FakeInstance>();
  readonly consoles = new Map<string, string>();
  capacity: number;
  autoProgress: boolean;
  nodeId: string;
  /** While true every call fails as an unreachable cluster would. */
  unreachable = false;
  nodeDown = false;

  constructor(zone: string, opts: FakeClusterOptions = {}) {
    this.zone = zone;
    this.capacity = opts.capacity ?? Number.POSITIVE_INFINITY;
    this.autoProgress = opts.autoProgress ?? false;
    this.nodeId = opts.nodeId ?? `node-${zone}`;
  }

  callsTo(method: string): unknown[][] {
    return this.calls.filter((c) => c.method === method).map((c) => c.args);
  }

  #record(method: string, ...args: unknown[]): void {
    this.calls.push({ method, args });
    if (this.unreachable) throw new Error(`connect ECONNREFUSED (cluster ${this.zone})`);
  }

  #live(): number {
    return [...this.instances.values()].filter((i) => i.state !== 'terminated').length;
  }

  #set(id: string, state: NodeInstanceState, reason?: string): void {
    const inst = this.instances.get(id);
    if (!inst) return;
    inst.state = state;
    inst.reason = reason;
    inst.since = new Date().toISOString();
  }

  async runInstances(specs: InstanceSpec[]): Promise<Placement[]> {
    this.#record('runInstances', specs);
    if (this.#live() + specs.length > this.capacity) {
      throw new Ec2Error('InsufficientInstanceCapacity',
        `We currently do not have sufficient ${specs[0]?.vmType.name} capacity in the Availability Zone you requested (${this.zone}).`);
    }
    for (const spec of specs) {
      this.instances.set(spec.instanceId, { spec, state: this.autoProgress ? 'running' : 'pending', nodeId: this.nodeId, since: new Date().toISOString() });
    }
    return specs.map((s) => ({ instanceId: s.instanceId, nodeId: this.nodeId }));
  }

  async startInstance(instanceId: string): Promise<void> {
    this.#record('startInstance', instanceId);
    if (this.instances.get(instanceId)?.state === 'stopped') this.#set(instanceId, this.autoProgress ? 'running' : 'pending');
  }

  async stopInstance(instanceId: string, force?: boolean): Promise<void> {
    this.#record('stopInstance', instanceId, force);
    const state = this.instances.get(instanceId)?.state;
    if (state === 'running' || state === 'pending') this.#set(instanceId, this.autoProgress ? 'stopped' : 'stopping');
  }

  async rebootInstance(instanceId: string): Promise<void> {
    this.#record('rebootInstance', instanceId);
  }

  async terminateInstance(instanceId: string): Promise<void> {
    this.#record('terminateInstance', instanceId);
    if (!this.instances.has(instanceId)) return;
    if (this.autoProgress) this.instances.delete(instanceId);
    else this.#set(instanceId, 'shutting-down');
  }

  async consoleOutput(instanceId: string): Promise<string> {
    this.#record('consoleOutput', instanceId);
    if (!this.instances.has(instanceId)) throw new Error(`instance ${instanceId} is not on this cluster`);
    return this.consoles.get(instanceId) ?? '';
  }

  async describeInstances(): Promise<ClusterInstanceStatus[]> {
    this.#record('describeInstances');
    return [...this.instances.entries()].map(([instanceId, i]) => ({
      instanceId, state: i.state, nodeId: i.nodeId, since: i.since, accelerator: 'tcg',
      ...(i.reason ? { reason: i.reason } : {}),
      ...(this.nodeDown ? { nodeDown: true } : {}),
    }));
  }

  async describeNodes(): Promise<ClusterNodeStatus[]> {
    this.#record('describeNodes');
    const free = Number.isFinite(this.capacity) ? Math.max(0, this.capacity - this.#live()) : 1_000_000;
    const total = Number.isFinite(this.capacity) ? this.capacity : 1_000_000;
    // One slot is one m1.small (1 core, 256 MiB, 5 GiB).
    return [{
      nodeId: this.nodeId, name: this.nodeId, address: '127.0.0.1', state: this.nodeDown ? 'down' : 'up',
      hypervisor: 'fake', accelerator: 'tcg',
      capacity: { cores: total, memoryMiB: total * 256, diskGiB: total * 5 },
      free: { cores: free, memoryMiB: free * 256, diskGiB: free * 5 },
      instanceCount: this.#live(),
    }];
  }

  // ---- what tests use to move the simulated world along ----

  /** Finishes every transition in progress, as the nodes would. */
  progress(): void {
    for (const [id, inst] of this.instances) {
      if (inst.state === 'pending') this.#set(id, 'running');
      else if (inst.state === 'stopping') this.#set(id, 'stopped');
      else if (inst.state === 'shutting-down') this.instances.delete(id);
    }
  }

  setState(instanceId: string, state: NodeInstanceState, reason?: string): void {
    this.#set(instanceId, state, reason);
  }

  /** The cluster loses track of the instance (its node was wiped, say). */
  forget(instanceId: string): void {
    this.instances.delete(instanceId);
  }
}
