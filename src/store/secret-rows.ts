// The secret columns as stored, for the code that changes how they are sealed: which master keys
// the rows use, and sealing rows again under the current key (plaintext rows at first start with
// a key, every row in a rotation). Each row is replaced only if it still holds what was read, so
// several controllers doing this at once, or a secret written meanwhile, lose nothing.
import { sql, type Kysely } from 'kysely';
import type { Db, Store } from './store.ts';
import type { KeyRing } from './key-ring.ts';
import { SECRET_COLUMNS } from './secret-columns.ts';
import { openSecret, sealSecret, sealedKeyId } from './secret-box.ts';

/** The settings row naming the store's current master key: a store is never read with a stranger's key. */
export const MASTER_KEY_SETTING = 'master-key-id';

/** `plaintext` counts rows not sealed at all. */
export const PLAINTEXT = 'plaintext';

interface SecretRow { table: string; column: string; idColumn: string; id: string; value: string }

async function* secretRows(db: Db): AsyncGenerator<SecretRow> {
  // Without the plugin: these are the values as stored.
  const raw = db.withoutPlugins() as unknown as Kysely<Record<string, Record<string, string>>>;
  for (const { table, column, id } of SECRET_COLUMNS) {
    const rows = await raw.selectFrom(table).select([`${id} as id`, `${column} as value`]).execute();
    for (const row of rows) yield { table, column, idColumn: id, id: row.id!, value: row.value! };
  }
}

/** How many secrets each master key seals (by key id), and how many are plaintext. */
export async function secretKeyUsage(db: Db): Promise<Map<string, number>> {
  const usage = new Map<string, number>();
  for await (const row of secretRows(db)) {
    const id = sealedKeyId(row.value) ?? PLAINTEXT;
    usage.set(id, (usage.get(id) ?? 0) + 1);
  }
  return usage;
}

/**
 * Seals again, under the ring's current key, every secret whose key id (or PLAINTEXT) `needs`
 * picks; returns how many rows changed.
 */
export async function resealSecrets(db: Db, ring: KeyRing, needs: (keyId: string) => boolean): Promise<number> {
  const raw = db.withoutPlugins() as unknown as Kysely<Record<string, Record<string, string>>>;
  let changed = 0;
  for await (const row of secretRows(db)) {
    if (!needs(sealedKeyId(row.value) ?? PLAINTEXT)) continue;
    const sealed = sealSecret(ring, openSecret(ring, row.value));
    const result = await raw.updateTable(row.table).set({ [row.column]: sealed })
      .where(row.idColumn, '=', row.id).where(row.column, '=', row.value).executeTakeFirst();
    changed += Number(result.numUpdatedRows);
  }
  return changed;
}

export async function recordedMasterKeyId(db: Db): Promise<string | undefined> {
  return (await db.selectFrom('settings').select('value').where('key', '=', MASTER_KEY_SETTING).executeTakeFirst())?.value;
}

export async function recordMasterKeyId(db: Db, id: string, replace: boolean): Promise<void> {
  await db.insertInto('settings').values({ key: MASTER_KEY_SETTING, value: id })
    .onConflict((oc) => (replace ? oc.column('key').doUpdateSet({ value: id }) : oc.column('key').doNothing())).execute();
}

/**
 * Sealing a row again leaves its old value in the database's free space (SQLite's page slack and
 * write-ahead log, PostgreSQL's dead tuples) until it happens to be reused: a plaintext secret, or
 * one under a retired key. Rewriting the files forgets them.
 */
export async function forgetReplacedValues(store: Store): Promise<void> {
  if (store.kind === 'sqlite') {
    await sql`VACUUM`.execute(store.db);
    await sql`PRAGMA wal_checkpoint(TRUNCATE)`.execute(store.db);
  } else {
    await sql.raw(`VACUUM FULL ${SECRET_COLUMNS.map((c) => c.table).join(', ')}`).execute(store.db);
  }
}
