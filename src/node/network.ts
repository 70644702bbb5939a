// A node host's side of a zone's private network: one Linux bridge per zone network that carries
// the zone gateway address and the metadata address, one tap per instance enslaved to it, DHCP
// reservations served by dnsmasq, per-port anti-spoofing rules, and the security groups and VPC
// isolation of the instances' ports (network/nftables-firewall.ts, from the zone's firewall
// document). Every piece is named with Ironbark's `ib` prefix, recorded in a state file, and
// rebuilt from that file after a crash.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Ec2Error } from '../protocol/errors.ts';
import { ipJson, runCommand } from './network-commands.ts';
import { writeFileAtomic } from './network-files.ts';
import { DhcpServer } from './dhcp.ts';
import { renderAntiSpoofTable, removeAntiSpoofTable } from './network-antispoof.ts';
import type { FirewallBackend } from './network/firewall-backend.ts';
import type { FirewallDocument } from './network/firewall-document.ts';
import { NftablesFirewall } from './network/nftables-firewall.ts';
import { PublicNat, planPublicNat, publicNatTableName, renderPublicNatTable } from './network/public-nat.ts';
import { ZoneOverlay, renderOverlayTables, type OverlayInstance } from './network/overlay.ts';
import { metadataTableNames, removeMetadataTables, renderMetadataTables } from './network/metadata-port.ts';
import { securityGroupTableNames } from './network/nftables-firewall.ts';
import type { WantedItem } from './network/diagnosis.ts';
import { planBridgeFirewall, type FirewallPort } from './network/security-group-plan.ts';
import {
  allocateMac,
  assertIbInterfaceName,
  bridgeNameForZone,
  firewallTableName,
  isAssignableHost,
  isValidMac,
  parseCidr,
  tapNameForInstance,
  type Ipv4Range,
} from './network-addressing.ts';

export { allocateMac } from './network-addressing.ts';

/** Where guests find the instance metadata service, as on EC2. */
export const METADATA_ADDRESS = '169.254.169.254';

export interface NodeNetworkOptions {
  zone: string;
  cidr: string;
  bridgeName?: string;
  stateDir: string;
  /** Named network namespace (from `ip netns add`) that plays the host; the real host when absent. */
  netns?: string;
  /** DNS servers handed to guests by DHCP; none when absent. */
  dnsServers?: string[];
  /** Security groups and VPC isolation (network/nftables-firewall.ts); nftables in `netns` by default. */
  firewall?: FirewallBackend;
  /**
   * Leave 169.254.169.254 off the bridge (the host's own metadata route stays as it was) and
   * redirect guests' requests to the service on the gateway address, port 80 (network/metadata-port.ts).
   */
  metadataDnat?: boolean;
}

/** What the firewall needs to know of a port: the instance's VPC and security groups (from its launch spec). */
export interface PortFirewallContext {
  vpcId: string;
  groups: string[];
}

export interface InstancePort {
  mac: string;
  ip: string;
  tapName: string;
  /** The launch spec's VPC and groups (every instance the node agent runs); without it the port is closed until the document names it. */
  firewall?: PortFirewallContext;
}

interface NetworkState {
  zone: string;
  cidr: string;
  bridgeName: string;
  instances: Record<string, InstancePort>;
  /** The zone's other nodes, as the cluster last told them (network/overlay.ts); absent: no tunnel. */
  overlayPeers?: string[];
}

interface IpLink {
  ifname: string;
  master?: string;
  address?: string;
  flags?: string[];
  linkinfo?: { info_kind?: string };
}

