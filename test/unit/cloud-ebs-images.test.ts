// EBS-backed images through the operation handlers, a real cluster controller (in-memory storage
// with snapshots) and a node agent on the fake driver: RegisterImage from a snapshot and its
// refusals; DescribeImages' RootDeviceType and BlockDeviceMappings; RunInstances from such an image
// makes the root volume from the snapshot before the node boots it from that volume (grown and
// kept past termination as the launch's root mapping asks), adds the other mapped volumes, and a
// launch that fails leaves no volume; a shared image launches for the account it is shared with
// (whose caller may not read the snapshot itself) and not for a third; DeregisterImage leaves the
// snapshot.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '../../src/store/store.ts';
import { createAccountWithDefaults, ensureZone } from '../../src/cloud/provision.ts';
import { seedVmTypes } from '../../src/cloud/vm-types.ts';
import { imageOperations, registerImageFiles, type RegisteredImage } from '../../src/cloud/images/images.ts';
import { imageAttributeOperations } from '../../src/cloud/images/image-attributes.ts';
import { ebsImageOperations } from '../../src/cloud/images/ebs-images.ts';
import { imageCreateOperations } from '../../src/cloud/images/image-create.ts';
import { snapshotOperations } from '../../src/cloud/storage/snapshots.ts';
import { SnapshotReconciler } from '../../src/cloud/storage/snapshot-reconciler.ts';
import { instanceOperations } from '../../src/cloud/instances.ts';
import { volumeOperations } from '../../src/cloud/storage/volumes.ts';
import { InstanceReconciler } from '../../src/cloud/instance-reconciler.ts';
import { VolumeReconciler } from '../../src/cloud/storage/volume-reconciler.ts';
import { ComputeDirectory } from '../../src/cloud/compute-directory.ts';
import { ClusterController } from '../../src/cluster/cluster-controller.ts';
import { MemoryVolumeBackend } from '../../src/cluster/storage/memory-volume-backend.ts';
import { NodeAgent } from '../../src/node/node-agent.ts';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { ImageCache } from '../../src/node/image-cache.ts';
import type { VmSpec } from '../../src/node/hypervisor.ts';
import { REGION, callOperation, contextFor, expectEc2Error } from '../helpers/handler-context.ts';

const ZONE = 'ironbark-1a';
const quiet = { info() {}, warn() {}, error() {} };
const SOURCE_VOLUME = 'vol-00000000000000001';
const SNAP = 'snap-00000000000000001';

