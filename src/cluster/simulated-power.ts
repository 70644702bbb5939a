// Sleep and wake for simulated nodes (the fake driver under `ironbark up`), where there is no
// host to suspend and no shell command to run: an asleep node stops answering its cluster, as a
// suspended host does, until it is woken. This is what lets one machine show the power-save policy
// at work across many nodes; real hosts use the operator's commands (power.ts' ShellPowerSwitch).
import type { NodeApi } from '../node/node-api.ts';
import type { NodeView } from './policy.ts';
import type { PowerSwitch } from './power.ts';

export class SimulatedNodeAsleepError extends Error {
  constructor(nodeId: string) {
    super(`simulated node ${nodeId} is asleep`);
    this.name = 'SimulatedNodeAsleepError';
  }
}

export class SimulatedPower implements PowerSwitch {
  readonly canSleep = true;
  readonly canWake = true;
  readonly #asleep = new Set<string>();

  isAsleep(nodeId: string): boolean {
    return this.#asleep.has(nodeId);
  }

  /** The node as its cluster reaches it: while it sleeps, every call fails as an unreachable host's would. */
  connect(nodeId: string, node: NodeApi): NodeApi {
    return new Proxy(node, {
      get: (target, property) => {
        const value = Reflect.get(target, property, target);
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          if (this.#asleep.has(nodeId)) return Promise.reject(new SimulatedNodeAsleepError(nodeId));
          return value.apply(target, args);
        };
      },
    });
  }

  async switchNode(action: 'sleep' | 'wake', node: NodeView): Promise<{ command: string; error?: string }> {
    if (action === 'sleep') this.#asleep.add(node.id);
    else this.#asleep.delete(node.id);
    return { command: `simulated ${action} of ${node.name}` };
  }
}
