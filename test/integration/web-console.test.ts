// The web console against a real in-process cloud: its files are served (types, no-cache, no
// path traversal), its region comes from config.json, and — what everything rests on — the
// console's own SigV4 signer (src/console/sigv4.js, WebCrypto) and API client produce requests
// the real admin API accepts, and surface the API's own error when it refuses them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { startInProcessCloud, REGION, type TestCloud } from '../helpers/cloud.ts';
// @ts-expect-error plain browser JavaScript without type declarations
import { signRequest, canonicalPath, canonicalQuery } from '../../src/console/sigv4.js';
// @ts-expect-error plain browser JavaScript without type declarations
import { AdminApi, AdminApiError, path } from '../../src/console/api.js';
// @ts-expect-error plain browser JavaScript without type declarations
import { clusterStartCommand } from '../../src/console/views/services.js';
// @ts-expect-error plain browser JavaScript without type declarations
import { nodeJoinCommand } from '../../src/console/views/nodes.js';
import { Command } from 'commander';
import { registerRoleCommands } from '../../src/cli/roles.ts';
import { verifyJoinToken } from '../../src/cluster/join-tokens.ts';
import { canonicalPath as serverCanonicalPath, canonicalQueryString, parseQueryPairs } from '../../src/auth/sigv4.ts';

let cloud: TestCloud;

before(async () => { cloud = await startInProcessCloud(); });
after(async () => { await cloud.stop(); });

