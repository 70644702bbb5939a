// The operator's admin API (JSON): accounts, users, access keys, VM types, quotas and usage.
//
// Conventions shared by every admin module (this file, admin-clusters.ts, ...):
// - A module exports `createXxxApi(deps): Hono<AdminEnv>` built with `newAdminApp(deps)` below,
//   which admits only cloud administrators (see admin-auth.ts: SigV4, exactly as for EC2, with a
//   key of an admin user of the cloud's admin account) and renders errors as JSON. The cloud
//   controller mounts each with `app.route('/admin', createXxxApi(...))`, then registers
//   `app.all('/admin/*', adminNotFound)` after all of them.
// - Paths are `/admin/v1/<collection>[/<id>[/<verb>]]`, collections in kebab-case plural
//   (`accounts`, `access-keys`, `vm-types`). GET lists or shows; POST on a collection creates (201);
//   PUT on `<collection>/<id>` creates or replaces; `POST …/<id>/<verb>` changes state
//   (`disable`, `enable`, `activate`, `deactivate`); DELETE deletes. Filters are query parameters
//   (`?account=ID`). Where an account is named, its 12-digit id or its name both work.
// - Bodies and answers are JSON objects with camelCase keys. A list answers `{ "<collection>": [...] }`
//   (e.g. `{ "accounts": [...] }`), one item `{ "<singular>": {...} }` (e.g. `{ "account": {...} }`),
//   a deletion `{ "deleted": "<id>" }`. Secrets appear only in the answer that creates them.
// - Errors answer `{ "error": { "code", "message" } }` with a 4xx/5xx status: throw
//   `new Ec2Error(code, message, status)`. Codes follow EC2's style: `InvalidParameterValue` and
//   `MissingParameter` (400), `InvalidAccount.NotFound`-style `*.NotFound` (404),
//   `DependencyViolation` (409, still in use), `OperationNotPermitted` (409, would break the
//   cloud), `AccessDenied`/auth codes (403), `InternalError` (500). Messages are one sentence.
//
// Routes here:
//   GET    /v1/accounts                      POST /v1/accounts {name} -> account + admin key (secret once)
//   GET    /v1/accounts/:account             (users, keys, quotas, usage)
//   POST   /v1/accounts/:account/disable     POST /v1/accounts/:account/enable
//   DELETE /v1/accounts/:account             (refused while it has live instances or images)
//   GET    /v1/accounts/:account/users       POST /v1/accounts/:account/users {name, policy?}
//   DELETE /v1/accounts/:account/users/:name
//   GET    /v1/access-keys[?account=&user=]  POST /v1/access-keys {account, user} -> key + secret once
//   POST   /v1/access-keys/:id/deactivate    POST /v1/access-keys/:id/activate
//   DELETE /v1/access-keys/:id
//   GET    /v1/vm-types                      PUT /v1/vm-types/:name {cores, memoryMiB, diskGiB}
//   DELETE /v1/vm-types/:name                (refused while live instances use it)
//   GET    /v1/accounts/:account/quotas      PUT /v1/accounts/:account/quotas {"max-instances": 50, "max-cores": null}
//   GET    /v1/usage[?account=]
import { Hono, type Context } from 'hono';
import { storageGiBHours, type StorageGiBHours } from './storage/storage-usage.ts';
import { LIVE_SNAPSHOT_STATES } from './storage/snapshot-quotas.ts';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Logger } from 'pino';
import type { Store, Db, Tx } from '../store/store.ts';
import type { AccountsTable } from '../store/schema.ts';
import type { KeyResolver } from '../auth/authenticate.ts';
import type { CachingKeyResolver } from '../auth/key-cache.ts';
import type { CloudSettings } from './context.ts';
import { Ec2Error } from '../protocol/errors.ts';
import {
  ADMIN_USER_NAME, createAccessKey, createUser, deleteAccessKey, listAccessKeys, listAccounts, listUsers,
  setAccessKeyStatus, type AccessKeySummary, type User,
} from '../auth/identities.ts';
import { createAccountWithDefaults } from './provision.ts';
import { DEFAULT_INSTANCE_TYPE, listVmTypes, setVmType } from './vm-types.ts';
import { deleteQuotas, getQuotas, isQuotaName, QUOTA_NAMES, setQuota, STATES_HOLDING_RESOURCES, type QuotaName, type QuotaView } from './quotas.ts';
import { deleteRateLimits } from './limits/rate-limit-settings.ts';
import { cloudAdminAccountId, requireCloudAdmin, type AdminEnv } from './admin-auth.ts';

