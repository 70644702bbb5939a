// The cloud controller process: the state store, the EC2 endpoint and (later) the admin API,
// served over HTTP.
import { Hono } from 'hono';
import { serve, type ServerType } from '@hono/node-server';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import type { Logger } from 'pino';
import { openStore, type Store } from '../store/store.ts';
import { createKeyResolver } from '../auth/key-cache.ts';
import { createEc2Handler } from './ec2-endpoint.ts';
import { allOperations } from './operations.ts';
import { ensureAdminAccount, type AdminCredentials } from './bootstrap.ts';
import type { CloudSettings } from './context.ts';

export interface CloudControllerOptions {
  dataDir: string;
  host: string;
  port: number;
  /** PostgreSQL URL; default is SQLite in the data directory. */
  storeUrl?: string;
  region: string;
  /** Public endpoint if it differs from http://host:port (e.g. behind a proxy). */
  endpoint?: string;
  log: Logger;
}

export interface RunningCloud {
  url: string;
  store: Store;
  settings: CloudSettings;
  admin: AdminCredentials;
  close(): Promise<void>;
}

export async function startCloudController(opts: CloudControllerOptions): Promise<RunningCloud> {
  mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
  const store = await openStore({ url: opts.storeUrl ?? join(opts.dataDir, 'ironbark.sqlite') });
  try {
    const app = new Hono();
    const server = await listen(app, opts.host, opts.port);
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : opts.port;
    const hostForUrl = opts.host.includes(':') ? `[${opts.host}]` : opts.host === '0.0.0.0' ? '127.0.0.1' : opts.host;
    const url = opts.endpoint ?? `http://${hostForUrl}:${port}`;
    const settings: CloudSettings = { region: opts.region, endpoint: url };
    const admin = await ensureAdminAccount(store, opts.dataDir, settings);
    const ec2 = createEc2Handler({ store, settings, keys: createKeyResolver(store), operations: allOperations(), log: opts.log });
    app.get('/healthz', (c) => c.json({ ok: true }));
    app.post('/', ec2);
    app.get('/', ec2);
    opts.log.info({ url, store: store.kind }, 'cloud controller listening');
    return {
      url, store, settings, admin,
      async close() {
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await store.close();
      },
    };
  } catch (err) {
    await store.close();
    throw err;
  }
}

function listen(app: Hono, host: string, port: number): Promise<ServerType> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, hostname: host, port }, () => resolve(server));
    server.once('error', reject);
  });
}
