// NodeAgent end to end on real QEMU (TCG): the default guest image served by the cluster's image
// relay, a real bridge, tap, dnsmasq and metadata service inside a network namespace made here (the
// host's own network is never touched), user data, SSH into the guest, stop/start keeping the disk,
// and a terminate that leaves nothing behind.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { qemuInNamespace } from '../../src/node/node-host.ts';
import { startImageRelay, type RelayedImage, type RunningImageRelay } from '../../src/cluster/image-relay.ts';
import { ensureDefaultGuestImage, type GuestImage } from '../../src/node/guest-image.ts';
import { ImageCache } from '../../src/node/image-cache.ts';
import { MetadataService } from '../../src/node/metadata-service.ts';
import { allocateMac, METADATA_ADDRESS, NodeNetwork } from '../../src/node/network.ts';
import { tapNameForInstance } from '../../src/node/network-addressing.ts';
import { NodeAgent } from '../../src/node/node-agent.ts';
import type { InstanceSpec } from '../../src/node/node-api.ts';
import { makeFirewallDocument } from '../../src/node/network/firewall-document.ts';
import { processAlive, QemuDriver } from '../../src/node/qemu-driver.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const BOOT_DEADLINE_MS = 300_000;

function hasCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function skipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root for network namespaces, bridges and the guest image build';
  for (const tool of ['qemu-system-x86_64', 'qemu-img', 'ip', 'nft', 'dnsmasq', 'ssh', 'ssh-keygen']) {
    if (!hasCommand(tool)) return `${tool} is not installed`;
  }
  return false;
}