export interface AdminApiDeps {
  store: Store;
  settings: CloudSettings;
  log: Pick<Logger, 'error'>;
  /** The resolver the EC2 endpoint uses; when it caches, changed keys are evicted at once. */
  keys: KeyResolver;
}

export type { AdminEnv } from './admin-auth.ts';

// ---- shared by every admin module -------------------------------------------------------------

/** A Hono app that admits only cloud administrators and answers errors as JSON. */
export function newAdminApp(deps: Pick<AdminApiDeps, 'store' | 'keys' | 'log'>): Hono<AdminEnv> {
  const app = new Hono<AdminEnv>();
  app.onError((err, c) => adminErrorResponse(c, err, deps.log));
  app.use('*', requireCloudAdmin(deps));
  return app;
}

export function adminErrorResponse(c: Context, err: unknown, log: Pick<Logger, 'error'>): Response {
  if (err instanceof Ec2Error) {
    return c.json({ error: { code: err.code, message: err.message } }, err.status as ContentfulStatusCode);
  }
  log.error({ err, path: c.req.path }, 'admin request failed with an unexpected error');
  return c.json({ error: { code: 'InternalError', message: 'An internal error has occurred.' } }, 500);
}

export function adminNotFound(c: Context): Response {
  return c.json({ error: { code: 'NotFound', message: `There is no admin API route ${c.req.method} ${new URL(c.req.url).pathname}.` } }, 404);
}

/** The request body as a JSON object ({} when empty). */
export async function readJsonObject(c: Context): Promise<Record<string, unknown>> {
  const text = await c.req.text();
  if (text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Ec2Error('InvalidParameterValue', `The request body is not valid JSON (${(e as Error).message}).`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Ec2Error('InvalidParameterValue', 'The request body must be a JSON object.');
  }
  return value as Record<string, unknown>;
}

export function requiredString(body: Record<string, unknown>, name: string): string {
  const v = body[name];
  if (v === undefined || v === null || v === '') throw new Ec2Error('MissingParameter', `The request must contain the parameter ${name}.`);
  if (typeof v !== 'string') throw new Ec2Error('InvalidParameterValue', `The parameter ${name} must be a string.`);
  return v;
}

export function requiredPositiveInteger(body: Record<string, unknown>, name: string): number {
  const v = body[name];
  if (v === undefined || v === null || v === '') throw new Ec2Error('MissingParameter', `The request must contain the parameter ${name}.`);
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) {
    throw new Ec2Error('InvalidParameterValue', `The parameter ${name} must be a positive whole number, not ${JSON.stringify(v)}.`);
  }
  return n;
}

/** Evicts changed keys from a caching resolver; a plain resolver has no cache to evict. */
export function forgetKeys(keys: KeyResolver, accessKeyIds: Iterable<string>): void {
  const invalidate = (keys as Partial<CachingKeyResolver>).invalidate;
  if (typeof invalidate !== 'function') return;
  for (const id of accessKeyIds) invalidate.call(keys, id);
}

// ---- views ------------------------------------------------------------------------------------

const ADMIN_KEY_SETTING = 'admin-access-key-id';

function accountView(a: AccountsTable, cloudAdminId: string | undefined) {
  return { id: a.id, name: a.name, status: a.status, createdAt: a.created_at, isCloudAdmin: a.id === cloudAdminId };
}

function userView(u: User) {
  let policy: unknown;
  try {
    policy = JSON.parse(u.policy);
  } catch {
    policy = u.policy;
  }
  return { id: u.id, accountId: u.account_id, name: u.name, isAdmin: Number(u.is_admin) === 1, policy, createdAt: u.created_at };
}

