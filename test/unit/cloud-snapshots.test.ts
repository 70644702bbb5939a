// EBS snapshots through their operation handlers, the snapshot and volume reconcilers and a real
// cluster controller with the in-memory storage back-end (and a node agent on the fake driver for
// CreateSnapshots): CreateSnapshot's checks and its pending -> completed life, DescribeSnapshots'
// owners, restorable-by, filters and paging, volumes from snapshots, sharing with
// createVolumePermission, CopySnapshot, DeleteSnapshot and the snapshot quotas, on every store back-end.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Store } from '../../src/store/store.ts';
import { storeBackends } from '../helpers/stores.ts';
import { createAccountWithDefaults, ensureZone } from '../../src/cloud/provision.ts';
import { seedVmTypes } from '../../src/cloud/vm-types.ts';
import { registerImageFiles, type RegisteredImage } from '../../src/cloud/images/images.ts';
import { instanceOperations } from '../../src/cloud/instances.ts';
import { volumeOperations } from '../../src/cloud/storage/volumes.ts';
import { snapshotOperations } from '../../src/cloud/storage/snapshots.ts';
import { taggingOperations } from '../../src/cloud/tagging.ts';
import { InstanceReconciler } from '../../src/cloud/instance-reconciler.ts';
import { VolumeReconciler } from '../../src/cloud/storage/volume-reconciler.ts';
import { SnapshotReconciler } from '../../src/cloud/storage/snapshot-reconciler.ts';
import { ComputeDirectory } from '../../src/cloud/compute-directory.ts';
import { quotaSettingKey } from '../../src/cloud/quotas.ts';
import { ClusterController } from '../../src/cluster/cluster-controller.ts';
import { MemoryVolumeBackend } from '../../src/cluster/storage/memory-volume-backend.ts';
import { NodeAgent } from '../../src/node/node-agent.ts';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { ImageCache } from '../../src/node/image-cache.ts';
import { REGION, callOperation, contextFor, expectEc2Error } from '../helpers/handler-context.ts';

const ZONE_A = 'ironbark-1a';
const ZONE_B = 'ironbark-1b';
const quiet = { info() {}, warn() {}, error() {} };

