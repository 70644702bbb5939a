// Which node runs which instance, indexed both ways: a node's report is reconciled against that
// node's instances only, so a poll round stays linear in the number of instances at 1,000 nodes.
export class PlacementIndex {
  private readonly nodeOf = new Map<string, string>();
  private readonly byNode = new Map<string, Set<string>>();

  get(instanceId: string): string | undefined { return this.nodeOf.get(instanceId); }

  has(instanceId: string): boolean { return this.nodeOf.has(instanceId); }

  set(instanceId: string, nodeId: string): void {
    const previous = this.nodeOf.get(instanceId);
    if (previous === nodeId) return;
    if (previous !== undefined) this.byNode.get(previous)?.delete(instanceId);
    this.nodeOf.set(instanceId, nodeId);
    let set = this.byNode.get(nodeId);
    if (!set) this.byNode.set(nodeId, set = new Set());
    set.add(instanceId);
  }

  delete(instanceId: string): void {
    const nodeId = this.nodeOf.get(instanceId);
    if (nodeId === undefined) return;
    this.nodeOf.delete(instanceId);
    const set = this.byNode.get(nodeId);
    set?.delete(instanceId);
    if (set?.size === 0) this.byNode.delete(nodeId);
  }

  /** A copy, so callers may delete while they walk it. */
  onNode(nodeId: string): string[] { return [...(this.byNode.get(nodeId) ?? [])]; }
}
