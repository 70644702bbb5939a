// A secret as the store keeps it: AES-256-GCM under a master key, with a fresh random 96-bit nonce
// for every value, written `v1:<key-id>:<nonce>:<ciphertext+tag>` (base64). The key id says which
// key opens it, so older keys keep working until every row is sealed again under the current
// one. The header is authenticated too: a value cannot be passed off as another key's.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { KeyRing } from './key-ring.ts';
import { MasterKeyError } from './master-key-file.ts';

const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const SEALED = /^v1:([0-9a-f]{16}):([A-Za-z0-9+/]{16}):([A-Za-z0-9+/]+={0,2})$/;

/** The id of the key that sealed `value`, or undefined when it is not sealed (plaintext from before encryption). */
export function sealedKeyId(value: string): string | undefined {
  return SEALED.exec(value)?.[1];
}

export function sealSecret(ring: KeyRing, plain: string): string {
  const { id, key } = ring.current();
  const header = `v1:${id}`;
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.from(header));
  const sealed = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final(), cipher.getAuthTag()]);
  return `${header}:${nonce.toString('base64')}:${sealed.toString('base64')}`;
}

/** The secret in `value`; a value that is not sealed is returned as it is. */
export function openSecret(ring: KeyRing, value: string): string {
  const m = SEALED.exec(value);
  if (!m) return value;
  const [, id, nonce, body] = m as unknown as [string, string, string, string];
  const { key } = ring.find(id);
  const data = Buffer.from(body, 'base64');
  if (data.length < TAG_BYTES) throw new MasterKeyError(`A secret in the store sealed under master key ${id} is damaged (too short).`);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(nonce, 'base64'));
    decipher.setAAD(Buffer.from(`v1:${id}`));
    decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
    return Buffer.concat([decipher.update(data.subarray(0, data.length - TAG_BYTES)), decipher.final()]).toString('utf8');
  } catch {
    throw new MasterKeyError(`A secret in the store sealed under master key ${id} does not open with that key: the value was altered.`);
  }
}
