// The compute half of `ironbark up`: the node host of `ironbark node` (node-host.ts) and a cluster
// controller in this process, talking through the NodeApi in memory. With the fake driver it may
// add simulated node agents, each with its own capacity and state directory, so one host can stand
// in for a zone of thousands of nodes; they share the host's image cache, as nothing they fetch
// differs. Base images reach the nodes through the cluster's image relay on 127.0.0.1, as they
// would across hosts. Simulated nodes sleep and wake in-process (simulated-power.ts) unless the
// operator gave sleep or wake commands.
//
// Shutdown: close() stops polling, the relay and the node host (whose VMs keep running and are
// re-adopted by the next start).
import { join, resolve } from 'node:path';
import { FakeDriver } from '../node/fake-driver.ts';
import { NodeAgent, type Capacity } from '../node/node-agent.ts';
import { startNodeHost } from '../node/node-host.ts';
import type { ClusterApi } from './cluster-api.ts';
import { ClusterController, type ClusterPowerOptions } from './cluster-controller.ts';
import { startImageRelay, type RelayedImage, type RunningImageRelay } from './image-relay.ts';
import { SimulatedPower } from './simulated-power.ts';
import { MemoryVolumeBackend } from './storage/memory-volume-backend.ts';
import { Qcow2VolumeBackend } from './storage/qcow2-volume-backend.ts';
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
  /** Sleep and wake commands for the power-save policy (with the fake driver, simulated when there are none). */
  power?: ClusterPowerOptions;
  /** Kernel for the KVM probe; the newest /boot/vmlinuz-* or the default guest image's kernel by default. */
  probeKernel?: string;
  /** How long a guest gets to power off on a stop before its VM is ended (default 30 s). */
  stopTimeoutMs?: number;
}

export interface AllInOneCompute {
  cluster: ClusterApi & { close(): Promise<void> };
  /** The first node (the only one unless simulated nodes were asked for). */
  node: NodeAgent;
  nodes: NodeAgent[];
  relay: RunningImageRelay;
  /** How the simulated nodes sleep and wake (fake driver without sleep or wake commands). */
  simulatedPower?: SimulatedPower;
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
  const log = opts.log;
  const closers: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const close of closers.reverse()) await close().catch((err: Error) => log.warn({ err: err.message }, 'error while stopping compute'));
  };

  try {
    const host = await startNodeHost({
      dataDir, nodeId: nodeIdentity(0).nodeId, zone: opts.zone, cidr: opts.cidr, driver: opts.driver, log,
      capacity: opts.capacity, netns: opts.netns, probeKernel: opts.probeKernel, stopTimeoutMs: opts.stopTimeoutMs,
    });
    closers.push(() => host.close());
    const agents: NodeAgent[] = [host.agent];
    for (let i = 1; i < nodeCount; i++) {
      const simulated = new NodeAgent({
        nodeId: nodeIdentity(i).nodeId,
        stateDir: join(dataDir, 'node', 'sim', nodeIdentity(i).nodeId),
        driver: new FakeDriver(),
        imageCache: host.imageCache,
        capacity: opts.capacity,
        acceleratorReason: host.acceleratorReason,
        stopTimeoutMs: opts.stopTimeoutMs,
        log,
      });
      host.addImageUser(simulated);
      await simulated.recover();
      agents.push(simulated);
    }
    const node = host.agent;

    const relay = await startImageRelay({ resolveImage: opts.resolveImage, cacheDir: join(dataDir, 'relay'), host: '127.0.0.1', port: 0, log });
    closers.push(() => relay.close());

    // The zone's volumes: qcow2 files under the data directory, served over NBD on loopback (the
    // node is on this host, and still goes through NBD: one path for one host and many); the fake
    // driver's VMs open no disks, so theirs are only remembered.
    const volumes = opts.driver === 'qemu'
      ? new Qcow2VolumeBackend({ dir: join(dataDir, 'volumes'), host: '127.0.0.1', zone: opts.zone, netns: opts.netns })
      : new MemoryVolumeBackend();
    closers.push(() => volumes.close());
    const simulatedPower = opts.driver === 'fake' && !opts.power?.sleepCommand && !opts.power?.wakeCommand ? new SimulatedPower() : undefined;
    const cluster = new ClusterController({
      zone: opts.zone,
      cidr: opts.cidr,
      policy: opts.policy,
      log,
      pollIntervalMs: opts.pollIntervalMs ?? defaultPollIntervalMs(nodeCount),
      power: simulatedPower ? { ...opts.power, switch: simulatedPower } : opts.power,
      volumes,
    });
    closers.push(() => cluster.close());
    for (const [i, agent] of agents.entries()) {
      const client = simulatedPower ? simulatedPower.connect(agent.nodeId, agent) : agent;
      await cluster.addNode(agent.nodeId, { name: nodeIdentity(i).name, address: 'local', client });
    }
    log.info({ zone: opts.zone, driver: opts.driver, nodes: nodeCount, relay: relay.baseUrl }, 'compute is up');
    return { cluster, node, nodes: agents, relay, simulatedPower, close: closeAll };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
