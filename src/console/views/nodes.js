// Nodes: per zone, the nodes its cluster controller knows, with their state and free resources;
// for a zone whose cluster runs on its own host, mint join tokens (shown once, with the command a
// node joins with) and revoke joined nodes.
import { h, table, statusLine, show, actionButton, field, form, secretBox } from '../dom.js';
import { path } from '../api.js';

export const title = 'Nodes';

// The cluster of `ironbark up` runs inside the cloud's process: its nodes never join.
const IN_PROCESS = 'in-process';
// The admin API's own default (DEFAULT_JOIN_TOKEN_TTL_SECONDS) and limit for a token's life.
const DEFAULT_TTL_SECONDS = 3600;
const MAX_TTL_SECONDS = 7 * 24 * 3600;

function resources(r) {
  return r ? `${r.cores} cores, ${r.memoryMiB} MiB` : null;
}

/** The command a node host runs to join the zone's cluster with a fresh token. */
export function nodeJoinCommand(minted) {
  return `ironbark node --join ${minted.clusterUrl} --token ${minted.token}`;
}

/** The form that mints a join token for the zone and shows it in `shown`. */
function tokenForm(ctx, cluster, shown, status) {
  const ttl = h('input', { name: 'ttlSeconds', type: 'number', min: 1, max: MAX_TTL_SECONDS, step: 1, value: String(DEFAULT_TTL_SECONDS), size: 8 });
  return form({ class: 'inline' }, [field('Token lifetime (seconds)', ttl), h('button', { type: 'submit' }, 'New join token')], async () => {
    try {
      const body = ttl.value.trim() === '' ? {} : { ttlSeconds: Number(ttl.value) };
      const minted = await ctx.api.post(path('clusters', cluster.zone, 'node-tokens'), body);
      shown.replaceChildren(secretBox(`Join token for zone ${minted.zone}`, {
        'Token': minted.token,
        'Expires': minted.expiresAt,
        'On the node host': nodeJoinCommand(minted),
      }));
      status.ok(`Created a join token for zone ${minted.zone}, valid until ${minted.expiresAt}.`);
    } catch (err) { status.error(err); }
  });
}

export async function render(root, ctx) {
  const status = statusLine();
  root.replaceChildren(h('h2', {}, 'Nodes'), status.el);
  let clusters;
  try {
    ({ clusters } = await ctx.api.get('/clusters'));
  } catch (err) {
    status.error(err);
    return;
  }
  if (clusters.length === 0) root.append(h('p', { class: 'empty' }, 'No clusters, so no nodes.'));
  for (const cluster of clusters) {
    const joinable = cluster.url !== IN_PROCESS;
    const nodes = h('div');
    const shown = h('div');
    const section = h('section', {}, h('h3', {}, `Zone ${cluster.zone}`), shown, nodes);
    root.append(section);

    const reload = async () => {
      try {
        const answer = await ctx.api.get(path('clusters', cluster.zone, 'nodes'));
        nodes.replaceChildren(table([
          { title: 'ID', value: (n) => n.id },
          { title: 'Name', value: (n) => n.name },
          { title: 'State', value: (n) => h('span', { class: n.state === 'up' ? 'badge good' : 'badge bad' }, show(n.state)) },
          { title: 'MAC', value: (n) => n.mac },
          { title: 'Instances', value: (n) => n.instanceCount, num: true },
          { title: 'Free', value: (n) => resources(n.free) },
          { title: 'Capacity', value: (n) => resources(n.capacity) },
          { title: 'Policy', value: (n) => n.policy },
          { title: 'Last placement', value: (n) => n.lastPlacement },
          { title: 'State reason', value: (n) => n.stateReason },
          ...(joinable ? [{ title: '', value: (n) => actionButton('Revoke', async () => {
            if (!confirm(`Revoke node ${n.id} (${n.name}) of zone ${cluster.zone}? It can come back only by joining with a new token.`)) return;
            try {
              await ctx.api.delete(path('clusters', cluster.zone, 'nodes', n.id));
              status.ok(`Revoked node ${n.id} of zone ${cluster.zone}.`);
              await reload();
            } catch (err) { status.error(err); }
          }, { class: 'danger' }) }] : []),
        ], answer.nodes, 'No nodes have joined this zone.'));
      } catch (err) {
        nodes.replaceChildren(h('p', { class: 'status error' }, `${err.code ?? 'Error'}: ${err.message}`));
      }
    };

    await reload();
    if (joinable) section.append(tokenForm(ctx, cluster, shown, status));
  }
}
