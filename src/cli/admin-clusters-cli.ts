// `ironbark admin cluster add|list|remove` and `ironbark admin node token|list|revoke`: the cluster
// controllers of the zones and the nodes behind them, through the cloud's admin API.
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { adminClientFor, formatTable, printResult } from './admin.ts';
import type { AdminClient } from './admin-client.ts';
import { addNodeDiagnoseCommand } from './admin-node-diagnose-cli.ts';

interface ClusterJson { zone: string; url: string; cidr: string | null; createdAt: string | null }
interface NodeJson {
  id: string; name: string; url: string; mac?: string | null; joinedAt: string | null; state: string; lastSeen: string | null;
  hypervisor: string | null; accelerator: string | null;
  capacity: { cores: number; memoryMiB: number } | null; free: { cores: number; memoryMiB: number } | null; instanceCount: number;
  policy: string | null; lastPlacement: string | null; stateReason?: string | null;
  quarantinedRecords?: Array<{ instanceId: string; file: string; reason: string; at: string }>;
}

function seconds(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new InvalidArgumentError('it must be a positive whole number of seconds.');
  return Number(value);
}

const path = (...parts: string[]) => parts.map(encodeURIComponent).join('/');

async function zonesOf(client: AdminClient, zone: string | undefined): Promise<string[]> {
  if (zone) return [zone];
  return (await client.request<{ clusters: ClusterJson[] }>('GET', '/clusters')).clusters.map((c) => c.zone);
}

function nodesTable(rows: Array<NodeJson & { zone: string }>): string {
  return formatTable(['NODE', 'ZONE', 'NAME', 'STATE', 'URL', 'MAC', 'INSTANCES', 'FREE CORES', 'FREE MiB', 'LAST SEEN', 'POLICY', 'LAST PLACEMENT', 'STATE REASON'],
    rows.map((n) => [n.id, n.zone, n.name, n.state, n.url, n.mac, n.instanceCount, n.free?.cores, n.free?.memoryMiB, n.lastSeen, n.policy, n.lastPlacement, n.stateReason]), '(no nodes)')
    + quarantineNotes(rows);
}

/** Damaged instance records a node set aside: the operator decides about their VMs, which are kept running. */
function quarantineNotes(rows: NodeJson[]): string {
  const lines = rows.flatMap((n) => (n.quarantinedRecords ?? []).map((q) =>
    `node ${n.id}: the record of instance ${q.instanceId} was quarantined at ${q.at} (${q.reason}); its VM is kept. The record is in ${q.file}.`));
  return lines.length > 0 ? `\n${lines.join('\n')}` : '';
}