interface IpAddress {
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

/** Link kinds accepted as an instance port: the hypervisor's tap, or a veth for a container/namespace guest. */
const PORT_KINDS = new Set(['tun', 'veth']);

export class NodeNetwork {
  readonly zone: string;
  readonly bridgeName: string;
  readonly range: Ipv4Range;
  readonly netns: string | undefined;
  readonly firewallTable: string;
  readonly dhcp: DhcpServer;
  private readonly firewall: FirewallBackend;
  /** Public addresses (DNAT/SNAT) and the masquerade of the instances attached here (network/public-nat.ts). */
  private readonly publicNat: PublicNat;
  readonly overlay: ZoneOverlay;
  readonly metadataDnat: boolean;
  /** The zone's firewall document as the cloud last sent it (the node agent keeps it on disk). */
  private firewallDocument: FirewallDocument | undefined;
  private readonly stateDir: string;
  private readonly statePath: string;
  private state: NetworkState | undefined;
  /** Whether the firewall's host preparation (br_netfilter on the bridge) was done since the bridge was last checked. */
  private hostPrepared = false;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: NodeNetworkOptions) {
    this.zone = opts.zone;
    this.range = parseCidr(opts.cidr);
    this.bridgeName = opts.bridgeName ?? bridgeNameForZone(opts.zone);
    assertIbInterfaceName(this.bridgeName);
    this.netns = opts.netns;
    this.stateDir = opts.stateDir;
    this.statePath = join(opts.stateDir, `${this.bridgeName}.json`);
    this.firewallTable = firewallTableName(this.bridgeName);
    this.firewall = opts.firewall ?? new NftablesFirewall(opts.netns);
    this.publicNat = new PublicNat(opts.netns);
    this.metadataDnat = opts.metadataDnat ?? false;
    this.overlay = new ZoneOverlay({ zone: opts.zone, bridgeName: this.bridgeName, gateway: this.range.gateway, netns: opts.netns });
    this.dhcp = new DhcpServer({
      bridgeName: this.bridgeName,
      range: this.range,
      stateDir: opts.stateDir,
      netns: opts.netns,
      dnsServers: opts.dnsServers,
    });
  }

  /** The gateway address on the bridge, which instances use as their default route. */
  get gateway(): string {
    return this.range.gateway;
  }

  /** Creates the bridge, addresses, firewall table and DHCP server, adopting and repairing what exists. */
  setUp(): Promise<void> {
    return this.serialized(() => this.converge());
  }

  /**
   * Attaches an instance: its tap on the bridge, its DHCP reservation, its anti-spoofing rules and,
   * with a firewall context, its security groups and VPC isolation.
   */
  addInstance(input: { instanceId: string; mac: string; ip: string; firewall?: PortFirewallContext }): Promise<{ tapName: string }> {
    return this.serialized(async () => {
      const state = await this.readyState();
      const mac = input.mac.toLowerCase();
      this.validatePort(state, input.instanceId, mac, input.ip);
      const tapName = tapNameForInstance(input.instanceId);
      const previous = state.instances[input.instanceId];
      for (const [otherId, other] of Object.entries(state.instances)) {
        if (otherId !== input.instanceId && other.tapName === tapName) {
          throw new Ec2Error('InternalError', `Instance ${input.instanceId} maps to tap ${tapName}, already used by ${otherId}.`);
        }
      }
      await this.ensurePort(tapName);
      state.instances[input.instanceId] = {
        mac, ip: input.ip, tapName,
        ...(input.firewall ? { firewall: { vpcId: input.firewall.vpcId, groups: [...input.firewall.groups] } } : {}),
      };
      await this.saveState(state);
      await this.applyFirewall(state);
      if (previous && (previous.mac !== mac || previous.ip !== input.ip)) await this.dhcp.release(previous);
      // A lease left on this address by an earlier owner would stop dnsmasq offering it to the new MAC.
      const stale = (await this.dhcp.readLeases()).find((l) => (l.ip === input.ip) !== (l.mac === mac));
      if (stale) await this.dhcp.release(stale);
      await this.dhcp.update(this.reservations(state));
      return { tapName };
    });
  }

  /** Detaches an instance and forgets its lease; a no-op for an instance that is not attached. */
  removeInstance(instanceId: string): Promise<void> {
    return this.serialized(async () => {
      const state = await this.readyState();
      const port = state.instances[instanceId];
      await this.deleteLink(port?.tapName ?? tapNameForInstance(instanceId));
      if (!port) return;
      delete state.instances[instanceId];
      await this.saveState(state);
      await this.applyFirewall(state);
      await this.dhcp.update(this.reservations(state));
      await this.dhcp.release(port);
    });
  }

  /**
   * Takes the zone's firewall document (security groups, members, each instance's groups) and
   * rebuilds the rules from it at once when the network is set up; otherwise at set-up.
   */
  setFirewallDocument(doc: FirewallDocument): Promise<void> {
    this.firewallDocument = doc;
    return this.serialized(async () => {
      if (this.state && this.firewallDocument === doc) await this.applyFirewall(this.state);
    });
  }

  /**
   * Takes the zone's other nodes from the cluster: the tunnel port floods to exactly them and takes
   * VXLAN only from them (network/overlay.ts). Kept in the state file, so a restart rebuilds it.
   */
  setOverlayPeers(peers: string[]): Promise<void> {
    return this.serialized(async () => {
      const state = await this.readyState();
      const sorted = [...new Set(peers)].sort();
      if (JSON.stringify(state.overlayPeers) === JSON.stringify(sorted)) return;
      state.overlayPeers = sorted;
      await this.overlay.ensurePort(sorted);
      await this.saveState(state);
      await this.applyFirewall(state);
    });
  }

