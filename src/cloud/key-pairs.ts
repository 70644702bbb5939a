// EC2 key pairs: CreateKeyPair, ImportKeyPair, DescribeKeyPairs, DeleteKeyPair.
import type { OperationTable, RequestContext } from './context.ts';
import type { KeyPairsTable } from '../store/schema.ts';
import type { Tx } from '../store/store.ts';
import { newId } from './ids.ts';
import { deleteAllTags, tagsByResource, tagsFromSpecifications, writeTags, type Tag, type TagSpecification } from './tags.ts';
import {
  createSshKey, openSshPublicKey, parsePublicKeyMaterial,
  PRIVATE_KEY_FORMATS, SSH_KEY_TYPES, type PrivateKeyFormat, type SshKeyType,
} from './ssh-keys.ts';
import { applyFilters, type Filter } from '../protocol/filters.ts';
import { Ec2Error } from '../protocol/errors.ts';

const MAX_KEY_NAME_LENGTH = 255;

const notFound = (nameOrId: string) => new Ec2Error('InvalidKeyPair.NotFound', `The key pair '${nameOrId}' does not exist`);

function validateKeyName(name: unknown): string {
  if (typeof name !== 'string' || name === '') throw new Ec2Error('MissingParameter', 'The request must contain the parameter KeyName');
  if (name.length > MAX_KEY_NAME_LENGTH) {
    throw new Ec2Error('InvalidParameterValue', `Value (${name}) for parameter keyName is invalid. Length exceeds maximum of ${MAX_KEY_NAME_LENGTH}.`);
  }
  if (/[^\x20-\x7e]/.test(name)) {
    throw new Ec2Error('InvalidParameterValue', `Value (${name}) for parameter keyName is invalid. Character sets beyond ASCII are not supported.`);
  }
  return name;
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], fallback: T, parameter: string): T {
  if (value === undefined || value === null) return fallback;
  if (!allowed.includes(value as T)) {
    throw new Ec2Error('InvalidParameterValue', `Value (${String(value)}) for parameter ${parameter} is invalid. Valid values are: ${allowed.join(', ')}.`);
  }
  return value as T;
}

/** Inserts the key pair and its tags in one transaction; a taken name is InvalidKeyPair.Duplicate. */
async function storeKeyPair(ctx: RequestContext, row: KeyPairsTable, specs: TagSpecification[] | undefined): Promise<Tag[]> {
  const tags = tagsFromSpecifications(specs, ['key-pair']).get('key-pair') ?? [];
  const duplicate = () => new Ec2Error('InvalidKeyPair.Duplicate', `The keypair '${row.name}' already exists.`);
  try {
    await ctx.store.transaction(async (tx: Tx) => {
      const taken = await tx.selectFrom('key_pairs').select('id')
        .where('account_id', '=', row.account_id).where('name', '=', row.name).executeTakeFirst();
      if (taken) throw duplicate();
      await tx.insertInto('key_pairs').values(row).execute();
      await writeTags(tx, row.account_id, row.id, tags);
    });
  } catch (e) {
    // Two concurrent creates of one name: the unique constraint decides, the loser sees Duplicate.
    if (isUniqueViolation(e)) throw duplicate();
    throw e;
  }
  return tags;
}

function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  return err?.code === 'SQLITE_CONSTRAINT_UNIQUE' || err?.code === '23505';
}

async function CreateKeyPair(ctx: RequestContext, input: {
  KeyName?: string; KeyType?: string; KeyFormat?: string; TagSpecifications?: TagSpecification[];
}) {
  const name = validateKeyName(input.KeyName);
  const keyType = oneOf<SshKeyType>(input.KeyType, SSH_KEY_TYPES, 'rsa', 'KeyType');
  const format = oneOf<PrivateKeyFormat>(input.KeyFormat, PRIVATE_KEY_FORMATS, 'pem', 'KeyFormat');
  tagsFromSpecifications(input.TagSpecifications, ['key-pair']);
  const created = await createSshKey(keyType, format, name);
  const row: KeyPairsTable = {
    id: newId('key'), account_id: ctx.caller.accountId, name, key_type: keyType,
    fingerprint: created.fingerprint, public_key: openSshPublicKey(created.publicKeyBlob, name),
    created_at: new Date().toISOString(),
  };
  const tags = await storeKeyPair(ctx, row, input.TagSpecifications);
  return {
    KeyFingerprint: row.fingerprint, KeyMaterial: created.privateKeyMaterial, KeyName: name, KeyPairId: row.id,
    ...(tags.length ? { Tags: tags } : {}),
  };
}