describe('EBS-backed images (fake driver)', () => {
  let root: string;
  let store: Store;
  let cluster: ClusterController;
  let backend: MemoryVolumeBackend;
  let driver: FakeDriver;
  let agent: NodeAgent;
  let instances: InstanceReconciler;
  let volumes: VolumeReconciler;
  let snapshots: SnapshotReconciler;
  let A: string;
  let B: string;
  let C: string;
  let kernelImage: RegisteredImage;
  const created: VmSpec[] = [];
  const directory = new ComputeDirectory();
  const ops = () => ({
    ...instanceOperations({ directory, log: quiet }), ...volumeOperations(), ...imageOperations, ...imageAttributeOperations, ...ebsImageOperations,
    ...imageCreateOperations, ...snapshotOperations(),
  });
  const call = (action: string, input: object, account = A) => callOperation(contextFor(store, account), ops(), action, input);
  const pass = async () => {
    for (const { instanceId } of await agent.describeInstances()) await agent.settled(instanceId);
    await cluster.pollOnce();
    await instances.reconcileOnce();
    await volumes.reconcileOnce();
    await volumes.settled();
    await snapshots.reconcileOnce();
    await snapshots.settled();
  };
  const settle = async () => { for (let i = 0; i < 3; i++) await pass(); };
  const allVolumes = async (account = A) => (await call('DescribeVolumes', {}, account)).Volumes;
  const register = (input: object, account = A) => call('RegisterImage', {
    Name: `ebs-${randomBytes(3).toString('hex')}`, RootDeviceName: '/dev/xvda',
    BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { SnapshotId: SNAP } }], ...input,
  }, account);
  const run = (imageId: string, input: object = {}, account = A) =>
    call('RunInstances', { ImageId: imageId, MinCount: 1, MaxCount: 1, Placement: { AvailabilityZone: ZONE }, ...input }, account);

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ib-ebs-images-'));
    store = await openStore({ url: ':memory:' });
    await ensureZone(store, { name: ZONE, cidr: '10.1.0.0/16', region: REGION });
    await seedVmTypes(store.db);
    A = (await createAccountWithDefaults(store, 'alpha')).account.id;
    B = (await createAccountWithDefaults(store, 'beta')).account.id;
    C = (await createAccountWithDefaults(store, 'gamma')).account.id;
    const file = async (name: string, bytes: number) => {
      const data = randomBytes(bytes);
      const path = join(root, name);
      await writeFile(path, data);
      return { path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes };
    };
    kernelImage = await registerImageFiles(store, {
      name: 'guest', ownerAccountId: A, public: true, kernelCmdline: 'console=ttyS0',
      kernel: await file('vmlinuz', 1024), rootfs: { ...await file('rootfs.img', 8192), format: 'raw' },
    });
    backend = new MemoryVolumeBackend();
    cluster = new ClusterController({ zone: ZONE, cidr: '10.1.0.0/16', policy: 'round-robin', pollIntervalMs: 0, volumes: backend });
    driver = new FakeDriver();
    const create = driver.create.bind(driver);
    driver.create = async (s: VmSpec) => { created.push(s); return create(s); };
    agent = new NodeAgent({
      nodeId: 'node-a', stateDir: join(root, 'node'), driver, imageCache: new ImageCache(join(root, 'node', 'images')),
      capacity: { cores: 4, memoryMiB: 8192, diskGiB: 100 },
    });
    await cluster.addNode('node-a', { name: 'a', address: 'local', client: agent });
    directory.register(cluster);
    instances = new InstanceReconciler({ store, directory, log: quiet });
    volumes = new VolumeReconciler({ store, directory, log: quiet, retryAfterMs: 0 });
    snapshots = new SnapshotReconciler({ store, directory, log: quiet, retryAfterMs: 0 });
    // A's snapshot of a 2 GiB volume, in the zone's storage and in the store.
    await backend.create(SOURCE_VOLUME, 2);
    await backend.snapshot(SOURCE_VOLUME, SNAP);
    const now = new Date().toISOString();
    await store.db.insertInto('snapshots').values({
      id: SNAP, account_id: A, volume_id: SOURCE_VOLUME, zone: ZONE, volume_size_gib: 2, description: 'root', state: 'completed', progress: 100,
      state_message: null, source_snapshot_id: null, stored_bytes: 0, started_at: now, completed_at: now, state_changed_at: now, deleted_at: null,
    }).execute();
  });

  after(async () => {
    await volumes.stop();
    await snapshots.stop();
    await cluster.close();
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  it('RegisterImage refuses what EC2 refuses and registers nothing', async () => {
    const before = (await call('DescribeImages', { Owners: ['self'] })).Images.length;
    await expectEc2Error(register({ Name: undefined }), 'MissingParameter', /name/);
    await expectEc2Error(register({ Name: 'x' }), 'InvalidAMIName.Malformed');
    await expectEc2Error(register({ ImageLocation: 'bucket/image.manifest.xml' }), 'UnsupportedOperation', /S3 bundles/);
    await expectEc2Error(register({ Architecture: 'arm64' }), 'InvalidParameterValue', /architecture/);
    await expectEc2Error(register({ RootDeviceName: undefined }), 'MissingParameter', /rootDeviceName/);
    await expectEc2Error(register({ BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { VolumeSize: 2 } }] }), 'InvalidBlockDeviceMapping', /SnapshotId/);
    await expectEc2Error(register({ BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { SnapshotId: 'snap-0000000000000000f' } }] }), 'InvalidSnapshot.NotFound');
    await expectEc2Error(register({ BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { SnapshotId: SNAP, VolumeSize: 1 } }] }), 'InvalidBlockDeviceMapping', /smaller than snapshot/);
    await expectEc2Error(register({ BootMode: 'bios' }), 'InvalidParameterValue', /bootMode/);
    await expectEc2Error(register({ KernelId: kernelImage.kernelId, VirtualizationType: 'hvm' }), 'InvalidParameterCombination');
    await expectEc2Error(register({}, B), 'InvalidSnapshot.NotFound', undefined);
    assert.equal((await call('DescribeImages', { Owners: ['self'] })).Images.length, before);
  });

  it('registers an EBS image from a snapshot and shows its block devices', async () => {
    const { ImageId } = await register({ Name: 'my-ebs-image', Description: 'from a snapshot', BootMode: 'uefi',
      BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { SnapshotId: SNAP, DeleteOnTermination: true } }, { DeviceName: '/dev/sdf', Ebs: { VolumeSize: 1 } }] });
    await expectEc2Error(register({ Name: 'my-ebs-image' }), 'InvalidAMIName.Duplicate');
    const image = (await call('DescribeImages', { ImageIds: [ImageId] })).Images[0];
    assert.deepEqual([image.RootDeviceType, image.RootDeviceName, image.VirtualizationType, image.BootMode, image.State, image.Description],
      ['ebs', '/dev/xvda', 'hvm', 'uefi', 'available', 'from a snapshot']);
    assert.deepEqual(image.BlockDeviceMappings, [
      { DeviceName: '/dev/xvda', Ebs: { SnapshotId: SNAP, VolumeSize: 2, VolumeType: 'gp2', DeleteOnTermination: true, Encrypted: false } },
      { DeviceName: '/dev/sdf', Ebs: { VolumeSize: 1, VolumeType: 'gp2', DeleteOnTermination: true, Encrypted: false } },
    ]);
    const filtered = await call('DescribeImages', { Filters: [{ Name: 'block-device-mapping.snapshot-id', Values: [SNAP] }] });
    assert.deepEqual(filtered.Images.map((i: any) => i.ImageId), [ImageId]);
    assert.deepEqual((await call('DescribeImages', { Filters: [{ Name: 'root-device-type', Values: ['ebs'] }] })).Images.map((i: any) => i.ImageId), [ImageId]);
  });

  it('RunInstances from an EBS image boots from a volume made of the snapshot, kept or deleted at termination as asked', async () => {
    const { ImageId } = await register({ BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { SnapshotId: SNAP } }, { DeviceName: '/dev/sdf', Ebs: { VolumeSize: 1 } }] });
    await expectEc2Error(run(ImageId, { BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { VolumeSize: 1 } }] }), 'InvalidBlockDeviceMapping', /smaller than snapshot/);
    await expectEc2Error(run(ImageId, { BlockDeviceMappings: [{ DeviceName: '/dev/xvda', NoDevice: '' }] }), 'InvalidBlockDeviceMapping');
    assert.deepEqual(await allVolumes(), []);
    const r = await run(ImageId, { BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { VolumeSize: 3, DeleteOnTermination: false } }, { DeviceName: '/dev/sdg', Ebs: { VolumeSize: 1 } }] });
    const id = r.Instances[0].InstanceId as string;
    assert.equal(r.Instances[0].RootDeviceType, 'ebs');
    const rootVolume = (await allVolumes()).find((v: any) => v.Attachments[0]?.Device === '/dev/vda');
    assert.deepEqual([rootVolume.SnapshotId, rootVolume.Size, rootVolume.State], [SNAP, 3, 'in-use'], 'made before the answer');
    assert.equal((await backend.info(rootVolume.VolumeId))?.sizeGiB, 3);
    const vm = created.find((s) => s.id === id)!;
    assert.equal(vm.rootVolume?.volumeId, rootVolume.VolumeId, 'the node boots from it');
    await settle();
    const described = (await call('DescribeInstances', { InstanceIds: [id] })).Reservations[0].Instances[0];
    assert.equal(described.RootDeviceType, 'ebs');
    assert.deepEqual(described.BlockDeviceMappings.map((m: any) => [m.DeviceName, m.Ebs.Status, m.Ebs.DeleteOnTermination]).sort(),
      [['/dev/sdf', 'attached', true], ['/dev/sdg', 'attached', true], ['/dev/vda', 'attached', false]]);

    await expectEc2Error(call('DetachVolume', { VolumeId: rootVolume.VolumeId }), 'OperationNotPermitted', /root volume/);
    await call('StopInstances', { InstanceIds: [id] });
    await settle();
    await call('StartInstances', { InstanceIds: [id] });
    await settle();
    assert.equal((await call('DescribeInstances', { InstanceIds: [id] })).Reservations[0].Instances[0].State.Name, 'running');
    assert.equal((await call('DescribeVolumes', { VolumeIds: [rootVolume.VolumeId] })).Volumes[0].State, 'in-use', 'stop/start keeps the root volume');

    await call('TerminateInstances', { InstanceIds: [id] });
    await settle();
    const left = await allVolumes();
    assert.deepEqual(left.map((v: any) => [v.VolumeId, v.State]), [[rootVolume.VolumeId, 'available']], 'the root volume stays (DeleteOnTermination false); the others went');
    await call('DeleteVolume', { VolumeId: rootVolume.VolumeId });
    await settle();
  });

  it('a launch the cluster refuses removes the root volume it made', async () => {
    const { ImageId } = await register({});
    await expectEc2Error(run(ImageId, { MinCount: 9, MaxCount: 9, InstanceType: 'm1.small' }), 'InsufficientInstanceCapacity');
    await settle();
    assert.deepEqual(await allVolumes(), []);
    assert.deepEqual((await backend.list()).map((v) => v.volumeId), [SOURCE_VOLUME], 'nothing left in the storage');
  });

  it('a shared EBS image launches for the account it is shared with, not for a third; DeregisterImage leaves the snapshot', async () => {
    const { ImageId } = await register({});
    await expectEc2Error(run(ImageId, {}, B), 'InvalidAMIID.NotFound');
    await call('ModifyImageAttribute', { ImageId, LaunchPermission: { Add: [{ UserId: B }] } });
    const r = await run(ImageId, {}, B);
    const id = r.Instances[0].InstanceId as string;
    const rootVolume = (await allVolumes(B))[0];
    assert.deepEqual([rootVolume.SnapshotId, rootVolume.State], [SNAP, 'in-use'], "B's root volume, made of A's snapshot");
    await expectEc2Error(run(ImageId, {}, C), 'InvalidAMIID.NotFound');
    await call('TerminateInstances', { InstanceIds: [id] }, B);
    await settle();
    assert.deepEqual(await allVolumes(B), []);
    await expectEc2Error(call('DeleteSnapshot', { SnapshotId: SNAP }), 'InvalidSnapshot.InUse');
    await call('DeregisterImage', { ImageId });
    const snapshot = await store.db.selectFrom('snapshots').select('state').where('id', '=', SNAP).executeTakeFirst();
    assert.equal(snapshot?.state, 'completed');
  });

  it('CreateImage of an EBS-backed instance: pending until its snapshots complete, then launchable; CopyImage copies the snapshots', async () => {
    const { ImageId: base } = await register({});
    const r = await run(base, { BlockDeviceMappings: [{ DeviceName: '/dev/sdf', Ebs: { VolumeSize: 1, DeleteOnTermination: false } }] });
    const id = r.Instances[0].InstanceId as string;
    await settle();
    await expectEc2Error(call('CreateImage', { InstanceId: id }), 'MissingParameter', /name/);
    await expectEc2Error(call('CreateImage', { InstanceId: 'i-0000000000000000f', Name: 'nope' }), 'InvalidInstanceID.NotFound');
    const kernelLaunch = await call('RunInstances', { ImageId: kernelImage.imageId, MinCount: 1, MaxCount: 1, Placement: { AvailabilityZone: ZONE } });
    await settle();
    await expectEc2Error(call('CreateImage', { InstanceId: kernelLaunch.Instances[0].InstanceId, Name: 'local-root' }), 'InvalidParameterValue', /instance-store/);
    const { ImageId } = await call('CreateImage', { InstanceId: id, Name: 'made-of-an-instance', NoReboot: true,
      TagSpecifications: [{ ResourceType: 'image', Tags: [{ Key: 'k', Value: 'v' }] }] });
    const made = (await store.db.selectFrom('images').selectAll().where('id', '=', ImageId).executeTakeFirst())!;
    assert.equal(made.state, 'pending', 'recorded, the snapshots are taken in the background');
    await settle();
    const image = (await call('DescribeImages', { ImageIds: [ImageId] })).Images[0];
    assert.deepEqual([image.State, image.RootDeviceType, image.RootDeviceName], ['available', 'ebs', '/dev/vda']);
    assert.deepEqual(image.BlockDeviceMappings.map((m: any) => [m.DeviceName, m.Ebs.VolumeSize, m.Ebs.DeleteOnTermination]), [['/dev/sdf', 1, false], ['/dev/vda', 2, true]]);
    const snaps = image.BlockDeviceMappings.map((m: any) => m.Ebs.SnapshotId);
    const described = (await call('DescribeSnapshots', { SnapshotIds: snaps })).Snapshots;
    assert.ok(described.every((s: any) => s.State === 'completed'));
    // A new instance from the new image boots from a volume of its root snapshot.
    const again = await run(ImageId);
    const againId = again.Instances[0].InstanceId as string;
    const rootOf = (await allVolumes()).find((v: any) => v.Attachments[0]?.InstanceId === againId && v.Attachments[0].Device === '/dev/vda');
    assert.equal(rootOf.SnapshotId, image.BlockDeviceMappings[1].Ebs.SnapshotId);

    await expectEc2Error(call('CopyImage', { SourceImageId: ImageId, SourceRegion: 'elsewhere-1', Name: 'copy' }), 'InvalidParameterValue', /one region/);
    await expectEc2Error(call('CopyImage', { SourceImageId: kernelImage.imageId, SourceRegion: REGION, Name: 'copy' }), 'InvalidParameterValue', /instance-store/);
    const copy = await call('CopyImage', { SourceImageId: ImageId, SourceRegion: REGION, Name: 'a-copy' });
    assert.notEqual(copy.ImageId, ImageId);
    await settle();
    const copied = (await call('DescribeImages', { ImageIds: [copy.ImageId] })).Images[0];
    assert.equal(copied.State, 'available');
    const copiedSnaps = copied.BlockDeviceMappings.map((m: any) => m.Ebs.SnapshotId);
    assert.equal(copiedSnaps.filter((s: string) => snaps.includes(s)).length, 0, 'new snapshots');
    await call('DeregisterImage', { ImageId: copy.ImageId });
    assert.equal((await call('DescribeSnapshots', { SnapshotIds: copiedSnaps })).Snapshots.length, 2, 'DeregisterImage leaves the snapshots');
    await call('TerminateInstances', { InstanceIds: [id, againId, kernelLaunch.Instances[0].InstanceId] });
    await settle();
  });
});
