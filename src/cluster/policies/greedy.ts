// GREEDY (Eucalyptus' schedule_instance_greedy): the first node in name order that has room,
// preferring awake nodes; an asleep node is taken only when no awake node fits, so nodes fill
// up one after another and the rest can stay asleep.
import { isAwake, type AllocationPolicy, type Choice, type NodeView } from '../policy.ts';

export function chooseFirstAwakeThenAsleep(candidates: readonly NodeView[]): Choice {
  for (const node of candidates) {
    if (isAwake(node.state)) return { nodeId: node.id, reason: `first node in name order with room (${node.name})` };
  }
  const asleep = candidates[0];
  if (!asleep) return { nodeId: undefined, reason: 'no node has room' };
  return { nodeId: asleep.id, reason: `no awake node has room; waking ${asleep.name}, the first asleep node with room` };
}

export class GreedyPolicy implements AllocationPolicy {
  readonly name: string = 'greedy';
  readonly wakesSleepingNodes = true;

  choose(_req: unknown, candidates: readonly NodeView[]): Choice {
    return chooseFirstAwakeThenAsleep(candidates);
  }
}