function keyView(k: AccessKeySummary) {
  return { accessKeyId: k.access_key_id, accountId: k.account_id, userId: k.user_id, userName: k.user_name, status: k.status, createdAt: k.created_at };
}

function quotasView(quotas: QuotaView[]) {
  return quotas.map((q) => ({ name: q.name, value: q.value, isDefault: q.isDefault }));
}

// ---- look-ups ---------------------------------------------------------------------------------

const ACCOUNT_ID = /^\d{12}$/;

async function findAccount(db: Db | Tx, ref: string): Promise<AccountsTable> {
  const q = db.selectFrom('accounts').selectAll();
  const row = await (ACCOUNT_ID.test(ref) ? q.where('id', '=', ref) : q.where('name', '=', ref)).executeTakeFirst();
  if (!row) throw new Ec2Error('InvalidAccount.NotFound', `The account ${ref} does not exist.`, 404);
  return row;
}

async function findUser(db: Db | Tx, accountId: string, name: string): Promise<User> {
  const row = await db.selectFrom('users').selectAll().where('account_id', '=', accountId).where('name', '=', name).executeTakeFirst();
  if (!row) throw new Ec2Error('InvalidUser.NotFound', `The user ${name} does not exist in account ${accountId}.`, 404);
  return row;
}

async function findKeyAccount(db: Db | Tx, accessKeyId: string): Promise<string> {
  const row = await db.selectFrom('access_keys').select('account_id').where('access_key_id', '=', accessKeyId).executeTakeFirst();
  if (!row) throw new Ec2Error('InvalidAccessKeyId.NotFound', `The access key ${accessKeyId} does not exist.`, 404);
  return row.account_id;
}

async function settingValue(db: Db | Tx, key: string): Promise<string | undefined> {
  return (await db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst())?.value;
}

async function liveInstanceCount(db: Db | Tx, column: 'account_id' | 'instance_type', value: string): Promise<number> {
  const row = await db.selectFrom('instances').select((eb) => eb.fn.countAll<number>().as('n'))
    .where(column, '=', value).where('state', '!=', 'terminated').executeTakeFirstOrThrow();
  return Number(row.n);
}

function notPermitted(message: string): Ec2Error {
  return new Ec2Error('OperationNotPermitted', message, 409);
}

// ---- usage ------------------------------------------------------------------------------------

interface AccountUsage {
  accountId: string;
  accountName: string;
  status: string;
  instances: { live: number; byState: Record<string, number>; byType: Record<string, number> };
  coresInUse: number;
  memoryMiBInUse: number;
  keyPairs: number;
  securityGroups: number;
  /** EBS volumes that are not deleted and their GiB together, as the volume quotas count them. */
  volumes: { count: number; gib: number };
  /** EBS snapshots that are not deleted and the GiB of the volumes they were taken of, as the snapshot quotas count them. */
  snapshots: { count: number; gib: number };
  /** GiB-hours of volumes and snapshots since the start of the month (storage/storage-usage.ts). */
  storageGiBHours: StorageGiBHours;
  quotas: ReturnType<typeof quotasView>;
}

