// `ironbark up`: the all-in-one cloud on one host (cloud, cluster and node controllers in one
// process), in the foreground, for a first try.
import { resolve } from 'node:path';
import { createLogger } from './logger.ts';
import { parseListenAddress } from './listen-address.ts';
import { startCloudController } from '../cloud/cloud-controller.ts';
import { ensureZone } from '../cloud/provision.ts';
import { setPublicRange } from '../cloud/network/public-ranges.ts';
import { imageFileFor } from '../cloud/images/default-image.ts';
import { prepareDefaultImage, prepareGuestImage } from './prepare-default-image.ts';
import type { GuestImageFlags } from './guest-image-option.ts';
import { untilSignalled } from './foreground.ts';
import { startAllInOneCompute } from '../cluster/all-in-one.ts';
import type { Capacity } from '../node/node-agent.ts';
import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterApi } from '../cluster/cluster-api.ts';
import { powerOptionsFrom, type PowerFlags } from './power-options.ts';
import { endpointLimitsFrom, type RequestLimitFlags } from './request-limit-option.ts';

export interface UpOptions extends PowerFlags, RequestLimitFlags, GuestImageFlags {
  dataDir: string;
  listen: string;
  store?: string;
  masterKeyFile?: string;
  region: string;
  zone?: string;
  zoneCidr: string;
  /** The zone's public range (network/public-ranges.ts). */
  publicRange?: string;
  driver: 'qemu' | 'fake';
  policy: string;
  imageCache?: string;
  nodeCores?: string;
  nodeMemory?: string;
  nodeDisk?: string;
  /** Simulated nodes (fake driver only). */
  nodes?: string;
  /** --stop-timeout, in milliseconds. */
  stopTimeout?: number;
}

