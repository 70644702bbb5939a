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

export type Db = Kysely<Database>;
export type Tx = Transaction<Database>;

export interface Store {
  readonly db: Db;
  readonly kind: 'sqlite' | 'postgres';
  transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface StoreOptions {
  /** `postgres://...` / `postgresql://...`, a SQLite file path, or `:memory:`. */
  url: string;
}

export async function openStore(options: StoreOptions): Promise<Store> {
  const { url } = options;
  const isPostgres = /^postgres(ql)?:\/\//.test(url);
  let db: Db;
  if (isPostgres) {
    // Return BIGINT/NUMERIC as numbers where they fit; our counters never exceed 2^53.
    pg.types.setTypeParser(20, (v) => Number(v));
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    // An idle connection the server drops (restart, failover) must not crash the controller: the
    // pool discards it and the next query connects again.
    pool.on('error', (err) => process.emitWarning(`PostgreSQL connection lost: ${err.message}`));
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  } else {
    if (url !== ':memory:') prepareSqliteFiles(url);
    const sqlite = new Sqlite(url);
    sqlite.pragma('journal_mode = WAL');
    // The WAL holds recent writes (access-key secrets among them) until a checkpoint.
    if (url !== ':memory:') for (const suffix of SQLITE_SIDE_FILES) restrictFileSync(`${url}${suffix}`);
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 5000');
    db = new Kysely<Database>({ dialect: new SqliteDialect({ database: new CachingSqliteDatabase(sqlite) }) });
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
