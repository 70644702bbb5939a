// The state store: one Kysely database over embedded SQLite (default) or PostgreSQL (shared by
// several controllers). Callers write ordinary Kysely queries; `transaction` is the only way to
// make multi-row changes, so a crash never leaves half a resource.
import { Kysely, Migrator, SqliteDialect, PostgresDialect, type MigrationProvider, type Transaction } from 'kysely';
import Sqlite from 'better-sqlite3';
import { CachingSqliteDatabase } from './sqlite-database.ts';
import pg from 'pg';
import { dirname } from 'node:path';
import { ensurePrivateDirSync, ensurePrivateFileSync, restrictFileSync } from './private-files.ts';
import type { Database } from './schema.ts';
import { migrations } from './migrations.ts';
import { KeyRing } from './key-ring.ts';
import { SecretColumnsPlugin } from './secret-columns.ts';

export type Db = Kysely<Database>;
export type Tx = Transaction<Database>;

export interface Store {
  readonly db: Db;
  readonly kind: 'sqlite' | 'postgres';
  /** The master keys the secret columns are sealed with (secret-columns.ts). */
  readonly keyRing: KeyRing;
  transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface StoreOptions {
  /** `postgres://...` / `postgresql://...`, a SQLite file path, or `:memory:`. */
  url: string;
  /**
   * The master keys that seal the secret columns. Without it, a `:memory:` store gets a key of
   * its own (both end with the process) and any other store can neither write nor read a secret:
   * a key made up here would leave what it sealed unreadable by the cloud controller.
   */
  keyRing?: KeyRing;
}

export async function openStore(options: StoreOptions): Promise<Store> {
  const { url } = options;
  const isPostgres = /^postgres(ql)?:\/\//.test(url);
  const keyRing = options.keyRing ?? (url === ':memory:' ? KeyRing.ephemeral()
    : KeyRing.locked('This store was opened without its master key, so it can neither read nor write secrets (open it with the master key file).'));
  const plugins = [new SecretColumnsPlugin(keyRing)];
  let db: Db;
  if (isPostgres) {
    // Return BIGINT/NUMERIC as numbers where they fit; our counters never exceed 2^53.
    pg.types.setTypeParser(20, (v) => Number(v));
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    // An idle connection the server drops (restart, failover) must not crash the controller: the
    // pool discards it and the next query connects again.
    pool.on('error', (err) => process.emitWarning(`PostgreSQL connection lost: ${err.message}`));
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }), plugins });
  } else {
    if (url !== ':memory:') prepareSqliteFiles(url);
    const sqlite = new Sqlite(url);
    sqlite.pragma('journal_mode = WAL');
    // The WAL holds recent writes (access-key secrets among them) until a checkpoint.
    if (url !== ':memory:') for (const suffix of SQLITE_SIDE_FILES) restrictFileSync(`${url}${suffix}`);
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 5000');
    db = new Kysely<Database>({ dialect: new SqliteDialect({ database: new CachingSqliteDatabase(sqlite) }), plugins });
  }
  try {
    await migrate(db);
  } catch (err) {
    await db.destroy().catch(() => {});
    throw err;
  }
  return {
    db,
    kind: isPostgres ? 'postgres' : 'sqlite',
    keyRing,
    transaction: (work) => db.transaction().execute(work),
    close: () => db.destroy(),
  };
}

/** Files SQLite keeps beside the database: the write-ahead log, its index, a rollback journal. */
const SQLITE_SIDE_FILES = ['-wal', '-shm', '-journal'];

/**
 * The database holds every secret of the cloud, so it is 0600 before SQLite opens it: SQLite
 * gives the -wal and -shm files it makes the database file's mode, and files an earlier version
 * left open are narrowed. A folder made for it is 0700; a folder that exists is left as it is
 * (a `--store` path may sit in a shared one).
 */
function prepareSqliteFiles(path: string): void {
  ensurePrivateDirSync(dirname(path), { tighten: false });
  ensurePrivateFileSync(path);
  for (const suffix of SQLITE_SIDE_FILES) restrictFileSync(`${path}${suffix}`);
}

async function migrate(db: Db): Promise<void> {
  const provider: MigrationProvider = { getMigrations: async () => migrations };
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new Error(`store migration ${failed} failed: ${(error as Error).message ?? error}`);
  }
}
