// `ironbark cloud`, `ironbark cluster` and `ironbark node`: one role per process, on separate hosts.
// The cloud reaches clusters only, a cluster reaches its nodes only; nodes need no route to the cloud.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { ensurePrivateDir } from '../store/private-files.ts';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { createLogger } from './logger.ts';
import { parseListenAddress } from './listen-address.ts';
import { startCloudController } from '../cloud/cloud-controller.ts';
import { ClusterController } from '../cluster/cluster-controller.ts';
import { Qcow2VolumeBackend } from '../cluster/storage/qcow2-volume-backend.ts';
import { createClusterHttpServer } from '../cluster/cluster-http-server.ts';
import { JoinedNodes } from '../cluster/joined-nodes.ts';
import { createNodeHttpListener } from '../node/node-http-server.ts';
import { joinCluster, loadMembership, saveMembership, sayHello, type ClusterMembership } from '../node/cluster-membership.ts';
import { startNodeHost } from '../node/node-host.ts';
import { discoverHostMac, isMacAddress, normalizeMac } from '../node/hardware-address.ts';
import { addPowerFlags, powerOptionsFrom, type PowerFlags } from './power-options.ts';
import { prepareDefaultImage } from './prepare-default-image.ts';
import { untilSignalled } from './foreground.ts';
import { addRequestLimitFlag, endpointLimitsFrom, type RequestLimitFlags } from './request-limit-option.ts';
import { applyServerTimeouts } from '../http/server-timeouts.ts';

const DEFAULT_DATA_DIR = process.env.IRONBARK_DATA_DIR ?? '/var/lib/ironbark';

function urlOf(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '';
}

function listenHttp(server: http.Server, host: string, port: number): Promise<number> {
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => {
      server.off('error', fail);
      const address = server.address();
      ok(typeof address === 'object' && address ? address.port : port);
    });
  });
}

function closeHttp(server: http.Server): Promise<void> {
  return new Promise((done) => {
    server.close(() => done());
    server.closeAllConnections();
  });
}

// ---- cloud --------------------------------------------------------------------------------------

export interface CloudRoleOptions extends RequestLimitFlags {
  dataDir: string; listen: string; store?: string; region: string; endpoint?: string; imagesUrl?: string; defaultImage: boolean; imageCache?: string;
  masterKeyFile?: string;
}

export async function runCloudRole(opts: CloudRoleOptions): Promise<void> {
  const log = createLogger('cloud');
  const { host, port } = parseListenAddress(opts.listen);
  const dataDir = resolve(opts.dataDir);
  // The cloud controller connects the clusters of its table itself (clusters.ts), as `ironbark up` does.
  // Clusters on other hosts fetch image files from this process over HTTP (cluster-images.ts).
  const cloud = await startCloudController({
    dataDir, host, port, storeUrl: opts.store, region: opts.region, endpoint: opts.endpoint, log, clusterImagesBaseUrl: opts.imagesUrl ?? '',
    maxRequestBytes: opts.maxRequestBytes, masterKeyFile: opts.masterKeyFile, limits: endpointLimitsFrom(opts),
  });
  const out = process.stdout;
  if (opts.defaultImage) {
    await prepareDefaultImage(cloud.store, cloud.admin.accountId, opts.imageCache).catch(async (err) => {
      await cloud.close();
      throw err;
    });
  }
  out.write(`Ironbark cloud controller is up: EC2 endpoint ${cloud.url} (region ${opts.region})\n`);
  out.write(`Admin credentials are in ${join(dataDir, 'credentials.env')}. Add a zone's cluster with:\n`);
  out.write(`  ironbark admin --data-dir ${dataDir} cluster add --zone ${opts.region}a --url http://CLUSTER_HOST:8774 --cidr 10.1.0.0/16\n`);
  await untilSignalled(log, () => cloud.close());
}

// ---- cluster ------------------------------------------------------------------------------------

export interface ClusterRoleOptions extends PowerFlags {
  zone: string;
  cidr: string;
  dataDir: string;
  listen: string;
  cloudSecret?: string;
  cloudSecretFile?: string;
  policy: string;
  nodeUrl?: string;
}

function readCloudSecret(opts: ClusterRoleOptions): string {
  const secret = opts.cloudSecretFile ? readFileSync(opts.cloudSecretFile, 'utf8').trim() : opts.cloudSecret ?? process.env.IRONBARK_CLOUD_SECRET;
  if (!secret) {
    throw new Error('The cluster needs the secret it shares with the cloud: --cloud-secret-file FILE (or --cloud-secret S, or IRONBARK_CLOUD_SECRET), as printed by `ironbark admin cluster add`.');
  }
  return secret;
}

