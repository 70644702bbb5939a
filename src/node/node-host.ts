// What one node host runs: the hypervisor driver, the image cache, the zone network with its
// metadata service (qemu), and the node agent over them. `ironbark node` runs one (its identity and
// zone network come from joining the cluster); `ironbark up` runs one in the same process as its
// cluster, and may add simulated agents beside it.
//
// Shutdown lets go of the VMs, which keep running (QEMU is daemonized) and are re-adopted by the next
// start; the zone network is removed only when no instance is left on the node.
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { ensurePrivateDir } from '../store/private-files.ts';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { probeAccelerator } from './accel-probe.ts';
import { FAKE_VMS_FILE, PersistentFakeDriver } from './fake-driver-state.ts';
import { ensureDefaultGuestImage } from './guest-image.ts';
import type { HypervisorDriver } from './hypervisor.ts';
import { ImageCache } from './image-cache.ts';
import { MetadataService } from './metadata-service.ts';
import { HostNetworks } from './network/host-networks.ts';
import { ZoneDnsService } from './network/dns-service.ts';
import { NodeFirewallDocuments } from './network/firewall-documents.ts';
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
  /** Named network namespace that plays the host (tests); the real host when absent. */
  netns?: string;
  /** Kernel for the KVM probe; the newest /boot/vmlinuz-* or the default guest image's kernel by default. */
  probeKernel?: string;
  /** The URL of the cluster this node joined: relative image locations are fetched from there. */
  clusterUrl?: string;
  /** How long a guest gets to power off on a stop before its VM is ended (default 30 s). */
  stopTimeoutMs?: number;
}

export interface NodeHost {
  agent: NodeAgent;
  imageCache: ImageCache;
  acceleratorReason: string;
  /** Further agents sharing this host's image cache (simulated nodes): their images count as in use. */
  addImageUser(agent: NodeAgent): void;
  close(): Promise<void>;
}

/** What a node controller with the fake driver offers when not told: as `ironbark up --driver fake` does. */
const SIMULATED_NODE_CAPACITY = { cores: 256, memoryMiB: 1024 * 1024, diskGiB: 16 * 1024 };

export async function startNodeHost(opts: NodeHostOptions): Promise<NodeHost> {
  const nodeDir = join(opts.dataDir, 'node');
  // Instance specs (user data), console logs and disks live below: the owner's alone.
  await ensurePrivateDir(opts.dataDir);
  await ensurePrivateDir(nodeDir);
  const log = opts.log;
  const closers: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const close of closers.reverse()) await close().catch((err: Error) => log.warn({ err: err.message }, 'error while stopping the node'));
  };
  try {
    let driver: HypervisorDriver;
    let acceleratorReason: string;
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
      // Simulated VMs outlive the node controller as QEMU's do (fake-driver-state.ts).
      driver = await PersistentFakeDriver.open(join(nodeDir, FAKE_VMS_FILE));
      acceleratorReason = 'simulated VMs (fake driver)';
    }

    const imageUsers: NodeAgent[] = [];
    const imageCache = new ImageCache(join(nodeDir, 'images'), { inUse: (id) => imageUsers.some((a) => a.imageInUse(id)), baseUrl: opts.clusterUrl });
    const networkDir = join(nodeDir, 'network');
    // 169.254.169.254 stays off the host: guests' requests are redirected to the gateway (network/metadata-port.ts).
    // Guests get the gateway as their DNS server: the zone's name service below (network/dns-service.ts).
    const hostNetworks = new HostNetworks({ stateDir: networkDir, netns: opts.netns, metadataDnat: true, nameService: true });
    const networkFor = hostNetworks.get;
    const agent = new NodeAgent({
      nodeId: opts.nodeId,
      stateDir: nodeDir,
      driver,
      imageCache,
      network: opts.driver === 'qemu' ? networkFor : undefined,
      hostNetworks: opts.driver === 'qemu' ? hostNetworks : undefined,
      // Simulated VMs cost nothing: a fake node is large unless told otherwise, as under `ironbark up`.
      capacity: opts.capacity ?? (opts.driver === 'fake' ? SIMULATED_NODE_CAPACITY : undefined),
      acceleratorReason,
      stopTimeoutMs: opts.stopTimeoutMs,
      log,
    });
    imageUsers.push(agent);

    if (opts.driver === 'qemu') {
      await mkdir(networkDir, { recursive: true });
      const zoneNetwork = networkFor(opts.zone, opts.cidr);
      // A restart rebuilds the rules from the document kept on disk, in the same transaction as the
      // rest: never a moment with the instances' ports known and their VPCs not (established traffic goes on).
      const kept = new NodeFirewallDocuments(nodeDir);
      await kept.load();
      const doc = kept.get(opts.zone);
      if (doc) void zoneNetwork.setFirewallDocument(doc).catch(() => undefined); // applied by the set-up below
      await zoneNetwork.setUp(); // the service listens on the zone bridge's gateway address
      // Token answers leave with each instance's HttpPutResponseHopLimit as their IP TTL (nftables).
      const metadata = new MetadataService({
        lookupByIp: agent.lookupMetadata, hopLimit: true,
        onError: (err, what) => log.warn({ err: err.message }, what),
      });
      await metadata.listen(zoneNetwork.metadataListenAddress, 80, { netns: opts.netns });
      closers.push(() => metadata.close());
      // Private DNS names of the instance's own VPC; other names through the host's resolvers.
      const dns = new ZoneDnsService({
        asker: (ip) => {
          const m = agent.lookupMetadata(ip);
          const vpcId = m && (m.vpcId ?? hostNetworks.vpcOf(ip));
          return m && vpcId ? { vpcId, region: m.region } : undefined;
        },
        vpcOf: hostNetworks.vpcOf,
        onError: (err, what) => log.warn({ err: err.message }, what),
      });
      // A host DNS server that holds port 53 on every address (no bind-interfaces) does not stop the
      // node: instances run, and their private names resolve once it is bound to its own addresses.
      await dns.listen(zoneNetwork.gateway, 53, { netns: opts.netns }).then(
        () => closers.push(() => dns.close()),
        (err: Error) => log.warn({ err: err.message }, `the zone's name service cannot listen on ${zoneNetwork.gateway}:53; private DNS names will not resolve`),
      );
      closers.push(async () => {
        if (agent.instanceCount > 0) return;
        await hostNetworks.tearDownAll();
      });
    }
    await agent.recover();
    return { agent, imageCache, acceleratorReason, addImageUser: (a) => { imageUsers.push(a); }, close: closeAll };
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
