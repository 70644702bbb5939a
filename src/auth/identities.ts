// Accounts, users and access keys in the state store. Creation only: the cloud wires account
// provisioning (default VPC etc.) around createAccount. Pass a transaction where several rows
// must appear together (createAccount writes three).
import type { Db } from '../store/store.ts';
import type { AccessKeysTable, AccountsTable, UsersTable } from '../store/schema.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { newAccountId, newPrincipalId, newSecretKey } from '../cloud/ids.ts';
import type { ResolvedKey } from './authenticate.ts';
import { policyToJson } from './policy.ts';

// Results are the store's own rows (snake_case, booleans as 0/1, policy as JSON text), as the
// callers that provision accounts and write credentials use them.
export type Account = AccountsTable;
export type User = UsersTable;
export type AccessKey = AccessKeysTable;
/** An access key as listed: without its secret, with its user's name. */
export type AccessKeySummary = Omit<AccessKeysTable, 'secret_access_key'> & { user_name: string };

/** The account's root user: full EC2 access within the account. */
export const ADMIN_USER_NAME = 'admin';
const ADMIN_POLICY = ['ec2:*'];
/** Users created without a policy may use all of EC2 in their account, like Eucalyptus' account users with the default policy. */
const DEFAULT_USER_POLICY = ['ec2:*'];

const ACCOUNT_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$/;
const USER_NAME = /^[A-Za-z0-9_+=,.@-]{1,64}$/;

function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: string };
  return err?.code === '23505' || err?.code === 'SQLITE_CONSTRAINT_UNIQUE' || err?.code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

export async function createAccount(tx: Db, name: string): Promise<{ account: Account; adminUser: User; accessKey: AccessKey }> {
  if (typeof name !== 'string' || !ACCOUNT_NAME.test(name)) {
    throw new Ec2Error('InvalidParameterValue',
      `Invalid account name "${name}": use 1-63 letters, digits, '.', '_', '@' or '-', starting with a letter or digit.`);
  }
  const existing = await tx.selectFrom('accounts').select('id').where('name', '=', name).executeTakeFirst();
  if (existing) throw new Ec2Error('InvalidParameterValue', `An account named "${name}" already exists (${existing.id}).`);

  const row = { id: newAccountId(), name, status: 'active', created_at: new Date().toISOString() };
  try {
    await tx.insertInto('accounts').values(row).execute();
  } catch (e) {
    if (isUniqueViolation(e)) throw new Ec2Error('InvalidParameterValue', `An account named "${name}" already exists.`);
    throw e;
  }
  const adminUser = await insertUser(tx, row.id, ADMIN_USER_NAME, ADMIN_POLICY, true);
  const accessKey = await createAccessKey(tx, adminUser.id);
  return { account: row, adminUser, accessKey };
}

async function insertUser(tx: Db, accountId: string, name: string, policy: readonly string[], isAdmin: boolean): Promise<User> {
  const row = {
    id: newPrincipalId('AIDA', 17),
    account_id: accountId,
    name,
    is_admin: isAdmin ? 1 : 0,
    policy: policyToJson(policy),
    created_at: new Date().toISOString(),
  };
  try {
    await tx.insertInto('users').values(row).execute();
  } catch (e) {
    if (isUniqueViolation(e)) throw new Ec2Error('InvalidParameterValue', `A user named "${name}" already exists in account ${accountId}.`);
    throw e;
  }
  return row;
}

export async function createUser(tx: Db, accountId: string, name: string, policy: readonly string[] = DEFAULT_USER_POLICY): Promise<User> {
  if (typeof name !== 'string' || !USER_NAME.test(name)) {
    throw new Ec2Error('InvalidParameterValue', `Invalid user name "${name}": use 1-64 letters, digits or _+=,.@-.`);
  }
  const account = await tx.selectFrom('accounts').select('id').where('id', '=', accountId).executeTakeFirst();
  if (!account) throw new Ec2Error('InvalidParameterValue', `The account ${accountId} does not exist.`);
  const clash = await tx.selectFrom('users').select('id')
    .where('account_id', '=', accountId).where('name', '=', name).executeTakeFirst();
  if (clash) throw new Ec2Error('InvalidParameterValue', `A user named "${name}" already exists in account ${accountId}.`);
  return insertUser(tx, accountId, name, policy, false);
}

