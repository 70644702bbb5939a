// Public addresses on the node: one nftables table per zone bridge, `table ip ib_nat_<bridge>`,
// replaced whole in one `nft -f` transaction whenever the zone's firewall document (which carries
// each instance's public address, set by the cloud at AssociateAddress or launch) or the bridge's
// ports change. For the instances attached here:
//
// - DNAT public -> private (prerouting, and output for the node's own connections): traffic to an
//   instance's public address reaches its private address, and then meets its security groups in
//   the forward hook as any other traffic to it does (nftables-firewall.ts).
// - SNAT private -> public (postrouting): what an instance with a public address sends out of the
//   zone network leaves with that address, so replies and outside peers see it.
// - Masquerade: every other instance's outbound traffic leaves with this node's own address on the
//   way out (the cluster's address for the outside), as Eucalyptus' managed mode did.
// - Hairpin: an instance reaching another one's public address through this node is masqueraded
//   to the gateway, so the reply comes back the way the request went.
//
// Traffic inside the zone network (between ports of the bridge, or over the zone's tunnel, which is
// a port of the bridge too) is never translated. The node does not hold the public addresses: the
// operator routes the zone's public range to its nodes (or answers ARP for it with proxy ARP), and
// DNAT in prerouting happens before the routing decision. The node must forward IPv4: apply()
// turns net.ipv4.ip_forward on (in the node's network namespace) when it has a port to serve.
import { firewallTableName } from '../network-addressing.ts';
import { HostCommandError, runCommand } from '../network-commands.ts';
import type { FirewallDocument } from './firewall-document.ts';

export interface PublicNatMapping {
  instanceId: string;
  privateIp: string;
  publicIp: string;
}

export interface PublicNatPlan {
  bridgeName: string;
  /** The zone network on the bridge and its gateway (this host's address on it). */
  cidr: string;
  gateway: string;
  /** Ports attached here that hold a public address, sorted by private address. */
  mappings: PublicNatMapping[];
  /** Whether any port is attached here (masquerade and forwarding are needed only then). */
  hasPorts: boolean;
}

/** `ib_nat_<bridge>`. */
export function publicNatTableName(bridgeName: string): string {
  return `ib_nat_${firewallTableName(bridgeName).replace(/^ib_/, '')}`;
}

/** The mappings of the ports attached here whose instance the document gives a public address. */
export function planPublicNat(bridge: { bridgeName: string; cidr: string; gateway: string }, doc: FirewallDocument | undefined,
  attached: { instanceId: string; ip: string }[]): PublicNatPlan {
  const publicOf = new Map((doc?.instances ?? []).filter((i) => i.publicIp).map((i) => [i.id, i]));
  const mappings: PublicNatMapping[] = [];
  const seenPublic = new Set<string>();
  for (const port of attached) {
    const entry = publicOf.get(port.instanceId);
    // The document's private address must be the port's: a stale document never maps a public
    // address to an address that now belongs to another instance.
    if (!entry?.publicIp || entry.ip !== port.ip || seenPublic.has(entry.publicIp)) continue;
    seenPublic.add(entry.publicIp);
    mappings.push({ instanceId: port.instanceId, privateIp: port.ip, publicIp: entry.publicIp });
  }
  const value = (ip: string) => ip.split('.').reduce((acc, p) => acc * 256 + Number(p), 0);
  mappings.sort((a, b) => value(a.privateIp) - value(b.privateIp));
  return { ...bridge, mappings, hasPorts: attached.length > 0 };
}

/** The nftables text that replaces the bridge's NAT table (deterministic for a plan). */
export function renderPublicNatTable(plan: PublicNatPlan): string {
  const table = publicNatTableName(plan.bridgeName);
  const br = JSON.stringify(plan.bridgeName);
  const dnat = plan.mappings.map((m) => `${m.publicIp} : ${m.privateIp}`).join(', ');
  const snat = plan.mappings.map((m) => `${m.privateIp} : ${m.publicIp}`).join(', ');
  const publics = plan.mappings.map((m) => m.publicIp).join(', ');
  const privates = plan.mappings.map((m) => m.privateIp).join(', ');
  const comments = plan.mappings.map((m) => `  # ${m.instanceId} ${m.privateIp} <-> ${m.publicIp}\n`).join('');
  const dnatRule = dnat ? `    ip daddr { ${publics} } dnat to ip daddr map { ${dnat} }\n` : '';
  const body = `table ip ${table} {
${comments}  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
${dnatRule}  }
  chain output {
    type nat hook output priority -100; policy accept;
${dnatRule}  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
${plan.hasPorts ? `    iifname ${br} oifname ${br} ct status dnat masquerade\n` : ''}${snat ? `    iifname ${br} oifname != ${br} ip saddr { ${privates} } ip daddr != ${plan.cidr} snat to ip saddr map { ${snat} }\n` : ''}${plan.hasPorts ? `    iifname ${br} oifname != ${br} ip saddr ${plan.cidr} ip daddr != ${plan.cidr} masquerade\n` : ''}  }
}
`;
  // Declaring, deleting and re-creating the table in one transaction replaces it atomically.
  return `table ip ${table} {}\ndelete table ip ${table}\n${body}`;
}

export class PublicNat {
  private forwardingOn = false;

  /** `netns`: the named network namespace that plays the host, or the real host when absent. */
  constructor(private readonly netns?: string) {}

  /** Turns IPv4 forwarding on (once) when the plan has a port to serve. */
  async prepare(plan: PublicNatPlan): Promise<void> {
    if (plan.hasPorts && !this.forwardingOn) {
      await runCommand('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1'], { netns: this.netns });
      this.forwardingOn = true;
    }
  }

  async remove(bridgeName: string): Promise<void> {
    try {
      await runCommand('nft', ['delete', 'table', 'ip', publicNatTableName(bridgeName)], { netns: this.netns });
    } catch (e) {
      if (!(e instanceof HostCommandError && /No such file or directory/.test(e.stderr))) throw e;
    }
  }
}
