// Services: the cloud's health and the cluster controller of each zone.
import { h, table, statusLine, show } from '../dom.js';

export const title = 'Services';

async function cloudHealth() {
  try {
    const response = await fetch('/healthz', { cache: 'no-store' });
    const body = await response.json().catch(() => ({}));
    return { ok: response.ok && body.ok === true, detail: `HTTP ${response.status}` };
  } catch (err) {
    return { ok: false, detail: err.message };
  }
}

export async function render(root, ctx) {
  const status = statusLine();
  root.replaceChildren(h('h2', {}, 'Services'), status.el);
  const health = await cloudHealth();
  root.append(
    h('h3', {}, 'Cloud controller'),
    h('p', {}, h('span', { class: health.ok ? 'badge good' : 'badge bad' }, health.ok ? 'healthy' : 'unhealthy'),
      ` ${ctx.api.config.endpoint} (region ${ctx.api.config.region}, /healthz: ${health.detail})`),
    h('h3', {}, 'Clusters'));
  try {
    const { clusters } = await ctx.api.get('/clusters');
    root.append(table([
      { title: 'Zone', value: (c) => c.zone },
      { title: 'URL', value: (c) => c.url },
      { title: 'Network', value: (c) => c.cidr },
      { title: 'Added', value: (c) => show(c.createdAt) },
    ], clusters, 'No clusters: this cloud has no zone with compute yet.'));
  } catch (err) {
    status.error(err);
  }
}