export async function createAccessKey(tx: Db, userId: string): Promise<AccessKey> {
  const user = await tx.selectFrom('users').select(['id', 'account_id']).where('id', '=', userId).executeTakeFirst();
  if (!user) throw new Ec2Error('InvalidParameterValue', `The user ${userId} does not exist.`);
  const row = {
    access_key_id: newPrincipalId('AKIA', 16),
    secret_access_key: newSecretKey(),
    user_id: user.id,
    account_id: user.account_id,
    status: 'Active',
    created_at: new Date().toISOString(),
  };
  await tx.insertInto('access_keys').values(row).execute();
  return row;
}

function noSuchKey(accessKeyId: string): Ec2Error {
  return new Ec2Error('InvalidParameterValue', `The access key ${accessKeyId} does not exist.`);
}

export async function setAccessKeyStatus(tx: Db, accessKeyId: string, status: 'Active' | 'Inactive'): Promise<void> {
  if (status !== 'Active' && status !== 'Inactive') {
    throw new Ec2Error('InvalidParameterValue', `Invalid access key status "${status}": use Active or Inactive.`);
  }
  const result = await tx.updateTable('access_keys').set({ status }).where('access_key_id', '=', accessKeyId).executeTakeFirst();
  if (Number(result.numUpdatedRows) === 0) throw noSuchKey(accessKeyId);
}

export async function deleteAccessKey(tx: Db, accessKeyId: string): Promise<void> {
  const result = await tx.deleteFrom('access_keys').where('access_key_id', '=', accessKeyId).executeTakeFirst();
  if (Number(result.numDeletedRows) === 0) throw noSuchKey(accessKeyId);
}

export async function listAccounts(db: Db): Promise<Account[]> {
  return db.selectFrom('accounts').selectAll().orderBy('created_at').orderBy('id').execute();
}

export async function findAccountByName(db: Db, name: string): Promise<Account | undefined> {
  return db.selectFrom('accounts').selectAll().where('name', '=', name).executeTakeFirst();
}

export async function listUsers(db: Db, accountId: string): Promise<User[]> {
  return db.selectFrom('users').selectAll().where('account_id', '=', accountId)
    .orderBy('created_at').orderBy('id').execute();
}

/** Access keys without their secrets, optionally of one account or one user. */
export async function listAccessKeys(db: Db, filter: { accountId?: string; userId?: string } = {}): Promise<AccessKeySummary[]> {
  let q = db.selectFrom('access_keys').innerJoin('users', 'users.id', 'access_keys.user_id')
    .select(['access_keys.access_key_id', 'access_keys.user_id', 'users.name as user_name', 'access_keys.account_id',
      'access_keys.status', 'access_keys.created_at']);
  if (filter.accountId !== undefined) q = q.where('access_keys.account_id', '=', filter.accountId);
  if (filter.userId !== undefined) q = q.where('access_keys.user_id', '=', filter.userId);
  return q.orderBy('access_keys.created_at').orderBy('access_keys.access_key_id').execute();
}

/** The key, its secret and the caller it stands for; status is Inactive when the key or its account is. */
export async function findAccessKey(db: Db, accessKeyId: string): Promise<ResolvedKey | undefined> {
  const row = await db.selectFrom('access_keys')
    .innerJoin('users', 'users.id', 'access_keys.user_id')
    .innerJoin('accounts', 'accounts.id', 'users.account_id')
    .select(['access_keys.access_key_id', 'access_keys.secret_access_key', 'access_keys.status', 'users.id as user_id',
      'users.name as user_name', 'users.is_admin', 'users.policy', 'accounts.id as account_id', 'accounts.status as account_status'])
    .where('access_keys.access_key_id', '=', accessKeyId)
    .executeTakeFirst();
  if (!row) return undefined;
  return {
    accessKeyId: row.access_key_id,
    secretAccessKey: row.secret_access_key,
    status: row.status === 'Active' && row.account_status === 'active' ? 'Active' : 'Inactive',
    caller: {
      accountId: row.account_id,
      userId: row.user_id,
      userName: row.user_name,
      accessKeyId: row.access_key_id,
      isAdmin: Number(row.is_admin) === 1,
      policy: row.policy,
    },
  };
}