  /** Where the metadata service listens for this bridge's guests: 169.254.169.254, or the gateway when redirected. */
  get metadataListenAddress(): string {
    return this.metadataDnat ? this.range.gateway : METADATA_ADDRESS;
  }

  /** Removes everything this network made on the host: dnsmasq, taps, tunnel, firewall tables, bridge, state. */
  tearDown(): Promise<void> {
    return this.serialized(async () => {
      const state = this.state ?? (await this.loadState());
      await this.dhcp.stop();
      await this.dhcp.removeFiles();
      await this.overlay.remove();
      await removeMetadataTables(this.bridgeName, this.netns);
      await removeAntiSpoofTable(this.firewallTable, this.netns);
      await this.publicNat.remove(this.bridgeName);
      await this.firewall.remove(this.bridgeName);
      const ports = new Set(Object.values(state?.instances ?? {}).map((p) => p.tapName));
      for (const link of await this.links(['master', this.bridgeName])) {
        if (link.ifname.startsWith('ibtap-')) ports.add(link.ifname);
      }
      for (const tapName of ports) await this.deleteLink(tapName);
      await this.deleteLink(this.bridgeName);
      await rm(this.statePath, { force: true });
      this.state = undefined;
    });
  }

  /** What this network should have on the host (network/diagnosis.ts): links, addresses, tables, DHCP, tunnel peers. */
  async wantedHostItems(): Promise<WantedItem[]> {
    const state = this.state ?? (await this.loadState());
    if (!state) return [];
    const zone = `zone ${this.zone}`;
    const items: WantedItem[] = [
      { kind: 'bridge', name: this.bridgeName, detail: zone },
      { kind: 'address', name: `${this.range.gateway}/${this.range.prefixLength} on ${this.bridgeName}`, detail: 'gateway' },
      { kind: 'dhcp-server', name: this.bridgeName, detail: zone },
      { kind: 'nftables-table', name: `bridge ${this.firewallTable}`, detail: 'anti-spoofing' },
    ];
    if (!this.metadataDnat) items.push({ kind: 'address', name: `${METADATA_ADDRESS}/32 on ${this.bridgeName}`, detail: 'metadata' });
    if (this.firewall instanceof NftablesFirewall) {
      const sg = securityGroupTableNames(this.bridgeName);
      items.push({ kind: 'nftables-table', name: `ip ${sg.sg}`, detail: 'security groups' }, { kind: 'nftables-table', name: `bridge ${sg.vpc}`, detail: 'VPC isolation' });
    }
    items.push({ kind: 'nftables-table', name: `ip ${publicNatTableName(this.bridgeName)}`, detail: 'public addresses' });
    const md = metadataTableNames(this.bridgeName);
    items.push({ kind: 'nftables-table', name: `bridge ${md.bridge}`, detail: 'metadata by port' }, { kind: 'nftables-table', name: `ip ${md.ip}`, detail: 'metadata by port' });
    for (const [instanceId, port] of Object.entries(state.instances)) items.push({ kind: 'tap', name: port.tapName, detail: instanceId });
    if (state.overlayPeers) {
      items.push({ kind: 'tunnel', name: this.overlay.tunnelName, detail: `VNI ${this.overlay.vni}` });
      items.push({ kind: 'nftables-table', name: `bridge ${this.overlay.tables.bridge}`, detail: 'zone tunnel' }, { kind: 'nftables-table', name: `ip ${this.overlay.tables.ip}`, detail: 'zone tunnel' });
      for (const peer of state.overlayPeers) items.push({ kind: 'tunnel-peer', name: `${peer} via ${this.overlay.tunnelName}` });
    }
    return items;
  }

  /** What the host has of the kinds only this network can read: its DHCP server and its tunnel's peers. */
  async presentPeculiarItems(): Promise<{ kind: string; name: string }[]> {
    const items: { kind: string; name: string }[] = [];
    if ((await this.dhcp.runningPid()) !== undefined) items.push({ kind: 'dhcp-server', name: this.bridgeName });
    for (const e of await this.overlay.floodEntries()) items.push({ kind: 'tunnel-peer', name: `${e.dst} via ${this.overlay.tunnelName}` });
    return items;
  }

  /** The VPC of an instance address of the zone: a port here, or an instance the firewall document names. */
  vpcOfAddress(ip: string): string | undefined {
    for (const port of Object.values(this.state?.instances ?? {})) if (port.ip === ip && port.firewall) return port.firewall.vpcId;
    return this.firewallDocument?.instances.find((i) => i.ip === ip)?.vpcId;
  }

