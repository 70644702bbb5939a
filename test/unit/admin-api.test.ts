// The admin API through app.request with requests signed as the `ironbark admin` client signs
// them, beside the EC2 endpoint on the same key resolver, so key and account changes are checked
// where they matter: EC2 calls made with those keys.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Hono } from 'hono';
import pino from 'pino';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import type { Store } from '../../src/store/store.ts';
import { storeBackends, type StoreBackend } from '../helpers/stores.ts';
import { createKeyResolver } from '../../src/auth/key-cache.ts';
import type { KeyResolver } from '../../src/auth/authenticate.ts';
import { ensureAdminAccount, type AdminCredentials } from '../../src/cloud/bootstrap.ts';
import { ensureZone } from '../../src/cloud/provision.ts';
import { seedVmTypes, vmTypeOperations } from '../../src/cloud/vm-types.ts';
import { createEc2Handler, ec2HonoRoute } from '../../src/cloud/ec2-endpoint.ts';
import { securityGroupOperations } from '../../src/cloud/security-groups.ts';
import { keyPairOperations } from '../../src/cloud/key-pairs.ts';
import { accountAttributeOperations } from '../../src/cloud/account-attributes.ts';
import { createAdminApi, adminNotFound } from '../../src/cloud/admin-api.ts';
import { getQuota } from '../../src/cloud/quotas.ts';
import { newId } from '../../src/cloud/ids.ts';
import { signAdminRequest } from '../../src/cli/admin-client.ts';

const ENDPOINT = 'http://127.0.0.1:8773';
const REGION = 'ironbark-1';
const settings = { region: REGION, endpoint: ENDPOINT };
const log = pino({ level: 'silent' });

interface Creds { accessKeyId: string; secretAccessKey: string }

let store: Store;
let dataDir: string;
let admin: AdminCredentials;
let app: Hono;

/** One EC2 app and admin API sharing a resolver, as the cloud controller wires them. */
function buildApp(keys: KeyResolver): Hono {
  const a = new Hono();
  a.route('/admin', createAdminApi({ store, settings, log, keys }));
  a.all('/admin/*', adminNotFound);
  const ec2 = createEc2Handler({
    store, settings, keys,
    operations: { ...securityGroupOperations, ...keyPairOperations, ...accountAttributeOperations, ...vmTypeOperations },
    log,
  });
  a.post('/', ec2HonoRoute(ec2));
  return a;
}

let disposeStore: () => Promise<void>;

async function setUp(backend: StoreBackend): Promise<void> {
  ({ store, dispose: disposeStore } = await backend.open());
  dataDir = mkdtempSync(join(tmpdir(), 'ironbark-admin-api-'));
  admin = await ensureAdminAccount(store, dataDir, settings);
  await ensureZone(store, { name: `${REGION}a`, cidr: '10.1.0.0/16', region: REGION });
  await seedVmTypes(store.db);
  // A long TTL: changes must still take effect at once, because the admin API evicts them.
  app = buildApp(createKeyResolver(store, { ttlMs: 3_600_000 }));
}

async function tearDown(): Promise<void> {
  await disposeStore();
  rmSync(dataDir, { recursive: true, force: true });
}

async function call(method: string, path: string, opts: { body?: unknown; query?: Record<string, string>; creds?: Creds; on?: Hono } = {}) {
  const creds = opts.creds ?? admin;
  const req = await signAdminRequest({ endpoint: ENDPOINT, region: REGION, ...creds }, method, path, { body: opts.body, query: opts.query });
  const res = await (opts.on ?? app).request(req.url, { method: req.method, headers: req.headers, body: req.body });
  return { status: res.status, json: await res.json() as any };
}

/** An EC2 Query call signed like the SDKs sign it; returns the status and the XML. */
async function ec2(creds: Creds, action: string, params: Record<string, string> = {}, on: Hono = app) {
  const body = new URLSearchParams({ Action: action, Version: '2016-11-15', ...params }).toString();
  const signer = new SignatureV4({ credentials: creds, region: REGION, service: 'ec2', sha256: Hash.bind(null, 'sha256') });
  const signed = await signer.sign({
    method: 'POST', protocol: 'http:', hostname: '127.0.0.1', port: 8773, path: '/', query: {},
    headers: { host: '127.0.0.1:8773', 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }, body,
  });
  const res = await on.request(`${ENDPOINT}/`, { method: 'POST', headers: signed.headers as Record<string, string>, body });
  return { status: res.status, xml: await res.text() };
}

