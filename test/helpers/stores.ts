// The store back-ends every store-level test runs against: SQLite always, PostgreSQL when the
// test command started one (IRONBARK_TEST_PG_URL). Each PostgreSQL store gets its own database.
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { openStore, type Store } from '../../src/store/store.ts';
import { KeyRing } from '../../src/store/key-ring.ts';
import { testPostgresUrl } from './prerequisites.ts';

export interface StoreBackend {
  name: 'sqlite' | 'postgres';
  open(): Promise<{ store: Store; dispose(): Promise<void> }>;
}

/** A new, empty PostgreSQL database next to the one the test command started. */
export async function freshPostgresDatabase(pgUrl: string): Promise<{ url: string; drop(): Promise<void> }> {
  const dbName = `ironbark_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: pgUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  await admin.end();
  const url = new URL(pgUrl);
  url.pathname = `/${dbName}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: pgUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
      await c.end();
    },
  };
}

export function storeBackends(): StoreBackend[] {
  const backends: StoreBackend[] = [{
    name: 'sqlite',
    async open() {
      const store = await openStore({ url: ':memory:' });
      return { store, dispose: () => store.close() };
    },
  }];
  const pgUrl = testPostgresUrl();
  if (pgUrl) {
    backends.push({
      name: 'postgres',
      async open() {
        const database = await freshPostgresDatabase(pgUrl);
        const store = await openStore({ url: database.url, keyRing: KeyRing.ephemeral() });
        return { store, async dispose() { await store.close(); await database.drop(); } };
      },
    });
  }
  return backends;
}
