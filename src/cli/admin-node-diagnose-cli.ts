// `ironbark admin node diagnose NODE`: the node's host networking (bridges, tunnel, taps, nftables
// tables, DHCP servers, tunnel peers) against what it should be, each ok, missing or extra, asked
// through the cloud's admin API, the node's cluster and the node itself. Exits 1 when anything is
// not ok, so a script can check a host.
import type { Command } from 'commander';
import { adminClientFor, formatTable, printResult } from './admin.ts';

interface DiagnosisJson {
  zone: string;
  nodeId: string;
  items: { kind: string; name: string; status: 'ok' | 'missing' | 'extra'; detail?: string }[];
  summary: { ok: number; missing: number; extra: number };
}

const path = (...parts: string[]) => parts.map(encodeURIComponent).join('/');

export function addNodeDiagnoseCommand(node: Command): void {
  node.command('diagnose')
    .description("list a node's bridges, tunnel, taps, nftables tables and DHCP servers against what it should have (ok, missing, extra)")
    .argument('<node>', 'node id (nd-…)')
    .option('--zone <name>', 'availability zone of the node (default: found by asking every cluster)')
    .action(async (nodeId: string, opts: { zone?: string }, cmd: Command) => {
      const client = adminClientFor(cmd);
      let zone = opts.zone;
      if (!zone) {
        const clusters = (await client.request<{ clusters: { zone: string }[] }>('GET', '/clusters')).clusters;
        for (const c of clusters) {
          const answer = await client.request<{ nodes: { id: string }[] }>('GET', `/clusters/${path(c.zone)}/nodes`);
          if (answer.nodes.some((n) => n.id === nodeId)) { zone = c.zone; break; }
        }
        if (!zone) throw new Error(`No cluster knows a node ${nodeId}; give its zone with --zone.`);
      }
      const answer = await client.request<DiagnosisJson>('GET', `/clusters/${path(zone, 'nodes', nodeId, 'network')}`);
      printResult(cmd, answer, (a) => [
        formatTable(['STATUS', 'KIND', 'NAME', 'FOR'], a.items.map((i) => [i.status, i.kind, i.name, i.detail]), '(nothing of Ironbark on this node)'),
        `node ${a.nodeId} (zone ${a.zone}): ${a.summary.ok} ok, ${a.summary.missing} missing, ${a.summary.extra} extra`,
      ].join('\n'));
      if (answer.summary.missing > 0 || answer.summary.extra > 0) process.exitCode = 1;
    });
}