async function createAccount(name: string) {
  const r = await call('POST', '/accounts', { body: { name } });
  assert.equal(r.status, 201, JSON.stringify(r.json));
  return r.json as { account: { id: string; name: string }; accessKey: Creds & { userName: string } };
}

async function insertInstance(accountId: string, state: string, type = 'm1.small') {
  const id = newId('i');
  const now = new Date().toISOString();
  await store.db.insertInto('instances').values({
    id, account_id: accountId, reservation_id: newId('r'), client_token: null, request_hash: null, image_id: 'ami-00000000',
    kernel_id: null, ramdisk_id: null, instance_type: type, zone: `${REGION}a`, vpc_id: 'vpc-0', subnet_id: 'subnet-0',
    private_ip: null, public_ip: null, mac: 'd0:0d:00:00:00:01', key_name: null, user_data: null, security_groups: '[]',
    launch_index: 0, launch_time: now, state, state_reason: null, state_changed_at: now, node_id: null,
    disable_api_termination: 0, status_impaired: 0, accelerator: null, shutdown_behavior: 'stop',
  }).execute();
  return id;
}

// The suites run one after the other (node:test's default within a file), so they share the variables above.
for (const backend of storeBackends()) {
  describe(`admin API on ${backend.name}`, () => {
    before(() => setUp(backend));
    after(tearDown);

    test('only admin users of the cloud admin account may call it; everything else is a 403 JSON error', async () => {
      assert.equal((await call('GET', '/accounts')).status, 200);

      const other = await createAccount('outsider');
      const refused = await call('GET', '/accounts', { creds: other.accessKey });
      assert.equal(refused.status, 403);
      assert.equal(refused.json.error.code, 'AccessDenied');
      // That account's own admin user still uses EC2 normally.
      assert.equal((await ec2(other.accessKey, 'DescribeSecurityGroups')).status, 200);

      // A non-admin user inside the admin account is refused too.
      assert.equal((await call('POST', `/accounts/${admin.accountId}/users`, { body: { name: 'helper' } })).status, 201);
      const helperKey = (await call('POST', '/access-keys', { body: { account: admin.accountId, user: 'helper' } })).json.accessKey;
      const helper = await call('GET', '/accounts', { creds: helperKey });
      assert.equal(helper.status, 403);
      assert.equal(helper.json.error.code, 'AccessDenied');

      const wrongSecret = await call('GET', '/accounts', { creds: { accessKeyId: admin.accessKeyId, secretAccessKey: 'x'.repeat(40) } });
      assert.equal(wrongSecret.status, 403);
      assert.equal(wrongSecret.json.error.code, 'SignatureDoesNotMatch');

      const unsigned = await app.request(`${ENDPOINT}/admin/v1/accounts`);
      assert.equal(unsigned.status, 403);
      assert.equal(((await unsigned.json()) as any).error.code, 'MissingAuthenticationToken');

      // A signed request whose body was changed on the way does not pass.
      const req = await signAdminRequest({ endpoint: ENDPOINT, region: REGION, ...admin }, 'POST', '/accounts', { body: { name: 'tampered' } });
      const tampered = await app.request(req.url, { method: 'POST', headers: req.headers, body: JSON.stringify({ name: 'evil' }) });
      assert.equal(tampered.status, 403);
      assert.equal((await store.db.selectFrom('accounts').select('id').where('name', 'in', ['tampered', 'evil']).execute()).length, 0);
    });

    test('accounts: create gives working credentials once, then list, show, disable, enable', async () => {
      const created = await createAccount('alice');
      assert.match(created.account.id, /^\d{12}$/);
      assert.equal(created.accessKey.userName, 'admin');
      assert.match(created.accessKey.secretAccessKey, /^.{40}$/);

      const groups = await ec2(created.accessKey, 'DescribeSecurityGroups');
      assert.equal(groups.status, 200);
      assert.equal((groups.xml.match(/<groupName>/g) ?? []).length, 1, 'a new account sees only its own default group');

      const list = await call('GET', '/accounts');
      const names = list.json.accounts.map((a: any) => a.name);
      assert.ok(names.includes('admin') && names.includes('alice'));
      assert.equal(list.json.accounts.find((a: any) => a.name === 'admin').isCloudAdmin, true);

      const shown = await call('GET', '/accounts/alice');
      assert.equal(shown.status, 200);
      assert.equal(shown.json.account.id, created.account.id);
      assert.deepEqual(shown.json.users.map((u: any) => u.name), ['admin']);
      assert.equal(shown.json.accessKeys.length, 1);
      assert.equal(shown.json.accessKeys[0].secretAccessKey, undefined);
      assert.equal(shown.json.usage.securityGroups, 1);

      assert.equal((await call('POST', '/accounts', { body: { name: 'alice' } })).json.error.code, 'InvalidParameterValue');
      assert.equal((await call('POST', '/accounts', { body: {} })).json.error.code, 'MissingParameter');
      assert.equal((await call('GET', '/accounts/999999999999')).status, 404);

      const disabled = await call('POST', `/accounts/${created.account.id}/disable`);
      assert.equal(disabled.status, 200);
      assert.equal(disabled.json.account.status, 'disabled');
      const refused = await ec2(created.accessKey, 'DescribeSecurityGroups');
      assert.equal(refused.status, 401);
      assert.match(refused.xml, /<Code>AuthFailure<\/Code>/);

      assert.equal((await call('POST', `/accounts/${created.account.id}/enable`)).json.account.status, 'active');
      assert.equal((await ec2(created.accessKey, 'DescribeSecurityGroups')).status, 200);

      const self = await call('POST', `/accounts/${admin.accountId}/disable`);
      assert.equal(self.status, 409);
      assert.equal(self.json.error.code, 'OperationNotPermitted');
    });

    test('accounts: delete is refused while instances live, then removes the account and everything it owns', async () => {
      const bob = await createAccount('bob');
      assert.equal((await ec2(bob.accessKey, 'CreateKeyPair', { KeyName: 'k1' })).status, 200);
      const instanceId = await insertInstance(bob.account.id, 'running');

      const refused = await call('DELETE', `/accounts/${bob.account.id}`);
      assert.equal(refused.status, 409);
      assert.equal(refused.json.error.code, 'DependencyViolation');
      assert.ok(await store.db.selectFrom('accounts').select('id').where('id', '=', bob.account.id).executeTakeFirst());

      await store.db.updateTable('instances').set({ state: 'terminated' }).where('id', '=', instanceId).execute();
      const deleted = await call('DELETE', '/accounts/bob');
      assert.equal(deleted.status, 200);
      assert.equal(deleted.json.deleted, bob.account.id);
      for (const table of ['accounts', 'users', 'access_keys', 'vpcs', 'subnets', 'security_groups', 'key_pairs', 'instances'] as const) {
        const column = table === 'accounts' ? 'id' : 'account_id';
        const rows = await store.db.selectFrom(table).select(column as never).where(column as never, '=', bob.account.id as never).execute();
        assert.equal(rows.length, 0, `${table} rows of the deleted account remain`);
      }
      assert.equal((await ec2(bob.accessKey, 'DescribeKeyPairs')).status, 401);
      assert.equal((await call('DELETE', `/accounts/${admin.accountId}`)).json.error.code, 'OperationNotPermitted');
    });

    test('users: create with a policy, list, delete; the policy limits EC2 and deletion revokes keys', async () => {
      const carol = await createAccount('carol');
      const created = await call('POST', '/accounts/carol/users', { body: { name: 'viewer', policy: ['ec2:Describe*'] } });
      assert.equal(created.status, 201);
      assert.deepEqual(created.json.user.policy, ['ec2:Describe*']);
      assert.equal(created.json.user.isAdmin, false);
      const textPolicy = await call('POST', `/accounts/${carol.account.id}/users`, { body: { name: 'ops', policy: '["ec2:*"]' } });
      assert.deepEqual(textPolicy.json.user.policy, ['ec2:*']);
      assert.equal((await call('POST', '/accounts/carol/users', { body: { name: 'bad', policy: ['nonsense'] } })).status, 400);
      assert.equal((await call('POST', '/accounts/carol/users', { body: { name: 'viewer' } })).status, 400);

      const users = await call('GET', '/accounts/carol/users');
      assert.deepEqual(users.json.users.map((u: any) => u.name), ['admin', 'viewer', 'ops']);

      const key = (await call('POST', '/access-keys', { body: { account: 'carol', user: 'viewer' } })).json.accessKey;
      assert.equal((await ec2(key, 'DescribeSecurityGroups')).status, 200);
      const denied = await ec2(key, 'CreateKeyPair', { KeyName: 'nope' });
      assert.equal(denied.status, 403);
      assert.match(denied.xml, /UnauthorizedOperation/);

      assert.equal((await call('DELETE', '/accounts/carol/users/viewer')).json.deleted, 'viewer');
      assert.equal((await ec2(key, 'DescribeSecurityGroups')).status, 401);
      assert.equal((await call('DELETE', '/accounts/carol/users/viewer')).status, 404);
      assert.equal((await call('DELETE', '/accounts/carol/users/admin')).json.error.code, 'OperationNotPermitted');
    });

    test('access keys: list without secrets, create, deactivate, activate, delete take effect for EC2 at once', async () => {
      const dave = await createAccount('dave');
      const created = await call('POST', '/access-keys', { body: { account: dave.account.id, user: 'admin' } });
      assert.equal(created.status, 201);
      const key = created.json.accessKey as Creds;
      assert.equal((await ec2(key, 'DescribeKeyPairs')).status, 200);

      const listed = await call('GET', '/access-keys', { query: { account: 'dave' } });
      assert.deepEqual(listed.json.accessKeys.map((k: any) => k.accessKeyId).sort(), [dave.accessKey.accessKeyId, key.accessKeyId].sort());
      assert.ok(listed.json.accessKeys.every((k: any) => k.secretAccessKey === undefined && k.userName === 'admin'));
      assert.equal((await call('GET', '/access-keys', { query: { account: 'dave', user: 'admin' } })).json.accessKeys.length, 2);
      const all = await call('GET', '/access-keys');
      assert.ok(all.json.accessKeys.some((k: any) => k.accessKeyId === admin.accessKeyId));
      assert.ok(!JSON.stringify(all.json).includes(key.secretAccessKey));

      assert.equal((await call('POST', `/access-keys/${key.accessKeyId}/deactivate`)).json.accessKey.status, 'Inactive');
      assert.equal((await ec2(key, 'DescribeKeyPairs')).status, 401);
      assert.equal((await ec2(dave.accessKey, 'DescribeKeyPairs')).status, 200, 'the other key of the account still works');
      assert.equal((await call('POST', `/access-keys/${key.accessKeyId}/activate`)).json.accessKey.status, 'Active');
      assert.equal((await ec2(key, 'DescribeKeyPairs')).status, 200);
      assert.equal((await call('DELETE', `/access-keys/${key.accessKeyId}`)).json.deleted, key.accessKeyId);
      assert.equal((await ec2(key, 'DescribeKeyPairs')).status, 401);
      assert.equal((await call('DELETE', `/access-keys/${key.accessKeyId}`)).status, 404);
      assert.equal((await call('POST', '/access-keys', { body: { account: 'dave', user: 'ghost' } })).status, 404);

      for (const [method, path] of [['POST', `/access-keys/${admin.accessKeyId}/deactivate`], ['DELETE', `/access-keys/${admin.accessKeyId}`]]) {
        const r = await call(method!, path!);
        assert.equal(r.json.error.code, 'OperationNotPermitted', `${method} ${path}`);
      }
      assert.equal((await call('GET', '/accounts')).status, 200);
    });

    test('another controller with its own key cache stops honouring a deactivated key once its TTL passes', async () => {
      let clock = 0;
      const otherController = buildApp(createKeyResolver(store, { ttlMs: 5000, now: () => clock }));
      const erin = await createAccount('erin');
      assert.equal((await ec2(erin.accessKey, 'DescribeKeyPairs', {}, otherController)).status, 200);
      await call('POST', `/access-keys/${erin.accessKey.accessKeyId}/deactivate`);
      clock += 5001;
      assert.equal((await ec2(erin.accessKey, 'DescribeKeyPairs', {}, otherController)).status, 401);
    });

    test('vm types: list, set, change, delete; refused while in use, for the default type and for bad sizes', async () => {
      const listed = await call('GET', '/vm-types');
      assert.ok(listed.json.vmTypes.some((t: any) => t.name === 'm1.small' && t.cores === 1 && t.memoryMiB === 256));

      const set = await call('PUT', '/vm-types/x1.big', { body: { cores: 8, memoryMiB: 16384, diskGiB: 40 } });
      assert.equal(set.status, 200);
      assert.deepEqual(set.json.vmType, { name: 'x1.big', cores: 8, memoryMiB: 16384, diskGiB: 40 });
      await call('PUT', '/vm-types/x1.big', { body: { cores: 4, memoryMiB: 8192, diskGiB: 40 } });
      const types = await ec2(admin, 'DescribeInstanceTypes', { 'InstanceType.1': 'x1.big' });
      assert.match(types.xml, /<defaultVCpus>4<\/defaultVCpus>/);

      for (const body of [{ cores: 0, memoryMiB: 1, diskGiB: 1 }, { cores: 1, memoryMiB: 'lots', diskGiB: 1 }, { cores: 1, diskGiB: 1 }]) {
        const r = await call('PUT', '/vm-types/x1.bad', { body });
        assert.equal(r.status, 400, JSON.stringify(body));
      }
      assert.equal((await call('PUT', '/vm-types/Bad_Name', { body: { cores: 1, memoryMiB: 1, diskGiB: 1 } })).status, 400);

      const instanceId = await insertInstance(admin.accountId, 'stopped', 'x1.big');
      const inUse = await call('DELETE', '/vm-types/x1.big');
      assert.equal(inUse.status, 409);
      assert.equal(inUse.json.error.code, 'DependencyViolation');
      await store.db.updateTable('instances').set({ state: 'terminated' }).where('id', '=', instanceId).execute();
      assert.equal((await call('DELETE', '/vm-types/x1.big')).json.deleted, 'x1.big');
      assert.ok(!(await call('GET', '/vm-types')).json.vmTypes.some((t: any) => t.name === 'x1.big'));
      assert.equal((await call('DELETE', '/vm-types/x1.big')).status, 404);
      assert.equal((await call('DELETE', '/vm-types/m1.small')).json.error.code, 'OperationNotPermitted');
    });

    test('quotas: defaults, set, reset; DescribeAccountAttributes reports max-instances', async () => {
      const frank = await createAccount('frank');
      const initial = await call('GET', '/accounts/frank/quotas');
      // The instance quotas, in this order; other families' quotas follow them (elastic IPs, volumes).
      const instanceQuotas = (quotas: any[]) => quotas.filter((q) => ['max-instances', 'max-cores', 'max-memory-mib'].includes(q.name));
      assert.equal(initial.json.accountId, frank.account.id);
      assert.deepEqual(initial.json.quotas.slice(0, 3), [
        { name: 'max-instances', value: 20, isDefault: true },
        { name: 'max-cores', value: null, isDefault: true },
        { name: 'max-memory-mib', value: null, isDefault: true },
      ]);
      assert.deepEqual(initial.json.quotas.find((q: any) => q.name === 'max-elastic-ips'), { name: 'max-elastic-ips', value: 5, isDefault: true });

      const set = await call('PUT', '/accounts/frank/quotas', { body: { 'max-instances': 3, 'max-cores': 8, 'max-memory-mib': 4096 } });
      assert.equal(set.status, 200);
      assert.deepEqual(instanceQuotas(set.json.quotas).map((q: any) => [q.name, q.value, q.isDefault]),
        [['max-instances', 3, false], ['max-cores', 8, false], ['max-memory-mib', 4096, false]]);
      assert.equal(await getQuota(store.db, frank.account.id, 'max-cores'), 8);
      const attrs = await ec2(frank.accessKey, 'DescribeAccountAttributes', { 'AttributeName.1': 'max-instances' });
      assert.match(attrs.xml, /<attributeValue>3<\/attributeValue>/);

      const reset = await call('PUT', `/accounts/${frank.account.id}/quotas`, { body: { 'max-instances': null } });
      assert.deepEqual(reset.json.quotas[0], { name: 'max-instances', value: 20, isDefault: true });
      assert.equal(await getQuota(store.db, frank.account.id, 'max-instances'), 20);

      assert.equal((await call('PUT', '/accounts/frank/quotas', { body: { 'max-disks': 1 } })).status, 400);
      assert.equal((await call('PUT', '/accounts/frank/quotas', { body: { 'max-cores': -1 } })).status, 400);
      assert.equal((await call('PUT', '/accounts/frank/quotas', { body: { 'max-cores': 1.5 } })).status, 400);
      assert.equal((await call('PUT', '/accounts/frank/quotas', { body: {} })).json.error.code, 'MissingParameter');
      assert.equal(await getQuota(store.db, frank.account.id, 'max-cores'), 8, 'refused changes leave the quota as it was');
    });

    test('usage: live instances by state and type, cores and memory in use, key pairs, groups and volumes', async () => {
      const gina = await createAccount('gina');
      await insertInstance(gina.account.id, 'running', 'm1.small');   // 1 core, 256 MiB
      await insertInstance(gina.account.id, 'running', 'c1.medium');  // 2 cores, 512 MiB
      await insertInstance(gina.account.id, 'pending', 'm1.small');
      await insertInstance(gina.account.id, 'stopped', 'c1.xlarge');  // holds nothing
      await insertInstance(gina.account.id, 'terminated', 'c1.xlarge'); // not live
      await ec2(gina.accessKey, 'CreateKeyPair', { KeyName: 'a' });
      await ec2(gina.accessKey, 'CreateKeyPair', { KeyName: 'b' });
      await ec2(gina.accessKey, 'CreateSecurityGroup', { GroupName: 'web', GroupDescription: 'web servers' });
      const volume = (id: string, size: number, state: string) => ({
        id, account_id: gina.account.id, zone: 'ironbark-1a', size_gib: size, volume_type: 'gp2', iops: null, throughput: null, snapshot_id: null,
        state, created_at: new Date().toISOString(), state_changed_at: new Date().toISOString(), auto_enable_io: 0, instance_id: null, device: null,
        attach_state: null, attach_time: null, delete_on_termination: 0, detach_force: 0,
      });
      await store.db.insertInto('volumes').values([volume('vol-00000000000000001', 3, 'available'), volume('vol-00000000000000002', 4, 'in-use'),
        volume('vol-00000000000000003', 5, 'deleted')]).execute();

      const one = await call('GET', '/usage', { query: { account: 'gina' } });
      assert.equal(one.status, 200);
      assert.equal(one.json.usage.length, 1);
      const u = one.json.usage[0];
      assert.deepEqual(u.instances, { live: 4, byState: { running: 2, pending: 1, stopped: 1 }, byType: { 'm1.small': 2, 'c1.medium': 1, 'c1.xlarge': 1 } });
      assert.equal(u.coresInUse, 4);
      assert.equal(u.memoryMiBInUse, 1024);
      assert.equal(u.keyPairs, 2);
      assert.equal(u.securityGroups, 2);
      assert.deepEqual(u.volumes, { count: 2, gib: 7 }, 'volumes that are not deleted, as the volume quotas count them');

      const all = await call('GET', '/usage');
      const ids = all.json.usage.map((x: any) => x.accountId);
      assert.ok(ids.includes(gina.account.id) && ids.includes(admin.accountId));
      assert.equal((await call('GET', '/usage', { query: { account: 'nobody' } })).status, 404);
    });

    test('unknown routes and malformed bodies answer JSON errors', async () => {
      const missing = await call('GET', '/nothing-here');
      assert.equal(missing.status, 404);
      assert.equal(missing.json.error.code, 'NotFound');

      const req = await signAdminRequest({ endpoint: ENDPOINT, region: REGION, ...admin }, 'POST', '/accounts');
      const body = '{"name": ';
      const signer = new SignatureV4({ credentials: admin, region: REGION, service: 'ec2', sha256: Hash.bind(null, 'sha256') });
      const url = new URL(req.url);
      const signed = await signer.sign({ method: 'POST', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: url.pathname,
        query: {}, headers: { host: url.host, 'content-type': 'application/json' }, body });
      const res = await app.request(req.url, { method: 'POST', headers: signed.headers as Record<string, string>, body });
      assert.equal(res.status, 400);
      assert.equal(((await res.json()) as any).error.code, 'InvalidParameterValue');
    });
  });
}
