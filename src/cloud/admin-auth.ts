// Who may use the admin API: requests signed with SigV4 (exactly as EC2 requests are) by an
// access key of an admin user (is_admin=1) of the cloud's own admin account, whose id bootstrap
// keeps in `settings` under 'admin-account-id'. Every other caller is refused with 403, so an
// account's own "admin" user administers its account through EC2 and never the cloud.
import type { MiddlewareHandler } from 'hono';
import type { Store } from '../store/store.ts';
import type { Caller } from './context.ts';
import { authenticate, type KeyResolver } from '../auth/authenticate.ts';
import { Ec2Error } from '../protocol/errors.ts';

export const ADMIN_ACCOUNT_SETTING = 'admin-account-id';

/** The Hono environment of every admin sub-app: the authenticated operator is `c.get('adminCaller')`. */
export interface AdminEnv {
  Variables: { adminCaller: Caller };
}

export interface AdminAuthDeps {
  store: Pick<Store, 'db'>;
  keys: KeyResolver;
}

export async function cloudAdminAccountId(store: Pick<Store, 'db'>): Promise<string | undefined> {
  const row = await store.db.selectFrom('settings').select('value').where('key', '=', ADMIN_ACCOUNT_SETTING).executeTakeFirst();
  return row?.value;
}

function refused(code: string, message: string): Ec2Error {
  return new Ec2Error(code, message, 403);
}

/**
 * Middleware that authenticates the request and admits only cloud administrators. Several admin
 * sub-apps mounted at the same prefix each install it; the first one to run does the work.
 */
export function requireCloudAdmin(deps: AdminAuthDeps): MiddlewareHandler<AdminEnv> {
  return async (c, next) => {
    if (c.get('adminCaller') !== undefined) return next();
    const url = new URL(c.req.url);
    const body = c.req.method === 'GET' || c.req.method === 'HEAD' ? Buffer.alloc(0) : Buffer.from(await c.req.arrayBuffer());
    const headers: Record<string, string> = {};
    c.req.raw.headers.forEach((v, k) => { headers[k] = v; });
    const rawQuery = url.search.startsWith('?') ? url.search.slice(1) : url.search;
    const params: Record<string, string> = {};
    for (const [k, v] of new URLSearchParams(rawQuery)) params[k] = v;

    let caller: Caller;
    try {
      caller = await authenticate({ method: c.req.method, host: headers.host ?? url.host, path: url.pathname, rawQuery, headers, body, params }, deps.keys);
    } catch (err) {
      // The admin API answers every authentication failure with 403, keeping EC2's code and message.
      if (err instanceof Ec2Error) throw refused(err.code, err.message);
      throw err;
    }
    const adminAccountId = await cloudAdminAccountId(deps.store);
    if (adminAccountId === undefined || caller.accountId !== adminAccountId || !caller.isAdmin) {
      throw refused('AccessDenied',
        `The access key ${caller.accessKeyId} may not use the admin API: only admin users of the cloud's admin account may.`);
    }
    c.set('adminCaller', caller);
    return next();
  };
}
