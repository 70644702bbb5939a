// Opening the store of a cloud controller with its master key. On first start the key file is
// made (0600, in the data directory) unless the operator named one; secrets an earlier version
// stored in plaintext are sealed. A store whose secrets the key file cannot open is refused
// with one sentence, before anything else runs: a new key would leave every secret unreadable.
import type { Logger } from 'pino';
import { KeyRing } from './key-ring.ts';
import { MASTER_KEY_ENV, MasterKeyError, createKeyRingFile, resolveMasterKeyPath } from './master-key-file.ts';
import { PLAINTEXT, forgetReplacedValues, recordMasterKeyId, recordedMasterKeyId, resealSecrets, secretKeyUsage } from './secret-rows.ts';
import { openStore, type Store } from './store.ts';

export interface MasterKeyStoreOptions {
  url: string;
  dataDir: string;
  /** The operator's key file (--master-key-file); else $IRONBARK_MASTER_KEY_FILE, else <dataDir>/master.key. */
  masterKeyFile?: string;
  log?: Pick<Logger, 'info'>;
  env?: NodeJS.ProcessEnv;
}

export async function openStoreWithMasterKey(opts: MasterKeyStoreOptions): Promise<Store> {
  const { path, chosen } = resolveMasterKeyPath(opts.dataDir, opts.masterKeyFile, opts.env);
  const ring = KeyRing.file(path);
  if (ring.keys.length === 0 && chosen) {
    throw new MasterKeyError(`The master key file ${path} (from ${opts.masterKeyFile ? '--master-key-file' : MASTER_KEY_ENV}) does not exist.`);
  }
  const store = await openStore({ url: opts.url, keyRing: ring });
  try {
    await checkAndSeal(store, ring, path, opts.log);
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}

async function checkAndSeal(store: Store, ring: KeyRing, path: string, log: MasterKeyStoreOptions['log']): Promise<void> {
  const usage = await secretKeyUsage(store.db);
  const recorded = await recordedMasterKeyId(store.db);
  const sealedUnder = new Set([...usage.keys()].filter((id) => id !== PLAINTEXT));
  if (recorded !== undefined) sealedUnder.add(recorded);
  if (ring.keys.length === 0) {
    if (sealedUnder.size > 0) {
      throw new MasterKeyError(`The store holds secrets encrypted under master key ${[...sealedUnder].join(', ')}, but there is no master key file at ${path}. `
        + `Restore that file (or name it with --master-key-file or ${MASTER_KEY_ENV}); a new key could not read those secrets.`);
    }
    createKeyRingFile(path);
    ring.reload();
    log?.info({ keyId: ring.current().id, file: path }, 'made a new master key for the secrets in the store');
  }
  const missing = [...sealedUnder].filter((id) => !ring.keys.some((k) => k.id === id));
  if (missing.length > 0) {
    throw new MasterKeyError(`The store's secrets are encrypted under master key ${missing.join(', ')}, which ${path} does not hold `
      + `(it holds ${ring.keys.map((k) => k.id).join(', ')}). Start with the key file those secrets were made with.`);
  }
  // Two controllers starting together on an empty shared store: the first key recorded wins, the other refuses.
  await recordMasterKeyId(store.db, ring.current().id, false);
  const winner = await recordedMasterKeyId(store.db);
  if (winner !== undefined && !ring.keys.some((k) => k.id === winner)) {
    throw new MasterKeyError(`The store was set up with master key ${winner}, which ${path} does not hold. Copy the key file of the controller that set it up.`);
  }
  const plaintext = usage.get(PLAINTEXT) ?? 0;
  if (plaintext > 0) {
    const sealed = await resealSecrets(store.db, ring, (id) => id === PLAINTEXT);
    await forgetReplacedValues(store);
    log?.info({ sealed, keyId: ring.current().id }, 'encrypted the secrets an earlier version stored in plaintext');
  }
}
