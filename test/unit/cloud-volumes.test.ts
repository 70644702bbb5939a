// EBS volumes through their operation handlers, the volume reconciler, a real cluster controller
// (its in-memory storage back-end) and a node agent on the fake driver: CreateVolume's checks and
// EC2's errors, DescribeVolumes' filters and paging, attach and detach (by VolumeId alone, Force)
// reaching the VM, attachments kept across stop/start and let go at termination, BlockDeviceMappings
// in DescribeInstances, ModifyVolume with DescribeVolumesModifications, quotas, status and attributes.
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
import { taggingOperations } from '../../src/cloud/tagging.ts';
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

const ZONE_A = 'ironbark-1a';
const ZONE_B = 'ironbark-1b';
const quiet = { info() {}, warn() {}, error() {} };

describe('EBS volumes through a cluster controller and node agent (fake driver)', () => {
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
  const ops = () => ({ ...instanceOperations({ directory, log: quiet }), ...volumeOperations(), ...taggingOperations });
  const directory = new ComputeDirectory();
  const call = (action: string, input: object, account = A) => callOperation(contextFor(store, account), ops(), action, input);
  const volume = async (id: string) => (await call('DescribeVolumes', { VolumeIds: [id] })).Volumes[0];
  /** The node settles, the cluster reads it, the cloud reconciles instances, then volumes (and waits for their actions). */
  const pass = async () => {
    for (const { instanceId } of await agent.describeInstances()) await agent.settled(instanceId);
    await cluster.pollOnce();
    await instances.reconcileOnce();
    await volumes.reconcileOnce();
    await volumes.settled();
  };
  const launch = async (zone = ZONE_A) => {
    const r = await call('RunInstances', { ImageId: image.imageId, MinCount: 1, MaxCount: 1, Placement: { AvailabilityZone: zone } });
    const id = r.Instances[0].InstanceId as string;
    await pass();
    return id;
  };
  const create = async (input: object = {}) => (await call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 1, ...input })).VolumeId as string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ib-volumes-'));
    store = await openStore({ url: ':memory:' });
    await ensureZone(store, { name: ZONE_A, cidr: '10.1.0.0/16', region: REGION });
    await ensureZone(store, { name: ZONE_B, cidr: '10.2.0.0/16', region: REGION });
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
    cluster = new ClusterController({ zone: ZONE_A, cidr: '10.1.0.0/16', policy: 'round-robin', pollIntervalMs: 0, volumes: backend });
    driver = new FakeDriver();
    agent = new NodeAgent({
      nodeId: 'node-a', stateDir: join(root, 'node'), driver, imageCache: new ImageCache(join(root, 'node', 'images')),
      capacity: { cores: 8, memoryMiB: 8192, diskGiB: 100 },
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

  it('CreateVolume refuses what EC2 refuses and records nothing', async () => {
    await expectEc2Error(call('CreateVolume', { Size: 1 }), 'MissingParameter', /AvailabilityZone/);
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: 'ironbark-1z', Size: 1 }), 'InvalidParameterValue', 'Invalid availability zone: [ironbark-1z]');
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A }), 'MissingParameter', /size/);
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 0 }), 'InvalidParameterValue', 'Volume of 0GiB is too small; minimum is 1GiB.');
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 16_385 }), 'InvalidParameterValue', /too large for volume type gp2; maximum is 16384GiB/);
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 10, VolumeType: 'st1' }), 'InvalidParameterValue', /minimum is 125GiB/);
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 1, VolumeType: 'gp9' }), 'InvalidParameterValue', /volumeType/);
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 10, VolumeType: 'io1' }), 'MissingParameter', /iops/);
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 10, Iops: 500 }), 'InvalidParameterCombination', /iops is not supported for gp2/);
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 10, Throughput: 200 }), 'InvalidParameterCombination', /throughput/);
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 1, Encrypted: true }), 'UnsupportedOperation', /Encrypted volumes are not offered/);
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, SnapshotId: 'snap-0123456789abcdef0' }), 'InvalidSnapshot.NotFound');
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 1, TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'a', Value: 'b' }] }] }),
      'InvalidParameterValue', /not a valid taggable resource type/);
    assert.deepEqual((await call('DescribeVolumes', {})).Volumes, []);
  });

  it('CreateVolume answers creating, and the zone storage makes it available', async () => {
    const made = await call('CreateVolume', {
      AvailabilityZone: ZONE_A, Size: 2, VolumeType: 'gp3', Iops: 4000, TagSpecifications: [{ ResourceType: 'volume', Tags: [{ Key: 'team', Value: 'db' }] }],
    });
    assert.match(made.VolumeId, /^vol-[0-9a-f]{17}$/);
    assert.deepEqual([made.State, made.Size, made.VolumeType, made.Iops, made.Throughput, made.Encrypted, made.AvailabilityZone], ['creating', 2, 'gp3', 4000, 125, false, ZONE_A]);
    assert.deepEqual(made.Tags, [{ Key: 'team', Value: 'db' }]);
    assert.equal(await backend.info(made.VolumeId), undefined, 'the API does not wait for the storage');
    await pass();
    assert.equal((await volume(made.VolumeId)).State, 'available');
    assert.equal((await backend.info(made.VolumeId))?.sizeGiB, 2);
    const gp2 = await create({ Size: 100 });
    assert.equal((await volume(gp2)).Iops, 300, 'gp2 reports its baseline of 3 IOPS per GiB');
    await pass();
  });

  it('CreateVolume with a ClientToken answers a retry with the same volume, and refuses the token with other parameters', async () => {
    const first = await call('CreateVolume', { AvailabilityZone: ZONE_B, Size: 3, ClientToken: 'retry-1' });
    const again = await call('CreateVolume', { AvailabilityZone: ZONE_B, Size: 3, ClientToken: 'retry-1' });
    assert.equal(again.VolumeId, first.VolumeId);
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_B, Size: 4, ClientToken: 'retry-1' }), 'IdempotentParameterMismatch');
    const other = await call('CreateVolume', { AvailabilityZone: ZONE_B, Size: 3, ClientToken: 'retry-1' }, B);
    assert.notEqual(other.VolumeId, first.VolumeId, 'tokens are per account');
    await store.db.updateTable('volumes').set({ state: 'deleted' }).where('zone', '=', ZONE_B).execute();
  });

  it('DescribeVolumes filters, pages, and keeps accounts apart', async () => {
    const all = (await call('DescribeVolumes', {})).Volumes as { VolumeId: string }[];
    assert.equal(all.length, 2);
    const byFilter = async (Name: string, ...Values: string[]) => ((await call('DescribeVolumes', { Filters: [{ Name, Values }] })).Volumes as { VolumeId: string }[]).length;
    assert.equal(await byFilter('size', '2'), 1);
    assert.equal(await byFilter('volume-type', 'gp3'), 1);
    assert.equal(await byFilter('status', 'available'), 2);
    assert.equal(await byFilter('tag:team', 'db'), 1);
    assert.equal(await byFilter('tag-key', 'team'), 1);
    assert.equal(await byFilter('availability-zone', ZONE_B), 0);
    assert.equal(await byFilter('attachment.status', 'attached'), 0);
    assert.equal(await byFilter('encrypted', 'false'), 2);
    await expectEc2Error(call('DescribeVolumes', { Filters: [{ Name: 'colour', Values: ['x'] }] }), 'InvalidParameterValue', /filter 'colour' is invalid/);
    const first = await call('DescribeVolumes', { MaxResults: 5 });
    assert.equal(first.Volumes.length, 2);
    assert.equal(first.NextToken, undefined);
    await expectEc2Error(call('DescribeVolumes', { VolumeIds: [all[0]!.VolumeId], MaxResults: 5 }), 'InvalidParameterCombination');
    await expectEc2Error(call('DescribeVolumes', { VolumeIds: ['vol-0000000000000000f'] }), 'InvalidVolume.NotFound', "The volume 'vol-0000000000000000f' does not exist.");
    await expectEc2Error(call('DescribeVolumes', { VolumeIds: ['volume-1'] }), 'InvalidParameterValue', /Invalid id/);
    await expectEc2Error(call('DescribeVolumes', { VolumeIds: [all[0]!.VolumeId] }, B), 'InvalidVolume.NotFound');
    assert.deepEqual((await call('DescribeVolumes', {}, B)).Volumes, []);
  });

  it('attaches to a running instance on its node, shows it in DescribeInstances, and detaches by VolumeId alone', async () => {
    const instance = await launch();
    const vol = await create();
    await pass();
    await expectEc2Error(call('AttachVolume', { VolumeId: vol, InstanceId: instance, Device: '/dev/hda' }), 'InvalidParameterValue', /not a valid EBS device name/);
    await expectEc2Error(call('AttachVolume', { VolumeId: vol, InstanceId: 'i-0000000000000000f', Device: '/dev/sdf' }), 'InvalidInstanceID.NotFound');
    await expectEc2Error(call('AttachVolume', { VolumeId: vol, InstanceId: instance, Device: '/dev/sdf' }, B), 'InvalidVolume.NotFound');
    const answer = await call('AttachVolume', { VolumeId: vol, InstanceId: instance, Device: '/dev/sdf' });
    assert.deepEqual([answer.State, answer.Device, answer.InstanceId, answer.VolumeId], ['attaching', '/dev/sdf', instance, vol]);
    assert.equal((await volume(vol)).State, 'in-use');
    await expectEc2Error(call('AttachVolume', { VolumeId: vol, InstanceId: instance, Device: '/dev/sdg' }), 'VolumeInUse');
    const other = await create();
    await pass();
    await expectEc2Error(call('AttachVolume', { VolumeId: other, InstanceId: instance, Device: '/dev/sdf' }), 'InvalidParameterValue', 'Attachment point /dev/sdf is already in use');
    assert.deepEqual(await driver.attachedVolumes(instance), [vol], 'the node plugged it into the VM');
    const attached = await volume(vol);
    assert.equal(attached.Attachments[0].State, 'attached');
    const described = (await call('DescribeInstances', { InstanceIds: [instance] })).Reservations[0].Instances[0];
    assert.deepEqual(described.BlockDeviceMappings.map((m: any) => [m.DeviceName, m.Ebs.VolumeId, m.Ebs.Status]), [['/dev/sdf', vol, 'attached']]);
    const attribute = await call('DescribeInstanceAttribute', { InstanceId: instance, Attribute: 'blockDeviceMapping' });
    assert.deepEqual(attribute.BlockDeviceMappings.map((m: any) => [m.DeviceName, m.Ebs.VolumeId]), [['/dev/sdf', vol]]);
    const filtered = await call('DescribeInstances', { Filters: [{ Name: 'block-device-mapping.volume-id', Values: [vol] }] });
    assert.deepEqual(filtered.Reservations.map((r: any) => r.Instances[0].InstanceId), [instance]);
    assert.equal((await call('DescribeVolumes', { Filters: [{ Name: 'attachment.instance-id', Values: [instance] }] })).Volumes.length, 1);
    await expectEc2Error(call('DeleteVolume', { VolumeId: vol }), 'VolumeInUse', `Volume ${vol} is currently attached to ${instance}`);
    await expectEc2Error(call('DetachVolume', { VolumeId: vol, InstanceId: 'i-0000000000000000f' }), 'InvalidAttachment.NotFound');

    const detaching = await call('DetachVolume', { VolumeId: vol });
    assert.equal(detaching.State, 'detaching');
    await pass();
    assert.deepEqual(await driver.attachedVolumes(instance), []);
    const free = await volume(vol);
    assert.deepEqual([free.State, free.Attachments], ['available', []]);
    await expectEc2Error(call('DetachVolume', { VolumeId: vol }), 'IncorrectState', `Volume '${vol}' is in the 'available' state.`);
    await call('DeleteVolume', { VolumeId: other });
    await pass();
  });

  it('refuses a volume of another zone (InvalidVolume.ZoneMismatch)', async () => {
    const instance = (await call('DescribeInstances', { Filters: [{ Name: 'instance-state-name', Values: ['running'] }] })).Reservations[0].Instances[0].InstanceId;
    const elsewhere = (await call('CreateVolume', { AvailabilityZone: ZONE_B, Size: 1 })).VolumeId;
    // No cluster serves zone B here: the volume stays creating, as it would until its cluster answers.
    await pass();
    assert.equal((await volume(elsewhere)).State, 'creating');
    await store.db.updateTable('volumes').set({ state: 'available' }).where('id', '=', elsewhere).execute();
    await expectEc2Error(call('AttachVolume', { VolumeId: elsewhere, InstanceId: instance, Device: '/dev/sdh' }), 'InvalidVolume.ZoneMismatch');
    await store.db.updateTable('volumes').set({ state: 'deleted' }).where('id', '=', elsewhere).execute();
  });

  it('keeps an attachment across stop and start (plugged again at boot), and lets go of it when the instance terminates', async () => {
    const instance = await launch();
    const vol = await create();
    await pass();
    await call('AttachVolume', { VolumeId: vol, InstanceId: instance, Device: '/dev/sdg' });
    await pass();
    assert.deepEqual(await driver.attachedVolumes(instance), [vol]);
    await call('StopInstances', { InstanceIds: [instance] });
    await pass();
    await pass();
    assert.equal((await call('DescribeInstances', { InstanceIds: [instance] })).Reservations[0].Instances[0].State.Name, 'stopped');
    assert.equal((await volume(vol)).Attachments[0].State, 'attached', 'a stopped instance keeps its volumes');
    assert.deepEqual(await driver.attachedVolumes(instance), []);
    await call('StartInstances', { InstanceIds: [instance] });
    await pass();
    assert.deepEqual(await driver.attachedVolumes(instance), [vol], 'plugged in again when the VM boots');

    await call('TerminateInstances', { InstanceIds: [instance] });
    await pass();
    await pass();
    const free = await volume(vol);
    assert.deepEqual([free.State, free.Attachments], ['available', []]);
  });

  it('a forced detach lets go even when the node cannot unplug (the storage cuts the instance off)', async () => {
    const instance = await launch();
    const vol = await create();
    await pass();
    await call('AttachVolume', { VolumeId: vol, InstanceId: instance, Device: '/dev/sdf' });
    await pass();
    const stuck = driver.detachVolume.bind(driver);
    driver.detachVolume = async () => { throw new Error('the guest holds the disk'); };
    try {
      await call('DetachVolume', { VolumeId: vol });
      await pass();
      assert.equal((await volume(vol)).Attachments[0].State, 'detaching', 'a guest that holds on keeps the volume detaching');
      await call('DetachVolume', { VolumeId: vol, Force: true });
      await pass();
      assert.equal((await volume(vol)).State, 'available');
      assert.equal(backend.isExported(vol), false, 'the export was cut');
    } finally {
      driver.detachVolume = stuck;
    }
    await call('TerminateInstances', { InstanceIds: [instance] });
    await pass();
  });

  it('ModifyVolume grows a volume (DescribeVolumesModifications) and refuses to shrink', async () => {
    const vol = await create({ Size: 4 });
    await pass();
    await expectEc2Error(call('ModifyVolume', { VolumeId: vol, Size: 3 }), 'InvalidParameterValue', /cannot be smaller/);
    await expectEc2Error(call('ModifyVolume', { VolumeId: vol, Size: 4 }), 'InvalidParameterCombination', /no change/);
    const mod = (await call('ModifyVolume', { VolumeId: vol, Size: 8, VolumeType: 'gp3' })).VolumeModification;
    assert.deepEqual([mod.ModificationState, mod.OriginalSize, mod.TargetSize, mod.OriginalVolumeType, mod.TargetVolumeType, mod.TargetIops], ['modifying', 4, 8, 'gp2', 'gp3', 3000]);
    await expectEc2Error(call('ModifyVolume', { VolumeId: vol, Size: 9 }), 'IncorrectModificationState');
    await pass();
    assert.equal((await volume(vol)).Size, 8);
    assert.equal((await backend.info(vol))?.sizeGiB, 8);
    const [done] = (await call('DescribeVolumesModifications', { VolumeIds: [vol] })).VolumesModifications;
    assert.deepEqual([done.ModificationState, done.Progress], ['completed', 100]);
    assert.equal((await call('DescribeVolumesModifications', { Filters: [{ Name: 'target-size', Values: ['8'] }] })).VolumesModifications.length, 1);
    const untouched = await create();
    await pass();
    await expectEc2Error(call('DescribeVolumesModifications', { VolumeIds: [untouched] }), 'InvalidVolumeModification.NotFound');
  });

  it('quotas: max-volumes and max-volume-gib refuse with VolumeLimitExceeded', async () => {
    const used = (await call('DescribeVolumes', {}, B)).Volumes.length;
    await store.db.insertInto('settings').values({ key: quotaSettingKey(B, 'max-volumes'), value: String(used + 1) }).execute();
    await store.db.insertInto('settings').values({ key: quotaSettingKey(B, 'max-volume-gib'), value: '10' }).execute();
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 11 }, B), 'VolumeLimitExceeded', /maximum storage limit of 10 GiB/);
    const one = (await call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 6 }, B)).VolumeId;
    await expectEc2Error(call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 1 }, B), 'VolumeLimitExceeded', /limit of \d+ volumes/);
    await pass();
    await expectEc2Error(call('ModifyVolume', { VolumeId: one, Size: 11 }, B), 'VolumeLimitExceeded');
    await call('DeleteVolume', { VolumeId: one }, B);
    await pass();
    await call('DeleteVolume', { VolumeId: (await call('CreateVolume', { AvailabilityZone: ZONE_A, Size: 1 }, B)).VolumeId }, B);
    await pass();
  });

  it('DescribeVolumeStatus and the volume attributes', async () => {
    const vol = await create();
    const creating = (await call('DescribeVolumeStatus', { VolumeIds: [vol] })).VolumeStatuses[0];
    assert.equal(creating.VolumeStatus.Status, 'insufficient-data');
    await pass();
    const ok = (await call('DescribeVolumeStatus', { VolumeIds: [vol] })).VolumeStatuses[0];
    assert.deepEqual(ok.VolumeStatus, { Status: 'ok', Details: [{ Name: 'io-enabled', Status: 'passed' }, { Name: 'io-performance', Status: 'not-applicable' }] });
    assert.ok((await call('DescribeVolumeStatus', { Filters: [{ Name: 'volume-status.status', Values: ['ok'] }] })).VolumeStatuses.some((s: any) => s.VolumeId === vol));
    assert.deepEqual(await call('DescribeVolumeAttribute', { VolumeId: vol, Attribute: 'autoEnableIO' }), { VolumeId: vol, AutoEnableIO: { Value: false } });
    await call('ModifyVolumeAttribute', { VolumeId: vol, AutoEnableIO: { Value: true } });
    assert.deepEqual(await call('DescribeVolumeAttribute', { VolumeId: vol, Attribute: 'autoEnableIO' }), { VolumeId: vol, AutoEnableIO: { Value: true } });
    assert.deepEqual(await call('DescribeVolumeAttribute', { VolumeId: vol, Attribute: 'productCodes' }), { VolumeId: vol, ProductCodes: [] });
    await expectEc2Error(call('DescribeVolumeAttribute', { VolumeId: vol, Attribute: 'size' }), 'InvalidParameterValue');
  });

  it('DeleteVolume answers at once; the storage removes it and the volume is gone', async () => {
    const vol = await create();
    await pass();
    await call('CreateTags', { Resources: [vol], Tags: [{ Key: 'k', Value: 'v' }] });
    await call('DeleteVolume', { VolumeId: vol });
    assert.equal((await volume(vol)).State, 'deleting');
    assert.ok(await backend.info(vol), 'the API does not wait for the storage');
    await pass();
    assert.equal(await backend.info(vol), undefined);
    await expectEc2Error(call('DescribeVolumes', { VolumeIds: [vol] }), 'InvalidVolume.NotFound');
    await expectEc2Error(call('DeleteVolume', { VolumeId: vol }), 'InvalidVolume.NotFound');
    await expectEc2Error(call('CreateTags', { Resources: [vol], Tags: [{ Key: 'k', Value: 'v' }] }), 'InvalidVolume.NotFound');
  });
});