async function usageOf(db: Db | Tx, accounts: AccountsTable[]): Promise<AccountUsage[]> {
  const ids = accounts.map((a) => a.id);
  if (ids.length === 0) return [];
  const instanceRows = await db.selectFrom('instances')
    .leftJoin('vm_types', 'vm_types.name', 'instances.instance_type')
    .select((eb) => ['instances.account_id', 'instances.state', 'instances.instance_type', 'vm_types.cores', 'vm_types.memory_mib',
      eb.fn.countAll<number>().as('n')])
    .where('instances.account_id', 'in', ids).where('instances.state', '!=', 'terminated')
    .groupBy(['instances.account_id', 'instances.state', 'instances.instance_type', 'vm_types.cores', 'vm_types.memory_mib'])
    .execute();
  const keyPairRows = await db.selectFrom('key_pairs').select((eb) => ['account_id', eb.fn.countAll<number>().as('n')])
    .where('account_id', 'in', ids).groupBy('account_id').execute();
  const groupRows = await db.selectFrom('security_groups').select((eb) => ['account_id', eb.fn.countAll<number>().as('n')])
    .where('account_id', 'in', ids).groupBy('account_id').execute();
  const volumeRows = await db.selectFrom('volumes').select((eb) => ['account_id', eb.fn.countAll<number>().as('n'), eb.fn.sum<number>('size_gib').as('gib')])
    .where('account_id', 'in', ids).where('state', 'not in', ['deleted', 'error']).groupBy('account_id').execute();
  const volumes = new Map(volumeRows.map((r) => [r.account_id, { count: Number(r.n), gib: Number(r.gib ?? 0) }]));
  const snapshotRows = await db.selectFrom('snapshots').select((eb) => ['account_id', eb.fn.countAll<number>().as('n'), eb.fn.sum<number>('volume_size_gib').as('gib')])
    .where('account_id', 'in', ids).where('state', 'in', [...LIVE_SNAPSHOT_STATES]).groupBy('account_id').execute();
  const snapshots = new Map(snapshotRows.map((r) => [r.account_id, { count: Number(r.n), gib: Number(r.gib ?? 0) }]));
  const gibHours = await storageGiBHours(db, ids);
  const keyPairs = new Map(keyPairRows.map((r) => [r.account_id, Number(r.n)]));
  const groups = new Map(groupRows.map((r) => [r.account_id, Number(r.n)]));

  const result: AccountUsage[] = [];
  for (const a of accounts) {
    const usage: AccountUsage = {
      accountId: a.id, accountName: a.name, status: a.status,
      instances: { live: 0, byState: {}, byType: {} }, coresInUse: 0, memoryMiBInUse: 0,
      keyPairs: keyPairs.get(a.id) ?? 0, securityGroups: groups.get(a.id) ?? 0,
      volumes: volumes.get(a.id) ?? { count: 0, gib: 0 },
      snapshots: snapshots.get(a.id) ?? { count: 0, gib: 0 },
      storageGiBHours: gibHours.get(a.id)!,
      quotas: quotasView(await getQuotas(db, a.id)),
    };
    for (const r of instanceRows) {
      if (r.account_id !== a.id) continue;
      const n = Number(r.n);
      usage.instances.live += n;
      usage.instances.byState[r.state] = (usage.instances.byState[r.state] ?? 0) + n;
      usage.instances.byType[r.instance_type] = (usage.instances.byType[r.instance_type] ?? 0) + n;
      // Counted as the quotas count them (quotas.ts): stopped instances hold no cores or memory.
      if (STATES_HOLDING_RESOURCES.has(r.state)) {
        usage.coresInUse += n * Number(r.cores ?? 0);
        usage.memoryMiBInUse += n * Number(r.memory_mib ?? 0);
      }
    }
    result.push(usage);
  }
  return result;
}

// ---- the API ----------------------------------------------------------------------------------

