// Security groups and VPC isolation of one zone bridge, in nftables. Two tables per bridge, both
// named with Ironbark's prefix and replaced whole in one `nft -f` transaction:
//
// - `table ip ib_sg_<bridge>`: the security groups. Bridged IPv4 between instances reaches the IP
//   hooks because the bridge has `nf_call_iptables` on (br_netfilter), which also gives conntrack:
//   `ct state established,related` is accepted first, so replies to allowed traffic pass and only
//   new connections meet the rules, as in EC2 (a revoked rule stops new connections; established
//   ones carry on). Traffic from an instance meets its egress chain (`out_<tap>`: `return` when a
//   rule of one of its groups allows it, else drop); traffic to an instance meets its ingress chain
//   (`in_<tap>`: accept when allowed, else drop). Forwarded traffic meets both, the sender's egress
//   and the receiver's ingress; traffic to and from this host (the gateway) meets one. Instances are
//   told apart by address: the anti-spoofing table (network-antispoof.ts) already guarantees that a
//   port only sends from its own address. A group named as a peer is a named set of its members'
//   addresses (`g_<group>`), so a rule that allows a group of thousands is still one lookup. DHCP
//   (to and from dnsmasq), the zone's name service (the gateway's port 53, UDP and TCP, dns-service.ts) and
//   the metadata service (169.254.169.254:80, also once redirected to the gateway, metadata-port.ts)
//   are allowed before any rule: no group can take them away, as in EC2. ARP is not IP and is never touched here.
//
// - `table bridge ib_vpc_<bridge>`: isolation between accounts. Every account's default VPC uses
//   the zone's one range on the zone's one bridge (addresses are unique in the zone, see
//   src/cloud/ip-allocation.ts), so instead of a bridge per VPC each port is tagged with its VPC:
//   a frame that comes in on a port of VPC A may leave only through ports of VPC A (or reach this
//   host: gateway, DHCP, metadata). That holds for every frame, ARP and broadcasts included, so an
//   instance never even learns the MAC of another account's instance. The one other way between
//   two ports is through this host, routed back into the bridge by the gateway; instances of one
//   VPC never need it (they share the link), so a frame from an instance to this host that is
//   addressed to the zone range, other than the gateway itself, is dropped (bridge input hook).
//   This costs one chain per VPC with ports here, whatever the size of the VPC elsewhere.
import { access } from 'node:fs/promises';
import { firewallTableName } from '../network-addressing.ts';
import { HostCommandError, runCommand } from '../network-commands.ts';
import type { FirewallBackend } from './firewall-backend.ts';
import type { FirewallRule } from './firewall-document.ts';
import type { BridgeFirewallPlan } from './security-group-plan.ts';

/** Where guests find the instance metadata service (the same as network.ts' METADATA_ADDRESS). */
const METADATA_ADDRESS = '169.254.169.254';

/** `ib_sg_<bridge>` (ip family) and `ib_vpc_<bridge>` (bridge family). */
export function securityGroupTableNames(bridgeName: string): { sg: string; vpc: string } {
  const rest = firewallTableName(bridgeName).replace(/^ib_/, '');
  return { sg: `ib_sg_${rest}`, vpc: `ib_vpc_${rest}` };
}

const ident = (text: string) => text.replace(/[^A-Za-z0-9_]/g, '_');
const groupSet = (groupId: string) => `g_${ident(groupId)}`;
const vpcChain = (vpcId: string) => `v_${ident(vpcId)}`;
const ingressChain = (tapName: string) => `in_${ident(tapName)}`;
const egressChain = (tapName: string) => `out_${ident(tapName)}`;
/** The isolation chain of ports whose VPC is not known yet (no VPC id makes this name: they all start `vpc-`). */
const NO_VPC_CHAIN = 'v_unknown';

function portRange(from: number, to: number): string {
  return from === to ? String(from) : `${from}-${to}`;
}

