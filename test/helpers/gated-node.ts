// A node agent as a cluster reaches it, with every call passing a gate the test controls: a node
// that stops answering, is suspended, or refuses launches.
import type { NodeAgent } from '../../src/node/node-agent.ts';
import type { InstanceSpec, InstanceUpdate, NodeApi, NodeInstanceStatus, NodeResources } from '../../src/node/node-api.ts';

export abstract class GatedNode implements NodeApi {
  constructor(readonly agent: NodeAgent) {}
  protected abstract gate<T>(call: () => Promise<T>): Promise<T>;
  describeResources(): Promise<NodeResources> { return this.gate(() => this.agent.describeResources()); }
  describeInstances(): Promise<NodeInstanceStatus[]> { return this.gate(() => this.agent.describeInstances()); }
  runInstance(spec: InstanceSpec): Promise<NodeInstanceStatus> { return this.gate(() => this.agent.runInstance(spec)); }
  startInstance(id: string, update?: InstanceUpdate) { return this.gate(() => this.agent.startInstance(id, update)); }
  stopInstance(id: string, force?: boolean) { return this.gate(() => this.agent.stopInstance(id, force)); }
  rebootInstance(id: string) { return this.gate(() => this.agent.rebootInstance(id)); }
  terminateInstance(id: string) { return this.gate(() => this.agent.terminateInstance(id)); }
  consoleOutput(id: string) { return this.gate(() => this.agent.consoleOutput(id)); }
}
