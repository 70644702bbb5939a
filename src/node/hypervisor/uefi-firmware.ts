// UEFI firmware for VMs whose disk carries its own UEFI boot loader (image BootMode "uefi"):
// Debian's `ovmf` package. The firmware code is shared read-only; each VM gets its own copy of
// the variable store in its work directory, kept across stop and start as EC2 keeps an
// instance's UEFI variables.
import { access, copyFile, constants } from 'node:fs/promises';
import { join } from 'node:path';

/** The 4 MiB OVMF build without Secure Boot (that one needs SMM, which TCG makes slow). */
export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS_TEMPLATE = '/usr/share/OVMF/OVMF_VARS_4M.fd';
export const UEFI_VARS_FILE = 'uefi-vars.fd';

export class UefiFirmwareMissingError extends Error {
  constructor(path: string) {
    super(`UEFI firmware ${path} is missing on this node: install Debian's ovmf package (apt-get install -y ovmf)`);
    this.name = 'UefiFirmwareMissingError';
  }
}

async function readable(path: string): Promise<boolean> {
  return access(path, constants.R_OK).then(() => true, () => false);
}

/** The VM's variable store, made from the template on its first start; its path. */
export async function ensureUefiVars(workDir: string): Promise<string> {
  for (const path of [OVMF_CODE, OVMF_VARS_TEMPLATE]) {
    if (!(await readable(path))) throw new UefiFirmwareMissingError(path);
  }
  const vars = join(workDir, UEFI_VARS_FILE);
  if (!(await readable(vars))) await copyFile(OVMF_VARS_TEMPLATE, vars);
  return vars;
}