export function createAdminApi(deps: AdminApiDeps): Hono<AdminEnv> {
  const { store, settings, keys } = deps;
  const db = store.db;
  const app = newAdminApp(deps);

  const keyIdsOf = async (filter: { accountId?: string; userId?: string }) =>
    (await listAccessKeys(db, filter)).map((k) => k.access_key_id);

  // accounts

  app.get('/v1/accounts', async (c) => {
    const adminId = await cloudAdminAccountId(store);
    return c.json({ accounts: (await listAccounts(db)).map((a) => accountView(a, adminId)) });
  });

  app.post('/v1/accounts', async (c) => {
    const name = requiredString(await readJsonObject(c), 'name');
    const created = await createAccountWithDefaults(store, name);
    const adminId = await cloudAdminAccountId(store);
    return c.json({
      account: accountView(created.account, adminId),
      accessKey: {
        accessKeyId: created.accessKey.access_key_id,
        secretAccessKey: created.accessKey.secret_access_key,
        userName: created.adminUser.name,
      },
      region: settings.region,
      endpoint: settings.endpoint,
    }, 201);
  });

  app.get('/v1/accounts/:account', async (c) => {
    const account = await findAccount(db, c.req.param('account'));
    const adminId = await cloudAdminAccountId(store);
    const [usage] = await usageOf(db, [account]);
    return c.json({
      account: accountView(account, adminId),
      users: (await listUsers(db, account.id)).map(userView),
      accessKeys: (await listAccessKeys(db, { accountId: account.id })).map(keyView),
      quotas: usage!.quotas,
      usage: usage,
    });
  });

  for (const [verb, status] of [['disable', 'disabled'], ['enable', 'active']] as const) {
    app.post(`/v1/accounts/:account/${verb}`, async (c) => {
      const account = await findAccount(db, c.req.param('account'));
      const adminId = await cloudAdminAccountId(store);
      if (verb === 'disable' && account.id === adminId) {
        throw notPermitted(`The account ${account.id} is the cloud's admin account and cannot be disabled.`);
      }
      await db.updateTable('accounts').set({ status }).where('id', '=', account.id).execute();
      forgetKeys(keys, await keyIdsOf({ accountId: account.id }));
      return c.json({ account: accountView({ ...account, status }, adminId) });
    });
  }

  app.delete('/v1/accounts/:account', async (c) => {
    const account = await findAccount(db, c.req.param('account'));
    if (account.id === await cloudAdminAccountId(store)) {
      throw notPermitted(`The account ${account.id} is the cloud's admin account and cannot be deleted.`);
    }
    const keyIds = await store.transaction(async (tx) => {
      const live = await liveInstanceCount(tx, 'account_id', account.id);
      if (live > 0) {
        throw new Ec2Error('DependencyViolation',
          `The account ${account.id} still has ${live} instance(s) that are not terminated; terminate them before deleting it.`, 409);
      }
      const images = await tx.selectFrom('images').select((eb) => eb.fn.countAll<number>().as('n'))
        .where('account_id', '=', account.id).where('state', '!=', 'deregistered').executeTakeFirstOrThrow();
      if (Number(images.n) > 0) {
        throw new Ec2Error('DependencyViolation',
          `The account ${account.id} still owns ${images.n} registered image(s); deregister them before deleting it.`, 409);
      }
      const ids = (await listAccessKeys(tx, { accountId: account.id })).map((k) => k.access_key_id);
      const groupIds = (await tx.selectFrom('security_groups').select('id').where('account_id', '=', account.id).execute()).map((g) => g.id);
      // Other accounts' rules may name this account's groups; they would point at nothing.
      if (groupIds.length > 0) await tx.deleteFrom('security_group_rules').where('referenced_group_id', 'in', groupIds).execute();
      await tx.deleteFrom('security_group_rules').where('account_id', '=', account.id).execute();
      await tx.deleteFrom('security_groups').where('account_id', '=', account.id).execute();
      await tx.deleteFrom('subnets').where('account_id', '=', account.id).execute();
      await tx.deleteFrom('vpcs').where('account_id', '=', account.id).execute();
      await tx.deleteFrom('key_pairs').where('account_id', '=', account.id).execute();
      await tx.deleteFrom('tags').where('account_id', '=', account.id).execute();
      await tx.deleteFrom('instances').where('account_id', '=', account.id).execute();
      // Images other accounts shared with this one: the permission would name nobody.
      await tx.deleteFrom('image_launch_permissions').where('account_id', '=', account.id).execute();
      await tx.deleteFrom('images').where('account_id', '=', account.id).execute();
      await deleteQuotas(tx, account.id);
      await deleteRateLimits(tx, account.id);
      await tx.deleteFrom('access_keys').where('account_id', '=', account.id).execute();
      await tx.deleteFrom('users').where('account_id', '=', account.id).execute();
      await tx.deleteFrom('accounts').where('id', '=', account.id).execute();
      return ids;
    });
    forgetKeys(keys, keyIds);
    return c.json({ deleted: account.id });
  });

  // users

  app.get('/v1/accounts/:account/users', async (c) => {
    const account = await findAccount(db, c.req.param('account'));
    return c.json({ users: (await listUsers(db, account.id)).map(userView) });
  });

  app.post('/v1/accounts/:account/users', async (c) => {
    const body = await readJsonObject(c);
    const account = await findAccount(db, c.req.param('account'));
    const name = requiredString(body, 'name');
    const policy = parsePolicy(body.policy);
    const user = await store.transaction((tx) => createUser(tx, account.id, name, policy));
    return c.json({ user: userView(user) }, 201);
  });

  app.delete('/v1/accounts/:account/users/:name', async (c) => {
    const account = await findAccount(db, c.req.param('account'));
    const name = c.req.param('name');
    if (name === ADMIN_USER_NAME) {
      throw notPermitted(`The user ${ADMIN_USER_NAME} is the root user of account ${account.id}; delete the account instead.`);
    }
    const keyIds = await store.transaction(async (tx) => {
      const user = await findUser(tx, account.id, name);
      const ids = (await listAccessKeys(tx, { userId: user.id })).map((k) => k.access_key_id);
      await tx.deleteFrom('access_keys').where('user_id', '=', user.id).execute();
      await tx.deleteFrom('users').where('id', '=', user.id).execute();
      return ids;
    });
    forgetKeys(keys, keyIds);
    return c.json({ deleted: name });
  });

  // access keys

  app.get('/v1/access-keys', async (c) => {
    const accountRef = c.req.query('account');
    const userName = c.req.query('user');
    if (userName !== undefined && accountRef === undefined) {
      throw new Ec2Error('MissingParameter', 'Filtering by user needs the account too (?account=ID&user=NAME).');
    }
    const filter: { accountId?: string; userId?: string } = {};
    if (accountRef !== undefined) filter.accountId = (await findAccount(db, accountRef)).id;
    if (userName !== undefined) filter.userId = (await findUser(db, filter.accountId!, userName)).id;
    return c.json({ accessKeys: (await listAccessKeys(db, filter)).map(keyView) });
  });

  app.post('/v1/access-keys', async (c) => {
    const body = await readJsonObject(c);
    const account = await findAccount(db, requiredString(body, 'account'));
    const userName = body.user === undefined ? ADMIN_USER_NAME : requiredString(body, 'user');
    const key = await store.transaction(async (tx) => createAccessKey(tx, (await findUser(tx, account.id, userName)).id));
    return c.json({
      accessKey: {
        accessKeyId: key.access_key_id, secretAccessKey: key.secret_access_key, accountId: key.account_id,
        userId: key.user_id, userName, status: key.status, createdAt: key.created_at,
      },
      region: settings.region,
      endpoint: settings.endpoint,
    }, 201);
  });

  /** The key written to credentials.env on every start: without it the operator is locked out. */
  const refuseBootstrapKey = async (accessKeyId: string, doing: string) => {
    if (accessKeyId === await settingValue(db, ADMIN_KEY_SETTING)) {
      throw notPermitted(`The access key ${accessKeyId} is the cloud's bootstrap admin key (in credentials.env) and cannot be ${doing}.`);
    }
  };

  for (const [verb, status] of [['deactivate', 'Inactive'], ['activate', 'Active']] as const) {
    app.post(`/v1/access-keys/:id/${verb}`, async (c) => {
      const id = c.req.param('id');
      await findKeyAccount(db, id);
      if (verb === 'deactivate') await refuseBootstrapKey(id, 'deactivated');
      await setAccessKeyStatus(db, id, status);
      forgetKeys(keys, [id]);
      const key = (await listAccessKeys(db, { accountId: await findKeyAccount(db, id) })).find((k) => k.access_key_id === id);
      if (!key) throw new Ec2Error('InvalidAccessKeyId.NotFound', `The access key ${id} does not exist.`, 404);
      return c.json({ accessKey: keyView(key) });
    });
  }

  app.delete('/v1/access-keys/:id', async (c) => {
    const id = c.req.param('id');
    await findKeyAccount(db, id);
    await refuseBootstrapKey(id, 'deleted');
    await deleteAccessKey(db, id);
    forgetKeys(keys, [id]);
    return c.json({ deleted: id });
  });

  // VM types

  app.get('/v1/vm-types', async (c) => c.json({ vmTypes: await listVmTypes(db) }));

  app.put('/v1/vm-types/:name', async (c) => {
    const body = await readJsonObject(c);
    const name = c.req.param('name');
    if (!/^[a-z0-9][a-z0-9.-]{0,63}$/.test(name)) {
      throw new Ec2Error('InvalidParameterValue', `"${name}" is not a valid VM type name: use up to 64 lower-case letters, digits, dots and dashes.`);
    }
    const vmType = {
      name,
      cores: requiredPositiveInteger(body, 'cores'),
      memoryMiB: requiredPositiveInteger(body, 'memoryMiB'),
      diskGiB: requiredPositiveInteger(body, 'diskGiB'),
    };
    await setVmType(db, vmType);
    return c.json({ vmType });
  });

  app.delete('/v1/vm-types/:name', async (c) => {
    const name = c.req.param('name');
    if (name === DEFAULT_INSTANCE_TYPE) {
      throw notPermitted(`The VM type ${name} is what RunInstances launches when no type is given and cannot be deleted.`);
    }
    await store.transaction(async (tx) => {
      const exists = await tx.selectFrom('vm_types').select('name').where('name', '=', name).executeTakeFirst();
      if (!exists) throw new Ec2Error('InvalidVmType.NotFound', `The VM type ${name} does not exist.`, 404);
      const live = await liveInstanceCount(tx, 'instance_type', name);
      if (live > 0) {
        throw new Ec2Error('DependencyViolation', `The VM type ${name} is used by ${live} instance(s) that are not terminated.`, 409);
      }
      await tx.deleteFrom('vm_types').where('name', '=', name).execute();
    });
    return c.json({ deleted: name });
  });

  // quotas

  const quotasAnswer = async (accountId: string) => ({ accountId, quotas: quotasView(await getQuotas(db, accountId)) });

  app.get('/v1/accounts/:account/quotas', async (c) => {
    const account = await findAccount(db, c.req.param('account'));
    return c.json(await quotasAnswer(account.id));
  });

  app.put('/v1/accounts/:account/quotas', async (c) => {
    const body = await readJsonObject(c);
    const account = await findAccount(db, c.req.param('account'));
    const changes: Array<[QuotaName, number | null]> = [];
    for (const [name, value] of Object.entries(body)) {
      if (!isQuotaName(name)) {
        throw new Ec2Error('InvalidParameterValue', `Unknown quota "${name}": the quotas are ${QUOTA_NAMES.join(', ')}.`);
      }
      if (value !== null && typeof value !== 'number') {
        throw new Ec2Error('InvalidParameterValue', `The quota ${name} must be a number, or null for its default.`);
      }
      changes.push([name, value]);
    }
    if (changes.length === 0) throw new Ec2Error('MissingParameter', `Name at least one quota to set: ${QUOTA_NAMES.join(', ')}.`);
    await store.transaction(async (tx) => {
      for (const [name, value] of changes) await setQuota(tx, account.id, name, value);
    });
    return c.json(await quotasAnswer(account.id));
  });

  // usage

  app.get('/v1/usage', async (c) => {
    const ref = c.req.query('account');
    const accounts = ref === undefined ? await listAccounts(db) : [await findAccount(db, ref)];
    return c.json({ usage: await usageOf(db, accounts) });
  });

  return app;
}

/** A policy given as a list of patterns or as its JSON text; absent means the default policy. */
function parsePolicy(value: unknown): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  let patterns = value;
  if (typeof value === 'string') {
    try {
      patterns = JSON.parse(value);
    } catch {
      throw new Ec2Error('InvalidParameterValue', `The policy is not valid JSON: give a list of action patterns such as ["ec2:Describe*"].`);
    }
  }
  if (!Array.isArray(patterns) || patterns.some((p) => typeof p !== 'string')) {
    throw new Ec2Error('InvalidParameterValue', 'A policy must be a list of action patterns such as ["ec2:Describe*"].');
  }
  return patterns as string[];
}
