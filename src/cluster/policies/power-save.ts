// POWERSAVE (Eucalyptus 1.6-3.x): places exactly like greedy, so load gathers on few nodes, and
// asks the cluster controller to put nodes that stay idle to sleep (see ../power.ts); an asleep
// node is woken only when no awake node has room.
import { GreedyPolicy } from './greedy.ts';

export class PowerSavePolicy extends GreedyPolicy {
  override readonly name: string = 'power-save';
  readonly sleepsIdleNodes = true;
}