function run(file: string, args: string[], timeoutMs = 30_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function waitFor<T>(what: string, deadlineMs: number, probe: () => Promise<T | undefined>, onTimeout?: () => Promise<string>): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}${onTimeout ? `\n${await onTimeout()}` : ''}`);
    await sleep(1000);
  }
}

describe('NodeAgent on QEMU in a network namespace', { skip: skipUnlessPresent(skipReason()), timeout: 20 * 60_000 }, () => {
  const suffix = randomBytes(3).toString('hex');
  const netns = `ibtest-na-${suffix}`;
  const zone = 'ibtest-na';
  const cidr = '10.78.0.0/24';
  const instanceId = `i-0e2e${randomBytes(7).toString('hex')}`;
  const privateIp = '10.78.0.10';
  let root = '';
  let image: GuestImage;
  let relay: RunningImageRelay | undefined;
  let driver: QemuDriver | undefined;
  let network: NodeNetwork | undefined;
  let metadata: MetadataService | undefined;
  let agent: NodeAgent;
  let nsMade = false;
  let keyPath = '';

  before(async () => {
    image = await ensureDefaultGuestImage({
      onProgress: (p) => process.stderr.write(`guest image: ${p.step}/${p.total} ${p.message}\n`),
    });
    root = await mkdtemp(join(tmpdir(), 'ib-na-'));
    // dnsmasq drops to 'nobody' and must pass through to the network state directory.
    await chmod(root, 0o711);
    const add = await run('ip', ['netns', 'add', netns]);
    assert.equal(add.code, 0, add.stderr);
    nsMade = true;
    await run('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);

    keyPath = join(root, 'id_ed25519');
    const keygen = await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyPath]);
    assert.equal(keygen.code, 0, keygen.stderr);

    const files = image.manifest.files;
    const images: Record<string, RelayedImage> = {
      'aki-0e2e0001': { path: image.kernel, ...files['vmlinuz']! },
      'ami-0e2e0001': { path: image.rootfs, ...files['rootfs.img']! },
    };
    if (image.initrd) images['ari-0e2e0001'] = { path: image.initrd, ...files['initrd.img']! };
    relay = await startImageRelay({ resolveImage: async (id) => images[id], host: '127.0.0.1', port: 0 });

    driver = await QemuDriver.open({
      runDir: join(root, 'run'), accelerator: 'tcg', stopTimeoutMs: 60_000,
      qemuBinary: await qemuInNamespace(root, netns),
    });
    network = new NodeNetwork({ zone, cidr, stateDir: join(root, 'network'), netns });
    await network.setUp();
    const zoneNetwork = network;
    agent = new NodeAgent({
      nodeId: 'e2e', stateDir: join(root, 'node'), driver,
      imageCache: new ImageCache(join(root, 'images')),
      network: () => zoneNetwork,
      stopTimeoutMs: 60_000,
      capacity: { cores: 2, memoryMiB: 2048, diskGiB: 20 },
    });
    metadata = new MetadataService({ lookupByIp: agent.lookupMetadata });
    await metadata.listen(METADATA_ADDRESS, 80, { netns });
  });

  after(async () => {
    await metadata?.close().catch(() => undefined);
    await relay?.close().catch(() => undefined);
    // Any QEMU still running belongs to this test: it lives in the namespace made here.
    if (nsMade) {
      const pids = (await run('ip', ['netns', 'pids', netns])).stdout.split('\n').filter(Boolean).map(Number);
      for (const pid of pids) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
    }
    await driver?.close().catch(() => undefined);
    await network?.tearDown().catch(() => undefined);
    if (nsMade) await run('ip', ['netns', 'del', netns]);
    if (root) await rm(root, { recursive: true, force: true });
  });

  const ssh = (command: string) => run('ip', ['netns', 'exec', netns, 'ssh', '-i', keyPath,
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
    '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR', `root@${privateIp}`, command], 30_000);

  const consoleTail = async () => `console:\n${(await agent.consoleOutput(instanceId).catch(() => '')).slice(-3000)}`;

  async function sshUntilItWorks(command: string): Promise<string> {
    return waitFor(`ssh ${command}`, BOOT_DEADLINE_MS, async () => {
      const r = await ssh(command);
      return r.code === 0 ? r.stdout : undefined;
    }, consoleTail);
  }

  it('runs an instance from the relayed default image, serves its metadata and user data, and lets ssh in', async () => {
    const pub = (await readFile(`${keyPath}.pub`, 'utf8')).trim();
    const spec: InstanceSpec = {
      instanceId,
      reservationId: 'r-0e2e00000000000a1',
      accountId: '111122223333',
      imageId: 'ami-0e2e0001',
      kernel: relay!.imageRef('aki-0e2e0001', { sha256: image.manifest.files['vmlinuz']!.sha256, sizeBytes: image.manifest.files['vmlinuz']!.size, format: 'raw' }),
      ramdisk: image.initrd
        ? relay!.imageRef('ari-0e2e0001', { sha256: image.manifest.files['initrd.img']!.sha256, sizeBytes: image.manifest.files['initrd.img']!.size, format: 'raw' })
        : undefined,
      root: relay!.imageRef('ami-0e2e0001', { sha256: image.manifest.files['rootfs.img']!.sha256, sizeBytes: image.manifest.files['rootfs.img']!.size, format: 'raw' }),
      kernelCmdline: image.cmdline,
      vmType: { name: 't.e2e', cores: 1, memoryMiB: 256, diskGiB: 1 },
      zone, region: 'ibtest', subnetCidr: cidr, subnetId: 'subnet-0e2e0000000000001', vpcId: 'vpc-0e2e0000000000001',
      privateIp, privateDnsName: 'ip-10-78-0-10.ibtest.compute.internal',
      mac: allocateMac(instanceId),
      userData: Buffer.from('#!/bin/sh\necho hello-user-data\n').toString('base64'),
      publicKeys: [{ name: 'e2e', openssh: pub }],
      securityGroups: [{ id: 'sg-0e2e0000000000001', name: 'default' }],
      launchIndex: 0,
      launchTime: new Date().toISOString(),
    };
    // Security groups are enforced: the cloud would send this document; it lets ssh in from the host.
    await agent.applyFirewall(makeFirewallDocument(zone, [{
      id: 'sg-0e2e0000000000001', vpcId: 'vpc-0e2e0000000000001',
      ingress: [{ protocol: 'tcp', fromPort: 22, toPort: 22, cidr: '0.0.0.0/0' }], egress: [{ protocol: '-1', cidr: '0.0.0.0/0' }],
    }], []));
    assert.equal((await agent.runInstance(spec)).state, 'pending');
    const status = await agent.settled(instanceId);
    assert.equal(status?.state, 'running', status?.reason);
    assert.equal(status?.accelerator, 'tcg');

    await waitFor('the guest to print its instance id and run its user data', BOOT_DEADLINE_MS, async () => {
      const out = await agent.consoleOutput(instanceId);
      return out.includes(`ironbark-guest: instance-id=${instanceId}`) && out.includes('hello-user-data') ? true : undefined;
    }, consoleTail);

    assert.equal((await sshUntilItWorks('echo kept-across-stop > /root/marker && sync && hostname')).trim(), 'ip-10-78-0-10.ibtest.compute.internal');
  });

  it('stops gracefully keeping the disk, and starts again from it', async () => {
    const pidBefore = await qemuPid();
    assert.ok(pidBefore && processAlive(pidBefore));
    assert.equal((await agent.stopInstance(instanceId)).state, 'stopping', 'answered once the stop is under way');
    assert.equal((await agent.settled(instanceId))?.state, 'stopped');
    assert.equal(processAlive(pidBefore!), false, 'QEMU ended');
    assert.ok(existsSync(join(root, 'node', 'disks', `${instanceId}.qcow2`)), 'the disk is kept');
    assert.equal((await agent.describeResources()).free.cores, 2, 'a stopped instance holds no cores');

    assert.equal((await agent.startInstance(instanceId)).state, 'running');
    assert.equal((await sshUntilItWorks('cat /root/marker')).trim(), 'kept-across-stop');
  });

  it('terminates and leaves no tap, disk, DHCP reservation, metadata entry or QEMU behind', async () => {
    const pid = await qemuPid();
    const tapName = tapNameForInstance(instanceId);
    const mac = allocateMac(instanceId);
    await agent.terminateInstance(instanceId);
    await agent.terminateInstance(instanceId);

    assert.deepEqual(await agent.describeInstances(), []);
    assert.equal(pid !== undefined && processAlive(pid), false, 'QEMU is gone');
    const link = await run('ip', ['-n', netns, 'link', 'show', tapName]);
    assert.notEqual(link.code, 0, `tap ${tapName} is gone`);
    assert.equal(existsSync(join(root, 'node', 'disks', `${instanceId}.qcow2`)), false, 'disk deleted');
    assert.equal(existsSync(join(root, 'node', 'vm', instanceId)), false, 'VM work directory deleted');
    assert.equal(existsSync(join(root, 'node', 'instances', `${instanceId}.json`)), false, 'record forgotten');
    const hosts = await readFile(network!.dhcp.hostsPath, 'utf8').catch(() => '');
    assert.ok(!hosts.includes(mac), `no DHCP reservation for ${mac}: ${hosts}`);
    const leases = await readFile(network!.dhcp.leasesPath, 'utf8').catch(() => '');
    assert.ok(!leases.includes(mac), 'no DHCP lease');
    assert.equal(agent.lookupMetadata(privateIp), undefined);
    assert.deepEqual(Object.keys(await network!.instances()), []);
    assert.deepEqual(await readdir(join(root, 'run')), []);
  });

  async function qemuPid(): Promise<number | undefined> {
    const text = await readFile(join(root, 'node', 'vm', instanceId, 'qemu.pid'), 'utf8').catch(() => '');
    const pid = Number.parseInt(text.trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  }
});
