// The console's shell: sign-in, the tabs, and sign-out. Each tab is a module in views/ with a
// `title` and `render(root, ctx)`; ctx carries the signed API client and the chosen account.
import { AdminApi } from './api.js';
import { h, statusLine, field, form } from './dom.js';
import { loadCredentials, saveCredentials, clearCredentials } from './session.js';
import * as services from './views/services.js';
import * as nodes from './views/nodes.js';
import * as vmTypes from './views/vm-types.js';
import * as accounts from './views/accounts.js';
import * as usersKeys from './views/users-keys.js';
import * as quotas from './views/quotas.js';
import * as usage from './views/usage.js';

const VIEWS = { services, nodes, 'vm-types': vmTypes, accounts, 'users-keys': usersKeys, quotas, usage };
const endpoint = window.location.origin;
const main = document.getElementById('main');
const nav = document.getElementById('tabs');
const who = document.getElementById('who');

async function defaultRegion() {
  try {
    const response = await fetch('/console/config.json', { cache: 'no-store' });
    return (await response.json()).region ?? '';
  } catch {
    return '';
  }
}

function currentTab() {
  const name = window.location.hash.replace(/^#/, '');
  return Object.hasOwn(VIEWS, name) ? name : 'services';
}

async function showSignIn(message) {
  nav.replaceChildren();
  who.replaceChildren();
  const status = statusLine();
  if (message) status.error(message);
  const keyId = h('input', { name: 'accessKeyId', required: true, autocomplete: 'username', size: 30 });
  const secret = h('input', { name: 'secretAccessKey', type: 'password', required: true, autocomplete: 'current-password', size: 44 });
  const region = h('input', { name: 'region', required: true, size: 16, value: await defaultRegion() });
  const signIn = form({ class: 'signin' }, [
    h('h2', {}, 'Sign in'),
    h('p', { class: 'note' }, 'Use an access key of an admin user of the cloud\'s admin account: the one ',
      h('code', {}, 'ironbark up'), ' printed, also in ', h('code', {}, 'DATA_DIR/credentials.env'),
      '. It is kept in this tab only and forgotten when you sign out or close it.'),
    field('Access key id', keyId), field('Secret access key', secret), field('Region', region),
    h('button', { type: 'submit' }, 'Sign in'), status.el,
  ], async () => {
    const credentials = { accessKeyId: keyId.value.trim(), secretAccessKey: secret.value.trim(), region: region.value.trim() };
    const api = new AdminApi({ endpoint, ...credentials });
    try {
      await api.get('/accounts');
    } catch (err) {
      status.error(err);
      return;
    }
    saveCredentials(credentials);
    showConsole(credentials);
  });
  main.replaceChildren(signIn);
  keyId.focus();
}

function showConsole(credentials) {
  const ctx = { api: new AdminApi({ endpoint, ...credentials }), selectedAccount: undefined };
  const signOut = h('button', { type: 'button', class: 'secondary' }, 'Sign out');
  signOut.addEventListener('click', () => {
    clearCredentials();
    window.location.hash = '';
    showSignIn();
  });
  who.replaceChildren(h('span', {}, `${credentials.accessKeyId} · ${credentials.region}`), signOut);

  const renderTab = async () => {
    const name = currentTab();
    for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.view === name);
    const root = h('div', { class: 'view' }, h('p', { class: 'note' }, 'Loading…'));
    main.replaceChildren(root);
    try {
      await VIEWS[name].render(root, ctx);
    } catch (err) {
      root.replaceChildren(h('p', { class: 'status error' }, `${err.code ?? 'Error'}: ${err.message}`));
    }
    // An expired or revoked key: back to the sign-in form with the API's reason.
    const denied = root.querySelector('.status.error');
    if (denied && /^(AuthFailure|AccessDenied|SignatureDoesNotMatch)\b/.test(denied.textContent)) {
      clearCredentials();
      showSignIn({ message: denied.textContent });
    }
  };
  nav.replaceChildren(...Object.entries(VIEWS).map(([name, view]) => h('a', { href: `#${name}`, 'data-view': name }, view.title)));
  nav.append(h('button', { type: 'button', class: 'secondary refresh', onclick: () => renderTab() }, 'Refresh'));
  window.onhashchange = () => { if (loadCredentials()) renderTab(); };
  renderTab();
}

const saved = loadCredentials();
if (saved) showConsole(saved);
else showSignIn();
