// Nodes: per zone, the nodes its cluster controller knows, with their state and free resources.
import { h, table, statusLine, show } from '../dom.js';
import { path } from '../api.js';

export const title = 'Nodes';

function resources(r) {
  return r ? `${r.cores} cores, ${r.memoryMiB} MiB` : null;
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
    const section = h('section', {}, h('h3', {}, `Zone ${cluster.zone}`));
    root.append(section);
    try {
      const { nodes } = await ctx.api.get(path('clusters', cluster.zone, 'nodes'));
      section.append(table([
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
      ], nodes, 'No nodes have joined this zone.'));
    } catch (err) {
      section.append(h('p', { class: 'status error' }, `${err.code ?? 'Error'}: ${err.message}`));
    }
  }
}
