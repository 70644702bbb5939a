// Identities and the caching key resolver, run against SQLite and (when IRONBARK_TEST_PG_URL is set)
// a fresh PostgreSQL database created for this run and dropped afterwards.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { DescribeRegionsCommand } from '@aws-sdk/client-ec2';
import { openStore, type Store } from '../../src/store/store.ts';
import { KeyRing } from '../../src/store/key-ring.ts';
import {
  createAccount, createUser, createAccessKey, setAccessKeyStatus, deleteAccessKey,
  listAccounts, listUsers, listAccessKeys, findAccessKey, findAccountByName,
} from '../../src/auth/identities.ts';
import { createKeyResolver } from '../../src/auth/key-cache.ts';
import { authenticate } from '../../src/auth/authenticate.ts';
import { isActionAllowed } from '../../src/auth/policy.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';
import { captureSdkRequest } from './auth-helpers.ts';
import { testPostgresUrl } from '../helpers/prerequisites.ts';

async function rejectsWith(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof Ec2Error, `expected Ec2Error, got ${e}`);
    assert.equal(e.code, code, e.message);
    if (message) assert.match(e.message, message);
    return true;
  });
}

interface Backend {
  name: string;
  open(): Promise<Store>;
  cleanup(): Promise<void>;
}

const backends: Backend[] = [{ name: 'SQLite', open: () => openStore({ url: ':memory:' }), cleanup: async () => {} }];

const pgUrl = testPostgresUrl();
if (pgUrl) {
  const database = `ironbark_auth_test_${randomBytes(6).toString('hex')}`;
  const admin = () => new pg.Client({ connectionString: pgUrl });
  backends.push({
    name: 'PostgreSQL',
    async open() {
      const c = admin();
      await c.connect();
      await c.query(`CREATE DATABASE ${database}`);
      await c.end();
      const url = new URL(pgUrl);
      url.pathname = `/${database}`;
      return openStore({ url: url.toString(), keyRing: KeyRing.ephemeral() });
    },
    async cleanup() {
      const c = admin();
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      await c.end();
    },
  });
}

