// The cloud controller process: the state store, the EC2 endpoint and (later) the admin API,
// served over HTTP.
import { Hono } from 'hono';
import { createServer, type RequestListener, type Server } from 'node:http';
import { join } from 'node:path';
import { ensurePrivateDirSync } from '../store/private-files.ts';
import type { Logger } from 'pino';
import type { Store } from '../store/store.ts';
import { openStoreWithMasterKey } from '../store/master-key-setup.ts';
import { createKeyResolver } from '../auth/key-cache.ts';
import { createEc2Handler, serveEc2OnNode, type Ec2Handler } from './ec2-endpoint.ts';
import { createAdminApi } from './admin-api.ts';
import { allOperations } from './operations.ts';
import { ensureAdminAccount, publishAdminCredentials, withdrawAdminCredentials, type AdminCredentials } from './bootstrap.ts';
import type { CloudSettings } from './context.ts';
import { ComputeDirectory } from './compute-directory.ts';
import { InstanceReconciler } from './instance-reconciler.ts';
import { VolumeReconciler } from './storage/volume-reconciler.ts';
import { SnapshotReconciler } from './storage/snapshot-reconciler.ts';
import { FirewallSync } from './network/firewall-sync.ts';
import { seedVmTypes } from './vm-types.ts';
import { ClusterConnections } from './clusters.ts';
import { createClusterAdminApi } from './admin-clusters.ts';
import { adminNotFound } from './admin-api.ts';
import { clusterImageUrl, mountClusterImages } from './images/cluster-images.ts';
import { mountConsole } from './console-routes.ts';
import { DEFAULT_MAX_REQUEST_BYTES, honoListenerWithBodyLimit, tooLargeMessage, type RefusalAnswer } from '../http/request-body.ts';
import { applyServerTimeouts } from '../http/server-timeouts.ts';
import { RequestLimiter, type EndpointLimitOptions } from './limits/request-limiter.ts';
import { createRateLimitAdminApi } from './limits/admin-rate-limits.ts';
import { createPublicRangeAdminApi } from './admin-public-ranges.ts';
import { createEventAdminApi } from './admin-events.ts';
import { InstanceEventRunner } from './compute/instance-event-runner.ts';
import { createImageAdminApi } from './images/image-admin-api.ts';
import { guardEndpointServer } from './limits/endpoint-server.ts';

export interface CloudControllerOptions {
  dataDir: string;
  host: string;
  port: number;
  /** PostgreSQL URL; default is SQLite in the data directory. */
  storeUrl?: string;
  /** The key file that encrypts the store's secrets; default $IRONBARK_MASTER_KEY_FILE, else master.key in the data directory. */
  masterKeyFile?: string;
  region: string;
  /** Public endpoint if it differs from http://host:port (e.g. behind a proxy). */
  endpoint?: string;
  log: Logger;
  /** Where clusters fetch image files; without it they get local paths (all on one host). */
  imageUrl?: (imageId: string) => string;
  /**
   * Clusters on other hosts fetch image files from this cloud (`GET /cluster-images/<id>`, signed
   * with their secret) at this base URL, or at the endpoint when it is ''. Ignored with `imageUrl`.
   */
  clusterImagesBaseUrl?: string;
  reconcileIntervalMs?: number;
  /** Largest request body (EC2 and admin API); larger ones are refused unread. Default 512 KiB. */
  maxRequestBytes?: number;
  /** Parameters per request, header size, connections per address, in-flight requests per account (limits/request-limiter.ts). */
  limits?: EndpointLimitOptions;
  /**
   * Keep the EC2 endpoint answering 503 and write no credentials files until `ready()`: `ironbark
   * up` opens both only once its zone can launch, so a script that waits for credentials.env
   * never meets "no availability zone is connected".
   */
  holdUntilReady?: boolean;
}

export interface RunningCloud {
  url: string;
  store: Store;
  settings: CloudSettings;
  admin: AdminCredentials;
  /** Clusters by availability zone: register a ClusterApi here to give the cloud a zone's compute. */
  directory: ComputeDirectory;
  /** The remote cluster controllers of the clusters table, registered in `directory`. */
  clusters: ClusterConnections;
  /** The EC2 endpoint's request limits (counts of admitted and refused calls). */
  limiter: RequestLimiter;
  /** Opens the EC2 endpoint and writes the credentials files (with `holdUntilReady`; else a no-op). */
  ready(): Promise<void>;
  close(): Promise<void>;
}

