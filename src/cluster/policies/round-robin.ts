// ROUNDROBIN (Eucalyptus' default from 1.6 on): the next node with room after the one chosen
// last, in name order, wrapping around once. The cursor is a node name rather than an index so
// that nodes joining or leaving the cluster do not make it skip or repeat a node.
import { compareNodes, type AllocationPolicy, type Choice, type NodeKey, type NodeView } from '../policy.ts';

export class RoundRobinPolicy implements AllocationPolicy {
  readonly name = 'round-robin';
  private last: NodeKey | undefined;

  choose(_req: unknown, candidates: readonly NodeView[]): Choice {
    if (candidates.length === 0) return { nodeId: undefined, reason: 'no node has room' };
    const last = this.last;
    let chosen = candidates[0]!;
    let reason = 'first node with room';
    if (last) {
      const next = firstAfter(candidates, last);
      if (next) {
        chosen = next;
        reason = `next node with room after ${last.name}`;
      } else {
        reason = `wrapped around after ${last.name} to the first node with room`;
      }
    }
    this.last = { name: chosen.name, id: chosen.id };
    return { nodeId: chosen.id, reason: `${reason} (${chosen.name})` };
  }
}

/** Binary search over candidates, which the scheduler hands over in name order. */
function firstAfter(candidates: readonly NodeView[], key: NodeKey): NodeView | undefined {
  let lo = 0;
  let hi = candidates.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareNodes(candidates[mid]!, key) > 0) hi = mid;
    else lo = mid + 1;
  }
  return candidates[lo];
}
