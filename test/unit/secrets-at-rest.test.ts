// Secrets at rest (issue 11, item 1): access-key and cluster secrets are stored sealed under a
// master key kept outside the store, on SQLite and PostgreSQL alike. The raw rows hold no
// plaintext; signed requests still authenticate; plaintext rows of an earlier version are sealed
// at the first start with a key; a missing or wrong key file stops the start with one sentence
// instead of making a key that cannot read the store; rotation leaves the old key unneeded.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import Sqlite from 'better-sqlite3';
import { DescribeRegionsCommand } from '@aws-sdk/client-ec2';
import { createAccount, createAccessKey, findAccessKey } from '../../src/auth/identities.ts';
import { createKeyResolver } from '../../src/auth/key-cache.ts';
import { authenticate } from '../../src/auth/authenticate.ts';
import { addCluster, findCluster } from '../../src/cloud/clusters.ts';
import { openStore, type Store } from '../../src/store/store.ts';
import { openStoreWithMasterKey, type MasterKeyStoreOptions } from '../../src/store/master-key-setup.ts';
import { KeyRing } from '../../src/store/key-ring.ts';
import { MasterKeyError, readKeyRingFile } from '../../src/store/master-key-file.ts';
import { addNextKey, masterKeyStatus, pruneMasterKeys, rotateMasterKey } from '../../src/store/master-key-rotation.ts';
import { captureSdkRequest } from './auth-helpers.ts';
import { freshPostgresDatabase } from '../helpers/stores.ts';
import { testPostgresUrl } from '../helpers/prerequisites.ts';

const SEALED = /^v1:[0-9a-f]{16}:[A-Za-z0-9+/]{16}:[A-Za-z0-9+/]+={0,2}$/;

interface Backend {
  name: string;
  /** A new, empty store location. */
  fresh(): Promise<string>;
  /** Every value of every table, as stored (no plugin, no decryption). */
  rawText(url: string): Promise<string>;
  rawSecrets(url: string): Promise<string[]>;
  cleanup(): Promise<void>;
}

let root: string;

function sqliteBackend(): Backend {
  let n = 0;
  return {
    name: 'SQLite',
    async fresh() { return join(root, `store-${++n}`, 'ironbark.sqlite'); },
    async rawText(url) {
      // The bytes on disk, the write-ahead log included: what a stolen copy of the files gives away.
      return [url, `${url}-wal`].filter((f) => existsSync(f)).map((f) => readFileSync(f).toString('latin1')).join('\n');
    },
    async rawSecrets(url) {
      const db = new Sqlite(url, { readonly: true });
      try {
        return [
          ...db.prepare('SELECT secret_access_key AS s FROM access_keys').all(),
          ...db.prepare('SELECT secret AS s FROM clusters').all(),
        ].map((r) => (r as { s: string }).s);
      } finally {
        db.close();
      }
    },
    async cleanup() {},
  };
}

function postgresBackend(pgUrl: string): Backend {
  const drops: Array<() => Promise<void>> = [];
  async function query<T>(url: string, text: string): Promise<T[]> {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return (await c.query(text)).rows as T[];
    } finally {
      await c.end();
    }
  }
  return {
    name: 'PostgreSQL',
    async fresh() {
      const db = await freshPostgresDatabase(pgUrl);
      drops.push(db.drop);
      return db.url;
    },
    async rawText(url) {
      const tables = await query<{ table_name: string }>(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'");
      const parts: string[] = [];
      for (const { table_name } of tables) parts.push(JSON.stringify(await query(url, `SELECT * FROM "${table_name}"`)));
      return parts.join('\n');
    },
    async rawSecrets(url) {
      return [
        ...await query<{ s: string }>(url, 'SELECT secret_access_key AS s FROM access_keys'),
        ...await query<{ s: string }>(url, 'SELECT secret AS s FROM clusters'),
      ].map((r) => r.s);
    },
    async cleanup() { for (const drop of drops) await drop(); },
  };
}

const backends: Backend[] = [sqliteBackend()];
const pgUrl = testPostgresUrl();
if (pgUrl) backends.push(postgresBackend(pgUrl));

