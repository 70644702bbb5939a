// ROUNDROBIN (Eucalyptus' default from 1.6 on): the next node with room after the one chosen
// last, in name order, wrapping around once. The cursor is a node name rather than an index so
// that nodes joining or leaving the cluster do not make it skip or repeat a node.
import { compareNodes, type AllocationPolicy, type Choice, type NodeView } from '../policy.ts';

export class RoundRobinPolicy implements AllocationPolicy {
  readonly name = 'round-robin';
  private last: NodeView | undefined;

  choose(_req: unknown, candidates: readonly NodeView[]): Choice {
    const first = candidates[0];
    if (!first) return { nodeId: undefined, reason: 'no node has room' };
    const last = this.last;
    let chosen = first;
    let reason = last ? `wrapped around after ${last.name} to the first node with room` : 'first node with room';
    if (last) {
      const next = candidates.find((node) => compareNodes(node, last) > 0);
      if (next) {
        chosen = next;
        reason = `next node with room after ${last.name}`;
      }
    }
    this.last = { ...chosen };
    return { nodeId: chosen.id, reason: `${reason} (${chosen.name})` };
  }
}