async function ImportKeyPair(ctx: RequestContext, input: {
  KeyName?: string; PublicKeyMaterial?: Buffer | string; TagSpecifications?: TagSpecification[];
}) {
  const name = validateKeyName(input.KeyName);
  if (input.PublicKeyMaterial === undefined || input.PublicKeyMaterial.length === 0) {
    throw new Ec2Error('MissingParameter', 'The request must contain the parameter PublicKeyMaterial');
  }
  const imported = parsePublicKeyMaterial(input.PublicKeyMaterial);
  const row: KeyPairsTable = {
    id: newId('key'), account_id: ctx.caller.accountId, name, key_type: imported.keyType,
    fingerprint: imported.fingerprint, public_key: openSshPublicKey(imported.publicKeyBlob, name),
    created_at: new Date().toISOString(),
  };
  const tags = await storeKeyPair(ctx, row, input.TagSpecifications);
  return { KeyFingerprint: row.fingerprint, KeyName: name, KeyPairId: row.id, ...(tags.length ? { Tags: tags } : {}) };
}

interface KeyPairView { row: KeyPairsTable; tags: Tag[] }

const KEY_PAIR_FILTERS = {
  'key-pair-id': (k: KeyPairView) => k.row.id,
  'key-name': (k: KeyPairView) => k.row.name,
  fingerprint: (k: KeyPairView) => k.row.fingerprint,
  'key-type': (k: KeyPairView) => k.row.key_type,
};

async function DescribeKeyPairs(ctx: RequestContext, input: {
  KeyNames?: string[]; KeyPairIds?: string[]; Filters?: Filter[]; IncludePublicKey?: boolean;
}) {
  const accountId = ctx.caller.accountId;
  let rows = await ctx.store.db.selectFrom('key_pairs').selectAll().where('account_id', '=', accountId).execute();
  const names = input.KeyNames ?? [];
  const ids = input.KeyPairIds ?? [];
  if (names.length || ids.length) {
    for (const n of names) if (!rows.some((r) => r.name === n)) throw notFound(n);
    for (const id of ids) if (!rows.some((r) => r.id === id)) throw notFound(id);
    rows = rows.filter((r) => names.includes(r.name) || ids.includes(r.id));
  }
  const tags = await tagsByResource(ctx.store.db, accountId, rows.map((r) => r.id));
  const views = rows.map((row) => ({ row, tags: tags.get(row.id) ?? [] }));
  const selected = applyFilters(views, input.Filters, KEY_PAIR_FILTERS, (k) => k.tags);
  selected.sort((a, b) => (a.row.name < b.row.name ? -1 : a.row.name > b.row.name ? 1 : 0));
  return {
    KeyPairs: selected.map(({ row, tags }) => ({
      KeyPairId: row.id,
      KeyFingerprint: row.fingerprint,
      KeyName: row.name,
      KeyType: row.key_type,
      Tags: tags,
      ...(input.IncludePublicKey ? { PublicKey: row.public_key } : {}),
      CreateTime: new Date(row.created_at),
    })),
  };
}

async function DeleteKeyPair(ctx: RequestContext, input: { KeyName?: string; KeyPairId?: string }) {
  const accountId = ctx.caller.accountId;
  if (!input.KeyName && !input.KeyPairId) {
    throw new Ec2Error('MissingParameter', 'The request must contain the parameter KeyName or KeyPairId');
  }
  const deletedId = await ctx.store.transaction(async (tx) => {
    let query = tx.selectFrom('key_pairs').select('id').where('account_id', '=', accountId);
    if (input.KeyPairId) query = query.where('id', '=', input.KeyPairId);
    if (input.KeyName) query = query.where('name', '=', input.KeyName);
    const row = await query.executeTakeFirst();
    if (!row) {
      // EC2 treats deleting an absent name as done, but an absent id as an error.
      if (input.KeyPairId) throw notFound(input.KeyPairId);
      return undefined;
    }
    await tx.deleteFrom('key_pairs').where('id', '=', row.id).execute();
    await deleteAllTags(tx, row.id);
    return row.id;
  });
  return { Return: true, ...(deletedId ? { KeyPairId: deletedId } : {}) };
}

export const keyPairOperations: OperationTable = { CreateKeyPair, ImportKeyPair, DescribeKeyPairs, DeleteKeyPair };