before(() => { root = mkdtempSync(join(tmpdir(), 'ironbark-secrets-')); });
after(async () => {
  for (const b of backends) await b.cleanup();
  rmSync(root, { recursive: true, force: true });
});

let dirs = 0;
function dataDir(): string {
  const dir = join(root, `data-${++dirs}`);
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

async function withStore<T>(opts: MasterKeyStoreOptions, work: (store: Store) => Promise<T> = async () => undefined as T): Promise<T> {
  const store = await openStoreWithMasterKey(opts);
  try {
    return await work(store);
  } finally {
    await store.close();
  }
}

/** An account (its admin key) and a cluster: one row in each secret column. */
async function someSecrets(store: Store, zone = 'ironbark-1b') {
  const { accessKey } = await store.transaction((tx) => createAccount(tx, `acct-${zone}`));
  const cluster = await addCluster(store, { zone, url: 'http://127.0.0.1:1', cidr: '10.2.0.0/16', region: 'ironbark-1' });
  return { accessKeyId: accessKey.access_key_id, secretAccessKey: accessKey.secret_access_key, zone, clusterSecret: cluster.secret };
}

async function assertOpens(store: Store, s: Awaited<ReturnType<typeof someSecrets>>): Promise<void> {
  assert.equal((await findAccessKey(store.db, s.accessKeyId))?.secretAccessKey, s.secretAccessKey);
  assert.equal((await findCluster(store.db, s.zone)).secret, s.clusterSecret);
}

function keyIdsIn(file: string): string[] {
  return (readKeyRingFile(file) ?? []).map((k) => k.id);
}

for (const backend of backends) {
  describe(`secrets at rest on ${backend.name}`, () => {
    it('the stored rows hold sealed values only, and code reads the plain secrets', async () => {
      const url = await backend.fresh();
      const dir = dataDir();
      const s = await withStore({ url, dataDir: dir }, async (store) => {
        const made = await someSecrets(store);
        const extra = await store.transaction(async (tx) => createAccessKey(tx, (await findAccessKey(tx, made.accessKeyId))!.caller.userId));
        await assertOpens(store, made);
        assert.equal((await findAccessKey(store.db, extra.access_key_id))?.secretAccessKey, extra.secret_access_key);
        return { ...made, extra: extra.secret_access_key };
      });
      const keyFile = join(dir, 'master.key');
      assert.equal(statSync(keyFile).mode & 0o777, 0o600);
      const raw = await backend.rawSecrets(url);
      assert.equal(raw.length, 3);
      for (const value of raw) assert.match(value, SEALED);
      const everything = await backend.rawText(url);
      for (const secret of [s.secretAccessKey, s.extra, s.clusterSecret]) assert.equal(everything.includes(secret), false, 'a secret is stored in plaintext');
      // And the key is nowhere in the store.
      for (const k of readKeyRingFile(keyFile)!) assert.equal(everything.includes(k.key.toString('base64')), false);
    });

    it('a request signed with a stored key authenticates through the caching resolver', async () => {
      const url = await backend.fresh();
      await withStore({ url, dataDir: dataDir() }, async (store) => {
        const { account, accessKey } = await store.transaction((tx) => createAccount(tx, 'signer'));
        const req = await captureSdkRequest({ accessKeyId: accessKey.access_key_id, secretAccessKey: accessKey.secret_access_key }, new DescribeRegionsCommand({}));
        assert.equal((await authenticate(req, createKeyResolver(store))).accountId, account.id);
      });
    });

    it('plaintext secrets of an earlier version are sealed at the first start with a key, and still work', async () => {
      const url = await backend.fresh();
      // An earlier version: no key, secrets written as they are.
      const old = await openStore({ url, keyRing: KeyRing.ephemeral() });
      const plain = { accessKeyId: 'AKIAOLDPLAINTEXT0001', secret: 'oldPlaintextSecretKey/0123456789abcdefXYZ', cluster: 'old-cluster-secret-in-plaintext-0123456789' };
      try {
        const { adminUser } = await old.transaction((tx) => createAccount(tx, 'veteran'));
        const raw = old.db.withoutPlugins();
        await raw.insertInto('access_keys').values({
          access_key_id: plain.accessKeyId, secret_access_key: plain.secret, user_id: adminUser.id, account_id: adminUser.account_id, status: 'Active', created_at: new Date().toISOString(),
        }).execute();
        await raw.insertInto('clusters').values({ zone: 'ironbark-1c', url: 'http://127.0.0.1:1', secret: plain.cluster, created_at: new Date().toISOString() }).execute();
        // Rows sealed under that process's own key stand for nothing here: only the plaintext ones matter.
        await raw.deleteFrom('access_keys').where('access_key_id', '!=', plain.accessKeyId).execute();
      } finally {
        await old.close();
      }
      assert.ok((await backend.rawText(url)).includes(plain.secret));

      await withStore({ url, dataDir: dataDir() }, async (store) => {
        assert.equal((await findAccessKey(store.db, plain.accessKeyId))?.secretAccessKey, plain.secret);
        assert.equal((await findCluster(store.db, 'ironbark-1c')).secret, plain.cluster);
      });
      for (const value of await backend.rawSecrets(url)) assert.match(value, SEALED);
      if (backend.name === 'SQLite') {
        const bytes = await backend.rawText(url);
        assert.equal(bytes.includes(plain.secret) || bytes.includes(plain.cluster), false, 'the old plaintext lingers in the database files');
      }
    });

    it('a store with sealed secrets and no key file refuses to start, and makes no new key', async () => {
      const url = await backend.fresh();
      const dir = dataDir();
      await withStore({ url, dataDir: dir }, (store) => someSecrets(store));
      rmSync(join(dir, 'master.key'));
      await assert.rejects(withStore({ url, dataDir: dir }), (err: Error) => {
        assert.ok(err instanceof MasterKeyError);
        assert.match(err.message, /^The store holds secrets encrypted under master key [0-9a-f]{16}, but there is no master key file at .*master\.key\. Restore that file/);
        return true;
      });
      assert.equal(existsSync(join(dir, 'master.key')), false);
      // Another data directory (a second controller on the same PostgreSQL) is refused alike.
      await assert.rejects(withStore({ url, dataDir: dataDir() }), /no master key file/);
    });

    it('a wrong key file, a missing named one, or one open to others is refused in one sentence', async () => {
      const url = await backend.fresh();
      const dir = dataDir();
      await withStore({ url, dataDir: dir }, (store) => someSecrets(store));
      const stranger = join(dataDir(), 'stranger.key');
      writeFileSync(stranger, `${Buffer.alloc(32, 7).toString('base64')}\n`, { mode: 0o600 });
      await assert.rejects(withStore({ url, dataDir: dir, masterKeyFile: stranger }), (err: Error) => {
        assert.ok(err instanceof MasterKeyError);
        assert.match(err.message, /^The store's secrets are encrypted under master key [0-9a-f]{16}, which .*stranger\.key does not hold \(it holds [0-9a-f]{16}\)\./);
        return true;
      });
      await assert.rejects(withStore({ url, dataDir: dir, masterKeyFile: join(dir, 'nowhere.key') }), /^MasterKeyError: The master key file .*nowhere\.key \(from --master-key-file\) does not exist\.$/);
      await assert.rejects(openStoreWithMasterKey({ url, dataDir: dir, env: { IRONBARK_MASTER_KEY_FILE: join(dir, 'env.key') } }), /env\.key \(from IRONBARK_MASTER_KEY_FILE\) does not exist/);
      chmodSync(join(dir, 'master.key'), 0o644);
      await assert.rejects(withStore({ url, dataDir: dir }), /is open to other users \(mode 0644\); make it private with: chmod 600 /);
      chmodSync(join(dir, 'master.key'), 0o600);
      writeFileSync(join(dir, 'master.key'), 'current 0123456789abcdef AAAA\n', { mode: 0o600 });
      await assert.rejects(withStore({ url, dataDir: dir }), /master key file .* is not valid: line 1 does not hold 32 bytes in base64/);
    });

    it('an operator key file (a bare base64 key) is used as it is', async () => {
      const url = await backend.fresh();
      const file = join(dataDir(), 'operator.key');
      writeFileSync(file, `${Buffer.alloc(32, 1).toString('base64')}\n`, { mode: 0o600 });
      const dir = dataDir();
      const s = await withStore({ url, dataDir: dir, masterKeyFile: file }, (store) => someSecrets(store));
      assert.equal(existsSync(join(dir, 'master.key')), false, 'no key of our own beside the operator\'s');
      await withStore({ url, dataDir: dir, env: { IRONBARK_MASTER_KEY_FILE: file } }, (store) => assertOpens(store, s));
    });

    it('rotate seals every secret under a new key and the old key is no longer needed', async () => {
      const url = await backend.fresh();
      const dir = dataDir();
      const keyFile = join(dir, 'master.key');
      const s = await withStore({ url, dataDir: dir }, (store) => someSecrets(store));
      const [oldId] = keyIdsIn(keyFile);
      const oldFile = join(root, `old-${dirs}.key`);
      copyFileSync(keyFile, oldFile);

      const result = await withStore({ url, dataDir: dir }, (store) => rotateMasterKey(store, keyFile));
      assert.notEqual(result.current, oldId);
      assert.equal(result.resealed, 2);
      assert.deepEqual(result.pruned?.removed, [oldId]);
      assert.deepEqual(keyIdsIn(keyFile), [result.current]);
      for (const value of await backend.rawSecrets(url)) assert.match(value, new RegExp(`^v1:${result.current}:`));
      // The new file alone opens everything; the old one alone opens nothing.
      await withStore({ url, dataDir: dir }, (store) => assertOpens(store, s));
      await assert.rejects(withStore({ url, dataDir: dir, masterKeyFile: oldFile }), /does not hold/);
      const status = await withStore({ url, dataDir: dir }, (store) => masterKeyStatus(store, keyFile));
      assert.deepEqual(status, { keys: [{ id: result.current, state: 'current', secrets: 2 }], plaintext: 0, unknown: [] });
    });

    it('rotation with several controllers: each keeps reading while its key file lags a step behind', async () => {
      const url = await backend.fresh();
      const dirA = dataDir();
      const dirB = dataDir();
      const fileA = join(dirA, 'master.key');
      const fileB = join(dirB, 'master.key');
      const s = await withStore({ url, dataDir: dirA }, (store) => someSecrets(store));
      copyFileSync(fileA, fileB);
      // Both controllers keep running through the whole rotation.
      const a = await openStoreWithMasterKey({ url, dataDir: dirA });
      const b = await openStoreWithMasterKey({ url, dataDir: dirB });
      try {
        const [k1] = keyIdsIn(fileA);
        const { next } = addNextKey(fileA);
        copyFileSync(fileA, fileB);

        // A rotates but keeps the old key; B still seals under k1, which A can read.
        const rotated = await rotateMasterKey(a, fileA, { keepOldKeys: true });
        assert.equal(rotated.current, next.id);
        assert.equal(rotated.pruned, undefined);
        await assertOpens(b, s);
        const late = await someSecrets(b, 'ironbark-1d');
        assert.ok((await backend.rawSecrets(url)).some((v) => v.startsWith(`v1:${k1}:`)), 'B wrote under the old key');
        await assertOpens(a, late);

        // Every controller gets the new file; prune seals the stragglers again and drops k1.
        copyFileSync(fileA, fileB);
        const pruned = await pruneMasterKeys(a, fileA);
        assert.deepEqual(pruned.removed, [k1]);
        assert.ok(pruned.resealed >= 2);
        copyFileSync(fileA, fileB);
        for (const value of await backend.rawSecrets(url)) assert.match(value, new RegExp(`^v1:${next.id}:`));
        // B follows its file without a restart: it seals under the new key now.
        const after = await someSecrets(b, 'ironbark-1e');
        assert.ok((await backend.rawSecrets(url)).every((v) => v.startsWith(`v1:${next.id}:`)));
        for (const store of [a, b]) for (const x of [s, late, after]) await assertOpens(store, x);
      } finally {
        await a.close();
        await b.close();
      }
    });
  });
}

describe('stores without a master key', () => {
  it('a file store opened without its key can neither write nor read a secret, and says so', async () => {
    const url = join(dataDir(), 'keyless.sqlite');
    const store = await openStore({ url });
    try {
      await assert.rejects(store.transaction((tx) => createAccount(tx, 'nokey')), /opened without its master key/);
    } finally {
      await store.close();
    }
  });
});
