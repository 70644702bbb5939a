// The compute half of `ironbark up`: one node agent and one cluster controller in this process,
// talking through the NodeApi in memory. With the fake driver it may run many simulated node
// agents instead, each with its own capacity and state directory, so one host can stand in for a
// zone of thousands of nodes; they share one image cache, as nothing they fetch differs. The node's zone network is a real bridge on this host
// (or in a network namespace that plays the host), the metadata service listens on
// 169.254.169.254:80 on that bridge, and base images reach the node through the cluster's image
// relay on 127.0.0.1, as they would across hosts.
//
// Shutdown: close() stops polling, the relay and the metadata service, and lets go of the VMs,
// which keep running (QEMU is daemonized) and are re-adopted by the next start. The bridge, DHCP
// server and firewall table are removed only when no instance is left on the node.
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { probeAccelerator } from '../node/accel-probe.ts';
import { FakeDriver } from '../node/fake-driver.ts';
import { ensureDefaultGuestImage } from '../node/guest-image.ts';
import type { HypervisorDriver } from '../node/hypervisor.ts';
import { ImageCache } from '../node/image-cache.ts';
import { MetadataService } from '../node/metadata-service.ts';
import { METADATA_ADDRESS, NodeNetwork } from '../node/network.ts';
import { NodeAgent, type Capacity } from '../node/node-agent.ts';
import { QemuDriver } from '../node/qemu-driver.ts';
import type { ClusterApi } from './cluster-api.ts';
import { ClusterController, type ClusterPowerOptions } from './cluster-controller.ts';
import { startImageRelay, type RelayedImage, type RunningImageRelay } from './image-relay.ts';
import type { PinoLikeLogger } from './policy.ts';

export interface AllInOneOptions {
  dataDir: string;
  zone: string;
  cidr: string;
  region: string;
  driver: 'qemu' | 'fake';
  policy: string;
  log: PinoLikeLogger;
  /** Where the relay finds an image the cloud registered. */
  resolveImage: (imageId: string) => Promise<RelayedImage | undefined>;
  /** Named network namespace that plays the host (tests); the real host when absent. */
  netns?: string;
  /** Overrides what the node reads from the host (for each simulated node, what it offers). */
  capacity?: Partial<Capacity>;
  /** Simulated nodes to run (fake driver only); 1 by default. */
  nodes?: number;
  /** How often the cluster polls its nodes; by default longer the more nodes there are. */
  pollIntervalMs?: number;
  /** Sleep and wake commands for the power-save policy. */
  power?: ClusterPowerOptions;
  /** Kernel for the KVM probe; the newest /boot/vmlinuz-* or the default guest image's kernel by default. */
  probeKernel?: string;
}

export interface AllInOneCompute {
  cluster: ClusterApi & { close(): Promise<void> };
  /** The first node (the only one unless simulated nodes were asked for). */
  node: NodeAgent;
  nodes: NodeAgent[];
  relay: RunningImageRelay;
  close(): Promise<void>;
}

/** Name and node id of the i-th node; the first keeps the single node's, so a data directory stays usable. */
function nodeIdentity(i: number): { nodeId: string; name: string } {
  if (i === 0) return { nodeId: 'node-local', name: 'local' };
  const n = String(i + 1).padStart(4, '0');
  return { nodeId: `node-sim-${n}`, name: `sim-${n}` };
}

/**
 * Polling a node in-process costs little, but a thousand of them every two seconds adds up: the
 * interval grows with the node count (about 5 ms per node, so 1,000 nodes are polled every 5 s).
 */
export function defaultPollIntervalMs(nodeCount: number): number {
  return Math.min(30_000, Math.max(2000, nodeCount * 5));
}

