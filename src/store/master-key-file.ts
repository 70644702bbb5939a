// The master key file: the keys that encrypt the secrets in the store (access-key secrets, cluster
// secrets), kept apart from the store so that a copy of the database (a backup, a PostgreSQL dump,
// the disk of a database server) gives away no credential. One key a line:
//
//   <state> <key-id> <base64 of 32 random bytes>
//
// `current` encrypts new secrets (exactly one); `next` is staged for a rotation and `old` is
// retiring: both stay readable, so every cloud controller sharing a PostgreSQL store can read
// what another one wrote while a rotation is under way. A file holding one bare base64 key (e.g.
// made with `openssl rand -base64 32`) is read as that key, current.
import { createHash, randomBytes } from 'node:crypto';
import { linkSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writePrivateFileSync } from './private-files.ts';

export const MASTER_KEY_FILE = 'master.key';
export const MASTER_KEY_ENV = 'IRONBARK_MASTER_KEY_FILE';
const KEY_BYTES = 32;

export type KeyState = 'current' | 'next' | 'old';

export interface MasterKey {
  /** 16 hex digits derived from the key, so an id can never name another key than its own. */
  id: string;
  state: KeyState;
  key: Buffer;
}

/** A missing, unreadable or mismatched master key: said in one sentence at start, never a stack trace. */
export class MasterKeyError extends Error {
  override name = 'MasterKeyError';
}

export function masterKeyId(key: Buffer): string {
  return createHash('sha256').update('ironbark master key id\0').update(key).digest('hex').slice(0, 16);
}

export function newMasterKey(state: KeyState): MasterKey {
  const key = randomBytes(KEY_BYTES);
  return { id: masterKeyId(key), state, key };
}

/** Where the key file is: the operator's (--master-key-file, then $IRONBARK_MASTER_KEY_FILE), else the data directory's. */
export function resolveMasterKeyPath(dataDir: string, masterKeyFile?: string, env: NodeJS.ProcessEnv = process.env): { path: string; chosen: boolean } {
  const chosen = masterKeyFile ?? (env[MASTER_KEY_ENV] || undefined);
  return chosen ? { path: chosen, chosen: true } : { path: join(dataDir, MASTER_KEY_FILE), chosen: false };
}

function decodeKey(text: string, path: string, line: number): Buffer {
  const key = /^[A-Za-z0-9+/]+={0,2}$/.test(text) ? Buffer.from(text, 'base64') : Buffer.alloc(0);
  if (key.length !== KEY_BYTES) {
    throw new MasterKeyError(`The master key file ${path} is not valid: line ${line} does not hold ${KEY_BYTES} bytes in base64.`);
  }
  return key;
}

export function parseKeyRing(text: string, path: string): MasterKey[] {
  const lines = text.split('\n').map((l, i) => ({ text: l.trim(), number: i + 1 })).filter((l) => l.text !== '' && !l.text.startsWith('#'));
  if (lines.length === 1 && !/\s/.test(lines[0]!.text)) {
    const key = decodeKey(lines[0]!.text, path, lines[0]!.number);
    return [{ id: masterKeyId(key), state: 'current', key }];
  }
  const keys: MasterKey[] = [];
  for (const line of lines) {
    const [state, id, encoded, ...rest] = line.text.split(/\s+/);
    if (rest.length > 0 || encoded === undefined || (state !== 'current' && state !== 'next' && state !== 'old')) {
      throw new MasterKeyError(`The master key file ${path} is not valid: line ${line.number} should read "current|next|old <key-id> <base64 key>".`);
    }
    const key = decodeKey(encoded, path, line.number);
    if (masterKeyId(key) !== id) {
      throw new MasterKeyError(`The master key file ${path} is not valid: the key on line ${line.number} is not key ${id} (it was altered or copied incompletely).`);
    }
    if (!keys.some((k) => k.id === id)) keys.push({ id, state, key });
  }
  const current = keys.filter((k) => k.state === 'current').length;
  if (current !== 1) throw new MasterKeyError(`The master key file ${path} is not valid: it must name exactly one current key, not ${current}.`);
  if (keys.filter((k) => k.state === 'next').length > 1) throw new MasterKeyError(`The master key file ${path} is not valid: it names more than one next key.`);
  return keys;
}

const ORDER: Record<KeyState, number> = { current: 0, next: 1, old: 2 };

export function formatKeyRing(keys: readonly MasterKey[]): string {
  const sorted = [...keys].sort((a, b) => ORDER[a.state] - ORDER[b.state]);
  return [
    '# Ironbark master keys: the store\'s secrets are encrypted under the current key; next and old keys stay readable.',
    '# Keep this file private (0600) and backed up apart from the store: without it those secrets cannot be read.',
    ...sorted.map((k) => `${k.state.padEnd(7)} ${k.id} ${k.key.toString('base64')}`),
    '',
  ].join('\n');
}

/** The keys in `path`, or undefined when there is no such file. */
export function readKeyRingFile(path: string): MasterKey[] | undefined {
  let text: string;
  try {
    const { mode } = statSync(path);
    // Like ssh with a private key: a key others may read is no longer only ours.
    if ((mode & 0o077) !== 0) {
      throw new MasterKeyError(`The master key file ${path} is open to other users (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); make it private with: chmod 600 ${path}`);
    }
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if (err instanceof MasterKeyError) throw err;
    throw new MasterKeyError(`The master key file ${path} cannot be read: ${(err as Error).message}`);
  }
  return parseKeyRing(text, path);
}

/** Replaces the file at once (a reader never sees half of it), 0600. */
export function writeKeyRingFile(path: string, keys: readonly MasterKey[]): void {
  writePrivateFileSync(path, formatKeyRing(keys));
}

/**
 * A new key file with one current key, unless another process made one first: then theirs. Two
 * controllers starting together on one data directory must not each keep a different key.
 */
export function createKeyRingFile(path: string): MasterKey[] {
  const keys = [newMasterKey('current')];
  // Written whole under another name, then linked into place: link() fails when the name exists,
  // and a reader never meets an empty file.
  const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    writePrivateFileSync(temp, formatKeyRing(keys));
    linkSync(temp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readKeyRingFile(path)!;
    throw new MasterKeyError(`Cannot create the master key file ${path}: ${(err as Error).message}`);
  } finally {
    rmSync(temp, { force: true });
  }
  return keys;
}
