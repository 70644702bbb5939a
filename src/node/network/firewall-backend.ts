// The seam between a zone network and the host's packet filter: a plan in (security-group-plan.ts),
// the host's rules made to match it. NftablesFirewall is the real one; RecordingFirewall keeps the
// plans it was given, for unit tests that must not touch the host.
import type { BridgeFirewallPlan } from './security-group-plan.ts';

export interface FirewallBackend {
  /** Makes the bridge's security-group and VPC-isolation rules what the plan says, atomically. */
  apply(plan: BridgeFirewallPlan): Promise<void>;
  /** Removes the bridge's rules; a no-op when there are none. */
  remove(bridgeName: string): Promise<void>;
}

export class RecordingFirewall implements FirewallBackend {
  readonly applied: BridgeFirewallPlan[] = [];
  readonly removed: string[] = [];

  async apply(plan: BridgeFirewallPlan): Promise<void> {
    this.applied.push(plan);
  }

  async remove(bridgeName: string): Promise<void> {
    this.removed.push(bridgeName);
  }

  /** The last plan applied to `bridgeName`, if any. */
  last(bridgeName?: string): BridgeFirewallPlan | undefined {
    return [...this.applied].reverse().find((p) => bridgeName === undefined || p.bridgeName === bridgeName);
  }
}