for (const backend of backends) {
  describe(`identities on ${backend.name}`, () => {
    let store: Store;
    before(async () => { store = await backend.open(); });
    after(async () => {
      await store?.close();
      await backend.cleanup();
    });

    test('createAccount makes a 12-digit account, its admin user and an active key', async () => {
      const { account, adminUser, accessKey } = await store.transaction((tx) => createAccount(tx, 'engineering'));
      assert.match(account.id, /^[1-9]\d{11}$/);
      assert.equal(account.name, 'engineering');
      assert.equal(account.status, 'active');
      assert.equal(adminUser.name, 'admin');
      assert.equal(adminUser.is_admin, 1);
      assert.equal(adminUser.policy, '["ec2:*"]');
      assert.equal(adminUser.account_id, account.id);
      assert.match(adminUser.id, /^AIDA[A-Z2-7]{17}$/);
      assert.match(accessKey.access_key_id, /^AKIA[A-Z2-7]{16}$/);
      assert.equal(accessKey.secret_access_key.length, 40);
      assert.equal(accessKey.status, 'Active');
      assert.equal(accessKey.user_id, adminUser.id);
      assert.equal(accessKey.account_id, account.id);
      assert.deepEqual(await listAccounts(store.db).then((all) => all.find((a) => a.id === account.id)), account);

      const found = await findAccessKey(store.db, accessKey.access_key_id);
      assert.deepEqual(found, {
        accessKeyId: accessKey.access_key_id,
        secretAccessKey: accessKey.secret_access_key,
        status: 'Active',
        caller: { accountId: account.id, userId: adminUser.id, userName: 'admin', accessKeyId: accessKey.access_key_id, isAdmin: true, policy: '["ec2:*"]' },
      });
      assert.deepEqual(await findAccountByName(store.db, 'engineering'), account);
      assert.equal(await findAccountByName(store.db, 'nobody'), undefined);
    });

    test('a duplicate account name is refused and leaves nothing behind', async () => {
      await store.transaction((tx) => createAccount(tx, 'dup'));
      const before = (await listAccounts(store.db)).length;
      await rejectsWith(store.transaction((tx) => createAccount(tx, 'dup')), 'InvalidParameterValue', /already exists/);
      assert.equal((await listAccounts(store.db)).length, before);
      await rejectsWith(store.transaction((tx) => createAccount(tx, '')), 'InvalidParameterValue');
      await rejectsWith(store.transaction((tx) => createAccount(tx, 'bad name!')), 'InvalidParameterValue');
    });

    test('users: default and custom policies, names unique per account', async () => {
      const a = await store.transaction((tx) => createAccount(tx, 'users-a'));
      const b = await store.transaction((tx) => createAccount(tx, 'users-b'));
      const alice = await store.transaction((tx) => createUser(tx, a.account.id, 'alice'));
      assert.equal(alice.is_admin, 0);
      assert.equal(alice.policy, '["ec2:*"]');
      const viewer = await store.transaction((tx) => createUser(tx, a.account.id, 'viewer', ['ec2:Describe*', '!ec2:DescribeKeyPairs']));
      assert.deepEqual(JSON.parse(viewer.policy), ['ec2:Describe*', '!ec2:DescribeKeyPairs']);
      await rejectsWith(store.transaction((tx) => createUser(tx, a.account.id, 'alice')), 'InvalidParameterValue', /already exists/);
      await rejectsWith(store.transaction((tx) => createUser(tx, a.account.id, 'bob', ['not a pattern'])), 'InvalidParameterValue', /policy/i);
      await rejectsWith(store.transaction((tx) => createUser(tx, '000000000000', 'carol')), 'InvalidParameterValue', /does not exist/);
      // The same name in another account is a different user.
      await store.transaction((tx) => createUser(tx, b.account.id, 'alice'));
      assert.deepEqual((await listUsers(store.db, a.account.id)).map((u) => u.name).sort(), ['admin', 'alice', 'viewer']);
      assert.deepEqual((await listUsers(store.db, b.account.id)).map((u) => u.name).sort(), ['admin', 'alice']);

      const key = await store.transaction((tx) => createAccessKey(tx, viewer.id));
      const resolved = await findAccessKey(store.db, key.access_key_id);
      assert.equal(resolved?.caller.userName, 'viewer');
      assert.equal(resolved?.caller.isAdmin, false);
      assert.equal(isActionAllowed(resolved!.caller.policy!, 'DescribeInstances'), true);
      assert.equal(isActionAllowed(resolved!.caller.policy!, 'DescribeKeyPairs'), false);
      assert.equal(isActionAllowed(resolved!.caller.policy!, 'RunInstances'), false);
      await rejectsWith(store.transaction((tx) => createAccessKey(tx, 'AIDANOSUCHUSER0000000')), 'InvalidParameterValue');
    });

    test('access keys: list without secrets, deactivate, delete', async () => {
      const { account, adminUser, accessKey } = await store.transaction((tx) => createAccount(tx, 'keys'));
      const second = await store.transaction((tx) => createAccessKey(tx, adminUser.id));
      const listed = await listAccessKeys(store.db, { accountId: account.id });
      assert.deepEqual(listed.map((k) => k.access_key_id).sort(), [accessKey.access_key_id, second.access_key_id].sort());
      for (const k of listed) {
        assert.equal('secret_access_key' in k, false);
        assert.equal(k.user_name, 'admin');
      }
      assert.equal((await listAccessKeys(store.db, { userId: adminUser.id })).length, 2);
      assert.ok((await listAccessKeys(store.db)).length >= 2);

      await store.transaction((tx) => setAccessKeyStatus(tx, second.access_key_id, 'Inactive'));
      assert.equal((await findAccessKey(store.db, second.access_key_id))?.status, 'Inactive');
      assert.equal((await findAccessKey(store.db, accessKey.access_key_id))?.status, 'Active');
      await store.transaction((tx) => setAccessKeyStatus(tx, second.access_key_id, 'Active'));
      assert.equal((await findAccessKey(store.db, second.access_key_id))?.status, 'Active');
      await rejectsWith(store.transaction((tx) => setAccessKeyStatus(tx, second.access_key_id, 'Disabled' as 'Active')), 'InvalidParameterValue');
      await rejectsWith(store.transaction((tx) => setAccessKeyStatus(tx, 'AKIANOSUCHKEY0000000', 'Inactive')), 'InvalidParameterValue', /does not exist/);

      await store.transaction((tx) => deleteAccessKey(tx, second.access_key_id));
      assert.equal(await findAccessKey(store.db, second.access_key_id), undefined);
      await rejectsWith(store.transaction((tx) => deleteAccessKey(tx, second.access_key_id)), 'InvalidParameterValue');
      assert.equal(await findAccessKey(store.db, 'AKIANOSUCHKEY0000000'), undefined);
    });

    test("a disabled account's keys resolve as Inactive", async () => {
      const { account, accessKey } = await store.transaction((tx) => createAccount(tx, 'disabled'));
      await store.db.updateTable('accounts').set({ status: 'disabled' }).where('id', '=', account.id).execute();
      assert.equal((await findAccessKey(store.db, accessKey.access_key_id))?.status, 'Inactive');
    });

    test('end to end: an SDK request signed with a stored key authenticates through the caching resolver', async () => {
      const { account, accessKey } = await store.transaction((tx) => createAccount(tx, 'e2e'));
      const resolver = createKeyResolver(store);
      const req = await captureSdkRequest({ accessKeyId: accessKey.access_key_id, secretAccessKey: accessKey.secret_access_key }, new DescribeRegionsCommand({}));
      const caller = await authenticate(req, resolver);
      assert.equal(caller.accountId, account.id);
      assert.equal(caller.userName, 'admin');
      assert.equal(caller.policy, '["ec2:*"]');

      await store.transaction((tx) => setAccessKeyStatus(tx, accessKey.access_key_id, 'Inactive'));
      resolver.invalidate(accessKey.access_key_id);
      await rejectsWith(authenticate(req, resolver), 'AuthFailure');
    });

    test('the key cache answers from memory within the TTL and from the store after it', async () => {
      const { accessKey, adminUser } = await store.transaction((tx) => createAccount(tx, 'cache'));
      let clock = 1_000_000;
      let queries = 0;
      const counted = { db: new Proxy(store.db, {
        get(target, prop) {
          const value = Reflect.get(target, prop, target);
          if (prop === 'selectFrom') queries++;
          return typeof value === 'function' ? value.bind(target) : value;
        },
      }) };
      const resolver = createKeyResolver(counted, { ttlMs: 5000, now: () => clock });

      // Concurrent lookups of one key share one query.
      const [a, b] = await Promise.all([resolver(accessKey.access_key_id), resolver(accessKey.access_key_id)]);
      assert.equal(a?.status, 'Active');
      assert.equal(b?.status, 'Active');
      assert.equal(queries, 1);

      // Revoked elsewhere (another controller): still cached here until the TTL passes.
      await store.transaction((tx) => setAccessKeyStatus(tx, accessKey.access_key_id, 'Inactive'));
      clock += 4000;
      assert.equal((await resolver(accessKey.access_key_id))?.status, 'Active');
      assert.equal(queries, 1);
      clock += 2000;
      assert.equal((await resolver(accessKey.access_key_id))?.status, 'Inactive');
      assert.equal(queries, 2);

      // Unknown keys are remembered too, so a flood of bad keys doesn't reach the store.
      assert.equal(await resolver('AKIAUNKNOWN000000000'), undefined);
      assert.equal(await resolver('AKIAUNKNOWN000000000'), undefined);
      assert.equal(queries, 3);

      // invalidate() drops one entry at once.
      const fresh = await store.transaction((tx) => createAccessKey(tx, adminUser.id));
      assert.equal((await resolver(fresh.access_key_id))?.status, 'Active');
      await store.transaction((tx) => deleteAccessKey(tx, fresh.access_key_id));
      assert.ok(await resolver(fresh.access_key_id));
      resolver.invalidate(fresh.access_key_id);
      assert.equal(await resolver(fresh.access_key_id), undefined);
    });

    test('the key cache forgets the oldest entries beyond its size limit', async () => {
      const { accessKey } = await store.transaction((tx) => createAccount(tx, 'cache-limit'));
      let queries = 0;
      const counted = { db: new Proxy(store.db, {
        get(target, prop) {
          if (prop === 'selectFrom') queries++;
          const value = Reflect.get(target, prop, target);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      }) };
      const resolver = createKeyResolver(counted, { maxEntries: 2 });
      await resolver(accessKey.access_key_id);
      await resolver('AKIAUNKNOWN000000001');
      await resolver('AKIAUNKNOWN000000002');
      assert.equal(queries, 3);
      await resolver('AKIAUNKNOWN000000002');
      assert.equal(queries, 3);
      await resolver(accessKey.access_key_id);
      assert.equal(queries, 4);
    });
  });
}
