// Quotas of one account: show them and set max-instances, max-cores, max-memory-mib
// ("default" restores the cloud's default).
import { h, table, statusLine, field, form } from '../dom.js';
import { path } from '../api.js';
import { accountPicker } from './account-picker.js';

export const title = 'Quotas';
const QUOTA_NAMES = ['max-instances', 'max-cores', 'max-memory-mib'];

/** '' leaves a quota alone, 'default' restores it, anything else is sent as a number for the API to judge. */
function quotaChange(text) {
  const t = text.trim();
  if (t === '') return undefined;
  if (t.toLowerCase() === 'default') return null;
  return /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : t;
}

function showQuota(q) {
  return q.value === null ? 'no limit' : String(q.value);
}

export async function render(root, ctx) {
  const status = statusLine();
  const current = h('div');
  let accountId;

  const reload = async () => {
    if (accountId === undefined) return;
    const { quotas } = await ctx.api.get(path('accounts', accountId, 'quotas'));
    current.replaceChildren(table([
      { title: 'Quota', value: (q) => q.name },
      { title: 'Value', value: (q) => showQuota(q), num: true },
      { title: 'Source', value: (q) => (q.isDefault ? 'default' : 'set for this account') },
    ], quotas));
  };

  const inputs = Object.fromEntries(QUOTA_NAMES.map((n) => [n, h('input', { name: n, placeholder: 'unchanged', size: 10 })]));
  const setForm = form({ class: 'inline' }, [
    QUOTA_NAMES.map((n) => field(n, inputs[n])),
    h('button', { type: 'submit' }, 'Set quotas'),
  ], async () => {
    const body = {};
    for (const n of QUOTA_NAMES) {
      const change = quotaChange(inputs[n].value);
      if (change !== undefined) body[n] = change;
    }
    try {
      await ctx.api.put(path('accounts', accountId, 'quotas'), body);
      for (const n of QUOTA_NAMES) inputs[n].value = '';
      status.ok('Quotas set.');
      await reload();
    } catch (err) { status.error(err); }
  });

  root.replaceChildren(h('h2', {}, 'Quotas'), status.el);
  try {
    root.append(await accountPicker(ctx, (id) => {
      accountId = id;
      status.clear();
      reload().catch((err) => status.error(err));
    }));
  } catch (err) {
    status.error(err);
    return;
  }
  root.append(current, h('p', { class: 'note' }, 'Type a number, or "default" to restore the cloud\'s default; leave a box empty to keep it.'), setForm);
}
