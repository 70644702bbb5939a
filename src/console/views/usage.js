// Usage: what each account holds now, against its quotas.
import { h, table, statusLine } from '../dom.js';

export const title = 'Usage';

function counts(record) {
  const entries = Object.entries(record);
  return entries.length === 0 ? null : entries.map(([k, v]) => `${k}: ${v}`).join(', ');
}

function quota(usage, name) {
  const q = usage.quotas.find((x) => x.name === name);
  return q === undefined || q.value === null ? '∞' : String(q.value);
}

export async function render(root, ctx) {
  const status = statusLine();
  root.replaceChildren(h('h2', {}, 'Usage'), status.el);
  try {
    const { usage } = await ctx.api.get('/usage');
    root.append(table([
      { title: 'Account', value: (u) => `${u.accountName} (${u.accountId})` },
      { title: 'Status', value: (u) => u.status },
      { title: 'Instances', value: (u) => `${u.instances.live} / ${quota(u, 'max-instances')}`, num: true },
      { title: 'Cores', value: (u) => `${u.coresInUse} / ${quota(u, 'max-cores')}`, num: true },
      { title: 'Memory MiB', value: (u) => `${u.memoryMiBInUse} / ${quota(u, 'max-memory-mib')}`, num: true },
      { title: 'By state', value: (u) => counts(u.instances.byState) },
      { title: 'By type', value: (u) => counts(u.instances.byType) },
      { title: 'Key pairs', value: (u) => u.keyPairs, num: true },
      { title: 'Security groups', value: (u) => u.securityGroups, num: true },
    ], usage));
  } catch (err) {
    status.error(err);
  }
}
