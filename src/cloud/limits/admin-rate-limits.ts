// The admin API of request rate limits (conventions in admin-api.ts):
//   GET /v1/rate-limits                      the cloud-wide limits, per family
//   PUT /v1/rate-limits                      {"mutating": {"capacity": 100, "refillPerSecond": 10}, "RunInstances": null, ...}
//   GET /v1/accounts/:account/rate-limits    what applies to the account, and how many calls were throttled
//   PUT /v1/accounts/:account/rate-limits    the account's own values, same body
// A value is {capacity, refillPerSecond}, "unlimited", or null to fall back to the default
// (the cloud's value for an account, EC2's for the cloud). Changes apply to the next request.
import type { Hono } from 'hono';
import type { Logger } from 'pino';
import type { Store, Db } from '../../store/store.ts';
import type { KeyResolver } from '../../auth/authenticate.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { newAdminApp, readJsonObject, type AdminEnv } from '../admin-api.ts';
import { cloudAdminAccountId } from '../admin-auth.ts';
import type { RequestLimiter } from './request-limiter.ts';
import { FAMILIES } from './rate-families.ts';
import { CLOUD_SCOPE, effectiveLimits, readRateLimits, setRateLimit, validateLimit, type FamilyLimit } from './rate-limit-settings.ts';

export interface RateLimitAdminDeps {
  store: Store;
  keys: KeyResolver;
  log: Pick<Logger, 'error'>;
  /** The EC2 endpoint's limiter, told at once when a limit changes. */
  limiter?: RequestLimiter;
}

async function findAccountId(db: Db, ref: string): Promise<string> {
  const q = db.selectFrom('accounts').select('id');
  const row = await (/^\d{12}$/.test(ref) ? q.where('id', '=', ref) : q.where('name', '=', ref)).executeTakeFirst();
  if (!row) throw new Ec2Error('InvalidAccount.NotFound', `The account ${ref} does not exist.`, 404);
  return row.id;
}

function changesOf(body: Record<string, unknown>): Array<[string, FamilyLimit | null]> {
  const changes = Object.entries(body).map(([family, value]) => [family, validateLimit(family, value)] as [string, FamilyLimit | null]);
  if (changes.length === 0) {
    throw new Ec2Error('MissingParameter', `Name at least one family to set: ${FAMILIES.map((f) => f.name).join(', ')}.`);
  }
  return changes;
}

export function createRateLimitAdminApi(deps: RateLimitAdminDeps): Hono<AdminEnv> {
  const { store, limiter } = deps;
  const db = store.db;
  const app = newAdminApp(deps);

  const cloudAnswer = async () => ({ rateLimits: effectiveLimits(undefined, await readRateLimits(db, CLOUD_SCOPE), false) });

  const accountAnswer = async (accountId: string) => {
    const isCloudAdmin = accountId === await cloudAdminAccountId(store);
    return {
      accountId, isCloudAdmin,
      /** Calls this controller refused with RequestLimitExceeded since it started. */
      throttled: limiter?.throttledCount(accountId) ?? 0,
      rateLimits: effectiveLimits(await readRateLimits(db, accountId), await readRateLimits(db, CLOUD_SCOPE), isCloudAdmin),
    };
  };

  app.get('/v1/rate-limits', async (c) => c.json(await cloudAnswer()));

  app.put('/v1/rate-limits', async (c) => {
    const changes = changesOf(await readJsonObject(c));
    await store.transaction(async (tx) => {
      for (const [family, value] of changes) await setRateLimit(tx, CLOUD_SCOPE, family, value);
    });
    limiter?.invalidate();
    return c.json(await cloudAnswer());
  });

  app.get('/v1/accounts/:account/rate-limits', async (c) => {
    return c.json(await accountAnswer(await findAccountId(db, c.req.param('account'))));
  });

  app.put('/v1/accounts/:account/rate-limits', async (c) => {
    const body = await readJsonObject(c);
    const accountId = await findAccountId(db, c.req.param('account'));
    const changes = changesOf(body);
    await store.transaction(async (tx) => {
      for (const [family, value] of changes) await setRateLimit(tx, accountId, family, value);
    });
    limiter?.invalidate(accountId);
    return c.json(await accountAnswer(accountId));
  });

  return app;
}