export async function runClusterRole(opts: ClusterRoleOptions): Promise<void> {
  const log = createLogger('cluster');
  const { host, port } = parseListenAddress(opts.listen, '0.0.0.0');
  const dataDir = resolve(opts.dataDir);
  await ensurePrivateDir(dataDir);
  const cloudSecret = readCloudSecret(opts);
  const joined = await JoinedNodes.open(join(dataDir, 'nodes.json'));
  const power = powerOptionsFrom(opts);
  // The zone's volumes are served to its nodes where they reach this host: --node-url's host, or a
  // non-wildcard --listen address (a wildcard would offer them beyond the zone).
  const storageHost = opts.nodeUrl ? new URL(opts.nodeUrl).hostname.replace(/^\[|\]$/g, '') : host !== '0.0.0.0' && host !== '::' ? host : undefined;
  const volumes = storageHost ? new Qcow2VolumeBackend({ dir: join(dataDir, 'volumes'), host: storageHost, zone: opts.zone }) : undefined;
  if (!volumes) log.warn({ zone: opts.zone }, 'no --node-url and a wildcard --listen: the zone keeps no volumes (give --node-url to serve them)');
  const controller = new ClusterController({ zone: opts.zone, cidr: opts.cidr, policy: opts.policy, log, power, volumes });
  let server: http.Server | undefined;
  try {
    // Without --node-url, nodes get image locations relative to the cluster URL each joined with.
    const api = createClusterHttpServer({
      cluster: controller, cloudSecret, joined, log, nodeFacingUrl: opts.nodeUrl, imageCacheDir: join(dataDir, 'images'),
    });
    server = applyServerTimeouts(http.createServer(api.listener));
    const boundPort = await listenHttp(server, host, port);
    await api.registerJoinedNodes();
    log.info({ zone: opts.zone, cidr: opts.cidr, listen: urlOf(host, boundPort), nodes: joined.list().length }, 'cluster controller listening');
    process.stdout.write(`Ironbark cluster controller of zone ${opts.zone} is up on ${urlOf(host, boundPort)} (${joined.list().length} joined node(s))\n`);
  } catch (err) {
    await controller.close();
    if (server) await closeHttp(server);
    throw err;
  }
  const running = server;
  await untilSignalled(log, async () => {
    await closeHttp(running);
    await controller.close();
  });
}

// ---- node ---------------------------------------------------------------------------------------

export interface NodeRoleOptions {
  join?: string;
  token?: string;
  dataDir: string;
  listen: string;
  advertise?: string;
  driver: 'qemu' | 'fake';
  name?: string;
  /** This host's MAC for waking it; found from the interfaces when absent. */
  mac?: string;
  /** --stop-timeout, in milliseconds. */
  stopTimeout?: number;
}

export async function runNodeRole(opts: NodeRoleOptions): Promise<void> {
  const log = createLogger('node');
  const { host, port } = parseListenAddress(opts.listen, '0.0.0.0');
  const dataDir = resolve(opts.dataDir);
  await ensurePrivateDir(dataDir);
  if (isWildcard(host) && !opts.advertise) {
    throw new Error('With a wildcard --listen, say where the cluster reaches this node: --advertise http://NODE_ADDRESS:PORT.');
  }
  const advertised = (opts.advertise ?? urlOf(host, port)).replace(/\/+$/, '');

  let membership: ClusterMembership | undefined = await loadMembership(dataDir);
  const clusterUrl = membership?.clusterUrl ?? opts.join;
  const mac = opts.mac ?? (clusterUrl ? await hostMac(advertised, clusterUrl, log) : undefined);
  if (membership) {
    if (opts.token) log.info({ nodeId: membership.nodeId, zone: membership.zone }, 'already a member of a cluster: the token is not used');
  } else {
    if (!opts.join || !opts.token) {
      throw new Error('This node has not joined a cluster yet: give --join CLUSTER_URL and --token TOKEN (from `ironbark admin node token --zone ZONE`).');
    }
    membership = await joinCluster({ clusterUrl: opts.join, token: opts.token, url: advertised, name: opts.name ?? shortHostname(), mac });
    await saveMembership(dataDir, membership);
    log.info({ nodeId: membership.nodeId, zone: membership.zone, cluster: membership.clusterUrl }, 'joined the cluster');
  }
  const member = membership;

  const host_ = await startNodeHost({
    dataDir, nodeId: member.nodeId, zone: member.zone, cidr: member.cidr, driver: opts.driver, log, clusterUrl: member.clusterUrl,
    stopTimeoutMs: opts.stopTimeout,
  });
  let server: http.Server | undefined;
  try {
    const listener = createNodeHttpListener({ agent: host_.agent, identity: () => ({ nodeId: member.nodeId, secret: member.secret }), log });
    server = applyServerTimeouts(http.createServer(listener));
    await listenHttp(server, host, port);
    // Tells the cluster our address (and MAC), which may have changed since we joined; a revoked node learns it here.
    await sayHello(member, advertised, mac).catch((err: Error) => {
      log.warn({ err: err.message, cluster: member.clusterUrl }, 'the cluster did not accept our hello');
    });
    log.info({ nodeId: member.nodeId, zone: member.zone, url: advertised, mac, driver: opts.driver }, 'node controller listening');
    process.stdout.write(`Ironbark node ${member.nodeId} of zone ${member.zone} is up on ${advertised}\n`);
  } catch (err) {
    if (server) await closeHttp(server);
    await host_.close();
    throw err;
  }
  const running = server;
  await untilSignalled(log, async () => {
    await closeHttp(running);
    await host_.close();
  });
}