/** A GET with the path sent byte for byte (fetch would normalise `..` away before sending). */
function rawGet(rawPath: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const url = new URL(cloud.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path: rawPath, method: 'GET', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Relative module imports of a JavaScript file: `import ... from './x.js'` and `import './x.js'`. */
function relativeImports(source: string): string[] {
  return [...source.matchAll(/^\s*import\s+(?:[^'"]*?\s+from\s+)?['"](\.{1,2}\/[^'"]+)['"]/gm)].map((m) => m[1]!);
}

test('/console and /console/ serve the page, which loads its stylesheet and its entry module', async () => {
  for (const p of ['/console', '/console/']) {
    const res = await fetch(`${cloud.url}${p}`);
    assert.equal(res.status, 200, p);
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    assert.equal(res.headers.get('cache-control'), 'no-cache');
    const html = await res.text();
    assert.match(html, /<script type="module" src="\/console\/app\.js"><\/script>/);
    assert.match(html, /<link rel="stylesheet" href="\/console\/style\.css">/);
  }
  const css = await fetch(`${cloud.url}/console/style.css`);
  assert.equal(css.status, 200);
  assert.match(css.headers.get('content-type') ?? '', /^text\/css/);
});

test('every module the page loads, directly or through imports, is served as JavaScript from this cloud', async () => {
  const html = await (await fetch(`${cloud.url}/console/`)).text();
  const start = [...html.matchAll(/<script[^>]*\bsrc="([^"]+)"/g)].map((m) => new URL(m[1]!, `${cloud.url}/console/`).href);
  assert.ok(start.length > 0);
  const seen = new Set<string>();
  const queue = [...start];
  while (queue.length > 0) {
    const url = queue.shift()!;
    if (seen.has(url)) continue;
    seen.add(url);
    assert.ok(url.startsWith(`${cloud.url}/console/`), `${url} is served by the cloud`);
    const res = await fetch(url);
    assert.equal(res.status, 200, url);
    assert.match(res.headers.get('content-type') ?? '', /^text\/javascript/, url);
    assert.equal(res.headers.get('cache-control'), 'no-cache', url);
    const source = await res.text();
    assert.doesNotMatch(source, /\bfrom\s+['"]https?:|import\(\s*['"]https?:/, `${url} fetches nothing from elsewhere`);
    for (const spec of relativeImports(source)) queue.push(new URL(spec, url).href);
  }
  // The shell, the signer, the API client and every view.
  for (const name of ['app.js', 'sigv4.js', 'api.js', 'dom.js', 'session.js', 'views/services.js', 'views/nodes.js', 'views/vm-types.js',
    'views/accounts.js', 'views/users-keys.js', 'views/quotas.js', 'views/usage.js']) {
    assert.ok(seen.has(`${cloud.url}/console/${name}`), `${name} is loaded`);
  }
});

test('paths outside the console folder, hidden files and unknown files are refused with 404', async () => {
  // The same raw requests reach real files when they stay inside the folder.
  assert.equal((await rawGet('/console/sigv4.js')).status, 200);
  assert.equal((await rawGet('/console/views/usage.js')).status, 200);
  assert.equal((await rawGet('/console/views%2Fusage.js')).status, 404, 'an encoded slash does not join segments');
  for (const p of ['/console/../package.json', '/console/../../package.json', '/console/..%2f..%2fpackage.json',
    '/console/%2e%2e/%2e%2e/package.json', '/console/views/..%2F..%2F..%2Fpackage.json', '/console/..%5c..%5cpackage.json',
    '/console/nothing-here.js', '/console/views', '/console/.hidden.js', '/console/%00.js']) {
    const res = await rawGet(p);
    assert.equal(res.status, 404, p);
    assert.doesNotMatch(res.body, /"name":\s*"ironbark"|"dependencies"/, p);
  }
});

test('config.json gives the cloud region and nothing secret', async () => {
  const res = await fetch(`${cloud.url}/console/config.json`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('cache-control'), 'no-cache');
  assert.deepEqual(await res.json(), { region: REGION });
});

test("the browser signer canonicalises paths and queries exactly as the server does", () => {
  for (const p of ['/', '/admin/v1/accounts', '/admin/v1/accounts/a%20b/users/', '/admin/v1/x/./y/../z', '/admin/v1/vm-types/m1.small']) {
    assert.equal(canonicalPath(p), serverCanonicalPath(p), p);
  }
  for (const q of ['', 'account=123456789012&user=alice', 'b=2&a=1&a=0', 'x=a%20b+c&y=%2F%7E', 'empty&k=']) {
    assert.equal(canonicalQuery(q), canonicalQueryString(parseQueryPairs(q)), q);
  }
});

test('requests signed by the console are accepted by the real admin API', async () => {
  const url = `${cloud.url}/admin/v1/accounts`;
  const headers = await signRequest({ method: 'GET', url, accessKeyId: cloud.accessKeyId, secretAccessKey: cloud.secretAccessKey, region: REGION });
  assert.match(headers.authorization, /^AWS4-HMAC-SHA256 Credential=[^/]+\/\d{8}\/ironbark-1\/ec2\/aws4_request, SignedHeaders=host;x-amz-date, Signature=[0-9a-f]{64}$/);
  const res = await fetch(url, { headers });
  assert.equal(res.status, 200);
  const { accounts } = await res.json() as { accounts: Array<{ id: string; isCloudAdmin: boolean }> };
  assert.ok(accounts.some((a) => a.id === cloud.accountId && a.isCloudAdmin));
});

test('the console API client sets a VM type, sees it listed, and deletes it', async () => {
  const api = new AdminApi({ endpoint: cloud.url, accessKeyId: cloud.accessKeyId, secretAccessKey: cloud.secretAccessKey, region: REGION });
  const set = await api.put(path('vm-types', 'console.test'), { cores: 3, memoryMiB: 1536, diskGiB: 7 });
  assert.deepEqual(set.vmType, { name: 'console.test', cores: 3, memoryMiB: 1536, diskGiB: 7 });
  const { vmTypes } = await api.get('/vm-types');
  assert.deepEqual(vmTypes.find((t: { name: string }) => t.name === 'console.test'), { name: 'console.test', cores: 3, memoryMiB: 1536, diskGiB: 7 });
  // The API's own validation message reaches the console.
  await assert.rejects(api.put(path('vm-types', 'console.test'), { cores: 0, memoryMiB: 1, diskGiB: 1 }),
    (err: any) => err instanceof AdminApiError && err.status === 400 && err.code === 'InvalidParameterValue' && /cores/.test(err.message));
  assert.deepEqual(await api.delete(path('vm-types', 'console.test')), { deleted: 'console.test' });
  assert.ok(!(await api.get('/vm-types')).vmTypes.some((t: { name: string }) => t.name === 'console.test'));
});

test('the console API client drives accounts, users, keys, quotas and usage (queries and encoded paths signed too)', async () => {
  const api = new AdminApi({ endpoint: cloud.url, accessKeyId: cloud.accessKeyId, secretAccessKey: cloud.secretAccessKey, region: REGION });
  const created = await api.post('/accounts', { name: 'console-team' });
  const id = created.account.id;
  assert.match(created.accessKey.secretAccessKey, /\S{20,}/);
  await api.post(path('accounts', id, 'users'), { name: 'alice', policy: '["ec2:Describe*"]' });
  const { accessKey } = await api.post('/access-keys', { account: id, user: 'alice' });
  const { accessKeys } = await api.get('/access-keys', { account: id, user: 'alice' });
  assert.deepEqual(accessKeys.map((k: { accessKeyId: string }) => k.accessKeyId), [accessKey.accessKeyId]);
  assert.equal((await api.post(path('access-keys', accessKey.accessKeyId, 'deactivate'))).accessKey.status, 'Inactive');
  const quotas = await api.put(path('accounts', id, 'quotas'), { 'max-instances': 3, 'max-cores': null });
  assert.deepEqual(quotas.quotas.find((q: { name: string }) => q.name === 'max-instances'), { name: 'max-instances', value: 3, isDefault: false });
  const { usage } = await api.get('/usage', { account: 'console-team' });
  assert.equal(usage[0].accountId, id);
  await api.post(path('accounts', id, 'disable'));
  assert.deepEqual(await api.delete(path('accounts', id)), { deleted: id });
});

test('a wrong secret is refused with 403 and the admin API error, which the console client reports', async () => {
  const url = `${cloud.url}/admin/v1/accounts`;
  const headers = await signRequest({ method: 'GET', url, accessKeyId: cloud.accessKeyId, secretAccessKey: 'not-the-secret', region: REGION });
  const res = await fetch(url, { headers });
  assert.equal(res.status, 403);
  const body = await res.json() as { error: { code: string; message: string } };
  assert.equal(body.error.code, 'SignatureDoesNotMatch');
  assert.match(body.error.message, /signature we calculated does not match/);

  const api = new AdminApi({ endpoint: cloud.url, accessKeyId: cloud.accessKeyId, secretAccessKey: 'not-the-secret', region: REGION });
  await assert.rejects(api.get('/accounts'),
    (err: any) => err instanceof AdminApiError && err.status === 403 && err.code === 'SignatureDoesNotMatch' && err.message === body.error.message);
});

/** The long flags of `ironbark <role>` as the real CLI defines them. */
function roleFlags(role: string): string[] {
  const program = new Command();
  registerRoleCommands(program);
  const command = program.commands.find((c) => c.name() === role);
  assert.ok(command, role);
  return command.options.map((o) => o.long!);
}

test('the console API client adds a cluster, lists it, mints a join token for it and removes it', async () => {
  const api = new AdminApi({ endpoint: cloud.url, accessKeyId: cloud.accessKeyId, secretAccessKey: cloud.secretAccessKey, region: REGION });
  const zone = `${REGION}z`;
  const added = await api.post('/clusters', { zone, url: 'http://127.0.0.1:18774', cidr: '10.9.0.0/16' });
  assert.deepEqual({ zone: added.cluster.zone, url: added.cluster.url, cidr: added.cluster.cidr },
    { zone, url: 'http://127.0.0.1:18774', cidr: '10.9.0.0/16' });
  assert.match(added.secret, /^\S{16,}$/);
  // The command the Services view shows uses the cluster's own values and flags `ironbark cluster` has.
  const start = clusterStartCommand(added.cluster);
  assert.equal(start, `ironbark cluster --zone ${zone} --cidr 10.9.0.0/16 --cloud-secret-file cloud-secret --listen 0.0.0.0:18774`);
  const clusterFlags = roleFlags('cluster');
  for (const flag of start.match(/--[a-z-]+/g)!) assert.ok(clusterFlags.includes(flag), `ironbark cluster has ${flag}`);

  const { clusters } = await api.get('/clusters');
  const listed = clusters.find((c: { zone: string }) => c.zone === zone);
  assert.equal(listed.url, 'http://127.0.0.1:18774');
  assert.equal(listed.cidr, '10.9.0.0/16');

  const minted = await api.post(path('clusters', zone, 'node-tokens'), { ttlSeconds: 600 });
  assert.equal(minted.zone, zone);
  assert.equal(minted.clusterUrl, 'http://127.0.0.1:18774');
  const lifetime = Date.parse(minted.expiresAt) - Date.now();
  assert.ok(lifetime > 0 && lifetime <= 600_000, minted.expiresAt);
  // The token is one the cluster accepts with the secret it was given.
  assert.equal(verifyJoinToken(added.secret, zone, minted.token).expiresAt, Date.parse(minted.expiresAt));
  const join = nodeJoinCommand(minted);
  assert.equal(join, `ironbark node --join http://127.0.0.1:18774 --token ${minted.token}`);
  const nodeFlags = roleFlags('node');
  for (const flag of join.match(/(?<=\s)--[a-z-]+/g)!) assert.ok(nodeFlags.includes(flag), `ironbark node has ${flag}`);
  await assert.rejects(api.post(path('clusters', zone, 'node-tokens'), { ttlSeconds: 0 }),
    (err: any) => err instanceof AdminApiError && err.status === 400 && err.code === 'InvalidParameterValue' && /ttlSeconds/.test(err.message));

  assert.deepEqual(await api.delete(path('clusters', zone)), { deleted: zone });
  assert.ok(!(await api.get('/clusters')).clusters.some((c: { zone: string }) => c.zone === zone));
});

test('the console API client reports the API refusing a cluster with a bad network', async () => {
  const api = new AdminApi({ endpoint: cloud.url, accessKeyId: cloud.accessKeyId, secretAccessKey: cloud.secretAccessKey, region: REGION });
  const zone = `${REGION}y`;
  await assert.rejects(api.post('/clusters', { zone, url: 'http://127.0.0.1:18775', cidr: '10.9.0.0/33' }),
    (err: any) => err instanceof AdminApiError && err.status === 400 && err.code === 'InvalidParameterValue'
      && err.message === '"10.9.0.0/33" is not an IPv4 network such as 10.1.0.0/16.');
  assert.ok(!(await api.get('/clusters')).clusters.some((c: { zone: string }) => c.zone === zone));
});