function positiveWhole(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${what} must be a positive whole number, not "${v}"`);
  return n;
}

function nodeCount(opts: UpOptions): number {
  const n = positiveWhole(opts.nodes, 'nodes') ?? 1;
  if (n > 1 && opts.driver !== 'fake') throw new Error('--nodes greater than 1 needs --driver fake: one host runs real VMs as one node');
  return n;
}

/**
 * What each node offers. Simulated VMs cost nothing, so the fake node is large; real VMs may
 * over-commit cores (Eucalyptus' MAX_CORES), since small guests mostly idle, but not memory.
 */
function nodeCapacity(opts: UpOptions): Partial<Capacity> {
  const fake = opts.driver === 'fake';
  return {
    cores: positiveWhole(opts.nodeCores, 'node-cores') ?? (fake ? 256 : 4 * cpus().length),
    memoryMiB: positiveWhole(opts.nodeMemory, 'node-memory') ?? (fake ? 1024 * 1024 : undefined),
    diskGiB: positiveWhole(opts.nodeDisk, 'node-disk') ?? (fake ? 16 * 1024 : undefined),
  };
}

const ZONE_READY_TIMEOUT_MS = 120_000;

/** A zone can launch once its cluster has a node that is up (registered, answering, with capacity). */
async function untilZoneCanLaunch(cluster: ClusterApi, zone: string): Promise<void> {
  const deadline = Date.now() + ZONE_READY_TIMEOUT_MS;
  let nodes: Awaited<ReturnType<ClusterApi['describeNodes']>> = [];
  while (Date.now() < deadline) {
    nodes = await cluster.describeNodes();
    if (nodes.some((n) => n.state === 'up' && n.capacity.cores > 0)) return;
    await sleep(200);
  }
  const seen = nodes.map((n) => `${n.name}: ${n.state}${n.stateReason ? ` (${n.stateReason})` : ''}`).join(', ') || 'no node registered';
  throw new Error(`zone ${zone} has no node ready to launch instances after ${ZONE_READY_TIMEOUT_MS / 1000} s (${seen})`);
}

export async function runUp(opts: UpOptions): Promise<void> {
  const log = createLogger('up');
  const { host, port } = parseListenAddress(opts.listen);
  const nodes = nodeCount(opts);
  const capacity = nodeCapacity(opts);
  const power = powerOptionsFrom(opts, { simulatedNodes: opts.driver === 'fake' });
  const dataDir = resolve(opts.dataDir);
  const out = process.stdout;
  let relayBase: string | undefined;
  const cloud = await startCloudController({
    dataDir, host, port, storeUrl: opts.store, masterKeyFile: opts.masterKeyFile, region: opts.region, log, maxRequestBytes: opts.maxRequestBytes,
    imageUrl: (imageId) => `${relayBase}/images/${imageId}`, limits: endpointLimitsFrom(opts),
    holdUntilReady: true,
  });
  let compute: Awaited<ReturnType<typeof startAllInOneCompute>> | undefined;
  try {
    const zone = opts.zone ?? `${opts.region}a`;
    await ensureZone(cloud.store, { name: zone, cidr: opts.zoneCidr, region: opts.region });
    if (opts.publicRange) await cloud.store.transaction((tx) => setPublicRange(tx, zone, opts.publicRange!));

    let image = await prepareDefaultImage(cloud.store, cloud.admin.accountId, opts.imageCache);
    // `--image debian-12`: built (once) and registered too, and the one the example below runs.
    for (const recipe of opts.image ?? []) image = await prepareGuestImage(cloud.store, cloud.admin.accountId, recipe, opts.imageCache);

    compute = await startAllInOneCompute({
      dataDir, zone, cidr: opts.zoneCidr, region: opts.region, driver: opts.driver, policy: opts.policy, log, capacity, nodes, power,
      stopTimeoutMs: opts.stopTimeout,
      resolveImage: (imageId) => imageFileFor(cloud.store, imageId),
    });
    relayBase = compute.relay.baseUrl;
    cloud.directory.register(compute.cluster);
    const resources = await compute.node.describeResources();
    await untilZoneCanLaunch(compute.cluster, zone);
    await cloud.ready();

    out.write(`\nIronbark is up: EC2 endpoint ${cloud.url} (region ${opts.region}, zone ${zone}, ${opts.driver} driver${nodes > 1 ? `, ${nodes} simulated nodes` : ''}, accelerator ${resources.accelerator})\n\n`);
    // Output that is not a terminal ends up in logs and CI records: the secret stays in the 0600 file.
    if (out.isTTY) {
      out.write(`Credentials of the admin account ${cloud.admin.accountId} (also in ${dataDir}/credentials.env):\n`);
      out.write(`  export AWS_ACCESS_KEY_ID=${cloud.admin.accessKeyId}\n`);
      out.write(`  export AWS_SECRET_ACCESS_KEY=${cloud.admin.secretAccessKey}\n`);
      out.write(`  export AWS_DEFAULT_REGION=${opts.region}\n`);
      out.write(`  export AWS_ENDPOINT_URL_EC2=${cloud.url}\n\n`);
    } else {
      out.write(`Credentials of the admin account ${cloud.admin.accountId} (access key ${cloud.admin.accessKeyId}) are in ${dataDir}/credentials.env (mode 0600):\n`);
      out.write(`  . ${dataDir}/credentials.env\n\n`);
    }
    out.write(`Web console: ${cloud.url.replace(/\/+$/, '')}/console (sign in with the admin key)\n`);
    out.write(`An aws CLI profile is in ${dataDir}/aws-config. Try:\n`);
    out.write(`  aws ec2 run-instances --endpoint-url ${cloud.url} --image-id ${image.imageId} --instance-type m1.small\n`);
  } catch (err) {
    await compute?.close();
    await cloud.close();
    throw err;
  }

  const running = compute;
  await untilSignalled(log, async () => {
    cloud.directory.unregister(running.cluster.zone);
    await cloud.close();
    await running.close();
  });
}