  /** The attached instances, as recorded in the state file. */
  async instances(): Promise<Record<string, InstancePort>> {
    const state = this.state ?? (await this.loadState());
    return { ...(state?.instances ?? {}) };
  }

  private serialized<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async readyState(): Promise<NetworkState> {
    if (!this.state) await this.converge();
    return this.state!;
  }

  private async converge(): Promise<void> {
    await mkdir(this.stateDir, { recursive: true });
    const state = await this.adoptState();
    await this.ensureBridge();
    this.hostPrepared = false;
    await this.ensureAddresses();
    if (state.overlayPeers) await this.overlay.ensurePort(state.overlayPeers);
    const wanted = new Set<string>();
    for (const port of Object.values(state.instances)) {
      await this.ensurePort(port.tapName);
      wanted.add(port.tapName);
    }
    // Ports left behind by an instance whose removal was interrupted.
    for (const link of await this.links(['master', this.bridgeName])) {
      if (link.ifname.startsWith('ibtap-') && !wanted.has(link.ifname)) await this.deleteLink(link.ifname);
    }
    await this.applyFirewall(state);
    await this.dhcp.start(this.reservations(state));
    await this.saveState(state);
    this.state = state;
  }

  private async adoptState(): Promise<NetworkState> {
    const saved = await this.loadState();
    if (!saved) return { zone: this.zone, cidr: this.range.cidr, bridgeName: this.bridgeName, instances: {} };
    if (saved.cidr !== this.range.cidr && Object.keys(saved.instances).length > 0) {
      throw new Ec2Error(
        'InvalidParameterValue',
        `Bridge ${this.bridgeName} serves ${saved.cidr} with ${Object.keys(saved.instances).length} attached instance(s); remove them before changing it to ${this.range.cidr}.`,
      );
    }
    return { ...saved, zone: this.zone, cidr: this.range.cidr };
  }