export async function startCloudController(opts: CloudControllerOptions): Promise<RunningCloud> {
  // Holds the store, credentials and secrets: the owner's alone, also when it already existed.
  ensurePrivateDirSync(opts.dataDir);
  const store = await openStoreWithMasterKey({
    url: opts.storeUrl ?? join(opts.dataDir, 'ironbark.sqlite'), dataDir: opts.dataDir, masterKeyFile: opts.masterKeyFile, log: opts.log,
  });
  try {
    await seedVmTypes(store.db);
    const directory = new ComputeDirectory();
    const app = new Hono();
    // Routes exist before the port opens; requests that arrive before set-up ends get a 503.
    let ec2: Ec2Handler | undefined;
    let open = !opts.holdUntilReady;
    const serving = () => (open ? ec2 : undefined);
    app.get('/healthz', (c) => c.json({ ok: serving() !== undefined }, serving() ? 200 : 503));
    let adminApis: Hono | undefined;
    app.all('/admin/*', (c) => (adminApis ? adminApis.fetch(c.req.raw, c.env) : c.text('starting', 503)));
    mountClusterImages(app, { store, log: opts.log });
    mountConsole(app, opts.region);
    const maxRequestBytes = opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    const server = await listen(app, serveEc2OnNode(serving, opts.log, { maxRequestBytes }), maxRequestBytes, opts.host, opts.port, opts.limits);
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : opts.port;
    const hostForUrl = opts.host.includes(':') ? `[${opts.host}]` : opts.host === '0.0.0.0' ? '127.0.0.1' : opts.host;
    const url = opts.endpoint ?? `http://${hostForUrl}:${port}`;
    const settings: CloudSettings = { region: opts.region, endpoint: url };
    if (opts.holdUntilReady) withdrawAdminCredentials(opts.dataDir);
    const admin = await ensureAdminAccount(store, opts.dataDir, settings, !opts.holdUntilReady);
    const imagesBase = opts.clusterImagesBaseUrl === undefined ? undefined : opts.clusterImagesBaseUrl || url;
    const imageUrl = opts.imageUrl ?? (imagesBase ? (imageId: string) => clusterImageUrl(imagesBase, imageId) : undefined);
    const operations = allOperations({ directory, log: opts.log, imageUrl });
    // One key cache for EC2 and the admin API, so a key the operator disables stops working at once.
    const keys = createKeyResolver(store);
    const limiter = new RequestLimiter({ ...opts.limits, store, log: opts.log });
    ec2 = createEc2Handler({ store, settings, keys, operations, log: opts.log, limiter });
    const clusters = new ClusterConnections(directory);
    await clusters.load(store.db);
    adminApis = new Hono();
    adminApis.route('/admin', createAdminApi({ store, settings, log: opts.log, keys }));
    adminApis.route('/admin', createClusterAdminApi({ store, keys, log: opts.log, region: opts.region, connections: clusters }));
    adminApis.route('/admin', createRateLimitAdminApi({ store, keys, log: opts.log, limiter }));
    adminApis.route('/admin', createPublicRangeAdminApi({ store, keys, log: opts.log }));
    adminApis.route('/admin', createEventAdminApi({ store, keys, log: opts.log }));
    adminApis.route('/admin', createImageAdminApi({ store, keys, log: opts.log, imagesDir: join(opts.dataDir, 'imported-images') }));
    adminApis.all('/admin/*', adminNotFound);
    const reconciler = new InstanceReconciler({ store, directory, log: opts.log, intervalMs: opts.reconcileIntervalMs ?? 1000, imageUrl });
    reconciler.start();
    // EBS volumes: their clusters make, attach, detach, grow and delete them in the background.
    const volumeReconciler = new VolumeReconciler({ store, directory, log: opts.log, intervalMs: opts.reconcileIntervalMs ?? 1000 });
    volumeReconciler.start();
    // EBS snapshots: their zone's storage takes, copies and lets go of them in the background.
    const snapshotReconciler = new SnapshotReconciler({ store, directory, log: opts.log, intervalMs: opts.reconcileIntervalMs ?? 1000 });
    snapshotReconciler.start();
    // Scheduled events (a node's maintenance): carried out when their time comes.
    const eventRunner = new InstanceEventRunner({ store, directory, log: opts.log, intervalMs: Math.max(opts.reconcileIntervalMs ?? 1000, 1000) });
    eventRunner.start();
    // Security groups on the wire: each zone's document goes to its cluster on change and every 30 s.
    const firewallSync = new FirewallSync({ store, directory, log: opts.log });
    firewallSync.start();
    opts.log.info({ url, store: store.kind }, 'cloud controller listening');
    return {
      url, store, settings, admin, directory, clusters, limiter,
      async ready() {
        if (open) return;
        await publishAdminCredentials(opts.dataDir, admin, settings);
        open = true;
      },
      async close() {
        await reconciler.stop();
        await volumeReconciler.stop();
        await snapshotReconciler.stop();
        await eventRunner.stop();
        await firewallSync.stop();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await store.close();
      },
    };
  } catch (err) {
    await store.close();
    throw err;
  }
}

/** EC2 requests (`/`) go straight to the endpoint; everything else (admin API, health) to Hono. */
function listen(app: Hono, ec2: RequestListener, maxRequestBytes: number, host: string, port: number, limits: EndpointLimitOptions = {}): Promise<Server> {
  const rest = honoListenerWithBodyLimit(app.fetch, { maxBytes: maxRequestBytes, tooLarge: adminTooLarge });
  const server = guardEndpointServer(applyServerTimeouts(createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/' || url.startsWith('/?')) ec2(req, res);
    else rest(req, res);
  })), limits);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

/** The admin API's error format (admin-api.ts), for a body over the limit. */
function adminTooLarge(maxBytes: number): RefusalAnswer {
  return {
    status: 413,
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ error: { code: 'RequestEntityTooLarge', message: tooLargeMessage(maxBytes) } }),
  };
}
