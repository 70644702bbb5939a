// How a cluster controller passes the cloud's firewall document (security groups) on to its nodes:
// to every node that is up (or disabled: it still runs instances), in parallel with a bound. A node
// reached over HTTP gets only its own part of the zone's document (its instances, their groups and
// the members of the groups their rules name), so a zone of thousands of instances does not send
// each node the whole zone; an in-process node gets the document itself, which costs nothing to
// hand over. A node that is down, asleep or fails now gets the document again at the cloud's next
// push (on the next change, or the periodic one).
import type { FirewallDocument, FirewallPushResult } from '../node/network/firewall-document.ts';
import { documentSlicer } from '../node/network/firewall-document.ts';
import { NodeHttpClient } from '../node/node-http-client.ts';
import type { NodeEntry, NodeRegistry } from './node-registry.ts';
import type { PinoLikeLogger } from './policy.ts';

export interface FirewallRelayOptions {
  registry: NodeRegistry;
  /** The node that runs an instance, as the cluster knows it (undefined: not placed yet). */
  nodeOf: (instanceId: string) => string | undefined;
  timeoutMs?: number;
  concurrency?: number;
  log?: PinoLikeLogger;
}

export async function relayFirewall(doc: FirewallDocument, opts: FirewallRelayOptions): Promise<FirewallPushResult> {
  const result: FirewallPushResult = { version: doc.version, applied: 0, failed: [], skipped: 0 };
  const targets: NodeEntry[] = [];
  for (const entry of opts.registry.list()) {
    if ((entry.state === 'up' || entry.state === 'disabled') && entry.client.applyFirewall) targets.push(entry);
    else result.skipped++;
  }
  let slicer: ReturnType<typeof documentSlicer> | undefined;
  const documentFor = (entry: NodeEntry): FirewallDocument => {
    if (!(entry.client instanceof NodeHttpClient)) return doc;
    slicer ??= documentSlicer(doc);
    // Instances not placed yet are included: one may be on its way to this node right now.
    return slicer.forInstances((id) => {
      const nodeId = opts.nodeOf(id);
      return nodeId === undefined || nodeId === entry.id;
    });
  };
  let next = 0;
  const worker = async () => {
    while (next < targets.length) {
      const entry = targets[next++]!;
      try {
        await opts.registry.call(entry, 'applyFirewall', (c) => c.applyFirewall!(documentFor(entry)), opts.timeoutMs ?? 30_000);
        result.applied++;
      } catch (err) {
        const error = (err as Error)?.message ?? String(err);
        result.failed.push({ nodeId: entry.id, error });
        opts.log?.warn({ nodeId: entry.id, node: entry.name, version: doc.version, err: error }, 'node did not take the firewall document');
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency ?? 16, targets.length) }, worker));
  return result;
}
