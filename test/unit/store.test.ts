// The store contract, run against every back-end: migrations, constraints, and transactions that
// leave nothing behind when they fail.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { storeBackends } from '../helpers/stores.ts';
import type { Store } from '../../src/store/store.ts';
import { openStore } from '../../src/store/store.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const now = () => new Date().toISOString();

for (const backend of storeBackends()) {
  describe(`store on ${backend.name}`, () => {
    let store: Store;
    let dispose: () => Promise<void>;
    before(async () => ({ store, dispose } = await backend.open()));
    after(async () => dispose());

    it('creates every table of the schema', async () => {
      for (const table of ['accounts', 'users', 'access_keys', 'zones', 'key_pairs', 'vpcs', 'subnets', 'security_groups', 'security_group_rules', 'tags', 'settings'] as const) {
        const rows = await store.db.selectFrom(table).selectAll().execute();
        assert.ok(Array.isArray(rows), table);
      }
    });

    it('rolls a failed transaction back completely', async () => {
      await assert.rejects(store.transaction(async (tx) => {
        await tx.insertInto('accounts').values({ id: '111111111111', name: 'half', status: 'active', created_at: now() }).execute();
        await tx.insertInto('users').values({ id: 'AIDAHALF', account_id: '111111111111', name: 'admin', is_admin: 1, policy: '["ec2:*"]', created_at: now() }).execute();
        throw new Error('crash in the middle');
      }), /crash in the middle/);
      assert.equal((await store.db.selectFrom('accounts').selectAll().where('id', '=', '111111111111').execute()).length, 0);
      assert.equal((await store.db.selectFrom('users').selectAll().where('id', '=', 'AIDAHALF').execute()).length, 0);
    });

    it('enforces unique names per account', async () => {
      await store.db.insertInto('accounts').values({ id: '222222222222', name: 'a2', status: 'active', created_at: now() }).execute();
      const kp = { account_id: '222222222222', name: 'k', key_type: 'rsa', fingerprint: 'f', public_key: 'p', created_at: now() };
      await store.db.insertInto('key_pairs').values({ id: 'key-1', ...kp }).execute();
      await assert.rejects(store.db.insertInto('key_pairs').values({ id: 'key-2', ...kp }).execute());
      await store.db.insertInto('key_pairs').values({ id: 'key-3', ...kp, account_id: '333333333333' }).execute();
    });

    it('upserts tags on the (resource, key) key', async () => {
      for (const value of ['one', 'two']) {
        await store.db.insertInto('tags').values({ account_id: '222222222222', resource_id: 'vpc-1', resource_type: 'vpc', key: 'Name', value })
          .onConflict((oc) => oc.columns(['resource_id', 'key']).doUpdateSet({ value })).execute();
      }
      const rows = await store.db.selectFrom('tags').selectAll().where('resource_id', '=', 'vpc-1').execute();
      assert.deepEqual(rows.map((r) => r.value), ['two']);
    });

    it('isolates concurrent transactions', async () => {
      await Promise.all(Array.from({ length: 10 }, (_, i) => store.transaction(async (tx) => {
        await tx.insertInto('settings').values({ key: `k${i}`, value: String(i) }).execute();
      })));
      const rows = await store.db.selectFrom('settings').selectAll().where('key', 'like', 'k%').execute();
      assert.equal(rows.length, 10);
    });

    it('answers rows as objects named by their columns, whole or streamed, the same query again too', async () => {
      await store.db.insertInto('settings').values([{ key: 'row-a', value: '1' }, { key: 'row-b', value: '2' }]).execute();
      const query = () => store.db.selectFrom('settings').select(['value as v', 'key']).where('key', 'like', 'row-%').orderBy('key');
      const expected = [{ v: '1', key: 'row-a' }, { v: '2', key: 'row-b' }];
      assert.deepEqual(await query().execute(), expected);
      assert.deepEqual(await query().execute(), expected, 'a statement used again');
      if (backend.name === 'sqlite') { // our PostgreSQL dialect has no cursor: nothing streams there
        const streamed: unknown[] = [];
        for await (const row of query().stream()) streamed.push(row);
        assert.deepEqual(streamed, expected);
      }
      const [inserted] = await store.db.insertInto('settings').values({ key: 'row-c', value: '3' }).returning(['key', 'value']).execute();
      assert.deepEqual(inserted, { key: 'row-c', value: '3' });
    });
  });
}

describe('SQLite file store', () => {
  it('keeps its data across a reopen and re-running migrations is harmless', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ironbark-store-'));
    try {
      const file = join(dir, 'state', 'ironbark.sqlite');
      const first = await openStore({ url: file });
      await first.db.insertInto('settings').values({ key: 'x', value: 'kept' }).execute();
      await first.close();
      const second = await openStore({ url: file });
      const row = await second.db.selectFrom('settings').selectAll().where('key', '=', 'x').executeTakeFirst();
      assert.equal(row?.value, 'kept');
      await second.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a corrupt database file with a clear error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ironbark-store-'));
    try {
      const file = join(dir, 'bad.sqlite');
      (await import('node:fs')).writeFileSync(file, 'this is not a database'.repeat(100));
      await assert.rejects(openStore({ url: file }), /not a database|file is not a database|malformed/i);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
