// The seam between a zone network and the host's packet filter: a plan in (security-group-plan.ts),
// the host's rules made to match it. NftablesFirewall is the real one; RecordingFirewall keeps the
// plans it was given, for unit tests that must not touch the host.
//
// A backend renders its part of the bridge's nftables script: the zone network (network.ts) joins it
// with its other tables (anti-spoofing, NAT, metadata, tunnel) and loads them all in one `nft -f`
// transaction per update, so an update is one command and the host never holds half of one.
import type { BridgeFirewallPlan } from './security-group-plan.ts';

export interface FirewallBackend {
  /** What the host needs before the rules mean anything (once per bridge set-up; the bridge exists). */
  prepare(bridgeName: string): Promise<void>;
  /** The nftables text that makes the bridge's security-group and VPC-isolation tables what the plan says. */
  render(plan: BridgeFirewallPlan): string;
  /** Removes the bridge's rules; a no-op when there are none. */
  remove(bridgeName: string): Promise<void>;
}

export class RecordingFirewall implements FirewallBackend {
  readonly applied: BridgeFirewallPlan[] = [];
  readonly removed: string[] = [];

  async prepare(): Promise<void> {}

  render(plan: BridgeFirewallPlan): string {
    this.applied.push(plan);
    return '';
  }

  async remove(bridgeName: string): Promise<void> {
    this.removed.push(bridgeName);
  }

  /** The last plan applied to `bridgeName`, if any. */
  last(bridgeName?: string): BridgeFirewallPlan | undefined {
    return [...this.applied].reverse().find((p) => bridgeName === undefined || p.bridgeName === bridgeName);
  }
}
