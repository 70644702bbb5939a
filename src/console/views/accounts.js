// Accounts: list, create (its admin key is shown once), disable/enable and delete.
import { h, table, statusLine, actionButton, field, form, secretBox } from '../dom.js';
import { path } from '../api.js';

export const title = 'Accounts';

export async function render(root, ctx) {
  const status = statusLine();
  const created = h('div');
  const list = h('div');

  const act = (label, run, attrs) => actionButton(label, async () => {
    try { await run(); await reload(); } catch (err) { status.error(err); }
  }, attrs);

  const reload = async () => {
    const { accounts } = await ctx.api.get('/accounts');
    list.replaceChildren(table([
      { title: 'ID', value: (a) => a.id },
      { title: 'Name', value: (a) => a.name },
      { title: 'Status', value: (a) => h('span', { class: a.status === 'active' ? 'badge good' : 'badge bad' }, a.status) },
      { title: 'Created', value: (a) => a.createdAt },
      { title: '', value: (a) => a.isCloudAdmin ? h('span', { class: 'note' }, 'cloud admin account') : h('span', { class: 'actions' },
        a.status === 'active'
          ? act('Disable', async () => { await ctx.api.post(path('accounts', a.id, 'disable')); status.ok(`Disabled ${a.name}.`); })
          : act('Enable', async () => { await ctx.api.post(path('accounts', a.id, 'enable')); status.ok(`Enabled ${a.name}.`); }),
        act('Delete', async () => {
          if (!confirm(`Delete the account ${a.name} (${a.id}) with its users, keys, key pairs and security groups?`)) return;
          await ctx.api.delete(path('accounts', a.id));
          created.replaceChildren();
          status.ok(`Deleted ${a.name}.`);
        }, { class: 'danger' })) },
    ], accounts));
  };

  const nameInput = h('input', { name: 'name', required: true, placeholder: 'team-a' });
  const createForm = form({ class: 'inline' }, [field('Name', nameInput), h('button', { type: 'submit' }, 'Create account')], async () => {
    try {
      const answer = await ctx.api.post('/accounts', { name: nameInput.value.trim() });
      ctx.selectedAccount = answer.account.id;
      status.ok(`Created ${answer.account.name} (${answer.account.id}).`);
      created.replaceChildren(secretBox(`Admin key of ${answer.account.name}`, {
        'Access key id': answer.accessKey.accessKeyId, 'Secret access key': answer.accessKey.secretAccessKey,
        User: answer.accessKey.userName, Region: answer.region, Endpoint: answer.endpoint,
      }));
      nameInput.value = '';
      await reload();
    } catch (err) { status.error(err); }
  });

  root.replaceChildren(h('h2', {}, 'Accounts'), status.el, created, list, h('h3', {}, 'New account'), createForm);
  try { await reload(); } catch (err) { status.error(err); }
}
