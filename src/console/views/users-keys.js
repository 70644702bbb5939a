// Users and access keys of one account: create and delete users; create keys (secret shown once),
// deactivate, activate and delete them.
import { h, table, statusLine, actionButton, field, form, secretBox } from '../dom.js';
import { path } from '../api.js';
import { accountPicker } from './account-picker.js';

export const title = 'Users & keys';

export async function render(root, ctx) {
  const status = statusLine();
  const created = h('div');
  const users = h('div');
  const keys = h('div');
  let accountId;

  const act = (label, run, attrs) => actionButton(label, async () => {
    try { await run(); await reload(); } catch (err) { status.error(err); }
  }, attrs);

  const createKey = (userName) => act('New key', async () => {
    const { accessKey } = await ctx.api.post('/access-keys', { account: accountId, user: userName });
    created.replaceChildren(secretBox(`New key of ${userName}`, {
      'Access key id': accessKey.accessKeyId, 'Secret access key': accessKey.secretAccessKey,
    }));
    status.ok(`Created access key ${accessKey.accessKeyId} for ${userName}.`);
  });

  const reload = async () => {
    if (accountId === undefined) return;
    const [u, k] = await Promise.all([
      ctx.api.get(path('accounts', accountId, 'users')),
      ctx.api.get('/access-keys', { account: accountId }),
    ]);
    users.replaceChildren(table([
      { title: 'Name', value: (x) => x.name },
      { title: 'ID', value: (x) => x.id },
      { title: 'Admin', value: (x) => (x.isAdmin ? 'yes' : 'no') },
      { title: 'Policy', value: (x) => h('code', {}, JSON.stringify(x.policy)) },
      { title: 'Created', value: (x) => x.createdAt },
      { title: '', value: (x) => h('span', { class: 'actions' }, createKey(x.name),
        x.isAdmin ? null : act('Delete', async () => {
          if (!confirm(`Delete the user ${x.name} and its access keys?`)) return;
          await ctx.api.delete(path('accounts', accountId, 'users', x.name));
          status.ok(`Deleted user ${x.name}.`);
        }, { class: 'danger' })) },
    ], u.users, 'No users.'));
    keys.replaceChildren(table([
      { title: 'Access key id', value: (x) => h('code', {}, x.accessKeyId) },
      { title: 'User', value: (x) => x.userName },
      { title: 'Status', value: (x) => h('span', { class: x.status === 'Active' ? 'badge good' : 'badge bad' }, x.status) },
      { title: 'Created', value: (x) => x.createdAt },
      { title: '', value: (x) => h('span', { class: 'actions' },
        x.status === 'Active'
          ? act('Deactivate', async () => { await ctx.api.post(path('access-keys', x.accessKeyId, 'deactivate')); status.ok(`Deactivated ${x.accessKeyId}.`); })
          : act('Activate', async () => { await ctx.api.post(path('access-keys', x.accessKeyId, 'activate')); status.ok(`Activated ${x.accessKeyId}.`); }),
        act('Delete', async () => {
          if (!confirm(`Delete the access key ${x.accessKeyId}?`)) return;
          await ctx.api.delete(path('access-keys', x.accessKeyId));
          status.ok(`Deleted ${x.accessKeyId}.`);
        }, { class: 'danger' })) },
    ], k.accessKeys, 'No access keys.'));
  };

  const userName = h('input', { name: 'name', required: true, placeholder: 'alice' });
  const policy = h('input', { name: 'policy', placeholder: 'default, or ["ec2:Describe*"]', size: 30 });
  const userForm = form({ class: 'inline' }, [field('Name', userName), field('Policy (JSON list)', policy),
    h('button', { type: 'submit' }, 'Create user')], async () => {
    try {
      const body = { name: userName.value.trim() };
      if (policy.value.trim() !== '') body.policy = policy.value.trim();
      const { user } = await ctx.api.post(path('accounts', accountId, 'users'), body);
      status.ok(`Created user ${user.name}.`);
      userName.value = '';
      policy.value = '';
      await reload();
    } catch (err) { status.error(err); }
  });

  root.replaceChildren(h('h2', {}, 'Users & access keys'), status.el);
  try {
    root.append(await accountPicker(ctx, (id) => {
      accountId = id;
      created.replaceChildren();
      status.clear();
      reload().catch((err) => status.error(err));
    }));
  } catch (err) {
    status.error(err);
    return;
  }
  root.append(created, h('h3', {}, 'Users'), users, userForm, h('h3', {}, 'Access keys'), keys);
}