export function registerClusterAdminCommands(adminCommand: Command): void {
  const cluster = adminCommand.command('cluster').description('the cluster controllers of the availability zones');

  cluster.command('add')
    .description('add the cluster controller of a zone (creating the zone); prints the secret to start it with')
    .requiredOption('--zone <name>', 'availability zone the cluster serves, e.g. ironbark-1b')
    .requiredOption('--url <url>', 'where the cloud reaches the cluster controller, e.g. http://192.168.250.2:8774')
    .requiredOption('--cidr <cidr>', "the zone's private network, e.g. 10.2.0.0/16 (zones may share a range)")
    .option('--public-range <cidr>', "the zone's public IPv4 range (elastic IPs, launch-time public addresses), routed by you to its nodes")
    .option('--secret <secret>', 'use this shared secret instead of a generated one')
    .option('--secret-file <file>', 'read the shared secret from this file')
    .action(async (opts: { zone: string; url: string; cidr: string; publicRange?: string; secret?: string; secretFile?: string }, cmd: Command) => {
      const secret = opts.secretFile ? readFileSync(opts.secretFile, 'utf8').trim() : opts.secret;
      const answer = await adminClientFor(cmd).request<{ cluster: ClusterJson; secret: string }>('POST', '/clusters', {
        body: { zone: opts.zone, url: opts.url, cidr: opts.cidr, ...(opts.publicRange ? { publicRange: opts.publicRange } : {}), ...(secret ? { secret } : {}) },
      });
      printResult(cmd, answer, (a) => [
        `Cluster of zone ${a.cluster.zone} added: ${a.cluster.url} (network ${a.cluster.cidr}${opts.publicRange ? `, public range ${opts.publicRange}` : ''}).`,
        `Shared secret (shown once; keep it private): ${a.secret}`,
        'Start the cluster controller with it, e.g.:',
        `  echo '${a.secret}' > cloud-secret && chmod 600 cloud-secret`,
        `  ironbark cluster --zone ${a.cluster.zone} --cidr ${a.cluster.cidr} --cloud-secret-file cloud-secret --listen 0.0.0.0:${new URL(a.cluster.url).port || '80'} --data-dir /var/lib/ironbark-cluster`,
      ].join('\n'));
    });

  cluster.command('list')
    .description('list the cluster controllers')
    .action(async (_opts: unknown, cmd: Command) => {
      const answer = await adminClientFor(cmd).request<{ clusters: ClusterJson[] }>('GET', '/clusters');
      printResult(cmd, answer, (a) => formatTable(['ZONE', 'URL', 'NETWORK', 'ADDED'],
        a.clusters.map((c) => [c.zone, c.url, c.cidr, c.createdAt]), '(no clusters)'));
    });

  cluster.command('remove')
    .description("remove a zone's cluster controller (refused while instances live in the zone)")
    .argument('<zone>', 'availability zone')
    .action(async (zone: string, _opts: unknown, cmd: Command) => {
      const answer = await adminClientFor(cmd).request<{ deleted: string }>('DELETE', `/clusters/${path(zone)}`);
      printResult(cmd, answer, (a) => `Cluster of zone ${a.deleted} removed.`);
    });

  const node = adminCommand.command('node').description('the node controllers behind the cluster controllers');

  node.command('token')
    .description('create a one-time token a new node joins its zone with')
    .requiredOption('--zone <name>', 'availability zone the node will join')
    .option('--ttl <seconds>', 'how long the token is valid', seconds, 3600)
    .action(async (opts: { zone: string; ttl: number }, cmd: Command) => {
      const answer = await adminClientFor(cmd).request<{ token: string; zone: string; clusterUrl: string; expiresAt: string }>(
        'POST', `/clusters/${path(opts.zone)}/node-tokens`, { body: { ttlSeconds: opts.ttl } });
      printResult(cmd, answer, (a) => [
        a.token,
        `(valid once, until ${a.expiresAt}) Join a node of zone ${a.zone} with:`,
        `  ironbark node --join CLUSTER_URL --token ${a.token} --listen ADDRESS:8775 --data-dir /var/lib/ironbark-node`,
        `where CLUSTER_URL is where the node reaches its cluster controller (the cloud reaches it at ${a.clusterUrl}).`,
      ].join('\n'));
    });

  node.command('list')
    .description('list the nodes of a zone (default: of every zone)')
    .option('--zone <name>', 'availability zone')
    .action(async (opts: { zone?: string }, cmd: Command) => {
      const client = adminClientFor(cmd);
      const rows: Array<NodeJson & { zone: string }> = [];
      for (const zone of await zonesOf(client, opts.zone)) {
        const answer = await client.request<{ nodes: NodeJson[] }>('GET', `/clusters/${path(zone)}/nodes`);
        rows.push(...answer.nodes.map((n) => ({ ...n, zone })));
      }
      printResult(cmd, { nodes: rows }, (a) => nodesTable(a.nodes));
    });

  addNodeDiagnoseCommand(node);

  node.command('revoke')
    .description("make the node's cluster forget it: its secret stops working and it gets no more instances")
    .argument('<node>', 'node id (nd-…)')
    .option('--zone <name>', 'availability zone of the node (default: found by asking every cluster)')
    .action(async (nodeId: string, opts: { zone?: string }, cmd: Command) => {
      const client = adminClientFor(cmd);
      let zone = opts.zone;
      if (!zone) {
        for (const z of await zonesOf(client, undefined)) {
          const answer = await client.request<{ nodes: NodeJson[] }>('GET', `/clusters/${path(z)}/nodes`);
          if (answer.nodes.some((n) => n.id === nodeId)) { zone = z; break; }
        }
        if (!zone) throw new Error(`No cluster knows a node ${nodeId}; give its zone with --zone if its cluster is unreachable.`);
      }
      const answer = await client.request<{ deleted: string }>('DELETE', `/clusters/${path(zone)}/nodes/${path(nodeId)}`);
      printResult(cmd, { ...answer, zone }, (a) => `Node ${a.deleted} of zone ${a.zone} revoked.`);
    });
}
