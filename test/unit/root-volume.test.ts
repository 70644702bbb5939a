// Booting from an EBS volume, node and cluster side: the QEMU arguments that make the volume's NBD
// export (with the zone's TLS key) the VM's first, first-booted disk; the node's check of what the
// cluster sends; and a cluster controller (in-memory storage) with a node agent on the fake driver:
// the cluster adds where the node reaches the root volume, the node boots without fetching an image
// or making a local disk, keeps the root volume across stop and start, and a missing volume is
// refused with InvalidVolume.NotFound.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildQemuArgs } from '../../src/node/qemu-driver.ts';
import type { VmSpec } from '../../src/node/hypervisor.ts';
import type { InstanceSpec } from '../../src/node/node-api.ts';
import { checkRootVolume, rootVolumeArgs } from '../../src/node/storage/root-volume.ts';
import { ClusterController } from '../../src/cluster/cluster-controller.ts';
import { MemoryVolumeBackend } from '../../src/cluster/storage/memory-volume-backend.ts';
import { NodeAgent } from '../../src/node/node-agent.ts';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { ImageCache } from '../../src/node/image-cache.ts';
import { expectEc2Error } from '../helpers/handler-context.ts';

const VOL = 'vol-0123456789abcdef0';
const BASE: VmSpec = {
  id: 'i-0123456789abcdef0', vcpus: 1, memoryMiB: 256, kernelCmdline: 'console=ttyS0 root=/dev/vda', kernelPath: '/img/vmlinuz',
  diskPath: '/var/lib/ironbark/node/i-0123456789abcdef0/disk.qcow2', macAddress: 'd2:0d:12:34:56:78',
  network: { kind: 'none' }, workDir: '/var/lib/ironbark/node/i-0123456789abcdef0',
};
const RUN = { accelerator: 'tcg' as const, machine: 'q35' as const, qmpSocket: '/run/q.sock', pidFile: '/run/q.pid', consoleLog: '/run/console.log' };
const valueOf = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);

describe('boot from an EBS volume: QEMU arguments and the node\'s checks', () => {
  it('the root volume\'s NBD export, with TLS, is the first virtio disk; no local disk', () => {
    const rootVolume = { volumeId: VOL, nbd: { host: '10.1.0.1', port: 10809, exportName: VOL, tls: { credsDir: '/state/volume-keys/ab,c', identity: 'ironbark-zone-1a' } } };
    const args = buildQemuArgs({ ...BASE, rootVolume }, RUN);
    assert.deepEqual(valueOf(args, '-drive'), [], 'no overlay file');
    assert.deepEqual(valueOf(args, '-object'), ['tls-creds-psk,id=troot,endpoint=client,dir=/state/volume-keys/ab,,c,username=ironbark-zone-1a']);
    const blockdev = JSON.parse(valueOf(args, '-blockdev')[0]!);
    assert.deepEqual(blockdev, {
      driver: 'nbd', 'node-name': 'rootdisk', export: VOL, server: { type: 'inet', host: '10.1.0.1', port: '10809' }, 'tls-creds': 'troot', 'reconnect-delay': 30,
    });
    assert.deepEqual(valueOf(args, '-device').filter((d) => d.includes('rootdisk')), ['virtio-blk-pci,drive=rootdisk,serial=vol0123456789abcdef0']);
    // Before the hot-plug ports: the guest names it vda.
    assert.ok(args.indexOf('-blockdev') < args.findIndex((a) => a.startsWith('pcie-root-port')));
  });

  it('without a root volume the overlay file is the disk, as before', () => {
    assert.deepEqual(valueOf(buildQemuArgs(BASE, RUN), '-drive'), [`file=${BASE.diskPath},if=virtio,format=qcow2`]);
    assert.deepEqual(valueOf(buildQemuArgs(BASE, RUN), '-blockdev'), []);
  });

  it('a local-file root volume (a node-local test disk) opens the file', () => {
    const args = rootVolumeArgs({ volumeId: VOL, path: '/tmp/x.qcow2', format: 'qcow2' });
    assert.deepEqual(JSON.parse(args[1]!), { driver: 'qcow2', 'node-name': 'rootdisk', file: { driver: 'file', filename: '/tmp/x.qcow2' } });
  });

  it('the node refuses a root volume it cannot trust', () => {
    const nbd = { host: '10.1.0.1', port: 10809, exportName: VOL };
    assert.deepEqual(checkRootVolume('i-1', { volumeId: VOL, nbd }), { volumeId: VOL, nbd });
    assert.throws(() => checkRootVolume('i-1', { volumeId: '../etc', nbd }), /volume id/);
    assert.throws(() => checkRootVolume('i-1', { volumeId: VOL }), /no NBD export/);
    assert.throws(() => checkRootVolume('i-1', { volumeId: VOL, nbd: { ...nbd, host: 'a b' } }), /NBD host/);
    assert.throws(() => checkRootVolume('i-1', { volumeId: VOL, nbd: { ...nbd, exportName: 'vol-0000000000000000f' } }), /export name/);
    assert.throws(() => checkRootVolume('i-1', { volumeId: VOL, nbd: { ...nbd, tls: { identity: 'x', pskHex: 'zz' } } }), /TLS key/);
  });
});