/** The match part of one rule (empty: all traffic from or to anywhere). `peer` is saddr for ingress, daddr for egress. */
export function ruleMatch(rule: FirewallRule, peer: 'saddr' | 'daddr'): string {
  const parts: string[] = [];
  if (rule.group !== undefined) parts.push(`ip ${peer} @${groupSet(rule.group)}`);
  else if (rule.cidr !== undefined && rule.cidr !== '0.0.0.0/0') parts.push(`ip ${peer} ${rule.cidr}`);
  const from = rule.fromPort ?? -1;
  const to = rule.toPort ?? -1;
  switch (rule.protocol) {
    case '-1':
      break;
    case 'tcp':
    case 'udp':
      parts.push(from <= 0 && to >= 65535 ? `meta l4proto ${rule.protocol}` : `${rule.protocol} dport ${portRange(from, to)}`);
      break;
    case 'icmp':
      if (from === -1) parts.push('meta l4proto icmp');
      else parts.push(to === -1 ? `icmp type ${from}` : `icmp type ${from} icmp code ${to}`);
      break;
    default:
      parts.push(`meta l4proto ${Number(rule.protocol)}`);
  }
  return parts.join(' ');
}

function line(match: string, verdict: string): string {
  return `    ${match ? `${match} ` : ''}${verdict}\n`;
}

function addressSet(name: string, addresses: string[]): string {
  const elements = addresses.length ? ` elements = { ${addresses.join(', ')} };` : '';
  return `  set ${name} { type ipv4_addr;${elements} }\n`;
}

/** The nftables text that replaces both tables of the plan's bridge (deterministic for a plan). */
export function renderSecurityGroupTables(plan: BridgeFirewallPlan): string {
  const { sg, vpc } = securityGroupTableNames(plan.bridgeName);
  const br = JSON.stringify(plan.bridgeName);
  const ports = plan.ports;
  const egressMap = ports.map((p) => `${p.ip} : jump ${egressChain(p.tapName)}`).join(', ');
  const ingressMap = ports.map((p) => `${p.ip} : jump ${ingressChain(p.tapName)}`).join(', ');

  let sets = '';
  for (const [id, members] of plan.groupMembers) sets += addressSet(groupSet(id), members);

  let perPort = '';
  for (const p of ports) {
    let egress = '';
    let ingress = '';
    const seen = { in: new Set<string>(), out: new Set<string>() };
    for (const groupId of p.groups) {
      const rules = plan.groups.get(groupId);
      for (const r of rules?.egress ?? []) {
        const m = ruleMatch(r, 'daddr');
        if (!seen.out.has(m)) egress += line(m, 'return');
        seen.out.add(m);
      }
      for (const r of rules?.ingress ?? []) {
        const m = ruleMatch(r, 'saddr');
        if (!seen.in.has(m)) ingress += line(m, 'accept');
        seen.in.add(m);
      }
    }
    perPort += `  chain ${egressChain(p.tapName)} {\n    # ${p.instanceId} ${p.ip}: egress of ${p.groups.join(' ') || 'no group'}\n${egress}    drop\n  }\n`;
    perPort += `  chain ${ingressChain(p.tapName)} {\n    # ${p.instanceId} ${p.ip}: ingress of ${p.groups.join(' ') || 'no group'}\n${ingress}    drop\n  }\n`;
  }

  const ipTable = `table ip ${sg} {
${sets}  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname != ${br} oifname != ${br} accept
    ct state established,related accept
${egressMap ? `    iifname ${br} ip saddr vmap { ${egressMap} }\n` : ''}${ingressMap ? `    oifname ${br} ip daddr vmap { ${ingressMap} }\n` : ''}  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname != ${br} accept
    ct state established,related accept
    udp sport 68 udp dport 67 accept
    ip daddr ${plan.gateway} meta l4proto { tcp, udp } th dport 53 accept
    ct original ip daddr ${METADATA_ADDRESS} tcp dport 80 accept
${egressMap ? `    ip saddr vmap { ${egressMap} }\n` : ''}  }
  chain output {
    type filter hook output priority filter; policy accept;
    oifname != ${br} accept
    ct state established,related accept
    udp sport 67 udp dport 68 accept
${ingressMap ? `    ip daddr vmap { ${ingressMap} }\n` : ''}  }
${perPort}}
`;

  const byVpc = new Map<string, string[]>();
  for (const p of ports) if (p.vpcId) byVpc.set(p.vpcId, [...(byVpc.get(p.vpcId) ?? []), p.tapName]);
  const vpcIds = [...byVpc.keys()].sort();
  // A port whose VPC is not known yet (attached without a firewall context, the document silent on
  // it) shares its link with nobody: it reaches this host (DHCP, DNS, metadata) and no other port.
  const dispatch = ports.map((p) => `${JSON.stringify(p.tapName)} : jump ${p.vpcId ? vpcChain(p.vpcId) : NO_VPC_CHAIN}`).join(', ');
  const vpcChains = vpcIds.map((id) => {
    const taps = byVpc.get(id)!.map((t) => JSON.stringify(t)).join(', ');
    return `  chain ${vpcChain(id)} {\n    oifname "ibtap-*" oifname != { ${taps} } drop\n  }\n`;
  }).join('') + (ports.some((p) => !p.vpcId) ? `  chain ${NO_VPC_CHAIN} {\n    oifname "ibtap-*" drop\n  }\n` : '');
  const allTaps = ports.map((p) => JSON.stringify(p.tapName)).join(', ');
  const bridgeTable = `table bridge ${vpc} {
  chain forward {
    type filter hook forward priority filter; policy accept;
${dispatch ? `    iifname vmap { ${dispatch} }\n` : ''}  }
  chain input {
    type filter hook input priority filter; policy accept;
${allTaps ? `    iifname { ${allTaps} } ether type ip ip daddr ${plan.cidr} ip daddr != ${plan.gateway} drop\n` : ''}  }
${vpcChains}}
`;
  // Declaring, deleting and re-creating each table in one transaction replaces it atomically.
  return `table ip ${sg} {}\ndelete table ip ${sg}\n${ipTable}table bridge ${vpc} {}\ndelete table bridge ${vpc}\n${bridgeTable}`;
}

