// Files that hold a secret or a user's data (the store and its WAL, credentials, node instance
// specs with user data, console logs, instance disks, shared secrets) are the owner's alone: 0600
// in a 0700 directory, whatever the umask, and a directory that is Ironbark's own (the data
// directory) is tightened when an earlier version or a hand-made mkdir left it open.
import { chmodSync, closeSync, fchmodSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { chmod, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';

export const PRIVATE_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;

/** Group and other bits: none may be set on a private file or directory. */
const OPEN_TO_OTHERS = 0o077;

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT';
}

/**
 * Makes `dir` (and any missing parents) with mode 0700. With `tighten` (the default) an existing
 * directory that group or others may enter is narrowed to its owner: use it for directories that
 * are Ironbark's own, not for one a user named that may be shared (a `--store` file's folder).
 */
export async function ensurePrivateDir(dir: string, opts: { tighten?: boolean } = {}): Promise<void> {
  if (opts.tighten === false) {
    await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
    return;
  }
  // Usually the folder is there already (a node checks its state folder on every record it
  // writes): one stat says so, and whether it is open to others.
  let found = await stat(dir).catch((err: unknown) => {
    if (isMissing(err)) return undefined;
    throw err;
  });
  if (found === undefined || !found.isDirectory()) {
    await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
    found = await stat(dir);
  }
  if ((found.mode & OPEN_TO_OTHERS) !== 0) await chmod(dir, found.mode & 0o7700);
}

/** ensurePrivateDir for synchronous start-up code. */
export function ensurePrivateDirSync(dir: string, opts: { tighten?: boolean } = {}): void {
  mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  if (opts.tighten === false) return;
  const { mode } = statSync(dir);
  if ((mode & OPEN_TO_OTHERS) !== 0) chmodSync(dir, mode & 0o7700);
}

/** Writes `text` to `path` with mode 0600 through a temporary file and a rename, so it is never seen half-written. */
export async function writePrivateFile(path: string, text: string | Uint8Array, opts: { sync?: boolean } = {}): Promise<void> {
  const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    // The folder is made only when it is missing: a node writes its instance records on every
    // change, and each file-system call is a trip through libuv's small thread pool.
    const handle = await open(temp, 'wx', PRIVATE_FILE_MODE).catch(async (err: unknown) => {
      if (!isMissing(err)) throw err;
      await mkdir(dirname(path), { recursive: true, mode: PRIVATE_DIR_MODE });
      return open(temp, 'wx', PRIVATE_FILE_MODE);
    });
    try {
      await handle.writeFile(text);
      if (opts.sync !== false) await handle.sync();
    } finally {
      await handle.close();
    }
    // The umask may have narrowed the creation mode, or the file system widened it.
    await chmod(temp, PRIVATE_FILE_MODE);
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}

/** writePrivateFile for synchronous start-up code. */
export function writePrivateFileSync(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: PRIVATE_DIR_MODE });
  const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    const fd = openSync(temp, 'wx', PRIVATE_FILE_MODE);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    chmodSync(temp, PRIVATE_FILE_MODE);
    renameSync(temp, path);
  } catch (err) {
    rmSync(temp, { force: true });
    throw err;
  }
}

/**
 * Makes `path` exist, empty if it was not there, with mode 0600 (an existing file keeps its
 * content and is narrowed to 0600). For files another program writes into after us, such as a
 * console log QEMU opens, or the SQLite database whose mode its -wal and -shm files copy.
 */
export async function ensurePrivateFile(path: string): Promise<void> {
  const handle = await open(path, 'a', PRIVATE_FILE_MODE);
  try {
    await handle.chmod(PRIVATE_FILE_MODE);
  } finally {
    await handle.close();
  }
}

/** ensurePrivateFile for synchronous start-up code. */
export function ensurePrivateFileSync(path: string): void {
  const fd = openSync(path, 'a', PRIVATE_FILE_MODE);
  try {
    fchmodSync(fd, PRIVATE_FILE_MODE);
  } finally {
    closeSync(fd);
  }
}

/** Narrows `path` to 0600 if it exists (a file an earlier version left open); absent is fine. */
export async function restrictFile(path: string): Promise<void> {
  await chmod(path, PRIVATE_FILE_MODE).catch((err) => { if (!isMissing(err)) throw err; });
}

/** restrictFile for synchronous start-up code. */
export function restrictFileSync(path: string): void {
  try {
    chmodSync(path, PRIVATE_FILE_MODE);
  } catch (err) {
    if (!isMissing(err)) throw err;
  }
}