export async function startAllInOneCompute(opts: AllInOneOptions): Promise<AllInOneCompute> {
  const nodeCount = opts.nodes ?? 1;
  if (!Number.isInteger(nodeCount) || nodeCount < 1) throw new Error(`the number of nodes must be a positive whole number, not ${nodeCount}`);
  if (nodeCount > 1 && opts.driver !== 'fake') {
    throw new Error('several nodes in one process need the fake driver: real VMs on one host share its one bridge and hypervisor');
  }
  const dataDir = resolve(opts.dataDir);
  const nodeDir = join(dataDir, 'node');
  await mkdir(nodeDir, { recursive: true });
  const log = opts.log;
  const closers: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const close of closers.reverse()) await close().catch((err: Error) => log.warn({ err: err.message }, 'error while stopping compute'));
  };

  try {
    let driver: HypervisorDriver;
    let acceleratorReason: string | undefined;
    if (opts.driver === 'qemu') {
      const kernelPath = opts.probeKernel ?? newestBootKernel() ?? (await ensureDefaultGuestImage()).kernel;
      const probe = await probeAccelerator({ kernelPath, cacheFile: join(nodeDir, 'accelerator.json') });
      acceleratorReason = probe.reason;
      log.info({ accelerator: probe.accelerator, reason: probe.reason }, 'hypervisor accelerator');
      const qemu = await QemuDriver.open({
        runDir: join(nodeDir, 'run'),
        accelerator: probe.accelerator,
        qemuBinary: opts.netns ? await qemuInNamespace(nodeDir, opts.netns) : undefined,
      });
      closers.push(() => qemu.close());
      driver = qemu;
    } else {
      driver = new FakeDriver();
      acceleratorReason = 'simulated VMs (fake driver)';
    }

    const agents: NodeAgent[] = [];
    const imageCache = new ImageCache(join(nodeDir, 'images'), { inUse: (id) => agents.some((a) => a.imageInUse(id)) });
    const networkDir = join(nodeDir, 'network');
    const networks = new Map<string, NodeNetwork>();
    const networkFor = (zone: string, cidr: string) => {
      const key = `${zone}|${cidr}`;
      let network = networks.get(key);
      if (!network) {
        network = new NodeNetwork({ zone, cidr, stateDir: networkDir, netns: opts.netns });
        networks.set(key, network);
      }
      return network;
    };
    for (let i = 0; i < nodeCount; i++) {
      agents.push(new NodeAgent({
        nodeId: nodeIdentity(i).nodeId,
        stateDir: i === 0 ? nodeDir : join(nodeDir, 'sim', nodeIdentity(i).nodeId),
        driver: i === 0 ? driver : new FakeDriver(),
        imageCache,
        network: opts.driver === 'qemu' ? networkFor : undefined,
        capacity: opts.capacity,
        acceleratorReason,
        log,
      }));
    }
    const node = agents[0]!;

    if (opts.driver === 'qemu') {
      await mkdir(networkDir, { recursive: true });
      const zoneNetwork = networkFor(opts.zone, opts.cidr);
      await zoneNetwork.setUp(); // the metadata address lives on the bridge
      const metadata = new MetadataService({ lookupByIp: node.lookupMetadata });
      await metadata.listen(METADATA_ADDRESS, 80, { netns: opts.netns });
      closers.push(() => metadata.close());
      closers.push(async () => {
        if (node.instanceCount > 0) return;
        for (const network of networks.values()) await network.tearDown();
      });
    }
    for (const agent of agents) await agent.recover();

    const relay = await startImageRelay({ resolveImage: opts.resolveImage, cacheDir: join(dataDir, 'relay'), host: '127.0.0.1', port: 0, log });
    closers.push(() => relay.close());

    const cluster = new ClusterController({
      zone: opts.zone,
      cidr: opts.cidr,
      policy: opts.policy,
      log,
      pollIntervalMs: opts.pollIntervalMs ?? defaultPollIntervalMs(nodeCount),
      power: opts.power,
    });
    closers.push(() => cluster.close());
    for (const [i, agent] of agents.entries()) {
      await cluster.addNode(agent.nodeId, { name: nodeIdentity(i).name, address: 'local', client: agent });
    }
    log.info({ zone: opts.zone, driver: opts.driver, nodes: nodeCount, relay: relay.baseUrl }, 'compute is up');
    return { cluster, node, nodes: agents, relay, close: closeAll };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

function newestBootKernel(): string | undefined {
  if (!existsSync('/boot')) return undefined;
  const name = readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')).sort().at(-1);
  return name ? join('/boot', name) : undefined;
}

/**
 * QEMU opens its tap by name in its own network namespace, so with a namespace that plays the host
 * it must run inside it: a two-line wrapper does that (the daemonized QEMU stays in there).
 */
export async function qemuInNamespace(nodeDir: string, netns: string): Promise<string> {
  if (!/^[A-Za-z0-9_.-]+$/.test(netns)) throw new Error(`invalid network namespace name ${netns}`);
  const wrapper = join(nodeDir, `qemu-in-${netns}`);
  await writeFile(wrapper, `#!/bin/sh\nexec ip netns exec ${netns} qemu-system-x86_64 "$@"\n`);
  await chmod(wrapper, 0o755);
  return wrapper;
}
