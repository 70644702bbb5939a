// Services: the cloud's health and the cluster controller of each zone; add a zone's cluster
// (its shared secret shown once, with the command that starts it) and remove one.
import { h, table, statusLine, show, actionButton, field, form, secretBox } from '../dom.js';
import { path } from '../api.js';

export const title = 'Services';

// The cluster of `ironbark up` runs inside the cloud's process: it has no row to remove.
const IN_PROCESS = 'in-process';

async function cloudHealth() {
  try {
    const response = await fetch('/healthz', { cache: 'no-store' });
    const body = await response.json().catch(() => ({}));
    return { ok: response.ok && body.ok === true, detail: `HTTP ${response.status}` };
  } catch (err) {
    return { ok: false, detail: err.message };
  }
}

/** The port the cluster listens on: the one in the URL the cloud was given for it. */
function listenPort(url) {
  try {
    const u = new URL(url);
    return u.port || (u.protocol === 'https:' ? '443' : '80');
  } catch {
    return '8774';
  }
}

/** A word for a POSIX shell: single-quoted, with any single quote in it closed and escaped. */
function shellQuote(word) {
  return `'${String(word).replaceAll("'", `'\\''`)}'`;
}

/** The shell lines that start the cluster controller with the secret the cloud just gave it. */
export function clusterStartCommand(cluster, secretFile = 'cloud-secret') {
  return `ironbark cluster --zone ${cluster.zone} --cidr ${cluster.cidr} --cloud-secret-file ${secretFile} --listen 0.0.0.0:${listenPort(cluster.url)}`;
}

export async function render(root, ctx) {
  const status = statusLine();
  const created = h('div');
  const clusters = h('div');

  const reload = async () => {
    const answer = await ctx.api.get('/clusters');
    clusters.replaceChildren(table([
      { title: 'Zone', value: (c) => c.zone },
      { title: 'URL', value: (c) => c.url },
      { title: 'Network', value: (c) => c.cidr },
      { title: 'Added', value: (c) => show(c.createdAt) },
      { title: '', value: (c) => (c.url === IN_PROCESS ? null : actionButton('Remove', async () => {
        if (!confirm(`Remove the cluster of zone ${c.zone}? The cloud stops placing instances there.`)) return;
        try {
          await ctx.api.delete(path('clusters', c.zone));
          status.ok(`Removed the cluster of zone ${c.zone}.`);
          await reload();
        } catch (err) { status.error(err); }
      }, { class: 'danger' })) },
    ], answer.clusters, 'No clusters: this cloud has no zone with compute yet.'));
  };

  const zone = h('input', { name: 'zone', required: true, placeholder: `${ctx.api.config.region}b` });
  const url = h('input', { name: 'url', required: true, placeholder: 'http://10.0.0.3:8774', size: 26 });
  const cidr = h('input', { name: 'cidr', required: true, placeholder: '10.2.0.0/16' });
  const secret = h('input', { name: 'secret', type: 'password', autocomplete: 'new-password', placeholder: 'generated if empty' });
  const addForm = form({ class: 'inline' }, [field('Zone', zone), field('Cluster URL', url), field('Network CIDR', cidr),
    field('Shared secret (optional)', secret), h('button', { type: 'submit' }, 'Add cluster')], async () => {
    try {
      const body = { zone: zone.value.trim(), url: url.value.trim(), cidr: cidr.value.trim() };
      if (secret.value !== '') body.secret = secret.value;
      const answer = await ctx.api.post('/clusters', body);
      created.replaceChildren(secretBox(`Cluster of zone ${answer.cluster.zone}`, {
        'Shared secret': answer.secret,
        'Save it on the cluster host': `umask 077; printf '%s\\n' ${shellQuote(answer.secret)} > cloud-secret`,
        'Then start the cluster': clusterStartCommand(answer.cluster),
      }));
      status.ok(`Added the cluster of zone ${answer.cluster.zone} (${answer.cluster.url}, network ${answer.cluster.cidr}).`);
      for (const input of [zone, url, cidr, secret]) input.value = '';
      await reload();
    } catch (err) { status.error(err); }
  });

  root.replaceChildren(h('h2', {}, 'Services'), status.el);
  const health = await cloudHealth();
  root.append(
    h('h3', {}, 'Cloud controller'),
    h('p', {}, h('span', { class: health.ok ? 'badge good' : 'badge bad' }, health.ok ? 'healthy' : 'unhealthy'),
      ` ${ctx.api.config.endpoint} (region ${ctx.api.config.region}, /healthz: ${health.detail})`),
    h('h3', {}, 'Clusters'), created, clusters,
    h('h3', {}, 'Add a cluster'),
    h('p', { class: 'note' }, 'The cloud reaches the cluster at its URL; the secret it answers with is what the cluster starts with.'),
    addForm);
  try {
    await reload();
  } catch (err) {
    status.error(err);
  }
}
