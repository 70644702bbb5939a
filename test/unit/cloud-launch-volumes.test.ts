// RunInstances' BlockDeviceMappings through the operation handlers, the volume reconciler, a real
// cluster controller (in-memory storage back-end) and a node agent on the fake driver: new volumes
// made in the instance's zone and plugged into its VM, shown in DescribeInstances and
// DescribeVolumes with their launch tags; EC2's refusals (and VolumeLimitExceeded) leaving nothing
// behind, a launch the cluster refuses leaving no volume; ephemeral and NoDevice mappings as EC2
// takes them; DeleteOnTermination changed by ModifyInstanceAttribute and honoured at termination.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '../../src/store/store.ts';
import { createAccountWithDefaults, ensureZone } from '../../src/cloud/provision.ts';
import { seedVmTypes } from '../../src/cloud/vm-types.ts';
import { registerImageFiles, type RegisteredImage } from '../../src/cloud/images/images.ts';
import { instanceOperations } from '../../src/cloud/instances.ts';
import { volumeOperations } from '../../src/cloud/storage/volumes.ts';
import { InstanceReconciler } from '../../src/cloud/instance-reconciler.ts';
import { VolumeReconciler } from '../../src/cloud/storage/volume-reconciler.ts';
import { ComputeDirectory } from '../../src/cloud/compute-directory.ts';
import { quotaSettingKey } from '../../src/cloud/quotas.ts';
import { ClusterController } from '../../src/cluster/cluster-controller.ts';
import { MemoryVolumeBackend } from '../../src/cluster/storage/memory-volume-backend.ts';
import { NodeAgent } from '../../src/node/node-agent.ts';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { ImageCache } from '../../src/node/image-cache.ts';
import { REGION, callOperation, contextFor, expectEc2Error } from '../helpers/handler-context.ts';

const ZONE = 'ironbark-1a';
const quiet = { info() {}, warn() {}, error() {} };

