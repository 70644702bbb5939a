// better-sqlite3 as Kysely's SqliteDatabase, with two changes that matter at 10,000 instances:
// statements are prepared once per SQL text instead of on every query, and rows are read as
// arrays and built into objects of one fixed shape per statement. better-sqlite3's own row
// objects of a wide table (instances has 27 columns) come out about three times slower and are
// slower to read afterwards.
import type Sqlite from 'better-sqlite3';
import type { SqliteDatabase, SqliteStatement } from 'kysely';

/** More distinct SQL texts than this means queries built with inlined values: start over rather than grow. */
const MAX_CACHED_STATEMENTS = 1000;

type RowBuilder = (values: unknown[]) => Record<string, unknown>;

function rowBuilderFor(columns: string[]): RowBuilder {
  const fields = columns.map((name, i) => `${JSON.stringify(name)}: values[${i}]`).join(', ');
  return new Function('values', `return { ${fields} };`) as RowBuilder;
}

class CachedStatement implements SqliteStatement {
  readonly reader: boolean;
  /** A reader answers raw arrays, made into rows by #buildRow. */
  readonly #statement: Sqlite.Statement;
  #buildRow: RowBuilder | undefined;
  #columnCount = 0;

  constructor(database: Sqlite.Database, sql: string) {
    this.#statement = database.prepare(sql);
    this.reader = this.#statement.reader;
    if (this.reader) {
      this.#statement.raw(true);
      this.#learnColumns();
    }
  }

  #learnColumns(): void {
    const columns = this.#statement.columns().map((c) => c.name);
    this.#buildRow = rowBuilderFor(columns);
    this.#columnCount = columns.length;
  }

  /** The row builder for `values`, relearnt when a migration that adds a column changed what `select *` returns. */
  #builderFor(values: unknown[]): RowBuilder {
    if (values.length !== this.#columnCount) this.#learnColumns();
    return this.#buildRow!;
  }

  all(parameters: ReadonlyArray<unknown>): unknown[] {
    const rows = this.#statement.all(...parameters) as unknown[][];
    if (rows.length === 0) return rows;
    const build = this.#builderFor(rows[0]!);
    const out = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) out[i] = build(rows[i]!);
    return out;
  }

  run(parameters: ReadonlyArray<unknown>): { changes: number | bigint; lastInsertRowid: number | bigint } {
    return this.#statement.run(...parameters);
  }

  *iterate(parameters: ReadonlyArray<unknown>): IterableIterator<unknown> {
    for (const values of this.#statement.iterate(...parameters) as IterableIterator<unknown[]>) yield this.#builderFor(values)(values);
  }
}

export class CachingSqliteDatabase implements SqliteDatabase {
  readonly #database: Sqlite.Database;
  readonly #statements = new Map<string, CachedStatement>();

  constructor(database: Sqlite.Database) {
    this.#database = database;
  }

  prepare(sql: string): SqliteStatement {
    let statement = this.#statements.get(sql);
    if (statement === undefined) {
      // Schema changes (migrations) make prepared statements of the old schema re-prepare
      // themselves inside SQLite, so the cache stays valid across them.
      statement = new CachedStatement(this.#database, sql);
      if (this.#statements.size >= MAX_CACHED_STATEMENTS) this.#statements.clear();
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  close(): void {
    this.#statements.clear();
    this.#database.close();
  }
}
