// The master keys a process holds in memory. One bound to a key file follows that file: before
// it encrypts, and when it meets a key id it does not know, it reads the file again if the file
// changed, so `ironbark admin master-key rotate` (or a key file copied in from another host)
// takes effect in a running cloud controller without a restart.
import { statSync } from 'node:fs';
import { MasterKeyError, newMasterKey, readKeyRingFile, type MasterKey } from './master-key-file.ts';

export class KeyRing {
  #keys: MasterKey[];
  readonly #path: string | undefined;
  readonly #lockedReason: string | undefined;
  #seen = '';
  #reloadError: string | undefined;

  private constructor(keys: MasterKey[], path?: string, lockedReason?: string) {
    this.#keys = keys;
    this.#path = path;
    this.#lockedReason = lockedReason;
  }

  /** Keys of the file at `path`, read now if it exists (else none until `reload`). */
  static file(path: string): KeyRing {
    const ring = new KeyRing([], path);
    ring.reload();
    return ring;
  }

  /** A key that lives and dies with this process: for stores that do too (`:memory:`), and tests. */
  static ephemeral(): KeyRing {
    return new KeyRing([newMasterKey('current')]);
  }

  /** No key at all: every use says `reason`. */
  static locked(reason: string): KeyRing {
    return new KeyRing([], undefined, reason);
  }

  get path(): string | undefined {
    return this.#path;
  }

  get keys(): readonly MasterKey[] {
    return this.#keys;
  }

  /** Reads the key file again; throws what is wrong with it. */
  reload(): void {
    if (this.#path === undefined) return;
    const seen = this.#fingerprint();
    this.#keys = readKeyRingFile(this.#path) ?? [];
    this.#seen = seen;
    this.#reloadError = undefined;
  }

  /** The key that encrypts new secrets. */
  current(): MasterKey {
    this.#followFile();
    const key = this.#keys.find((k) => k.state === 'current');
    if (!key) throw new MasterKeyError(this.#lockedReason ?? `There is no master key in ${this.#path ?? 'memory'} to encrypt secrets with.`);
    return key;
  }

  /** The key with this id, or a MasterKeyError that names what is missing. */
  find(id: string): MasterKey {
    let key = this.#keys.find((k) => k.id === id);
    if (key === undefined) {
      this.#followFile();
      key = this.#keys.find((k) => k.id === id);
    }
    if (key === undefined) {
      if (this.#lockedReason !== undefined) throw new MasterKeyError(this.#lockedReason);
      const held = this.#keys.map((k) => k.id).join(', ') || 'none';
      throw new MasterKeyError(`A secret in the store is encrypted under master key ${id}, which ${this.#path ?? 'this process'} does not hold (it holds: ${held})`
        + `${this.#reloadError ? `; reading the key file failed: ${this.#reloadError}` : ''}. Restore the key file the secret was made with.`);
    }
    return key;
  }

  #fingerprint(): string {
    try {
      const s = statSync(this.#path!);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      return 'missing';
    }
  }

  /** A key file that is broken mid-edit keeps the keys we have: the cloud must not stop over it. */
  #followFile(): void {
    if (this.#path === undefined || this.#fingerprint() === this.#seen) return;
    try {
      const keys = readKeyRingFile(this.#path);
      this.#seen = this.#fingerprint();
      if (keys !== undefined) this.#keys = keys;
      this.#reloadError = keys === undefined ? 'the file is missing' : undefined;
    } catch (err) {
      this.#reloadError = (err as Error).message;
    }
  }
}