describe('boot from an EBS volume through a cluster and a node (fake driver)', () => {
  let root: string;
  let cluster: ClusterController;
  let backend: MemoryVolumeBackend;
  let driver: FakeDriver;
  let agent: NodeAgent;
  const created: VmSpec[] = [];
  const spec = (id: string, volumeId: string): InstanceSpec => ({
    instanceId: id, reservationId: 'r-0000000000000000a', accountId: '111122223333', imageId: 'ami-0000000000000000a',
    bootMode: 'legacy-bios',
    // An EBS-backed image has no file: a reference the node must not fetch.
    root: { id: 'ami-0000000000000000a', url: 'http://127.0.0.1:9/nothing', sha256: '0'.repeat(64), sizeBytes: 0, format: 'raw' },
    rootVolume: { volumeId },
    kernelCmdline: '', vmType: { name: 't.small', cores: 1, memoryMiB: 256, diskGiB: 5 }, zone: 'test-1a', region: 'test-1',
    subnetCidr: '10.9.0.0/16', subnetId: 'subnet-0000000000000000a', vpcId: 'vpc-0000000000000000a', privateIp: '10.9.0.20',
    privateDnsName: 'ip-10-9-0-20.test-1.compute.internal', mac: 'd2:0d:00:00:00:20', publicKeys: [], securityGroups: [],
    launchIndex: 0, launchTime: new Date().toISOString(),
  });

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ib-root-volume-'));
    backend = new MemoryVolumeBackend();
    cluster = new ClusterController({ zone: 'test-1a', cidr: '10.9.0.0/16', policy: 'round-robin', pollIntervalMs: 0, volumes: backend });
    driver = new FakeDriver();
    const create = driver.create.bind(driver);
    driver.create = async (s: VmSpec) => { created.push(s); return create(s); };
    agent = new NodeAgent({
      nodeId: 'node-a', stateDir: join(root, 'node'), driver, imageCache: new ImageCache(join(root, 'node', 'images')),
      capacity: { cores: 4, memoryMiB: 4096, diskGiB: 50 },
    });
    await cluster.addNode('node-a', { name: 'a', address: 'local', client: agent });
  });

  after(async () => {
    await cluster.close();
    await rm(root, { recursive: true, force: true });
  });

  it('boots from the volume the cluster exports, and keeps it across stop and start', async () => {
    await backend.create(VOL, 2);
    const id = 'i-0000000000000000b';
    await cluster.runInstances([spec(id, VOL)]);
    await agent.settled(id);
    assert.equal((await agent.describeInstances()).find((s) => s.instanceId === id)?.state, 'running');
    const vm = created.at(-1)!;
    assert.equal(vm.rootVolume?.volumeId, VOL);
    assert.deepEqual(vm.rootVolume?.nbd, { host: 'memory.invalid', port: 10809, exportName: VOL });
    assert.ok(backend.isExported(VOL));
    assert.equal(existsSync(vm.diskPath), false, 'no local overlay was made');
    await cluster.stopInstance(id);
    await agent.settled(id);
    await cluster.startInstance(id);
    await agent.settled(id);
    assert.equal((await agent.describeInstances()).find((s) => s.instanceId === id)?.state, 'running');
    assert.equal((await backend.info(VOL))?.sizeGiB, 2, 'the volume is the storage\'s: stop and start leave it');
    await cluster.terminateInstance(id);
    await agent.settled(id).catch(() => undefined);
    assert.ok(await backend.info(VOL), 'terminating the instance leaves its volume to the cloud');
  });

  it('a root volume the storage does not have is refused (InvalidVolume.NotFound) and nothing runs', async () => {
    await expectEc2Error(cluster.runInstances([spec('i-0000000000000000c', 'vol-0000000000000000f')]), 'InvalidVolume.NotFound');
    assert.equal((await agent.describeInstances()).some((s) => s.instanceId === 'i-0000000000000000c'), false);
  });
});