/** This host's MAC as the cluster sees it, for `{mac}` in the power-save wake command. */
async function hostMac(advertisedUrl: string, clusterUrl: string, log: ReturnType<typeof createLogger>): Promise<string | undefined> {
  const found = await discoverHostMac({ advertisedUrl, clusterUrl });
  if (found) log.info({ mac: found.mac, device: found.device, via: found.via }, 'hardware address for waking this node');
  else log.info({ advertised: advertisedUrl }, 'no hardware address found for the advertised address (give --mac to let power-save wake this node)');
  return found?.mac;
}

function macOption(value: string): string {
  const mac = isMacAddress(value) ? normalizeMac(value) : undefined;
  if (!mac) throw new InvalidArgumentError('It must be a hardware address of six hex pairs, not all zero, e.g. 52:54:00:12:34:56.');
  return mac;
}

/** --stop-timeout SECONDS of `up` and `node`, as milliseconds. */
export function stopTimeoutOption(value: string): number {
  const seconds = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value.trim()) || !(seconds > 0) || seconds > 3600) throw new InvalidArgumentError('It must be a number of seconds above 0 and at most 3600, e.g. 30.');
  return Math.round(seconds * 1000);
}

/** Help text of --stop-timeout. */
export const STOP_TIMEOUT_HELP = 'seconds a guest gets to power off on StopInstances before its VM is ended (default 30)';

function shortHostname(): string | undefined {
  const name = hostname().split('.')[0] ?? '';
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name) ? name : undefined;
}

// ---- commands -----------------------------------------------------------------------------------

export function registerRoleCommands(program: Command): void {
  const cloud = program.command('cloud')
    .description('run the cloud controller (EC2 endpoint, admin API, state store) in the foreground')
    .option('--data-dir <dir>', 'where state, images and credentials live', DEFAULT_DATA_DIR)
    .option('--listen <host:port>', 'address of the EC2 endpoint', '127.0.0.1:8773')
    .option('--store <url>', 'postgres://… to share state between controllers (default: SQLite in the data directory)')
    .option('--region <name>', 'region name the cloud answers as', 'ironbark-1')
    .option('--endpoint <url>', 'public URL of the EC2 endpoint if it differs from http://<listen>')
    .option('--images-url <url>', 'base URL cluster controllers fetch image files from (default: the endpoint)')
    .option('--no-default-image', 'do not build and register the default guest image')
    .option('--image-cache <dir>', 'where built guest images are cached (default ~/.cache/ironbark/images)')
    .option('--master-key-file <path>', 'key file that encrypts the secrets in the store (default: $IRONBARK_MASTER_KEY_FILE, else master.key in the data directory, made at first start); every controller sharing a store needs the same keys');
  addRequestLimitFlag(cloud).action(async (opts: CloudRoleOptions) => { await runCloudRole(opts); });

  const cluster = program.command('cluster')
    .description("run the cluster controller of one availability zone: serves the cloud, drives the zone's nodes")
    .requiredOption('--zone <name>', 'availability zone this cluster serves (as added with `ironbark admin cluster add`)')
    .requiredOption('--cidr <cidr>', "the zone's private network, e.g. 10.1.0.0/16")
    .option('--data-dir <dir>', 'where the joined nodes and the image relay cache live', join(DEFAULT_DATA_DIR, 'cluster'))
    .option('--listen <host:port>', 'address the cloud and the nodes reach this cluster at', '0.0.0.0:8774')
    .option('--cloud-secret <secret>', 'the secret shared with the cloud (prefer --cloud-secret-file: arguments are visible to other users)')
    .option('--cloud-secret-file <file>', 'file holding the secret shared with the cloud')
    .option('--policy <policy>', 'allocation policy: greedy, round-robin, power-save, module:FILE or exec:FILE', 'greedy')
    .option('--node-url <url>', 'where nodes fetch images from this cluster (default: the cluster URL each node joined with)');
  addPowerFlags(cluster).action(async (opts: ClusterRoleOptions) => { await runClusterRole(opts); });

  program.command('node')
    .description('run a node controller: joins its cluster once with a token, then serves it VMs')
    .option('--join <url>', "the cluster controller's URL as this node reaches it (first start only)")
    .option('--token <token>', 'join token from `ironbark admin node token --zone ZONE` (first start only)')
    .option('--data-dir <dir>', "where the node's identity, images, disks and instance state live", join(DEFAULT_DATA_DIR, 'node'))
    .option('--listen <host:port>', 'address the cluster reaches this node at', '0.0.0.0:8775')
    .option('--advertise <url>', 'URL the cluster should call this node at (default: http://<listen>)')
    .option('--name <name>', 'name shown for this node (default: the host name)')
    .option('--mac <address>', "this host's hardware address for power-save wake commands ({mac}); default: that of the interface the cluster reaches this node through", macOption)
    .addOption(new Option('--driver <driver>', 'hypervisor driver').choices(['qemu', 'fake']).default('qemu'))
    .option('--stop-timeout <seconds>', STOP_TIMEOUT_HELP, stopTimeoutOption)
    .action(async (opts: NodeRoleOptions) => { await runNodeRole(opts); });
}