const BRIDGE_NETFILTER = '/proc/sys/net/bridge/bridge-nf-call-iptables';

export class NftablesFirewall implements FirewallBackend {
  private bridgeNetfilterChecked = false;

  /** `netns`: the named network namespace that plays the host, or the real host when absent. */
  constructor(private readonly netns?: string) {}

  prepare(bridgeName: string): Promise<void> {
    return this.ensureBridgeNetfilter(bridgeName);
  }

  render(plan: BridgeFirewallPlan): string {
    return renderSecurityGroupTables(plan);
  }

  async remove(bridgeName: string): Promise<void> {
    const { sg, vpc } = securityGroupTableNames(bridgeName);
    for (const [family, table] of [['ip', sg], ['bridge', vpc]] as const) {
      try {
        await runCommand('nft', ['delete', 'table', family, table], { netns: this.netns });
      } catch (e) {
        if (!(e instanceof HostCommandError && /No such file or directory/.test(e.stderr))) throw e;
      }
    }
  }

  /**
   * Bridged frames reach the IP hooks (and conntrack) only through br_netfilter, turned on for this
   * bridge alone (`nf_call_iptables`), so other bridges of the host are left as they are. Without
   * the module the rules would silently filter nothing: that is an error, not a warning.
   */
  private async ensureBridgeNetfilter(bridgeName: string): Promise<void> {
    if (!this.bridgeNetfilterChecked) {
      if (!(await exists(BRIDGE_NETFILTER))) {
        await runCommand('modprobe', ['br_netfilter']).catch(() => undefined);
        if (!(await exists(BRIDGE_NETFILTER))) {
          throw new HostCommandError(['modprobe', 'br_netfilter'], null,
            'security groups need the br_netfilter kernel module (bridged traffic must reach the IP firewall); load it with `modprobe br_netfilter`');
        }
      }
      this.bridgeNetfilterChecked = true;
    }
    await runCommand('ip', ['link', 'set', 'dev', bridgeName, 'type', 'bridge', 'nf_call_iptables', '1'], { netns: this.netns });
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}
