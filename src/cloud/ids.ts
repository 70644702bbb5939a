// Resource ids shaped like AWS's: a prefix and 17 lowercase hex digits.
import { randomBytes, randomInt } from 'node:crypto';

export function newId(prefix: string): string {
  return `${prefix}-${randomBytes(9).toString('hex').slice(0, 17)}`;
}

export function newRequestId(): string {
  const h = randomBytes(16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Twelve digits, never starting with 0, as AWS account ids are. */
export function newAccountId(): string {
  let id = String(randomInt(1, 10));
  for (let i = 0; i < 11; i++) id += String(randomInt(0, 10));
  return id;
}

const KEY_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** AWS-style principal ids: a 4-letter prefix (AKIA, AIDA) then upper-case base32 characters. */
export function newPrincipalId(prefix: string, length = 16): string {
  const bytes = randomBytes(length);
  let out = prefix;
  for (let i = 0; i < length; i++) out += KEY_ALPHABET[bytes[i]! % 32];
  return out;
}

export function newSecretKey(): string {
  return randomBytes(30).toString('base64').replace(/[+/=]/g, 'x').slice(0, 40);
}

export const ID_PATTERN = /^[a-z]+-[0-9a-f]{8}([0-9a-f]{9})?$/;
