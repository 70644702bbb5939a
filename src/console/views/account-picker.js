// The account chooser shared by the per-account views; the choice is remembered across tabs.
import { h } from '../dom.js';

/** A <select> of the cloud's accounts; calls `onChange(accountId)` now and on every change. */
export async function accountPicker(ctx, onChange) {
  const { accounts } = await ctx.api.get('/accounts');
  if (!accounts.some((a) => a.id === ctx.selectedAccount)) ctx.selectedAccount = accounts[0]?.id;
  const select = h('select', { name: 'account' },
    accounts.map((a) => h('option', { value: a.id, selected: a.id === ctx.selectedAccount },
      `${a.name} (${a.id})${a.isCloudAdmin ? ' — cloud admin' : ''}${a.status !== 'active' ? ` — ${a.status}` : ''}`)));
  select.addEventListener('change', () => {
    ctx.selectedAccount = select.value;
    onChange(select.value);
  });
  if (ctx.selectedAccount !== undefined) onChange(ctx.selectedAccount);
  return h('label', { class: 'field picker' }, h('span', {}, 'Account'), select);
}
