// `ironbark admin master-key status|add|rotate|prune`: the key that encrypts the secrets in the
// store. Unlike the other admin commands these work on the key file and the store directly (the
// admin API never sees the master key), with the cloud controller running or not.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { formatTable, printResult } from './admin.ts';
import { resolveMasterKeyPath } from '../store/master-key-file.ts';
import { openStoreWithMasterKey } from '../store/master-key-setup.ts';
import { addNextKey, masterKeyStatus, pruneMasterKeys, rotateMasterKey } from '../store/master-key-rotation.ts';
import type { Store } from '../store/store.ts';

interface MasterKeyFlags { dataDir?: string; store?: string; masterKeyFile?: string; keepOldKeys?: boolean }

function where(cmd: Command): { dataDir: string; url: string; path: string; masterKeyFile?: string } {
  const o = cmd.optsWithGlobals<MasterKeyFlags>();
  const dataDir = resolve(o.dataDir ?? process.env.IRONBARK_DATA_DIR ?? '/var/lib/ironbark');
  return { dataDir, url: o.store ?? join(dataDir, 'ironbark.sqlite'), path: resolveMasterKeyPath(dataDir, o.masterKeyFile).path, masterKeyFile: o.masterKeyFile };
}

async function withStore<T>(cmd: Command, work: (store: Store, path: string) => Promise<T>): Promise<T> {
  const w = where(cmd);
  // A mistyped --data-dir must not leave a new store and key behind.
  if (!existsSync(w.path)) throw new Error(`There is no master key file at ${w.path} (give --data-dir or --master-key-file).`);
  if (!/^postgres(ql)?:\/\//.test(w.url) && !existsSync(w.url)) throw new Error(`There is no store at ${w.url} (give --data-dir or --store).`);
  // The same checks as a controller's start: a key file that cannot open the store stops here.
  const store = await openStoreWithMasterKey({ url: w.url, dataDir: w.dataDir, masterKeyFile: w.masterKeyFile });
  try {
    return await work(store, w.path);
  } finally {
    await store.close();
  }
}

function keyFileFlag(c: Command): Command {
  return c.option('--master-key-file <path>', 'the key file (default: $IRONBARK_MASTER_KEY_FILE, else master.key in the data directory)');
}

function storeFlags(c: Command): Command {
  return keyFileFlag(c.option('--store <url>', 'postgres://… when the controllers share PostgreSQL (default: SQLite in the data directory)'));
}

const MULTI = 'With several cloud controllers, copy the key file to every one of them now.';

function resealedText(n: number): string {
  return `${n} secret${n === 1 ? ' was' : 's were'} encrypted again`;
}

export function registerMasterKeyCommands(admin: Command): void {
  const mk = admin.command('master-key')
    .description('the key that encrypts access-key and cluster secrets in the store (works on the key file and store directly)');

  storeFlags(mk.command('status').description('the master keys and how many secrets each one encrypts'))
    .action(async (_o, cmd: Command) => {
      const status = await withStore(cmd, (store, path) => masterKeyStatus(store, path));
      printResult(cmd, status, (s) => formatTable(['KEY', 'STATE', 'SECRETS'], s.keys.map((k) => [k.id, k.state, k.secrets]))
        + (s.plaintext > 0 ? `${s.plaintext} secret(s) not encrypted yet: the next start of a cloud controller encrypts them.\n` : '')
        + s.unknown.map((u) => `${u.secrets} secret(s) encrypted under key ${u.id}, which the key file does not hold.\n`).join(''));
    });

  keyFileFlag(mk.command('add').description('stage a next key: readable at once, used after rotate (for several controllers: copy the file, then rotate)'))
    .action((_o, cmd: Command) => {
      const { path } = where(cmd);
      const r = addNextKey(path);
      printResult(cmd, { next: r.next.id, added: r.added, file: path }, (d) =>
        `${d.added ? 'Staged' : 'Already staged'}: next key ${d.next} in ${d.file}.\n${MULTI} Then run: ironbark admin master-key rotate\n`);
    });

  storeFlags(mk.command('rotate').description('encrypt every secret under a new key (the staged one if any) and drop the keys no longer used'))
    .option('--keep-old-keys', 'keep the old key readable (several controllers: prune once each has the new file)')
    .action(async (_o, cmd: Command) => {
      const keep = cmd.opts<MasterKeyFlags>().keepOldKeys === true;
      const r = await withStore(cmd, (store, path) => rotateMasterKey(store, path, { keepOldKeys: keep }));
      printResult(cmd, r, (d) => [
        `Master key ${d.current} is current; ${resealedText(d.resealed)} under it.`,
        d.pruned
          ? (d.pruned.removed.length > 0 ? `Removed from the key file: ${d.pruned.removed.join(', ')} (no secret needs them any more).` : `Kept ${d.retired}: a secret still needs it.`)
          : `${d.retired} stays readable as an old key. ${MULTI} Then run: ironbark admin master-key prune`,
        '',
      ].join('\n'));
    });

  storeFlags(mk.command('prune').description('encrypt any secret still under an old key again, then drop the old keys'))
    .action(async (_o, cmd: Command) => {
      const r = await withStore(cmd, (store, path) => pruneMasterKeys(store, path));
      printResult(cmd, r, (d) => `${resealedText(d.resealed)}. ${d.removed.length > 0 ? `Removed from the key file: ${d.removed.join(', ')}.` : 'No old key to remove.'}\n`);
    });
}
