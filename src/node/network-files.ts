// Small file helpers for node networking state: writes are atomic (temp file + rename) so a crash
// never leaves a half-written hosts list or state file for dnsmasq or the next start to read.
import { readFile, rename, writeFile } from 'node:fs/promises';

export async function writeFileAtomic(path: string, content: string): Promise<void> {
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, content, { mode: 0o644 });
  await rename(temp, path);
}

/** Writes only when the content differs; returns whether it did. */
export async function writeFileIfChanged(path: string, content: string): Promise<boolean> {
  const current = await readFile(path, 'utf8').catch(() => undefined);
  if (current === content) return false;
  await writeFileAtomic(path, content);
  return true;
}
