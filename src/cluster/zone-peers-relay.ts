// How a cluster controller tells each of its nodes the zone's other nodes, for the zone network's
// VXLAN tunnel (src/node/network/overlay.ts). A node's address in the zone is the host of the URL the
// cluster reaches it by: the cluster's private network, which is also where the tunnel runs, so the
// nodes need no address of their own for it and stay reachable only through their cluster. A node in
// the same process ("local") has no such address: it takes part in no tunnel.
//
// Every registered node with an address is a peer, whatever the cluster thinks of its state (a node
// that stopped answering may still run instances). A node is told its peers when they change for it,
// again every `resendMs` (a node that restarted empty gets them back), and only when it is up.
import type { NodeEntry, NodeRegistry } from './node-registry.ts';
import type { PinoLikeLogger } from './policy.ts';
import { isIpv4Address } from '../node/network/firewall-document.ts';

/** The IPv4 address of a node's URL, or undefined ("local", a name, IPv6). */
export function nodeUnderlayAddress(entry: Pick<NodeEntry, 'address'>): string | undefined {
  try {
    const host = new URL(entry.address).hostname;
    return isIpv4Address(host) ? host : undefined;
  } catch {
    return undefined;
  }
}

export class ZonePeersRelay {
  private readonly sent = new Map<string, { peers: string; at: number }>();

  constructor(private readonly opts: { zone: string; registry: NodeRegistry; resendMs?: number; now?: () => number; log?: PinoLikeLogger }) {}

  /** Sends each up node whose peers changed (or are due again) its list; failures are retried next time. */
  async sync(): Promise<void> {
    const now = (this.opts.now ?? Date.now)();
    const resendMs = this.opts.resendMs ?? 30_000;
    const entries = this.opts.registry.list();
    const addressed = entries.map((e) => ({ entry: e, address: nodeUnderlayAddress(e) })).filter((x): x is { entry: NodeEntry; address: string } => x.address !== undefined);
    const all = [...new Set(addressed.map((x) => x.address))].sort();
    await Promise.all(addressed.map(async ({ entry, address }) => {
      if ((entry.state !== 'up' && entry.state !== 'disabled') || !entry.client.setZonePeers) return;
      const peers = all.filter((a) => a !== address);
      const key = peers.join(',');
      const last = this.sent.get(entry.id);
      if (last && last.peers === key && now - last.at < resendMs) return;
      try {
        await this.opts.registry.call(entry, 'setZonePeers', (c) => c.setZonePeers!({ zone: this.opts.zone, peers }));
        this.sent.set(entry.id, { peers: key, at: now });
      } catch (err) {
        this.sent.delete(entry.id);
        this.opts.log?.warn({ nodeId: entry.id, node: entry.name, err: (err as Error).message }, 'node did not take the zone peers');
      }
    }));
    for (const id of this.sent.keys()) if (!entries.some((e) => e.id === id)) this.sent.delete(id);
  }
}
