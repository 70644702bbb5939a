// Changing the master key of a store whose controllers keep running. Every key stays readable by
// its id until no row uses it, so the steps may be spread over several controllers sharing one
// PostgreSQL store, each with its own copy of the key file:
//
//   add     stage a `next` key (readable, not yet used): copy the file to every controller
//   rotate  next (made here if there is none) becomes current, the current key old; every
//           secret is sealed again under the new key; then `prune`, unless told to keep old keys
//   prune   seal again what is still under an old key (written by a controller with an older
//           copy of the file), then drop the old keys from the file
//
// A running controller reads its key file again when it changes, so on one host nothing restarts.
import { MasterKeyError, newMasterKey, readKeyRingFile, writeKeyRingFile, type MasterKey } from './master-key-file.ts';
import { KeyRing } from './key-ring.ts';
import { PLAINTEXT, forgetReplacedValues, recordMasterKeyId, resealSecrets, secretKeyUsage } from './secret-rows.ts';
import type { Store } from './store.ts';

function keysIn(path: string): MasterKey[] {
  const keys = readKeyRingFile(path);
  if (!keys) throw new MasterKeyError(`There is no master key file at ${path}.`);
  return keys;
}

export interface AddResult { next: MasterKey; added: boolean }

/** Stages a next key (or names the one already staged). */
export function addNextKey(path: string): AddResult {
  const keys = keysIn(path);
  const staged = keys.find((k) => k.state === 'next');
  if (staged) return { next: staged, added: false };
  const next = newMasterKey('next');
  writeKeyRingFile(path, [...keys, next]);
  return { next, added: true };
}

export interface RotateResult { current: string; retired: string; resealed: number; pruned: PruneResult | undefined }

export async function rotateMasterKey(store: Store, path: string, opts: { keepOldKeys?: boolean } = {}): Promise<RotateResult> {
  const keys = keysIn(path);
  const next = keys.find((k) => k.state === 'next') ?? newMasterKey('next');
  const previous = keys.find((k) => k.state === 'current')!;
  const rotated = [
    ...keys.filter((k) => k !== next && k !== previous),
    { ...previous, state: 'old' as const },
    { ...next, state: 'current' as const },
  ];
  // The file first: from here on, controllers that follow it seal under the new key.
  writeKeyRingFile(path, rotated);
  const ring = KeyRing.file(path);
  const resealed = await resealSecrets(store.db, ring, (id) => id !== next.id);
  await recordMasterKeyId(store.db, next.id, true);
  if (resealed > 0) await forgetReplacedValues(store);
  const pruned = opts.keepOldKeys ? undefined : await pruneMasterKeys(store, path);
  return { current: next.id, retired: previous.id, resealed, pruned };
}

export interface PruneResult { resealed: number; removed: string[] }

export async function pruneMasterKeys(store: Store, path: string): Promise<PruneResult> {
  const ring = KeyRing.file(path);
  if (ring.keys.length === 0) throw new MasterKeyError(`There is no master key file at ${path}.`);
  const current = ring.current().id;
  const resealed = await resealSecrets(store.db, ring, (id) => id !== current);
  if (resealed > 0) await forgetReplacedValues(store);
  const usage = await secretKeyUsage(store.db);
  const keep = ring.keys.filter((k) => k.state !== 'old' || (usage.get(k.id) ?? 0) > 0);
  const removed = ring.keys.filter((k) => !keep.includes(k)).map((k) => k.id);
  if (removed.length > 0) writeKeyRingFile(path, keep);
  return { resealed, removed };
}

export interface KeyStatus { id: string; state: MasterKey['state']; secrets: number }

export async function masterKeyStatus(store: Store, path: string): Promise<{ keys: KeyStatus[]; plaintext: number; unknown: Array<{ id: string; secrets: number }> }> {
  const keys = keysIn(path);
  const usage = await secretKeyUsage(store.db);
  return {
    keys: keys.map((k) => ({ id: k.id, state: k.state, secrets: usage.get(k.id) ?? 0 })),
    plaintext: usage.get(PLAINTEXT) ?? 0,
    unknown: [...usage].filter(([id]) => id !== PLAINTEXT && !keys.some((k) => k.id === id)).map(([id, secrets]) => ({ id, secrets })),
  };
}
