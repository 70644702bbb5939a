// `ironbark admin rate-limit get|set`: the EC2 request rate limits (token buckets per family of
// calls, as EC2 throttles), for the whole cloud or one account, through the admin API.
import { Command, InvalidArgumentError, Option } from 'commander';
import { adminClientFor, formatTable, printResult } from './admin.ts';

interface LimitJson { family: string; covers: string; capacity: number | null; refillPerSecond: number | null; source: string }
interface AnswerJson { accountId?: string; isCloudAdmin?: boolean; throttled?: number; rateLimits: LimitJson[] }

const SOURCES: Record<string, string> = {
  account: "account's own",
  'cloud-admin': 'cloud admin account (not throttled)',
  cloud: "cloud's default",
  ec2: "EC2's default",
};

function table(d: AnswerJson): string {
  const head = d.accountId === undefined
    ? 'Request rate limits of the cloud (each account has its own buckets of these sizes):\n'
    : `Request rate limits of account ${d.accountId}${d.isCloudAdmin ? ' (the cloud admin account)' : ''}; ` +
      `${d.throttled ?? 0} call(s) throttled by this controller since it started:\n`;
  return head + formatTable(['FAMILY', 'BURST', 'REFILL/S', 'FROM', 'COVERS'],
    d.rateLimits.map((l) => [l.family, l.capacity ?? 'unlimited', l.refillPerSecond ?? '-', SOURCES[l.source] ?? l.source, l.covers]));
}

function wholeNumber(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) throw new InvalidArgumentError('It must be a positive whole number.');
  return Number(value);
}

function rate(value: string): number {
  if (!/^\d+(\.\d+)?$/.test(value) || !(Number(value) > 0)) throw new InvalidArgumentError('It must be a number of tokens a second above 0, such as 5 or 0.5.');
  return Number(value);
}

const pathFor = (account: string | undefined) => (account === undefined ? '/rate-limits' : `/accounts/${encodeURIComponent(account)}/rate-limits`);

export function registerRateLimitAdminCommands(admin: Command): void {
  const cmd = admin.command('rate-limit').description('show and set request rate limits (token buckets per family of EC2 calls), cloud-wide or per account');

  cmd.command('get').option('--account <account>', "one account's limits (id or name); without it, the cloud's defaults")
    .description('show the request rate limits and where each comes from')
    .action(async (o: { account?: string }, c: Command) => {
      printResult(c, await adminClientFor(c).request('GET', pathFor(o.account)), table);
    });

  cmd.command('set').argument('<family>', 'family of calls, e.g. non-mutating, mutating, RunInstances (see `rate-limit get`)')
    .option('--account <account>', 'set it for this account (id or name); without it, for every account without its own value')
    .option('--burst <n>', 'bucket capacity: calls accepted at once after a quiet spell', wholeNumber)
    .option('--refill <per-second>', 'tokens added a second: the sustained rate of calls', rate)
    .addOption(new Option('--unlimited', 'do not throttle this family').conflicts(['burst', 'refill', 'default']))
    .addOption(new Option('--default', "remove the value set here: the cloud's default (for an account) or EC2's applies again").conflicts(['burst', 'refill']))
    .description('set the bucket size of one family of calls')
    .action(async (family: string, o: { account?: string; burst?: number; refill?: number; unlimited?: boolean; default?: boolean }, c: Command) => {
      let value: unknown;
      if (o.unlimited) value = 'unlimited';
      else if (o.default) value = null;
      else if (o.burst !== undefined && o.refill !== undefined) value = { capacity: o.burst, refillPerSecond: o.refill };
      else throw new Error('Give --burst N and --refill R together, or --unlimited, or --default.');
      printResult(c, await adminClientFor(c).request('PUT', pathFor(o.account), { body: { [family]: value } }), table);
    });
}
