// Which columns hold secrets, and the Kysely plugin that keeps them sealed (secret-box.ts): it
// seals what an INSERT or UPDATE writes into them and opens what a query reads out of them, so
// no code path can write one in plaintext by forgetting to, and callers see plain values in
// memory only. Select these columns under their own names: an alias (`secret as s`) comes back
// sealed. Code that must see the sealed form (rotation, start-up checks) uses `withoutPlugins()`.
import {
  ColumnUpdateNode, PrimitiveValueListNode, ValueListNode, ValueNode, ValuesNode,
  type KyselyPlugin, type OperationNode, type PluginTransformQueryArgs, type PluginTransformResultArgs,
  type QueryResult, type RootOperationNode, type UnknownRow,
} from 'kysely';
import type { KeyRing } from './key-ring.ts';
import { openSecret, sealSecret, sealedKeyId } from './secret-box.ts';

/** Every secret column of the store, with the column that names its row. */
export const SECRET_COLUMNS = [
  { table: 'access_keys', column: 'secret_access_key', id: 'access_key_id' },
  { table: 'clusters', column: 'secret', id: 'zone' },
] as const;

const COLUMN_BY_TABLE = new Map<string, string>(SECRET_COLUMNS.map((c) => [c.table, c.column]));
const SECRET_FIELDS: readonly string[] = [...new Set(SECRET_COLUMNS.map((c) => c.column))];

function tableName(node: OperationNode | undefined): string | undefined {
  if (node?.kind === 'AliasNode') return tableName((node as unknown as { node: OperationNode }).node);
  if (node?.kind !== 'TableNode') return undefined;
  return (node as unknown as { table: { identifier: { name: string } } }).table.identifier.name;
}

function columnName(node: OperationNode): string | undefined {
  return node.kind === 'ColumnNode' ? (node as unknown as { column: { name: string } }).column.name : undefined;
}

export class SecretColumnsPlugin implements KyselyPlugin {
  readonly #ring: KeyRing;

  constructor(ring: KeyRing) {
    this.#ring = ring;
  }

  #seal(value: unknown): unknown {
    return typeof value === 'string' ? sealSecret(this.#ring, value) : value;
  }

  #sealNode(node: OperationNode): OperationNode {
    return node.kind === 'ValueNode' ? ValueNode.create(this.#seal((node as ValueNode).value)) : node;
  }

  #sealUpdates(updates: ReadonlyArray<ColumnUpdateNode> | undefined, column: string): ReadonlyArray<ColumnUpdateNode> | undefined {
    if (!updates?.some((u) => columnName(u.column) === column)) return updates;
    return updates.map((u) => (columnName(u.column) === column ? ColumnUpdateNode.create(u.column, this.#sealNode(u.value)) : u));
  }

  transformQuery({ node }: PluginTransformQueryArgs): RootOperationNode {
    if (node.kind === 'InsertQueryNode') {
      const column = COLUMN_BY_TABLE.get(tableName(node.into) ?? '');
      if (column === undefined) return node;
      const at = node.columns?.findIndex((c) => columnName(c) === column) ?? -1;
      let values = node.values;
      if (at >= 0 && values?.kind === 'ValuesNode') {
        values = ValuesNode.create((values as ValuesNode).values.map((row) => {
          if (row.kind === 'PrimitiveValueListNode') {
            return PrimitiveValueListNode.create(row.values.map((v, i) => (i === at ? this.#seal(v) : v)));
          }
          return ValueListNode.create(row.values.map((v, i) => (i === at ? this.#sealNode(v) : v)));
        }));
      }
      const onConflict = node.onConflict && { ...node.onConflict, updates: this.#sealUpdates(node.onConflict.updates, column) };
      return Object.freeze({ ...node, values, onConflict });
    }
    if (node.kind === 'UpdateQueryNode') {
      const column = COLUMN_BY_TABLE.get(tableName(node.table) ?? '');
      if (column === undefined) return node;
      return Object.freeze({ ...node, updates: this.#sealUpdates(node.updates, column) });
    }
    return node;
  }

  async transformResult({ result }: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    const rows = result.rows;
    if (rows.length === 0) return result;
    // Every row of a result has the same fields: the first tells whether any is a secret.
    const first = rows[0]!;
    const fields = SECRET_FIELDS.filter((f) => f in first);
    if (fields.length === 0) return result;
    for (const row of rows) {
      for (const field of fields) {
        const value = row[field];
        if (typeof value === 'string' && sealedKeyId(value) !== undefined) row[field] = openSecret(this.#ring, value);
      }
    }
    return result;
  }
}
