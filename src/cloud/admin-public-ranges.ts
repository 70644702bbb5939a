// Admin API for the zones' public ranges (conventions in admin-api.ts): the IPv4 block each zone's
// elastic IPs and launch-time public addresses come from (network/public-ranges.ts).
//
//   GET    /v1/public-ranges                  every zone with a range, its size and how many are held
//   PUT    /v1/public-ranges/:zone {cidr}     gives the zone its range, or changes it
//   DELETE /v1/public-ranges/:zone            (refused while accounts hold addresses of it)
import type { Hono } from 'hono';
import type { Logger } from 'pino';
import type { Store } from '../store/store.ts';
import type { KeyResolver } from '../auth/authenticate.ts';
import type { PublicRangesTable } from '../store/schema.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { newAdminApp, readJsonObject, requiredString, type AdminEnv } from './admin-api.ts';
import { listPublicRanges, publicRangeOf, publicRangeUsage, setPublicRange } from './network/public-ranges.ts';

export interface PublicRangeAdminDeps {
  store: Store;
  keys: KeyResolver;
  log: Pick<Logger, 'info' | 'warn' | 'error'>;
}

async function rangeView(store: Store, row: Pick<PublicRangesTable, 'zone' | 'cidr'>) {
  const { size, used } = await publicRangeUsage(store.db, row.zone, row.cidr);
  return { zone: row.zone, cidr: row.cidr, size, used, free: size - used };
}

export function createPublicRangeAdminApi(deps: PublicRangeAdminDeps): Hono<AdminEnv> {
  const { store, log } = deps;
  const app = newAdminApp(deps);

  app.get('/v1/public-ranges', async (c) => {
    const rows = await listPublicRanges(store.db);
    const ranges = [];
    for (const row of rows) ranges.push(await rangeView(store, row));
    return c.json({ publicRanges: ranges });
  });

  app.put('/v1/public-ranges/:zone', async (c) => {
    const zone = c.req.param('zone');
    const cidr = requiredString(await readJsonObject(c), 'cidr');
    const row = (await store.transaction((tx) => setPublicRange(tx, zone, cidr)))!;
    log.info({ zone, cidr: row.cidr }, 'public range set');
    return c.json({ publicRange: await rangeView(store, row) });
  });

  app.delete('/v1/public-ranges/:zone', async (c) => {
    const zone = c.req.param('zone');
    if (!(await publicRangeOf(store.db, zone))) throw new Ec2Error('InvalidPublicRange.NotFound', `Zone ${zone} has no public range.`, 404);
    await store.transaction((tx) => setPublicRange(tx, zone, null));
    log.info({ zone }, 'public range removed');
    return c.json({ deleted: zone });
  });

  return app;
}
