// `--max-request-bytes`, shared by `ironbark cloud` and `ironbark up`: the largest request body the
// EC2 endpoint and the admin API accept (src/http/request-body.ts); and the endpoint's other request
// limits: parameters per request, header size, connections per client address, requests of one
// account running at once (src/cloud/limits/). Rate limits per account are set with
// `ironbark admin rate-limit`, in the store.
import { InvalidArgumentError, Option, type Command } from 'commander';
import { DEFAULT_MAX_REQUEST_BYTES } from '../http/request-body.ts';
import { DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_MAX_HEADER_BYTES } from '../http/connection-limits.ts';
import {
  DEFAULT_IN_FLIGHT_PER_ACCOUNT, DEFAULT_MAX_REQUEST_PARAMS, type EndpointLimitOptions,
} from '../cloud/limits/request-limiter.ts';

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

function countFrom(min: number, max: number) {
  return (value: string): number => {
    const n = /^\d+$/.test(value.trim()) ? Number(value.trim()) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`It must be a whole number from ${min} to ${max}.`);
    return n;
  };
}

export interface RequestLimitFlags {
  maxRequestBytes?: number;
  maxRequestParams?: number;
  maxHeaderBytes?: number;
  maxConnectionsPerAddress?: number;
  maxInFlightPerAccount?: number;
}

export function addRequestLimitFlag(command: Command): Command {
  return command.addOption(new Option(
    '--max-request-bytes <size>',
    `largest request body the EC2 endpoint and admin API accept; larger ones are refused with RequestEntityTooLarge (default ${DEFAULT_MAX_REQUEST_BYTES / 1024}k)`,
  ).argParser(parseByteSize)).addOption(new Option(
    '--max-request-params <n>',
    `most parameters in one EC2 request; more are refused with InvalidQueryParameter (default ${DEFAULT_MAX_REQUEST_PARAMS})`,
  ).argParser(countFrom(100, 10_000_000))).addOption(new Option(
    '--max-header-bytes <size>',
    `largest request line and headers; larger ones are answered 431 (default ${DEFAULT_MAX_HEADER_BYTES / 1024}k)`,
  ).argParser(parseByteSize)).addOption(new Option(
    '--max-connections-per-address <n>',
    `open connections one client address (an IPv6 /64) may hold; more are closed at once (default ${DEFAULT_MAX_CONNECTIONS_PER_ADDRESS})`,
  ).argParser(countFrom(1, 1_000_000))).addOption(new Option(
    '--max-in-flight-per-account <n>',
    `EC2 calls of one account handled at once; more wait their turn with other accounts' calls (default ${DEFAULT_IN_FLIGHT_PER_ACCOUNT})`,
  ).argParser(countFrom(1, 100_000)));
}

/** The endpoint limits given on the command line (unset ones keep their defaults). */
export function endpointLimitsFrom(flags: RequestLimitFlags): EndpointLimitOptions {
  return {
    maxRequestParams: flags.maxRequestParams, maxHeaderBytes: flags.maxHeaderBytes,
    maxConnectionsPerAddress: flags.maxConnectionsPerAddress, inFlightPerAccount: flags.maxInFlightPerAccount,
  };
}
