// What one node host runs under `ironbark node`: the hypervisor driver, the image cache, the zone
// network with its metadata service (qemu), and the node agent over them. The agent's identity and
// the zone's network come from joining the cluster.
//
// Shutdown lets go of the VMs, which keep running (QEMU is daemonized) and are re-adopted by the next
// start; the zone network is removed only when no instance is left on the node.
import { mkdir } from 'node:fs/promises';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { probeAccelerator } from './accel-probe.ts';
import { FakeDriver } from './fake-driver.ts';
import { ensureDefaultGuestImage } from './guest-image.ts';
import type { HypervisorDriver } from './hypervisor.ts';
import { ImageCache } from './image-cache.ts';
import { MetadataService } from './metadata-service.ts';
import { METADATA_ADDRESS, NodeNetwork } from './network.ts';
import { NodeAgent, type AgentLogger, type Capacity } from './node-agent.ts';
import { QemuDriver } from './qemu-driver.ts';

export interface NodeHostOptions {
  dataDir: string;
  nodeId: string;
  zone: string;
  cidr: string;
  driver: 'qemu' | 'fake';
  log: AgentLogger;
  capacity?: Partial<Capacity>;
}

export interface NodeHost {
  agent: NodeAgent;
  close(): Promise<void>;
}

export async function startNodeHost(opts: NodeHostOptions): Promise<NodeHost> {
  const nodeDir = join(opts.dataDir, 'node');
  await mkdir(nodeDir, { recursive: true });
  const log = opts.log;
  const closers: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const close of closers.reverse()) await close().catch((err: Error) => log.warn({ err: err.message }, 'error while stopping the node'));
  };
  try {
    let driver: HypervisorDriver;
    let acceleratorReason: string;
    if (opts.driver === 'qemu') {
      const kernelPath = newestBootKernel() ?? (await ensureDefaultGuestImage()).kernel;
      const probe = await probeAccelerator({ kernelPath, cacheFile: join(nodeDir, 'accelerator.json') });
      acceleratorReason = probe.reason;
      log.info({ accelerator: probe.accelerator, reason: probe.reason }, 'hypervisor accelerator');
      const qemu = await QemuDriver.open({ runDir: join(nodeDir, 'run'), accelerator: probe.accelerator });
      closers.push(() => qemu.close());
      driver = qemu;
    } else {
      driver = new FakeDriver();
      acceleratorReason = 'simulated VMs (fake driver)';
    }

    let agent: NodeAgent | undefined;
    const imageCache = new ImageCache(join(nodeDir, 'images'), { inUse: (id) => agent?.imageInUse(id) ?? false });
    const networkDir = join(nodeDir, 'network');
    const networks = new Map<string, NodeNetwork>();
    const networkFor = (zone: string, cidr: string) => {
      const key = `${zone}|${cidr}`;
      let network = networks.get(key);
      if (!network) {
        network = new NodeNetwork({ zone, cidr, stateDir: networkDir });
        networks.set(key, network);
      }
      return network;
    };
    agent = new NodeAgent({
      nodeId: opts.nodeId,
      stateDir: nodeDir,
      driver,
      imageCache,
      network: opts.driver === 'qemu' ? networkFor : undefined,
      capacity: opts.capacity,
      acceleratorReason,
      log,
    });
    const node = agent;

    if (opts.driver === 'qemu') {
      await mkdir(networkDir, { recursive: true });
      await networkFor(opts.zone, opts.cidr).setUp(); // the metadata address lives on the zone's bridge
      const metadata = new MetadataService({ lookupByIp: node.lookupMetadata });
      await metadata.listen(METADATA_ADDRESS, 80);
      closers.push(() => metadata.close());
      closers.push(async () => {
        if (node.instanceCount > 0) return;
        for (const network of networks.values()) await network.tearDown();
      });
    }
    await node.recover();
    return { agent: node, close: closeAll };
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