  private async loadState(): Promise<NetworkState | undefined> {
    const text = await readFile(this.statePath, 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text) as NetworkState;
    } catch {
      throw new Ec2Error('InternalError', `Network state file ${this.statePath} is not valid JSON.`);
    }
  }

  private async saveState(state: NetworkState): Promise<void> {
    await writeFileAtomic(this.statePath, JSON.stringify(state, null, 2) + '\n');
  }

  private validatePort(state: NetworkState, instanceId: string, mac: string, ip: string): void {
    if (!/^[A-Za-z0-9-]+$/.test(instanceId)) {
      throw new Ec2Error('InvalidInstanceID.Malformed', `Invalid id: "${instanceId}"`);
    }
    if (!isValidMac(mac)) {
      throw new Ec2Error('InvalidParameterValue', `Invalid MAC address '${mac}' for ${instanceId}: expected six lower-case hex octets, unicast.`);
    }
    if (!isAssignableHost(this.range, ip)) {
      throw new Ec2Error('InvalidParameterValue', `Address ${ip} is not an assignable host address in ${this.range.cidr}.`);
    }
    for (const [otherId, other] of Object.entries(state.instances)) {
      if (otherId === instanceId) continue;
      if (other.ip === ip) throw new Ec2Error('InvalidIPAddress.InUse', `Address ${ip} is in use by ${otherId}.`);
      if (other.mac === mac) throw new Ec2Error('InvalidParameterValue', `MAC address ${mac} is in use by ${otherId}.`);
    }
  }

  private reservations(state: NetworkState): { mac: string; ip: string }[] {
    return Object.values(state.instances).map(({ mac, ip }) => ({ mac, ip }));
  }

  /**
   * Makes every nftables table of the bridge what the state and the document say: anti-spoofing,
   * public-address NAT, security groups and VPC isolation, metadata by port and, with peers, the
   * zone tunnel. All of them in one `nft -f` transaction: an update is one command, and it is taken
   * whole or not at all (the host never holds a new NAT table with old security groups).
   */
  private async applyFirewall(state: NetworkState): Promise<void> {
    // Every port is filtered. One attached without a firewall context (by an older node) has no VPC
    // and no group until the document names it: closed but for DHCP, DNS and metadata, and alone on the link.
    const filtered: FirewallPort[] = Object.entries(state.instances).map(([instanceId, port]) => (
      { instanceId, tapName: port.tapName, ip: port.ip, vpcId: port.firewall?.vpcId ?? '', groups: port.firewall?.groups ?? [] }));
    const bridge = { bridgeName: this.bridgeName, cidr: this.range.cidr, gateway: this.range.gateway };
    const natPlan = planPublicNat(bridge, this.firewallDocument, Object.entries(state.instances).map(([instanceId, p]) => ({ instanceId, ip: p.ip })));
    const plan = planBridgeFirewall(bridge, this.firewallDocument, filtered);
    const ports = Object.values(state.instances).map(({ tapName, ip }) => ({ tapName, ip }));
    let script = renderAntiSpoofTable(this.firewallTable, Object.values(state.instances))
      + renderPublicNatTable(natPlan)
      + this.firewall.render(plan)
      + renderMetadataTables({ bridgeName: this.bridgeName, ports, listen: this.metadataDnat ? this.range.gateway : undefined });
    if (state.overlayPeers) {
      // Every instance of the zone the node knows of: its own ports (with their VPC) and the document's others.
      const local = new Set(plan.ports.map((p) => p.ip));
      const instances: OverlayInstance[] = [
        ...plan.ports.filter((p) => p.vpcId).map((p) => ({ ip: p.ip, vpcId: p.vpcId, tapName: p.tapName })),
        ...(this.firewallDocument?.instances ?? []).filter((i) => !local.has(i.ip)).map((i) => ({ ip: i.ip, vpcId: i.vpcId })),
      ];
      script += renderOverlayTables({ bridgeName: this.bridgeName, gateway: this.range.gateway, peers: state.overlayPeers, instances });
    }
    if (!this.hostPrepared) {
      await this.firewall.prepare(this.bridgeName);
      this.hostPrepared = true;
    }
    await this.publicNat.prepare(natPlan);
    await runCommand('nft', ['-f', '-'], { netns: this.netns, input: script });
  }

  private async ensureBridge(): Promise<void> {
    const [link] = await this.links(['dev', this.bridgeName]);
    // A fixed MAC keeps the gateway's address stable for guests as ports come and go.
    const mac = allocateMac(`bridge:${this.bridgeName}`);
    if (!link) {
      await this.ip(['link', 'add', this.bridgeName, 'address', mac, 'type', 'bridge']);
    } else if (link.linkinfo?.info_kind !== 'bridge') {
      throw new Ec2Error('InternalError', `${this.bridgeName} exists but is a ${link.linkinfo?.info_kind ?? 'plain'} link, not a bridge.`);
    } else if (link.address !== mac) {
      await this.ip(['link', 'set', this.bridgeName, 'address', mac]);
    }
    await this.ip(['link', 'set', this.bridgeName, 'up']);
  }

  private async ensureAddresses(): Promise<void> {
    const wanted = new Map([[`${this.range.gateway}/${this.range.prefixLength}`, true]]);
    if (!this.metadataDnat) wanted.set(`${METADATA_ADDRESS}/32`, true);
    const [entry] = await ipJson<IpAddress>(['-4', 'addr', 'show', 'dev', this.bridgeName], this.netns);
    for (const a of entry?.addr_info ?? []) {
      const key = `${a.local}/${a.prefixlen}`;
      if (wanted.has(key)) wanted.delete(key);
      else await this.ip(['addr', 'del', key, 'dev', this.bridgeName]); // left from an earlier range
    }
    for (const key of wanted.keys()) await this.ip(['addr', 'add', key, 'dev', this.bridgeName]);
  }

  /** Makes `tapName` a running port of the bridge, creating a persistent tap when no such link exists. */
  private async ensurePort(tapName: string): Promise<void> {
    const [link] = await this.links(['dev', tapName]);
    if (!link) {
      await this.ip(['tuntap', 'add', 'dev', tapName, 'mode', 'tap']);
    } else if (!PORT_KINDS.has(link.linkinfo?.info_kind ?? '')) {
      throw new Ec2Error('InternalError', `${tapName} exists but is a ${link.linkinfo?.info_kind ?? 'plain'} link, not a tap.`);
    }
    if (link?.master !== this.bridgeName) await this.ip(['link', 'set', tapName, 'master', this.bridgeName]);
    await this.ip(['link', 'set', tapName, 'up']);
  }

  private async deleteLink(name: string): Promise<void> {
    if ((await this.links(['dev', name])).length === 0) return;
    await this.ip(['link', 'del', name]);
  }

  private links(selector: string[]): Promise<IpLink[]> {
    return ipJson<IpLink>(['-d', 'link', 'show', ...selector], this.netns);
  }

  private async ip(args: string[]): Promise<void> {
    await runCommand('ip', args, { netns: this.netns });
  }
}
