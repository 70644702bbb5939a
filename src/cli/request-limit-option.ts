// `--max-request-bytes`, shared by `ironbark cloud` and `ironbark up`: the largest request body the
// EC2 endpoint and the admin API accept (src/http/request-body.ts).
import { InvalidArgumentError, Option, type Command } from 'commander';
import { DEFAULT_MAX_REQUEST_BYTES } from '../http/request-body.ts';

const UNITS: Record<string, number> = { '': 1, k: 1024, kib: 1024, m: 1024 * 1024, mib: 1024 * 1024 };

/** A size such as `524288`, `512k`, `512KiB` or `2m`, in bytes. */
export function parseByteSize(value: string): number {
  const m = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(value);
  const unit = m?.[2]?.toLowerCase() ?? '';
  const bytes = m && Object.hasOwn(UNITS, unit) ? Number(m[1]) * UNITS[unit]! : NaN;
  // Below 1 KiB no signed EC2 request fits; above 1 GiB the limit protects nothing.
  if (!Number.isSafeInteger(bytes) || bytes < 1024 || bytes > 1024 ** 3) {
    throw new InvalidArgumentError('It must be a size from 1024 bytes to 1 GiB, such as 524288, 512k or 2m.');
  }
  return bytes;
}

export interface RequestLimitFlags {
  maxRequestBytes?: number;
}

export function addRequestLimitFlag(command: Command): Command {
  return command.addOption(new Option(
    '--max-request-bytes <size>',
    `largest request body the EC2 endpoint and admin API accept; larger ones are refused with RequestEntityTooLarge (default ${DEFAULT_MAX_REQUEST_BYTES / 1024}k)`,
  ).argParser(parseByteSize));
}