for (const storeBackend of storeBackends()) describe(`EBS snapshots through a cluster controller (in-memory storage) on ${storeBackend.name}`, () => {
  let root: string;
  let store: Store;
  let disposeStore: () => Promise<void>;
  let cluster: ClusterController;
  let backend: MemoryVolumeBackend;
  let agent: NodeAgent;
  let instances: InstanceReconciler;
  let volumes: VolumeReconciler;
  let snapshots: SnapshotReconciler;
  let A: string;
  let B: string;
  let C: string;
  let image: RegisteredImage;
  const directory = new ComputeDirectory();
  const ops = () => ({ ...instanceOperations({ directory, log: quiet }), ...volumeOperations(), ...snapshotOperations(), ...taggingOperations });
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
  const createVolume = async (input: object = {}, account = A) => {
    const size = 'SnapshotId' in input ? {} : { Size: 1 };
    const id = (await call('CreateVolume', { AvailabilityZone: ZONE_A, ...size, ...input }, account)).VolumeId as string;
    await pass();
    return id;
  };
  const snapshot = async (id: string, account = A) => (await call('DescribeSnapshots', { SnapshotIds: [id] }, account)).Snapshots[0];
  let vol: string;
  let snap: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ib-snapshots-'));
    ({ store, dispose: disposeStore } = await storeBackend.open());
    await ensureZone(store, { name: ZONE_A, cidr: '10.1.0.0/16', region: REGION });
    await ensureZone(store, { name: ZONE_B, cidr: '10.2.0.0/16', region: REGION });
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
    image = await registerImageFiles(store, {
      name: 'guest', ownerAccountId: A, public: true, kernelCmdline: 'console=ttyS0',
      kernel: await file('vmlinuz', 1024), rootfs: { ...await file('rootfs.img', 8192), format: 'raw' },
    });
    backend = new MemoryVolumeBackend();
    cluster = new ClusterController({ zone: ZONE_A, cidr: '10.1.0.0/16', policy: 'round-robin', pollIntervalMs: 0, volumes: backend });
    agent = new NodeAgent({
      nodeId: 'node-a', stateDir: join(root, 'node'), driver: new FakeDriver(), imageCache: new ImageCache(join(root, 'node', 'images')),
      capacity: { cores: 8, memoryMiB: 8192, diskGiB: 100 },
    });
    await cluster.addNode('node-a', { name: 'a', address: 'local', client: agent });
    directory.register(cluster);
    instances = new InstanceReconciler({ store, directory, log: quiet });
    volumes = new VolumeReconciler({ store, directory, log: quiet, retryAfterMs: 0 });
    snapshots = new SnapshotReconciler({ store, directory, log: quiet, retryAfterMs: 0 });
  });

  after(async () => {
    await snapshots.stop();
    await volumes.stop();
    await cluster.close();
    await disposeStore();
    await rm(root, { recursive: true, force: true });
  });

  it('CreateSnapshot refuses what EC2 refuses and records nothing', async () => {
    vol = await createVolume({ Size: 3, TagSpecifications: [{ ResourceType: 'volume', Tags: [{ Key: 'app', Value: 'db' }] }] });
    await expectEc2Error(call('CreateSnapshot', {}), 'MissingParameter', /VolumeId/);
    await expectEc2Error(call('CreateSnapshot', { VolumeId: 'vol-0123456789abcdef0' }), 'InvalidVolume.NotFound');
    await expectEc2Error(call('CreateSnapshot', { VolumeId: vol }, B), 'InvalidVolume.NotFound');
    await expectEc2Error(call('CreateSnapshot', { VolumeId: vol, Description: 'x'.repeat(256) }), 'InvalidParameterValue', /description/);
    const creating = (await call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 1 })).VolumeId;
    await expectEc2Error(call('CreateSnapshot', { VolumeId: creating }), 'IncorrectState', /creating/);
    await pass();
    await call('DeleteVolume', { VolumeId: creating });
    assert.deepEqual((await call('DescribeSnapshots', { OwnerIds: ['self'] })).Snapshots, []);
  });

  it('CreateSnapshot answers pending at 0%, and the zone storage completes it at 100%', async () => {
    const made = await call('CreateSnapshot', { VolumeId: vol, Description: 'nightly', TagSpecifications: [{ ResourceType: 'snapshot', Tags: [{ Key: 'k', Value: 'v' }] }] });
    snap = made.SnapshotId;
    assert.match(snap, /^snap-[0-9a-f]{17}$/);
    assert.deepEqual([made.State, made.Progress, made.VolumeId, made.VolumeSize, made.OwnerId, made.Description, made.Encrypted],
      ['pending', '0%', vol, 3, A, 'nightly', false]);
    assert.deepEqual(made.Tags, [{ Key: 'k', Value: 'v' }]);
    assert.equal(await backend.snapshotInfo(snap), undefined, 'the API does not wait for the storage');
    await pass();
    const done = await snapshot(snap);
    assert.deepEqual([done.State, done.Progress], ['completed', '100%']);
    assert.equal((await backend.snapshotInfo(snap))?.sizeGiB, 3);
  });

  it('DescribeSnapshots: owners, filters (status, volume-id, owner-id, tag), paging, and unknown ids', async () => {
    for (let i = 0; i < 5; i++) await call('CreateSnapshot', { VolumeId: vol, Description: `n${i}` });
    const all = (await call('DescribeSnapshots', { OwnerIds: ['self'] })).Snapshots;
    assert.equal(all.length, 6);
    assert.equal((await call('DescribeSnapshots', { Filters: [{ Name: 'status', Values: ['pending'] }] })).Snapshots.length, 5);
    assert.equal((await call('DescribeSnapshots', { Filters: [{ Name: 'status', Values: ['completed'] }] })).Snapshots.length, 1);
    assert.equal((await call('DescribeSnapshots', { Filters: [{ Name: 'volume-id', Values: [vol] }, { Name: 'owner-id', Values: [A] }] })).Snapshots.length, 6);
    assert.deepEqual((await call('DescribeSnapshots', { Filters: [{ Name: 'tag:k', Values: ['v'] }] })).Snapshots.map((s: any) => s.SnapshotId), [snap]);
    assert.deepEqual((await call('DescribeSnapshots', { Filters: [{ Name: 'description', Values: ['n?'] }] })).Snapshots.length, 5);
    assert.deepEqual((await call('DescribeSnapshots', { OwnerIds: ['amazon'] })).Snapshots, []);
    assert.deepEqual((await call('DescribeSnapshots', { OwnerIds: [B] })).Snapshots, []);
    const first = await call('DescribeSnapshots', { OwnerIds: ['self'], MaxResults: 5 });
    assert.equal(first.Snapshots.length, 5);
    const second = await call('DescribeSnapshots', { OwnerIds: ['self'], MaxResults: 5, NextToken: first.NextToken });
    assert.equal(second.Snapshots.length, 1);
    assert.equal(second.NextToken, undefined);
    await expectEc2Error(call('DescribeSnapshots', { SnapshotIds: ['snap-0123456789abcdef0'] }), 'InvalidSnapshot.NotFound');
    await expectEc2Error(call('DescribeSnapshots', { SnapshotIds: ['snap-xyz'] }), 'InvalidSnapshotID.Malformed');
    await expectEc2Error(call('DescribeSnapshots', { SnapshotIds: [snap] }, B), 'InvalidSnapshot.NotFound');
    await pass();
    for (const s of all) if (s.SnapshotId !== snap) await call('DeleteSnapshot', { SnapshotId: s.SnapshotId });
    await pass();
  });

  it('CreateVolume from a snapshot: its size by default, never smaller, made by the storage from the snapshot', async () => {
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, SnapshotId: snap, Size: 2 }), 'InvalidParameterValue', /smaller than snapshot/);
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, SnapshotId: 'snap-0123456789abcdef0' }), 'InvalidSnapshot.NotFound');
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_B, SnapshotId: snap }), 'InvalidParameterValue', /kept in ironbark-1a/);
    const made = await call('CreateVolume', { AvailabilityZone: ZONE_A, SnapshotId: snap });
    assert.deepEqual([made.Size, made.SnapshotId, made.State], [3, snap, 'creating']);
    const bigger = await call('CreateVolume', { AvailabilityZone: ZONE_A, SnapshotId: snap, Size: 8 });
    await pass();
    const [v1, v2] = (await call('DescribeVolumes', { VolumeIds: [made.VolumeId, bigger.VolumeId] })).Volumes;
    assert.deepEqual([v1.State, v1.SnapshotId, v2.State, v2.Size], ['available', snap, 'available', 8]);
    assert.equal((await backend.info(bigger.VolumeId))?.sizeGiB, 8);
    assert.equal((await call('DescribeVolumes', { Filters: [{ Name: 'snapshot-id', Values: [snap] }] })).Volumes.length, 2);
    const pending = (await call('CreateSnapshot', { VolumeId: vol })).SnapshotId;
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, SnapshotId: pending }), 'IncorrectState', /pending/);
    await pass();
    await call('DeleteSnapshot', { SnapshotId: pending });
    for (const v of [made.VolumeId, bigger.VolumeId]) await call('DeleteVolume', { VolumeId: v });
    await pass();
  });

  it('createVolumePermission: shared with an account or with all, seen with RestorableByUserIds, usable, and reset', async () => {
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, SnapshotId: snap }, B), 'InvalidSnapshot.NotFound');
    await expectEc2Error(call('ModifySnapshotAttribute', { SnapshotId: snap, CreateVolumePermission: { Add: [{ UserId: 'bob' }] } }), 'InvalidUserID.Malformed');
    await expectEc2Error(call('ModifySnapshotAttribute', { SnapshotId: snap, CreateVolumePermission: { Add: [{ Group: 'friends' }] } }), 'InvalidParameterValue');
    await call('ModifySnapshotAttribute', { SnapshotId: snap, Attribute: 'createVolumePermission', CreateVolumePermission: { Add: [{ UserId: B }] } });
    assert.deepEqual((await call('DescribeSnapshotAttribute', { SnapshotId: snap, Attribute: 'createVolumePermission' })).CreateVolumePermissions, [{ UserId: B }]);
    assert.deepEqual((await call('DescribeSnapshots', { RestorableByUserIds: ['self'] }, B)).Snapshots.map((s: any) => s.SnapshotId), [snap]);
    assert.deepEqual((await call('DescribeSnapshots', { OwnerIds: [A] }, B)).Snapshots.map((s: any) => [s.SnapshotId, s.OwnerId]), [[snap, A]]);
    assert.deepEqual((await call('DescribeSnapshots', { OwnerIds: ['self'] }, B)).Snapshots, [], 'not B\'s own');
    assert.equal((await snapshot(snap, B)).Tags, undefined, 'the owner\'s tags are not shared');
    assert.deepEqual((await call('DescribeSnapshots', {}, C)).Snapshots, []);
    await expectEc2Error(call('ModifySnapshotAttribute', { SnapshotId: snap, CreateVolumePermission: { Add: [{ UserId: C }] } }, B), 'UnauthorizedOperation');
    await expectEc2Error(call('DeleteSnapshot', { SnapshotId: snap }, B), 'UnauthorizedOperation');
    const theirs = await createVolume({ SnapshotId: snap }, B);
    assert.equal((await call('DescribeVolumes', { VolumeIds: [theirs] }, B)).Volumes[0].State, 'available');
    await call('ModifySnapshotAttribute', { SnapshotId: snap, OperationType: 'add', GroupNames: ['all'] });
    assert.deepEqual((await call('DescribeSnapshots', { RestorableByUserIds: ['self'] }, C)).Snapshots.map((s: any) => s.SnapshotId), [snap]);
    assert.deepEqual((await call('DescribeSnapshotAttribute', { SnapshotId: snap, Attribute: 'createVolumePermission' })).CreateVolumePermissions, [{ Group: 'all' }, { UserId: B }]);
    await call('ModifySnapshotAttribute', { SnapshotId: snap, CreateVolumePermission: { Remove: [{ Group: 'all' }] } });
    assert.deepEqual((await call('DescribeSnapshots', {}, C)).Snapshots, []);
    await call('ResetSnapshotAttribute', { SnapshotId: snap, Attribute: 'createVolumePermission' });
    assert.deepEqual((await call('DescribeSnapshotAttribute', { SnapshotId: snap, Attribute: 'createVolumePermission' })).CreateVolumePermissions, []);
    await expectEc2Error(call('DescribeSnapshots', { SnapshotIds: [snap] }, B), 'InvalidSnapshot.NotFound');
    await expectEc2Error(call('DescribeSnapshotAttribute', { SnapshotId: snap, Attribute: 'kernel' }), 'InvalidParameterValue');
    await call('DeleteVolume', { VolumeId: theirs }, B);
    await pass();
  });

  it('CopySnapshot copies within the region into the caller\'s account', async () => {
    await expectEc2Error(call('CopySnapshot', { SourceSnapshotId: snap, SourceRegion: 'us-east-1' }), 'InvalidParameterValue', /one region/);
    await expectEc2Error(call('CopySnapshot', { SourceSnapshotId: snap, SourceRegion: REGION, Encrypted: true }), 'UnsupportedOperation');
    await expectEc2Error(call('CopySnapshot', { SourceSnapshotId: snap, SourceRegion: REGION }, B), 'InvalidSnapshot.NotFound');
    const { SnapshotId: copy } = await call('CopySnapshot', { SourceSnapshotId: snap, SourceRegion: REGION });
    assert.equal((await snapshot(copy)).State, 'pending');
    await pass();
    const done = await snapshot(copy);
    assert.deepEqual([done.State, done.VolumeId, done.VolumeSize, done.Description], ['completed', 'vol-ffffffff', 3, `[Copied ${snap} from ${REGION}]`]);
    await call('ModifySnapshotAttribute', { SnapshotId: snap, CreateVolumePermission: { Add: [{ UserId: B }] } });
    const { SnapshotId: theirs } = await call('CopySnapshot', { SourceSnapshotId: snap, SourceRegion: REGION, Description: 'mine now' }, B);
    await pass();
    assert.deepEqual([(await snapshot(theirs, B)).OwnerId, (await snapshot(theirs, B)).State], [B, 'completed']);
    await call('ResetSnapshotAttribute', { SnapshotId: snap, Attribute: 'createVolumePermission' });
    const fromCopy = await createVolume({ SnapshotId: theirs }, B);
    assert.equal((await backend.info(fromCopy))?.sizeGiB, 3);
    await call('DeleteVolume', { VolumeId: fromCopy }, B);
    await call('DeleteSnapshot', { SnapshotId: theirs }, B);
    await call('DeleteSnapshot', { SnapshotId: copy });
    await pass();
  });

  it('CreateSnapshots takes every attached volume of an instance (less those excluded), tags copied from each volume', async () => {
    const r = await call('RunInstances', { ImageId: image.imageId, MinCount: 1, MaxCount: 1, Placement: { AvailabilityZone: ZONE_A } });
    const instanceId = r.Instances[0].InstanceId as string;
    await pass();
    const other = await createVolume({ Size: 1 });
    const third = await createVolume({ Size: 1 });
    await call('AttachVolume', { VolumeId: vol, InstanceId: instanceId, Device: '/dev/sdf' });
    await call('AttachVolume', { VolumeId: other, InstanceId: instanceId, Device: '/dev/sdg' });
    await call('AttachVolume', { VolumeId: third, InstanceId: instanceId, Device: '/dev/sdh' });
    await pass();
    await expectEc2Error(call('CreateSnapshots', { InstanceSpecification: { InstanceId: 'i-0123456789abcdef0' } }), 'InvalidInstanceID.NotFound');
    const { Snapshots } = await call('CreateSnapshots', {
      InstanceSpecification: { InstanceId: instanceId, ExcludeDataVolumeIds: [third] }, Description: 'all of it', CopyTagsFromSource: 'volume',
      TagSpecifications: [{ ResourceType: 'snapshot', Tags: [{ Key: 'set', Value: '1' }] }],
    });
    assert.deepEqual(Snapshots.map((s: any) => [s.VolumeId, s.State, s.Description]).sort(), [[vol, 'pending', 'all of it'], [other, 'pending', 'all of it']].sort());
    assert.deepEqual(Snapshots.find((s: any) => s.VolumeId === vol).Tags, [{ Key: 'app', Value: 'db' }, { Key: 'set', Value: '1' }]);
    await pass();
    for (const s of Snapshots) {
      assert.equal((await snapshot(s.SnapshotId)).State, 'completed', 'taken while attached');
      await call('DeleteSnapshot', { SnapshotId: s.SnapshotId });
    }
    await call('TerminateInstances', { InstanceIds: [instanceId] });
    await pass();
    await pass();
  });

  it('DeleteSnapshot: gone at once, its storage let go of, and a volume made from it keeps its data', async () => {
    const fromSnap = await createVolume({ SnapshotId: snap });
    await call('DeleteSnapshot', { SnapshotId: snap });
    await expectEc2Error(call('DescribeSnapshots', { SnapshotIds: [snap] }), 'InvalidSnapshot.NotFound');
    await expectEc2Error(call('DeleteSnapshot', { SnapshotId: snap }), 'InvalidSnapshot.NotFound');
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, SnapshotId: snap }), 'InvalidSnapshot.NotFound');
    await pass();
    assert.equal(await backend.snapshotInfo(snap), undefined);
    assert.equal(backend.holdsSnapshot(snap), true, 'kept while the volume made from it exists');
    assert.equal((await backend.info(fromSnap))?.sizeGiB, 3);
    await call('DeleteVolume', { VolumeId: fromSnap });
    await pass();
    assert.equal(backend.holdsSnapshot(snap), false);
  });

  it('a volume deleted while a snapshot of it is pending goes after the snapshot completes', async () => {
    const v = await createVolume({ Size: 2 });
    const s = (await call('CreateSnapshot', { VolumeId: v })).SnapshotId;
    await call('DeleteVolume', { VolumeId: v });
    await volumes.reconcileOnce();
    await volumes.settled();
    assert.notEqual(await backend.info(v), undefined, 'the storage keeps the volume while its snapshot is pending');
    await pass();
    await pass();
    assert.equal((await snapshot(s)).State, 'completed');
    assert.equal(await backend.info(v), undefined);
    await call('DeleteSnapshot', { SnapshotId: s });
    await pass();
  });

  it('quotas: max-snapshots and max-snapshot-gib refuse with SnapshotLimitExceeded', async () => {
    const v = await createVolume({ Size: 4 }, C);
    await store.db.insertInto('settings').values({ key: quotaSettingKey(C, 'max-snapshots'), value: '1' }).execute();
    await store.db.insertInto('settings').values({ key: quotaSettingKey(C, 'max-snapshot-gib'), value: '6' }).execute();
    const first = (await call('CreateSnapshot', { VolumeId: v }, C)).SnapshotId;
    await expectEc2Error(call('CreateSnapshot', { VolumeId: v }, C), 'SnapshotLimitExceeded', /maximum number of snapshots \(1\)/);
    await store.db.updateTable('settings').set({ value: '5' }).where('key', '=', quotaSettingKey(C, 'max-snapshots')).execute();
    await expectEc2Error(call('CreateSnapshot', { VolumeId: v }, C), 'SnapshotLimitExceeded', /6 GiB/);
    await pass();
    await expectEc2Error(call('CopySnapshot', { SourceSnapshotId: first, SourceRegion: REGION }, C), 'SnapshotLimitExceeded');
    assert.equal((await call('DescribeSnapshots', { OwnerIds: ['self'] }, C)).Snapshots.length, 1);
  });
});
