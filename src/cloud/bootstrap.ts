// First start of a cloud: the admin account and its key, written to the data directory (0600)
// so the operator can paste them into the aws CLI, like Eucalyptus' eucarc.
import type { Store } from '../store/store.ts';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { AWS_CONFIG, CREDENTIALS_ENV, writeCredentialsFiles } from '../auth/credentials-file.ts';
import { createAccountWithDefaults } from './provision.ts';
import type { CloudSettings } from './context.ts';

const ADMIN_ACCOUNT_SETTING = 'admin-account-id';
const ADMIN_KEY_SETTING = 'admin-access-key-id';

export interface AdminCredentials { accountId: string; accessKeyId: string; secretAccessKey: string }

/**
 * The admin account and key, made on first start. With `publish` false the credentials files are
 * left for `publishAdminCredentials`, so that scripts waiting for them start only once the cloud
 * can serve them.
 */
export async function ensureAdminAccount(store: Store, dataDir: string, settings: CloudSettings, publish = true): Promise<AdminCredentials> {
  const keyId = await store.db.selectFrom('settings').select('value').where('key', '=', ADMIN_KEY_SETTING).executeTakeFirst();
  let creds: AdminCredentials | undefined;
  if (keyId) {
    const key = await store.db.selectFrom('access_keys').selectAll().where('access_key_id', '=', keyId.value).executeTakeFirst();
    if (key) creds = { accountId: key.account_id, accessKeyId: key.access_key_id, secretAccessKey: key.secret_access_key };
  }
  if (!creds) {
    const created = await createAccountWithDefaults(store, 'admin');
    creds = { accountId: created.account.id, accessKeyId: created.accessKey.access_key_id, secretAccessKey: created.accessKey.secret_access_key };
    await store.transaction(async (tx) => {
      for (const [key, value] of [[ADMIN_ACCOUNT_SETTING, creds!.accountId], [ADMIN_KEY_SETTING, creds!.accessKeyId]] as const) {
        await tx.insertInto('settings').values({ key, value }).onConflict((oc) => oc.column('key').doUpdateSet({ value })).execute();
      }
    });
  }
  if (publish) await publishAdminCredentials(dataDir, creds, settings);
  return creds;
}

/** Rewritten on every start: the endpoint may have moved. */
export async function publishAdminCredentials(dataDir: string, creds: AdminCredentials, settings: CloudSettings): Promise<void> {
  await writeCredentialsFiles(dataDir, { ...creds, region: settings.region, endpoint: settings.endpoint });
}

/** Removes the credentials files of an earlier run, so nobody mistakes them for this run's. */
export function withdrawAdminCredentials(dataDir: string): void {
  for (const name of [CREDENTIALS_ENV, AWS_CONFIG]) rmSync(join(dataDir, name), { force: true });
}