describe('BlockDeviceMappings at launch (fake driver)', () => {
  let root: string;
  let store: Store;
  let cluster: ClusterController;
  let backend: MemoryVolumeBackend;
  let driver: FakeDriver;
  let agent: NodeAgent;
  let instances: InstanceReconciler;
  let volumes: VolumeReconciler;
  let A: string;
  let B: string;
  let image: RegisteredImage;
  const directory = new ComputeDirectory();
  const ops = () => ({ ...instanceOperations({ directory, log: quiet }), ...volumeOperations() });
  const call = (action: string, input: object, account = A) => callOperation(contextFor(store, account), ops(), action, input);
  const pass = async () => {
    for (const { instanceId } of await agent.describeInstances()) await agent.settled(instanceId);
    await cluster.pollOnce();
    await instances.reconcileOnce();
    await volumes.reconcileOnce();
    await volumes.settled();
  };
  const settle = async () => { for (let i = 0; i < 3; i++) await pass(); };
  const describeInstance = async (id: string) => (await call('DescribeInstances', { InstanceIds: [id] })).Reservations[0].Instances[0];
  const allVolumes = async (account = A) => (await call('DescribeVolumes', {}, account)).Volumes;
  const run = (input: object, account = A) => call('RunInstances', { ImageId: image.imageId, MinCount: 1, MaxCount: 1, Placement: { AvailabilityZone: ZONE }, ...input }, account);

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ib-launch-volumes-'));
    store = await openStore({ url: ':memory:' });
    await ensureZone(store, { name: ZONE, cidr: '10.1.0.0/16', region: REGION });
    await seedVmTypes(store.db);
    A = (await createAccountWithDefaults(store, 'alpha')).account.id;
    B = (await createAccountWithDefaults(store, 'beta')).account.id;
    const file = async (name: string, bytes: number) => {
      const data = randomBytes(bytes);
      const path = join(root, name);
      await writeFile(path, data);
      return { path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes };
    };
    image = await registerImageFiles(store, {
      name: 'guest', ownerAccountId: A, public: true, kernelCmdline: 'console=ttyS0',
      kernel: await file('vmlinuz', 1024), rootfs: { ...await file('rootfs.img', 8192), format: 'raw' },
    });
    backend = new MemoryVolumeBackend();
    cluster = new ClusterController({ zone: ZONE, cidr: '10.1.0.0/16', policy: 'round-robin', pollIntervalMs: 0, volumes: backend });
    driver = new FakeDriver();
    agent = new NodeAgent({
      nodeId: 'node-a', stateDir: join(root, 'node'), driver, imageCache: new ImageCache(join(root, 'node', 'images')),
      capacity: { cores: 4, memoryMiB: 8192, diskGiB: 100 },
    });
    await cluster.addNode('node-a', { name: 'a', address: 'local', client: agent });
    directory.register(cluster);
    instances = new InstanceReconciler({ store, directory, log: quiet });
    volumes = new VolumeReconciler({ store, directory, log: quiet, retryAfterMs: 0 });
  });

  after(async () => {
    await volumes.stop();
    await cluster.close();
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  it('makes and attaches the mapped volumes, shows them, tags them, and ignores ephemeral and NoDevice mappings', async () => {
    const r = await run({
      BlockDeviceMappings: [
        { DeviceName: '/dev/sdf', Ebs: { VolumeSize: 2, VolumeType: 'gp3', Iops: 4000 } },
        { DeviceName: '/dev/sdg', Ebs: { VolumeSize: 1, DeleteOnTermination: false } },
        { DeviceName: '/dev/sdb', VirtualName: 'ephemeral0' },
        { DeviceName: '/dev/sdh', NoDevice: '' },
      ],
      TagSpecifications: [{ ResourceType: 'volume', Tags: [{ Key: 'purpose', Value: 'data' }] }],
    });
    const id = r.Instances[0].InstanceId as string;
    const launched = await allVolumes();
    assert.equal(launched.length, 2, 'one volume per Ebs mapping, written with the launch');
    assert.ok(launched.every((v: any) => v.Attachments[0].InstanceId === id && v.AvailabilityZone === ZONE));
    await settle();
    const vols = await allVolumes();
    const byDevice = new Map(vols.map((v: any) => [v.Attachments[0].Device, v]));
    const f = byDevice.get('/dev/sdf') as any;
    const g = byDevice.get('/dev/sdg') as any;
    assert.deepEqual([f.Size, f.VolumeType, f.Iops, f.State, f.Attachments[0].State, f.Attachments[0].DeleteOnTermination], [2, 'gp3', 4000, 'in-use', 'attached', true]);
    assert.deepEqual([g.Size, g.VolumeType, g.State, g.Attachments[0].DeleteOnTermination], [1, 'gp2', 'in-use', false]);
    assert.deepEqual(f.Tags, [{ Key: 'purpose', Value: 'data' }]);
    assert.deepEqual((await driver.attachedVolumes(id)).sort(), [f.VolumeId, g.VolumeId].sort(), 'both plugged into the VM');
    assert.ok(backend.isExported(f.VolumeId));
    const described = await describeInstance(id);
    assert.deepEqual(described.BlockDeviceMappings.map((m: any) => [m.DeviceName, m.Ebs.Status, m.Ebs.DeleteOnTermination]).sort(),
      [['/dev/sdf', 'attached', true], ['/dev/sdg', 'attached', false]]);

    // DeleteOnTermination changes through ModifyInstanceAttribute.
    await expectEc2Error(call('ModifyInstanceAttribute', { InstanceId: id, BlockDeviceMappings: [{ DeviceName: '/dev/sdz', Ebs: { DeleteOnTermination: true } }] }),
      'InvalidInstanceAttributeValue', 'No device is currently mapped at /dev/sdz');
    await call('ModifyInstanceAttribute', { InstanceId: id, BlockDeviceMappings: [
      { DeviceName: '/dev/sdf', Ebs: { DeleteOnTermination: false } }, { DeviceName: '/dev/sdg', Ebs: { DeleteOnTermination: true } }] });
    const attr = await call('DescribeInstanceAttribute', { InstanceId: id, Attribute: 'blockDeviceMapping' });
    assert.deepEqual(attr.BlockDeviceMappings.map((m: any) => [m.DeviceName, m.Ebs.DeleteOnTermination]).sort(), [['/dev/sdf', false], ['/dev/sdg', true]]);

    // At termination: sdg (now DeleteOnTermination) is deleted, sdf is detached and left available.
    await call('TerminateInstances', { InstanceIds: [id] });
    await settle();
    const after = await allVolumes();
    assert.deepEqual(after.map((v: any) => [v.VolumeId, v.State, v.Attachments.length]), [[f.VolumeId, 'available', 0]]);
    assert.equal(backend.isExported(g.VolumeId), false, 'the deleted volume is gone from the storage');
    await call('DeleteVolume', { VolumeId: f.VolumeId });
    await settle();
  });

  it('refuses bad mappings as EC2 does, and records nothing', async () => {
    const before = (await call('DescribeInstances', {})).Reservations.length;
    const bad = (mappings: object[]) => run({ BlockDeviceMappings: mappings });
    await expectEc2Error(bad([{ Ebs: { VolumeSize: 1 } }]), 'MissingParameter', /BlockDeviceMapping.1.DeviceName/);
    await expectEc2Error(bad([{ DeviceName: '/dev/vda', Ebs: { VolumeSize: 1 } }]), 'InvalidBlockDeviceMapping', /root device/);
    await expectEc2Error(bad([{ DeviceName: '/dev/vda', NoDevice: '' }]), 'InvalidBlockDeviceMapping', /cannot be suppressed/);
    await expectEc2Error(bad([{ DeviceName: '/dev/hda', Ebs: { VolumeSize: 1 } }]), 'InvalidParameterValue', /not a valid EBS device name/);
    await expectEc2Error(bad([{ DeviceName: '/dev/sdf', Ebs: {} }]), 'InvalidBlockDeviceMapping', /VolumeSize or SnapshotId/);
    await expectEc2Error(bad([{ DeviceName: '/dev/sdf', Ebs: { VolumeSize: 0 } }]), 'InvalidParameterValue', /too small/);
    await expectEc2Error(bad([{ DeviceName: '/dev/sdf', Ebs: { VolumeSize: 10, VolumeType: 'io1' } }]), 'MissingParameter', /iops/);
    await expectEc2Error(bad([{ DeviceName: '/dev/sdf', Ebs: { VolumeSize: 1, Encrypted: true } }]), 'UnsupportedOperation', /Encrypted/);
    await expectEc2Error(bad([{ DeviceName: '/dev/sdf', Ebs: { SnapshotId: 'snap-0123456789abcdef0' } }]), 'InvalidSnapshot.NotFound');
    await expectEc2Error(bad([{ DeviceName: '/dev/sdf', Ebs: { VolumeSize: 1 } }, { DeviceName: '/dev/sdf', Ebs: { VolumeSize: 2 } }]), 'InvalidBlockDeviceMapping', /more than one/);
    await expectEc2Error(bad([{ DeviceName: '/dev/sdf', Ebs: { VolumeSize: 1 }, NoDevice: '' }]), 'InvalidBlockDeviceMapping', /only one of/);
    await expectEc2Error(bad([{ DeviceName: '/dev/sdb', VirtualName: 'swap' }]), 'InvalidBlockDeviceMapping', /virtual name/);
    const nine = 'bcdefghij'.split('').map((c) => ({ DeviceName: `/dev/sd${c}`, Ebs: { VolumeSize: 1 } }));
    await expectEc2Error(bad(nine), 'AttachmentLimitExceeded');
    assert.equal((await call('DescribeInstances', {})).Reservations.length, before);
    assert.deepEqual(await allVolumes(), []);
  });

  it('counts the volumes against the account quotas (VolumeLimitExceeded, no instance written)', async () => {
    await store.db.insertInto('settings').values({ key: quotaSettingKey(B, 'max-volumes'), value: '3' }).execute();
    await store.db.insertInto('settings').values({ key: quotaSettingKey(B, 'max-volume-gib'), value: '20' }).execute();
    const two = [{ DeviceName: '/dev/sdf', Ebs: { VolumeSize: 1 } }, { DeviceName: '/dev/sdg', Ebs: { VolumeSize: 1 } }];
    await expectEc2Error(run({ MaxCount: 2, MinCount: 2, BlockDeviceMappings: two }, B), 'VolumeLimitExceeded', /limit of 3 volumes/);
    await expectEc2Error(run({ BlockDeviceMappings: [{ DeviceName: '/dev/sdf', Ebs: { VolumeSize: 21 } }] }, B), 'VolumeLimitExceeded', /20 GiB/);
    assert.deepEqual((await call('DescribeInstances', {}, B)).Reservations, []);
    assert.deepEqual(await allVolumes(B), []);
  });

  it('a launch the cluster refuses leaves no volume (and no storage was touched)', async () => {
    // 4 cores on the only node: five 1-core instances do not fit.
    await expectEc2Error(run({ MinCount: 5, MaxCount: 5, InstanceType: 'm1.small', BlockDeviceMappings: [{ DeviceName: '/dev/sdf', Ebs: { VolumeSize: 1 } }] }),
      'InsufficientInstanceCapacity');
    assert.deepEqual(await allVolumes(), []);
    await settle();
    assert.deepEqual((await backend.list()).map((v) => v.volumeId), [], 'nothing made in the storage');
  });

  it('MinCount below MaxCount: volumes only for the instances that launched', async () => {
    const r = await run({ MinCount: 1, MaxCount: 6, InstanceType: 'm1.small', BlockDeviceMappings: [{ DeviceName: '/dev/sdf', Ebs: { VolumeSize: 1 } }] });
    const ids = r.Instances.map((i: any) => i.InstanceId as string);
    assert.ok(ids.length >= 1 && ids.length <= 4, `${ids.length} instances fit`);
    await settle();
    const vols = await allVolumes();
    assert.deepEqual(vols.map((v: any) => v.Attachments[0].InstanceId).sort(), [...ids].sort());
    assert.ok(vols.every((v: any) => v.State === 'in-use'));
    await call('TerminateInstances', { InstanceIds: ids });
    await settle();
    assert.deepEqual(await allVolumes(), [], 'DeleteOnTermination (the default) deleted them');
  });
});
