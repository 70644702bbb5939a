// Instances through their operation handlers and an in-memory cluster: RunInstances' checks,
// addresses, ClientToken, capacity fallback and quotas (instances, cores, memory; also at
// StartInstances); Describe* with filters and paging; state changes with EC2's codes and errors;
// attributes; account isolation; the reconciler; the instance-initiated shutdown behavior (also
// through a real cluster controller and node agent on the fake driver); and DescribeInstances over
// 10,000 instances. The quota and shutdown-behavior suites run on every store back-end.
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '../../src/store/store.ts';
import type { InstancesTable } from '../../src/store/schema.ts';
import { createAccountWithDefaults, ensureZone } from '../../src/cloud/provision.ts';
import { seedVmTypes } from '../../src/cloud/vm-types.ts';
import { registerImageFiles, type RegisteredImage } from '../../src/cloud/images/images.ts';
import { instanceOperations } from '../../src/cloud/instances.ts';
import { InstanceReconciler } from '../../src/cloud/instance-reconciler.ts';
import { ComputeDirectory } from '../../src/cloud/compute-directory.ts';
import { securityGroupOperations } from '../../src/cloud/security-groups.ts';
import { taggingOperations } from '../../src/cloud/tagging.ts';
import { quotaSettingKey } from '../../src/cloud/quotas.ts';
import { macForInstance } from '../../src/cloud/ip-allocation.ts';
import type { OperationTable } from '../../src/cloud/context.ts';
import type { InstanceSpec } from '../../src/node/node-api.ts';
import { ClusterController } from '../../src/cluster/cluster-controller.ts';
import { NodeAgent } from '../../src/node/node-agent.ts';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { ImageCache } from '../../src/node/image-cache.ts';
import { FakeCluster } from '../helpers/fake-cluster.ts';
import { storeBackends, type StoreBackend } from '../helpers/stores.ts';
import { REGION, callOperation, contextFor, expectEc2Error } from '../helpers/handler-context.ts';
import { GatedNode } from '../helpers/gated-node.ts';
import type { ClusterApi } from '../../src/cluster/cluster-api.ts';
import type { InstanceUpdate } from '../../src/node/node-api.ts';

const ZONE_A = 'ironbark-1a';
const ZONE_B = 'ironbark-1b';
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const quiet = { info() {}, warn() {}, error() {} };
const PUBLIC_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7fV1GmUq5zBvH2kq3m2b3yTQ0v3h2e5Z1oJ0m3eY7Q mykey';

interface World {
  store: Store;
  A: string;
  B: string;
  image: RegisteredImage;
  clusterA: FakeCluster;
  clusterB: FakeCluster;
  directory: ComputeDirectory;
  ops: OperationTable;
  reconciler: InstanceReconciler;
  call(account: string, action: string, input?: object): Promise<any>;
  row(id: string): Promise<InstancesTable | undefined>;
  launch(input?: object, account?: string): Promise<any>;
  /** Closes the store (and drops a PostgreSQL test database). */
  close(): Promise<void>;
}

async function makeWorld(opts: { statusInitializingMs?: number; resendAfterMs?: number; retentionMs?: number; zoneDownAfterMs?: number; backend?: StoreBackend } = {}): Promise<World> {
  const { store, dispose } = opts.backend ? await opts.backend.open() : await openStore({ url: ':memory:' }).then((st) => ({ store: st, dispose: () => st.close() }));
  await ensureZone(store, { name: ZONE_A, cidr: '10.1.0.0/16', region: REGION });
  await ensureZone(store, { name: ZONE_B, cidr: '10.2.0.0/16', region: REGION });
  await seedVmTypes(store.db);
  const A = (await createAccountWithDefaults(store, 'alpha')).account.id;
  const B = (await createAccountWithDefaults(store, 'beta')).account.id;
  const image = await registerImageFiles(store, {
    name: 'ironbark-default', description: 'default guest', ownerAccountId: A, public: true, kernelCmdline: 'console=ttyS0',
    kernel: { path: '/img/vmlinuz', sha256: sha('k'), sizeBytes: 10 },
    ramdisk: { path: '/img/initrd', sha256: sha('r'), sizeBytes: 20 },
    rootfs: { path: '/img/rootfs.qcow2', sha256: sha('root'), sizeBytes: 30, format: 'qcow2' },
  });
  await store.db.insertInto('key_pairs').values({
    id: 'key-0123456789abcdef0', account_id: A, name: 'mykey', key_type: 'ed25519', fingerprint: 'x', public_key: PUBLIC_KEY,
    created_at: new Date().toISOString(),
  }).execute();
  const clusterA = new FakeCluster(ZONE_A);
  const clusterB = new FakeCluster(ZONE_B);
  const directory = new ComputeDirectory();
  directory.register(clusterA);
  directory.register(clusterB);
  const ops = {
    ...instanceOperations({ directory, imageUrl: (id) => `http://cluster/images/${id}`, statusInitializingMs: opts.statusInitializingMs ?? 0, log: quiet }),
    ...securityGroupOperations, ...taggingOperations,
  };
  const reconciler = new InstanceReconciler({
    store, directory, log: quiet, resendAfterMs: opts.resendAfterMs, terminatedRetentionMs: opts.retentionMs, zoneDownAfterMs: opts.zoneDownAfterMs,
  });
  const call = (account: string, action: string, input: object = {}) => callOperation(contextFor(store, account), ops, action, input);
  return {
    store, A, B, image, clusterA, clusterB, directory, ops, reconciler, call, close: dispose,
    row: (id) => store.db.selectFrom('instances').selectAll().where('id', '=', id).executeTakeFirst(),
    launch: (input = {}, account = A) => call(account, 'RunInstances', { ImageId: image.imageId, MinCount: 1, MaxCount: 1, Placement: { AvailabilityZone: ZONE_A }, ...input }),
  };
}

const idsOf = (reservation: any): string[] => reservation.Instances.map((i: any) => i.InstanceId);
const allIds = (out: any): string[] => out.Reservations.flatMap(idsOf).sort();
const stateChange = (id: string, previous: [number, string], current: [number, string]) => ({
  InstanceId: id, PreviousState: { Code: previous[0], Name: previous[1] }, CurrentState: { Code: current[0], Name: current[1] },
});

describe('RunInstances', () => {
  let w: World;
  beforeEach(async () => { w = await makeWorld(); });
  afterEach(async () => w.store.close());

  it('launches one instance with everything EC2 reports, and hands the cluster a full spec', async () => {
    const groupA = (await w.call(w.A, 'DescribeSecurityGroups', { GroupNames: ['default'] })).SecurityGroups[0];
    const userData = Buffer.from('#!/bin/sh\necho hi\n').toString('base64');
    const out = await w.launch({ KeyName: 'mykey', UserData: userData, TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'Name', Value: 'web' }] }] });
    assert.match(out.ReservationId, /^r-[0-9a-f]{17}$/);
    assert.equal(out.OwnerId, w.A);
    assert.deepEqual(out.Groups, []);
    assert.equal(out.Instances.length, 1);
    const i = out.Instances[0];
    assert.match(i.InstanceId, /^i-[0-9a-f]{17}$/);
    const subnet = await w.store.db.selectFrom('subnets').selectAll().where('account_id', '=', w.A).where('zone', '=', ZONE_A).executeTakeFirstOrThrow();
    const mac = macForInstance(i.InstanceId);
    const groups = [{ GroupName: 'default', GroupId: groupA.GroupId }];
    assert.deepEqual({ ...i, LaunchTime: undefined, NetworkInterfaces: undefined }, {
      AmiLaunchIndex: 0, ImageId: w.image.imageId, InstanceId: i.InstanceId, InstanceType: 'm1.small',
      KernelId: w.image.kernelId, RamdiskId: w.image.ramdiskId, KeyName: 'mykey', LaunchTime: undefined,
      Monitoring: { State: 'disabled' }, Placement: { AvailabilityZone: ZONE_A, GroupName: '', Tenancy: 'default' },
      PrivateDnsName: 'ip-10-1-0-4.ironbark-1.compute.internal', PrivateIpAddress: '10.1.0.4', ProductCodes: [], PublicDnsName: '',
      State: { Code: 0, Name: 'pending' }, StateTransitionReason: '', SubnetId: subnet.id, VpcId: subnet.vpc_id,
      Architecture: 'x86_64', BlockDeviceMappings: [], ClientToken: '', EbsOptimized: false, EnaSupport: false, Hypervisor: 'kvm',
      NetworkInterfaces: undefined, RootDeviceName: '/dev/vda', RootDeviceType: 'instance-store', SecurityGroups: groups,
      SourceDestCheck: true, StateReason: { Code: 'pending', Message: 'pending' }, Tags: [{ Key: 'Name', Value: 'web' }],
      VirtualizationType: 'paravirtual', CpuOptions: { CoreCount: 1, ThreadsPerCore: 1 }, HibernationOptions: { Configured: false },
      MetadataOptions: { State: 'applied', HttpTokens: 'optional', HttpPutResponseHopLimit: 1, HttpEndpoint: 'enabled', HttpProtocolIpv6: 'disabled', InstanceMetadataTags: 'disabled' },
      EnclaveOptions: { Enabled: false }, PlatformDetails: 'Linux/UNIX', UsageOperation: 'RunInstances',
      PrivateDnsNameOptions: { HostnameType: 'ip-name', EnableResourceNameDnsARecord: false, EnableResourceNameDnsAAAARecord: false },
      MaintenanceOptions: { AutoRecovery: 'disabled' },
    });
    assert.ok(i.LaunchTime instanceof Date && Date.now() - i.LaunchTime.getTime() < 60_000);
    assert.equal(i.NetworkInterfaces.length, 1);
    assert.equal(i.NetworkInterfaces[0].MacAddress, mac);
    assert.equal(i.NetworkInterfaces[0].PrivateIpAddress, '10.1.0.4');
    assert.match(i.NetworkInterfaces[0].NetworkInterfaceId, /^eni-[0-9a-f]{17}$/);

    const specs = w.clusterA.callsTo('runInstances')[0]![0] as InstanceSpec[];
    assert.equal(specs.length, 1);
    const spec = specs[0]!;
    assert.deepEqual({ ...spec, launchTime: undefined }, {
      instanceId: i.InstanceId, reservationId: out.ReservationId, accountId: w.A, imageId: w.image.imageId,
      kernel: { id: w.image.kernelId, url: `http://cluster/images/${w.image.kernelId}`, sha256: sha('k'), sizeBytes: 10, format: 'raw' },
      ramdisk: { id: w.image.ramdiskId, url: `http://cluster/images/${w.image.ramdiskId}`, sha256: sha('r'), sizeBytes: 20, format: 'raw' },
      root: { id: w.image.imageId, url: `http://cluster/images/${w.image.imageId}`, sha256: sha('root'), sizeBytes: 30, format: 'qcow2' },
      kernelCmdline: 'console=ttyS0', vmType: { name: 'm1.small', cores: 1, memoryMiB: 256, diskGiB: 5 },
      zone: ZONE_A, region: REGION, subnetCidr: '10.1.0.0/16', subnetId: subnet.id, vpcId: subnet.vpc_id,
      privateIp: '10.1.0.4', privateDnsName: 'ip-10-1-0-4.ironbark-1.compute.internal', mac, userData,
      publicKeys: [{ name: 'mykey', openssh: PUBLIC_KEY }], securityGroups: [{ id: groupA.GroupId, name: 'default' }],
      launchIndex: 0, launchTime: undefined,
    });
    assert.equal(w.clusterB.callsTo('runInstances').length, 0);
    const row = await w.row(i.InstanceId);
    assert.equal(row!.node_id, `node-${ZONE_A}`);
    assert.equal(row!.state, 'pending');
  });

  it('launches MaxCount instances in one reservation with consecutive addresses', async () => {
    const out = await w.launch({ MinCount: 2, MaxCount: 3, InstanceType: 't2.micro', TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'k', Value: 'v' }] }] });
    assert.equal(out.Instances.length, 3);
    assert.deepEqual(out.Instances.map((i: any) => [i.AmiLaunchIndex, i.PrivateIpAddress, i.InstanceType]),
      [[0, '10.1.0.4', 't2.micro'], [1, '10.1.0.5', 't2.micro'], [2, '10.1.0.6', 't2.micro']]);
    assert.ok(out.Instances.every((i: any) => i.Tags.length === 1));
    assert.equal(new Set(out.Instances.map((i: any) => i.NetworkInterfaces[0].MacAddress)).size, 3);
    const again = await w.launch();
    assert.equal(again.Instances[0].PrivateIpAddress, '10.1.0.7');
  });

  it('honours SecurityGroups, SecurityGroupIds, SubnetId, PrivateIpAddress, KernelId and DisableApiTermination', async () => {
    const web = (await w.call(w.A, 'CreateSecurityGroup', { GroupName: 'web', Description: 'web' })).GroupId;
    const byName = await w.launch({ SecurityGroups: ['web', 'default'] });
    assert.deepEqual(byName.Instances[0].SecurityGroups.map((g: any) => g.GroupName).sort(), ['default', 'web']);
    const subnetB = await w.store.db.selectFrom('subnets').selectAll().where('account_id', '=', w.A).where('zone', '=', ZONE_B).executeTakeFirstOrThrow();
    const inSubnet = await w.call(w.A, 'RunInstances', {
      ImageId: w.image.imageId, MinCount: 1, MaxCount: 1, SubnetId: subnetB.id, SecurityGroupIds: [web], PrivateIpAddress: '10.2.3.4',
      KernelId: w.image.kernelId, DisableApiTermination: true,
    });
    const i = inSubnet.Instances[0];
    assert.deepEqual([i.Placement.AvailabilityZone, i.SubnetId, i.PrivateIpAddress, i.SecurityGroups], [ZONE_B, subnetB.id, '10.2.3.4', [{ GroupName: 'web', GroupId: web }]]);
    assert.equal((await w.row(i.InstanceId))!.disable_api_termination, 1);
    assert.equal(w.clusterB.callsTo('runInstances').length, 1);
    await expectEc2Error(w.call(w.A, 'RunInstances', { ImageId: w.image.imageId, MinCount: 1, MaxCount: 1, SubnetId: subnetB.id, PrivateIpAddress: '10.2.3.4' }),
      'InvalidIPAddress.InUse', 'Address 10.2.3.4 is in use.');
  });

  it('refuses bad requests with EC2 errors and writes nothing', async () => {
    const img = w.image.imageId;
    const subnetB = await w.store.db.selectFrom('subnets').select('id').where('account_id', '=', w.A).where('zone', '=', ZONE_B).executeTakeFirstOrThrow();
    const cases: [object, string, string | RegExp | undefined][] = [
      [{ ImageId: undefined }, 'MissingParameter', undefined],
      [{ ImageId: 'ami-nothex' }, 'InvalidAMIID.Malformed', 'Invalid id: "ami-nothex" (expecting "ami-...")'],
      [{ ImageId: 'ami-00000000' }, 'InvalidAMIID.NotFound', "The image id '[ami-00000000]' does not exist"],
      [{ ImageId: w.image.kernelId }, 'InvalidAMIID.NotFound', `The image id '[${w.image.kernelId}]' does not exist`],
      [{ KernelId: w.image.ramdiskId }, 'InvalidAMIID.NotFound', `The image id '[${w.image.ramdiskId}]' does not exist`],
      [{ RamdiskId: w.image.kernelId }, 'InvalidAMIID.NotFound', undefined],
      [{ MinCount: 0 }, 'InvalidParameterValue', /minCount/],
      [{ MinCount: 3, MaxCount: 2 }, 'InvalidParameterValue', /maxCount/],
      [{ InstanceType: 'x9.huge' }, 'InvalidParameterValue', "Invalid value 'x9.huge' for InstanceType."],
      [{ KeyName: 'nokey' }, 'InvalidKeyPair.NotFound', "The key pair 'nokey' does not exist"],
      [{ SecurityGroups: ['nogroup'] }, 'InvalidGroup.NotFound', /nogroup/],
      [{ SecurityGroupIds: ['sg-00000000'] }, 'InvalidGroup.NotFound', /sg-00000000/],
      [{ SecurityGroups: ['default'], SubnetId: subnetB.id, Placement: undefined }, 'InvalidParameterCombination', 'The parameter groupName cannot be used with the parameter subnet'],
      [{ SubnetId: 'subnet-zz' }, 'InvalidSubnetID.Malformed', undefined],
      [{ SubnetId: 'subnet-00000000', Placement: undefined }, 'InvalidSubnetID.NotFound', "The subnet ID 'subnet-00000000' does not exist"],
      [{ SubnetId: subnetB.id }, 'InvalidParameterValue', /is in the availability zone ironbark-1b/],
      [{ UserData: Buffer.alloc(16 * 1024 + 1).toString('base64') }, 'InvalidParameterValue', 'User data is limited to 16384 bytes'],
      [{ UserData: 'not base64!' }, 'InvalidParameterValue', 'Invalid BASE64 encoding of user data.'],
      [{ Placement: { AvailabilityZone: 'mars-1a' } }, 'InvalidParameterValue', 'Invalid availability zone: [mars-1a]'],
      [{ TagSpecifications: [{ ResourceType: 'snapshot', Tags: [{ Key: 'a', Value: 'b' }] }] }, 'InvalidParameterValue', /snapshot/],
      [{ PrivateIpAddress: '10.1.0.9', MaxCount: 2 }, 'InvalidParameterCombination', undefined],
      [{ SubnetId: subnetB.id, Placement: undefined, PrivateIpAddress: '10.2.0.1' }, 'InvalidParameterValue', /does not fall within/],
      [{ ClientToken: 'x'.repeat(65) }, 'InvalidParameterValue', undefined],
    ];
    for (const [input, code, message] of cases) await expectEc2Error(w.launch({ ImageId: img, ...input }), code, message);
    await expectEc2Error(w.launch({}, w.B).then(() => w.call(w.B, 'RunInstances', { ImageId: img, MinCount: 1, MaxCount: 1, KeyName: 'mykey' })),
      'InvalidKeyPair.NotFound');
    const rows = await w.store.db.selectFrom('instances').select('id').where('account_id', '=', w.A).execute();
    assert.equal(rows.length, 0);
    assert.equal(w.clusterA.callsTo('runInstances').length + w.clusterB.callsTo('runInstances').length, 1);
  });

  it('falls back from MaxCount towards MinCount when the zone is short of capacity', async () => {
    w.clusterA.capacity = 2;
    const out = await w.launch({ MinCount: 1, MaxCount: 5 });
    assert.equal(out.Instances.length, 2);
    assert.deepEqual(out.Instances.map((i: any) => i.PrivateIpAddress), ['10.1.0.4', '10.1.0.5']);
    const runs = w.clusterA.callsTo('runInstances').map(([specs]) => (specs as InstanceSpec[]).length);
    assert.deepEqual(runs, [5, 2], 'tries all, then as many as the nodes report room for');
    assert.equal((await w.store.db.selectFrom('instances').select('id').execute()).length, 2);
    // Nothing fits any more: MinCount cannot be met, so nothing is left behind.
    await expectEc2Error(w.launch({ MinCount: 1, MaxCount: 3 }), 'InsufficientInstanceCapacity');
    assert.equal((await w.store.db.selectFrom('instances').select('id').execute()).length, 2);
    assert.equal((await w.call(w.A, 'DescribeInstances')).Reservations.length, 1);
  });

  it('a cluster that fails leaves nothing; without a zone the launch moves to another zone', async () => {
    w.clusterA.unreachable = true;
    await expectEc2Error(w.launch(), 'InsufficientInstanceCapacity', /ironbark-1a/);
    assert.equal((await w.store.db.selectFrom('instances').select('id').execute()).length, 0);
    const out = await w.launch({ Placement: undefined });
    assert.equal(out.Instances[0].Placement.AvailabilityZone, ZONE_B);
    assert.equal(out.Instances[0].PrivateIpAddress, '10.2.0.4');
    w.clusterB.capacity = 0;
    await expectEc2Error(w.launch({ Placement: undefined }), 'InsufficientInstanceCapacity');
    w.directory.unregister(ZONE_A);
    w.directory.unregister(ZONE_B);
    await expectEc2Error(w.launch({ Placement: undefined }), 'InsufficientInstanceCapacity');
  });

  it('spreads launches without a zone over the connected zones in turn', async () => {
    const zones = [];
    for (let n = 0; n < 4; n++) zones.push((await w.launch({ Placement: undefined })).Instances[0].Placement.AvailabilityZone);
    assert.deepEqual(zones.sort(), [ZONE_A, ZONE_A, ZONE_B, ZONE_B]);
  });

  it('ClientToken: the same request returns the same reservation; a different one is refused', async () => {
    const first = await w.launch({ ClientToken: 'tok-1', MaxCount: 2 });
    const again = await w.launch({ ClientToken: 'tok-1', MaxCount: 2 });
    assert.equal(again.ReservationId, first.ReservationId);
    assert.deepEqual(idsOf(again), idsOf(first));
    assert.equal(again.Instances[0].ClientToken, 'tok-1');
    assert.equal(w.clusterA.callsTo('runInstances').length, 1);
    await expectEc2Error(w.launch({ ClientToken: 'tok-1', MaxCount: 3 }), 'IdempotentParameterMismatch');
    // Tokens are per account.
    const other = await w.launch({ ClientToken: 'tok-1', MaxCount: 2 }, w.B);
    assert.notEqual(other.ReservationId, first.ReservationId);
    // A launch that failed leaves no token behind: the retry launches.
    w.clusterA.unreachable = true;
    await expectEc2Error(w.launch({ ClientToken: 'tok-2' }), 'InsufficientInstanceCapacity');
    w.clusterA.unreachable = false;
    assert.equal((await w.launch({ ClientToken: 'tok-2' })).Instances.length, 1);
  });

  it('enforces the per-account instance quota, counting only instances not terminated', async () => {
    await w.store.db.insertInto('settings').values({ key: quotaSettingKey(w.A, 'max-instances'), value: '3' }).execute();
    const two = await w.launch({ MinCount: 2, MaxCount: 2 });
    const capped = await w.launch({ MinCount: 1, MaxCount: 5 });
    assert.equal(capped.Instances.length, 1);
    await expectEc2Error(w.launch(), 'InstanceLimitExceeded', 'Your quota allows for 0 more running instance(s). You requested at least 1');
    await expectEc2Error(w.launch({}, w.B).then(() => w.launch({ MinCount: 20, MaxCount: 20 }, w.B)), 'InstanceLimitExceeded',
      'Your quota allows for 19 more running instance(s). You requested at least 20');
    await w.call(w.A, 'TerminateInstances', { InstanceIds: [idsOf(two)[0]] });
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    assert.equal((await w.launch()).Instances.length, 1);
  });
});

// The quotas and the shutdown behavior run on every store back-end: the quota check locks the
// account's row on PostgreSQL, and the reconciler reads back which rows a guest power-off moved.
for (const backend of storeBackends()) describe(`quotas on ${backend.name}`, () => {
  let w: World;
  beforeEach(async () => { w = await makeWorld({ backend }); });
  afterEach(async () => w.close());

  const setQuota = (account: string, name: 'max-instances' | 'max-cores' | 'max-memory-mib', value: number) =>
    w.store.db.insertInto('settings').values({ key: quotaSettingKey(account, name), value: String(value) }).execute();
  const rowsOf = (account: string) => w.store.db.selectFrom('instances').select(['id', 'state']).where('account_id', '=', account).execute();
  const untouched = async (account: string, before: { id: string; state: string }[], runCalls: number) => {
    assert.deepEqual(await rowsOf(account), before, 'no instance row written or changed');
    assert.equal(w.clusterA.callsTo('runInstances').length, runCalls, 'the cluster was not asked');
    assert.equal((await w.store.db.selectFrom('tags').select('key').where('account_id', '=', account).where('resource_type', '=', 'instance').execute()).length, before.length);
  };
  const tagged = { TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'Name', Value: 'x' }] }] };

  it('max-cores refuses a launch whose MinCount does not fit with VcpuLimitExceeded, and launches fewer up to MaxCount when it does', async () => {
    await setQuota(w.A, 'max-cores', 3);
    await expectEc2Error(w.launch({ InstanceType: 'c1.medium', MinCount: 2, MaxCount: 2, ...tagged }), 'VcpuLimitExceeded',
      /^You have requested more vCPU capacity than your current vCPU limit of 3 allows for the instance bucket that the specified instance type belongs to\. 0 vCPUs are in use and the request needs 4 more/);
    await untouched(w.A, [], 0);
    // 2 cores each: one of the three fits.
    const capped = await w.launch({ InstanceType: 'c1.medium', MinCount: 1, MaxCount: 3, ...tagged });
    assert.equal(capped.Instances.length, 1);
    const one = await w.launch({ MinCount: 1, MaxCount: 5, ...tagged });
    assert.equal(one.Instances.length, 1, 'm1.small takes the last core');
    const before = await rowsOf(w.A);
    await expectEc2Error(w.launch(tagged), 'VcpuLimitExceeded', /vCPU limit of 3 .* 3 vCPUs are in use and the request needs 1 more/);
    await untouched(w.A, before, 2);
    // The other account has no such limit.
    assert.equal((await w.launch({ InstanceType: 'c1.medium', MinCount: 4, MaxCount: 4 }, w.B)).Instances.length, 4);
  });

  it('max-memory-mib refuses with InstanceLimitExceeded naming the limit in MiB', async () => {
    await setQuota(w.A, 'max-memory-mib', 1000);
    await expectEc2Error(w.launch({ InstanceType: 't2.micro', ...tagged }), 'InstanceLimitExceeded',
      /^You have requested more memory than your current memory limit of 1000 MiB allows\. 0 MiB are in use and the request needs 1024 MiB more/);
    await untouched(w.A, [], 0);
    // m1.small has 256 MiB: three fit in 1000.
    assert.equal((await w.launch({ MinCount: 2, MaxCount: 10 })).Instances.length, 3);
    await expectEc2Error(w.launch(), 'InstanceLimitExceeded', /memory limit of 1000 MiB .* 768 MiB are in use and the request needs 256 MiB more/);
  });

  it('the tightest quota decides how many of MinCount..MaxCount launch; stopped instances count as instances, not as cores', async () => {
    await setQuota(w.A, 'max-instances', 5);
    await setQuota(w.A, 'max-cores', 4);
    await setQuota(w.A, 'max-memory-mib', 4096);
    const four = idsOf(await w.launch({ MinCount: 2, MaxCount: 8 }));
    assert.equal(four.length, 4, 'the cores allow four m1.small (the instances five)');
    await expectEc2Error(w.launch(), 'VcpuLimitExceeded');
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    await w.call(w.A, 'StopInstances', { InstanceIds: four.slice(0, 2) });
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    // Two stopped: 4 instances, 2 cores, 512 MiB count.
    await expectEc2Error(w.launch({ MinCount: 2, MaxCount: 2 }), 'InstanceLimitExceeded', 'Your quota allows for 1 more running instance(s). You requested at least 2');
    assert.equal((await w.launch({ InstanceType: 'c1.xlarge', MinCount: 1, MaxCount: 3 })).Instances.length, 1);
    await expectEc2Error(w.launch(), 'InstanceLimitExceeded', 'Your quota allows for 0 more running instance(s). You requested at least 1');
  });

  it('StartInstances needs room for the cores and memory again, with the type the instance has now; a refusal starts none', async () => {
    await setQuota(w.A, 'max-cores', 3);
    const [big, small] = [idsOf(await w.launch({ InstanceType: 'c1.medium' }))[0]!, idsOf(await w.launch())[0]!];
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    await w.call(w.A, 'StopInstances', { InstanceIds: [big, small] });
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    // The stopped ones hold no cores: another c1.medium launches.
    const other = idsOf(await w.launch({ InstanceType: 'c1.medium' }))[0]!;
    await expectEc2Error(w.call(w.A, 'StartInstances', { InstanceIds: [small, big] }), 'VcpuLimitExceeded',
      /vCPU limit of 3 .* 2 vCPUs are in use and the request needs 3 more/);
    assert.deepEqual([(await w.row(big))!.state, (await w.row(small))!.state], ['stopped', 'stopped']);
    assert.deepEqual(w.clusterA.callsTo('startInstance'), []);
    await expectEc2Error(w.call(w.A, 'StartInstances', { InstanceIds: [big] }), 'VcpuLimitExceeded');
    // Changing the type of a stopped instance is not checked; starting it is, with the new type.
    await w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: big, InstanceType: { Value: 'm1.xlarge' } });
    await expectEc2Error(w.call(w.A, 'StartInstances', { InstanceIds: [big] }), 'VcpuLimitExceeded');
    await w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: big, InstanceType: { Value: 't2.micro' } });
    const started = await w.call(w.A, 'StartInstances', { InstanceIds: [big, other] });
    assert.deepEqual(started.StartingInstances.map((s: any) => s.CurrentState.Name), ['pending', 'pending']);
    assert.deepEqual(w.clusterA.callsTo('startInstance'), [[big]], 'only the stopped one is started');
    // 3 cores in use now: nothing more starts or launches.
    await expectEc2Error(w.call(w.A, 'StartInstances', { InstanceIds: [small] }), 'VcpuLimitExceeded');
    await expectEc2Error(w.launch(), 'VcpuLimitExceeded');
  });

  it('concurrent launches together never pass a quota', async () => {
    await setQuota(w.A, 'max-instances', 2);
    // In different zones, so the addresses they pick do not make them wait for each other.
    const results = await Promise.allSettled([ZONE_A, ZONE_B, ZONE_A, ZONE_B].map((zone) => w.launch({ Placement: { AvailabilityZone: zone } })));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 2);
    for (const r of results) if (r.status === 'rejected') assert.equal(r.reason.code, 'InstanceLimitExceeded');
    assert.equal((await rowsOf(w.A)).length, 2);
  });

  it('a limit lowered below what is in use refuses new work but not calls that add nothing', async () => {
    const id = idsOf(await w.launch({ InstanceType: 'c1.medium' }))[0]!;
    await setQuota(w.A, 'max-cores', 1);
    await expectEc2Error(w.launch(), 'VcpuLimitExceeded');
    assert.deepEqual((await w.call(w.A, 'StartInstances', { InstanceIds: [id] })).StartingInstances[0].CurrentState.Name, 'pending');
  });
});

describe('DescribeInstances', () => {
  let w: World;
  let web: string;
  let first: any;
  let second: any;
  beforeEach(async () => {
    w = await makeWorld();
    web = (await w.call(w.A, 'CreateSecurityGroup', { GroupName: 'web', Description: 'web' })).GroupId;
    first = await w.launch({ MaxCount: 2, KeyName: 'mykey', TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'Name', Value: 'one' }] }] });
    second = await w.launch({ Placement: { AvailabilityZone: ZONE_B }, InstanceType: 't2.small', SecurityGroupIds: [web] });
  });
  afterEach(async () => w.store.close());

  it('lists the account\'s instances grouped into reservations', async () => {
    const out = await w.call(w.A, 'DescribeInstances');
    assert.deepEqual(out.Reservations.map((r: any) => [r.ReservationId, r.Instances.length]),
      [[first.ReservationId, 2], [second.ReservationId, 1]]);
    assert.equal(out.NextToken, undefined);
    const byId = await w.call(w.A, 'DescribeInstances', { InstanceIds: [idsOf(second)[0], idsOf(first)[1]] });
    assert.deepEqual(allIds(byId), [idsOf(second)[0], idsOf(first)[1]].sort());
  });

  it('answers EC2 errors for unknown, malformed and foreign ids', async () => {
    await expectEc2Error(w.call(w.A, 'DescribeInstances', { InstanceIds: ['i-00000000'] }), 'InvalidInstanceID.NotFound', "The instance ID 'i-00000000' does not exist");
    await expectEc2Error(w.call(w.A, 'DescribeInstances', { InstanceIds: ['i-00000000', 'i-11111111'] }), 'InvalidInstanceID.NotFound', "The instance IDs 'i-00000000, i-11111111' do not exist");
    await expectEc2Error(w.call(w.A, 'DescribeInstances', { InstanceIds: ['i-xyz'] }), 'InvalidInstanceID.Malformed', 'Invalid id: "i-xyz"');
    await expectEc2Error(w.call(w.B, 'DescribeInstances', { InstanceIds: [idsOf(first)[0]] }), 'InvalidInstanceID.NotFound');
    assert.deepEqual((await w.call(w.B, 'DescribeInstances')).Reservations, []);
    await expectEc2Error(w.call(w.A, 'DescribeInstances', { InstanceIds: [idsOf(first)[0]], MaxResults: 5 }), 'InvalidParameterCombination');
    await expectEc2Error(w.call(w.A, 'DescribeInstances', { MaxResults: 4 }), 'InvalidParameterValue');
  });

  it('filters on every supported field', async () => {
    const [a0, a1] = idsOf(first);
    const [b0] = idsOf(second);
    const launch = first.Instances[0].LaunchTime.toISOString();
    const filter = async (Name: string, ...Values: string[]) => allIds(await w.call(w.A, 'DescribeInstances', { Filters: [{ Name, Values }] }));
    const all = [a0, a1, b0].sort();
    const expectations: [string, string[], string[]][] = [
      ['instance-id', [a0!], [a0!]],
      ['instance-state-name', ['pending'], all],
      ['instance-state-code', ['16'], []],
      ['instance-type', ['t2.small'], [b0!]],
      ['image-id', [w.image.imageId], all],
      ['availability-zone', [ZONE_A], [a0!, a1!].sort()],
      ['private-ip-address', ['10.1.0.5'], [a1!]],
      ['private-ip-address', ['10.2.*'], [b0!]],
      ['ip-address', ['*'], []],
      ['private-dns-name', ['ip-10-2-0-4.ironbark-1.compute.internal'], [b0!]],
      ['key-name', ['mykey'], [a0!, a1!].sort()],
      ['reservation-id', [second.ReservationId], [b0!]],
      ['subnet-id', [second.Instances[0].SubnetId], [b0!]],
      ['vpc-id', [second.Instances[0].VpcId], all],
      ['instance.group-id', [web], [b0!]],
      ['instance.group-name', ['default'], [a0!, a1!].sort()],
      ['group-id', [web], [b0!]],
      ['group-name', ['web'], [b0!]],
      ['owner-id', [w.A], all],
      ['launch-time', [launch], [a0!, a1!].sort()],
      ['tag:Name', ['one'], [a0!, a1!].sort()],
      ['tag-key', ['Name'], [a0!, a1!].sort()],
      ['network-interface.mac-address', [macForInstance(b0!)], [b0!]],
      ['architecture', ['x86_64'], all],
    ];
    for (const [name, values, expected] of expectations) assert.deepEqual(await filter(name, ...values), expected, name);
    await expectEc2Error(w.call(w.A, 'DescribeInstances', { Filters: [{ Name: 'bogus', Values: ['x'] }] }), 'InvalidParameterValue');
    // Filters are AND-ed, values OR-ed.
    const both = await w.call(w.A, 'DescribeInstances', { Filters: [{ Name: 'availability-zone', Values: [ZONE_A, ZONE_B] }, { Name: 'instance-type', Values: ['m1.small'] }] });
    assert.deepEqual(allIds(both), [a0!, a1!].sort());
  });

  it('pages with MaxResults and NextToken', async () => {
    for (let n = 0; n < 4; n++) await w.launch();
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const out = await w.call(w.A, 'DescribeInstances', { MaxResults: 5, NextToken: token });
      seen.push(...allIds(out));
      token = out.NextToken;
      pages++;
    } while (token);
    assert.equal(pages, 2);
    assert.deepEqual(seen.sort(), allIds(await w.call(w.A, 'DescribeInstances')));
  });
});

describe('instance lifecycle', () => {
  let w: World;
  beforeEach(async () => { w = await makeWorld(); });
  afterEach(async () => w.store.close());

  const stateOf = async (id: string) => (await w.call(w.A, 'DescribeInstances', { InstanceIds: [id] })).Reservations[0].Instances[0];

  it('runs, stops, starts, reboots and terminates with EC2 states and codes', async () => {
    const id = idsOf(await w.launch())[0]!;
    await expectEc2Error(w.call(w.A, 'StopInstances', { InstanceIds: [id] }), 'IncorrectInstanceState', `The instance '${id}' is not in a state from which it can be stopped.`);
    await expectEc2Error(w.call(w.A, 'RebootInstances', { InstanceIds: [id] }), 'IncorrectInstanceState');

    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    const running = await stateOf(id);
    assert.deepEqual(running.State, { Code: 16, Name: 'running' });
    assert.equal(running.StateReason, undefined);

    assert.deepEqual(await w.call(w.A, 'StartInstances', { InstanceIds: [id] }), { StartingInstances: [stateChange(id, [16, 'running'], [16, 'running'])] });
    assert.deepEqual(await w.call(w.A, 'RebootInstances', { InstanceIds: [id] }), {});
    assert.deepEqual(w.clusterA.callsTo('rebootInstance'), [[id]]);

    assert.deepEqual(await w.call(w.A, 'StopInstances', { InstanceIds: [id] }), { StoppingInstances: [stateChange(id, [16, 'running'], [64, 'stopping'])] });
    assert.deepEqual(w.clusterA.callsTo('stopInstance'), [[id, false]]);
    assert.deepEqual(await w.call(w.A, 'StopInstances', { InstanceIds: [id] }), { StoppingInstances: [stateChange(id, [64, 'stopping'], [64, 'stopping'])] });
    assert.equal(w.clusterA.callsTo('stopInstance').length, 1, 'a second stop is not forwarded');
    await w.call(w.A, 'StopInstances', { InstanceIds: [id], Force: true });
    assert.deepEqual(w.clusterA.callsTo('stopInstance')[1], [id, true], 'a forced stop is');
    await expectEc2Error(w.call(w.A, 'StartInstances', { InstanceIds: [id] }), 'IncorrectInstanceState', `The instance '${id}' is not in a state from which it can be started.`);

    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    const stopped = await stateOf(id);
    assert.deepEqual(stopped.State, { Code: 80, Name: 'stopped' });
    assert.deepEqual(stopped.StateReason, { Code: 'Client.UserInitiatedShutdown', Message: 'Client.UserInitiatedShutdown: User initiated shutdown' });
    assert.match(stopped.StateTransitionReason, /^User initiated \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d GMT\)$/);
    assert.equal(stopped.PrivateIpAddress, '10.1.0.4', 'a stopped instance keeps its address');
    assert.deepEqual(await w.call(w.A, 'StopInstances', { InstanceIds: [id] }), { StoppingInstances: [stateChange(id, [80, 'stopped'], [80, 'stopped'])] });

    assert.deepEqual(await w.call(w.A, 'StartInstances', { InstanceIds: [id] }), { StartingInstances: [stateChange(id, [80, 'stopped'], [0, 'pending'])] });
    assert.deepEqual(w.clusterA.callsTo('startInstance'), [[id]]);
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    assert.equal((await stateOf(id)).State.Name, 'running');

    assert.deepEqual(await w.call(w.A, 'TerminateInstances', { InstanceIds: [id] }), { TerminatingInstances: [stateChange(id, [16, 'running'], [32, 'shutting-down'])] });
    assert.deepEqual(w.clusterA.callsTo('terminateInstance'), [[id]]);
    await w.reconciler.reconcileOnce();
    assert.equal((await stateOf(id)).State.Name, 'shutting-down', 'stays shutting-down while the node still has it');
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    const gone = await stateOf(id);
    assert.deepEqual(gone.State, { Code: 48, Name: 'terminated' });
    assert.equal(gone.PrivateIpAddress, undefined);
    assert.deepEqual(gone.NetworkInterfaces, []);
    assert.equal((await w.row(id))!.private_ip, null);
    assert.deepEqual(await w.call(w.A, 'TerminateInstances', { InstanceIds: [id] }), { TerminatingInstances: [stateChange(id, [48, 'terminated'], [48, 'terminated'])] });
    assert.equal(w.clusterA.callsTo('terminateInstance').length, 1);
    for (const action of ['StartInstances', 'StopInstances', 'RebootInstances']) {
      await expectEc2Error(w.call(w.A, action, { InstanceIds: [id] }), 'IncorrectInstanceState');
    }
    // Its address is free again.
    assert.equal((await w.launch()).Instances[0].PrivateIpAddress, '10.1.0.4');
  });

  it('refuses to terminate a protected instance, and refuses the whole call', async () => {
    const [free, guarded] = [idsOf(await w.launch())[0]!, idsOf(await w.launch({ DisableApiTermination: true }))[0]!];
    await expectEc2Error(w.call(w.A, 'TerminateInstances', { InstanceIds: [free, guarded] }), 'OperationNotPermitted',
      `The instance '${guarded}' may not be terminated. Modify its 'disableApiTermination' instance attribute and try again.`);
    assert.equal((await w.row(free))!.state, 'pending');
    await w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: guarded, DisableApiTermination: { Value: false } });
    const out = await w.call(w.A, 'TerminateInstances', { InstanceIds: [free, guarded] });
    assert.deepEqual(out.TerminatingInstances.map((t: any) => t.CurrentState.Name), ['shutting-down', 'shutting-down']);
  });

  it('terminates a stopped instance', async () => {
    const id = idsOf(await w.launch())[0]!;
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    await w.call(w.A, 'StopInstances', { InstanceIds: [id] });
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    assert.deepEqual((await w.call(w.A, 'TerminateInstances', { InstanceIds: [id] })).TerminatingInstances, [stateChange(id, [80, 'stopped'], [32, 'shutting-down'])]);
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    assert.equal((await w.row(id))!.state, 'terminated');
  });

  it('state changes of unknown, malformed and foreign instances fail without changing anything', async () => {
    const id = idsOf(await w.launch())[0]!;
    for (const action of ['StartInstances', 'StopInstances', 'RebootInstances', 'TerminateInstances']) {
      await expectEc2Error(w.call(w.B, action, { InstanceIds: [id] }), 'InvalidInstanceID.NotFound', `The instance ID '${id}' does not exist`);
      await expectEc2Error(w.call(w.A, action, { InstanceIds: [id, 'i-00000000'] }), 'InvalidInstanceID.NotFound');
      await expectEc2Error(w.call(w.A, action, { InstanceIds: ['i-bad'] }), 'InvalidInstanceID.Malformed');
      await expectEc2Error(w.call(w.A, action, {}), 'MissingParameter');
    }
    assert.equal((await w.row(id))!.state, 'pending');
    await expectEc2Error(w.call(w.B, 'CreateTags', { Resources: [id], Tags: [{ Key: 'a', Value: 'b' }] }), 'InvalidInstanceID.NotFound');
    await w.call(w.A, 'CreateTags', { Resources: [id], Tags: [{ Key: 'a', Value: 'b' }] });
    assert.deepEqual((await stateOf(id)).Tags, [{ Key: 'a', Value: 'b' }]);
  });

  it('keeps the row when the cluster cannot be told, and the reconciler repeats the command', async () => {
    const w2 = await makeWorld({ resendAfterMs: 0 });
    try {
      const id = idsOf(await w2.launch())[0]!;
      w2.clusterA.progress();
      await w2.reconciler.reconcileOnce();
      w2.clusterA.unreachable = true;
      const out = await w2.call(w2.A, 'TerminateInstances', { InstanceIds: [id] });
      assert.equal(out.TerminatingInstances[0].CurrentState.Name, 'shutting-down');
      await w2.reconciler.reconcileOnce();
      assert.equal((await w2.row(id))!.state, 'shutting-down', 'an unreachable cluster changes nothing');
      w2.clusterA.unreachable = false;
      await w2.reconciler.reconcileOnce();
      assert.equal(w2.clusterA.callsTo('terminateInstance').length, 2, 'terminate sent again');
      w2.clusterA.progress();
      await w2.reconciler.reconcileOnce();
      assert.equal((await w2.row(id))!.state, 'terminated');
    } finally {
      await w2.store.close();
    }
  });
});

describe('DescribeInstanceStatus, console output and attributes', () => {
  let w: World;
  beforeEach(async () => { w = await makeWorld(); });
  afterEach(async () => w.store.close());

  it('reports status checks of running instances, impaired while their node is down', async () => {
    const [a, b] = idsOf(await w.launch({ MaxCount: 2 }));
    const pendingOnly = await w.call(w.A, 'DescribeInstanceStatus');
    assert.deepEqual(pendingOnly.InstanceStatuses, []);
    const all = await w.call(w.A, 'DescribeInstanceStatus', { IncludeAllInstances: true });
    assert.deepEqual(all.InstanceStatuses.map((s: any) => [s.InstanceState.Name, s.InstanceStatus.Status]), [['pending', 'not-applicable'], ['pending', 'not-applicable']]);
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    const ok = await w.call(w.A, 'DescribeInstanceStatus', { InstanceIds: [a] });
    assert.deepEqual(ok.InstanceStatuses, [{
      AvailabilityZone: ZONE_A, InstanceId: a, InstanceState: { Code: 16, Name: 'running' },
      InstanceStatus: { Status: 'ok', Details: [{ Name: 'reachability', Status: 'passed' }] },
      SystemStatus: { Status: 'ok', Details: [{ Name: 'reachability', Status: 'passed' }] }, Events: [],
    }]);
    w.clusterA.nodeDown = true;
    await w.reconciler.reconcileOnce();
    // The host is the problem: the system check fails; the guest cannot be observed meanwhile.
    const impaired = await w.call(w.A, 'DescribeInstanceStatus', { Filters: [{ Name: 'system-status.status', Values: ['impaired'] }] });
    assert.deepEqual(impaired.InstanceStatuses.map((s: any) => s.InstanceId).sort(), [a, b].sort());
    assert.deepEqual(impaired.InstanceStatuses[0].SystemStatus, { Status: 'impaired', Details: [{ Name: 'reachability', Status: 'failed' }] });
    assert.deepEqual(impaired.InstanceStatuses[0].InstanceStatus, { Status: 'insufficient-data', Details: [{ Name: 'reachability', Status: 'insufficient-data' }] });
    const byReachability = await w.call(w.A, 'DescribeInstanceStatus', { Filters: [{ Name: 'instance-status.reachability', Values: ['insufficient-data'] }] });
    assert.equal(byReachability.InstanceStatuses.length, 2);
    assert.equal((await w.row(a!))!.status_impaired, 1);
    w.clusterA.nodeDown = false;
    await w.reconciler.reconcileOnce();
    assert.equal((await w.row(a!))!.status_impaired, 0);
    const filtered = await w.call(w.A, 'DescribeInstanceStatus', { Filters: [{ Name: 'availability-zone', Values: [ZONE_B] }] });
    assert.deepEqual(filtered.InstanceStatuses, []);
    await expectEc2Error(w.call(w.A, 'DescribeInstanceStatus', { Filters: [{ Name: 'nope', Values: ['x'] }] }), 'InvalidParameterValue');
    await expectEc2Error(w.call(w.B, 'DescribeInstanceStatus', { InstanceIds: [a] }), 'InvalidInstanceID.NotFound');
  });

  it('reports a partitioned zone honestly: impaired after the grace, launches there refused at once, all well once it answers', async () => {
    const w2 = await makeWorld({ zoneDownAfterMs: 0 });
    try {
      const [a] = idsOf(await w2.launch());
      w2.clusterA.progress();
      await w2.reconciler.reconcileOnce();
      assert.equal((await w2.row(a!))!.state, 'running');
      w2.clusterA.unreachable = true;
      await w2.reconciler.reconcileOnce();
      const status = await w2.call(w2.A, 'DescribeInstanceStatus', { InstanceIds: [a] });
      assert.equal(status.InstanceStatuses[0].InstanceState.Name, 'running', 'its state is kept: nothing is known to have changed');
      assert.equal(status.InstanceStatuses[0].SystemStatus.Status, 'impaired');
      assert.equal(status.InstanceStatuses[0].InstanceStatus.Status, 'insufficient-data');
      const runsBefore = w2.clusterA.callsTo('runInstances').length;
      await expectEc2Error(w2.launch({ Placement: { AvailabilityZone: ZONE_A } }), 'InsufficientInstanceCapacity');
      assert.equal(w2.clusterA.callsTo('runInstances').length, runsBefore, 'the silent cluster was not asked');
      // A stop is recorded and answered at once, and reaches the cluster once it answers again.
      const stop = await w2.call(w2.A, 'StopInstances', { InstanceIds: [a] });
      assert.equal(stop.StoppingInstances[0].CurrentState.Name, 'stopping');
      w2.clusterA.unreachable = false;
      await w2.reconciler.reconcileOnce();
      assert.equal((await w2.row(a!))!.status_impaired, 0);
      assert.equal(idsOf(await w2.launch({ Placement: { AvailabilityZone: ZONE_A } })).length, 1, 'launches there work again');
    } finally {
      await w2.store.close();
    }
  });

  it('says initializing right after an instance starts running', async () => {
    const w2 = await makeWorld({ statusInitializingMs: 600_000 });
    try {
      const id = idsOf(await w2.launch())[0]!;
      w2.clusterA.progress();
      await w2.reconciler.reconcileOnce();
      const out = await w2.call(w2.A, 'DescribeInstanceStatus', { InstanceIds: [id] });
      assert.deepEqual(out.InstanceStatuses[0].InstanceStatus, { Status: 'initializing', Details: [{ Name: 'reachability', Status: 'initializing' }] });
    } finally {
      await w2.store.close();
    }
  });

  it('GetConsoleOutput returns the cluster\'s console text in base64', async () => {
    const id = idsOf(await w.launch())[0]!;
    w.clusterA.consoles.set(id, 'Linux version 6.1\nlogin: ');
    const out = await w.call(w.A, 'GetConsoleOutput', { InstanceId: id, Latest: true });
    assert.equal(out.InstanceId, id);
    assert.equal(Buffer.from(out.Output, 'base64').toString(), 'Linux version 6.1\nlogin: ');
    assert.ok(out.Timestamp instanceof Date);
    w.clusterA.unreachable = true;
    assert.equal((await w.call(w.A, 'GetConsoleOutput', { InstanceId: id })).Output, undefined);
    await expectEc2Error(w.call(w.B, 'GetConsoleOutput', { InstanceId: id }), 'InvalidInstanceID.NotFound');
  });

  it('describes and modifies attributes as EC2 allows', async () => {
    const userData = Buffer.from('hello').toString('base64');
    const out = await w.launch({ UserData: userData });
    const id = out.Instances[0].InstanceId;
    const attr = (Attribute: string) => w.call(w.A, 'DescribeInstanceAttribute', { InstanceId: id, Attribute });
    assert.deepEqual(await attr('instanceType'), { InstanceId: id, InstanceType: { Value: 'm1.small' } });
    assert.deepEqual(await attr('userData'), { InstanceId: id, UserData: { Value: userData } });
    assert.deepEqual(await attr('kernel'), { InstanceId: id, KernelId: { Value: w.image.kernelId } });
    assert.deepEqual(await attr('ramdisk'), { InstanceId: id, RamdiskId: { Value: w.image.ramdiskId } });
    assert.deepEqual(await attr('disableApiTermination'), { InstanceId: id, DisableApiTermination: { Value: false } });
    assert.deepEqual(await attr('instanceInitiatedShutdownBehavior'), { InstanceId: id, InstanceInitiatedShutdownBehavior: { Value: 'stop' } });
    assert.deepEqual(await attr('rootDeviceName'), { InstanceId: id, RootDeviceName: { Value: '/dev/vda' } });
    assert.deepEqual(await attr('groupSet'), { InstanceId: id, Groups: out.Instances[0].SecurityGroups });
    await expectEc2Error(attr('colour'), 'InvalidParameterValue');
    await expectEc2Error(w.call(w.B, 'DescribeInstanceAttribute', { InstanceId: id, Attribute: 'instanceType' }), 'InvalidInstanceID.NotFound');

    await expectEc2Error(w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: id, InstanceType: { Value: 't2.micro' } }), 'IncorrectInstanceState', `The instance '${id}' is not in the 'stopped' state.`);
    await expectEc2Error(w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: id, UserData: { Value: Buffer.from('x') } }), 'IncorrectInstanceState');
    await w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: id, Attribute: 'disableApiTermination', Value: 'true' });
    assert.deepEqual(await attr('disableApiTermination'), { InstanceId: id, DisableApiTermination: { Value: true } });
    await expectEc2Error(w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: id, InstanceType: { Value: 't2.micro' }, DisableApiTermination: { Value: true } }),
      'InvalidParameterCombination', /multiple attribute types/);
    await expectEc2Error(w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: id, Kernel: { Value: w.image.kernelId } }), 'UnsupportedOperation');
    await expectEc2Error(w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: id }), 'MissingParameter');

    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    await w.call(w.A, 'StopInstances', { InstanceIds: [id] });
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    await expectEc2Error(w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: id, InstanceType: { Value: 'x9.huge' } }), 'InvalidInstanceAttributeValue');
    await w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: id, InstanceType: { Value: 't2.micro' } });
    await w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: id, UserData: { Value: Buffer.from('new data') } });
    assert.deepEqual(await attr('instanceType'), { InstanceId: id, InstanceType: { Value: 't2.micro' } });
    assert.deepEqual(await attr('userData'), { InstanceId: id, UserData: { Value: Buffer.from('new data').toString('base64') } });
  });

  it('a security group used by a live instance cannot be deleted', async () => {
    const web = (await w.call(w.A, 'CreateSecurityGroup', { GroupName: 'web', Description: 'web' })).GroupId;
    const id = idsOf(await w.launch({ SecurityGroupIds: [web] }))[0]!;
    await expectEc2Error(w.call(w.A, 'DeleteSecurityGroup', { GroupId: web }), 'DependencyViolation');
    await w.call(w.A, 'TerminateInstances', { InstanceIds: [id] });
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    assert.deepEqual(await w.call(w.A, 'DeleteSecurityGroup', { GroupId: web }), {});
  });
});

describe('InstanceReconciler', () => {
  let w: World;
  beforeEach(async () => { w = await makeWorld({ retentionMs: 60_000 }); });
  afterEach(async () => w.store.close());

  it('terminates instances the cluster lost and stops crashed ones, with reasons', async () => {
    const [lost, crashed, fine] = idsOf(await w.launch({ MaxCount: 3 }));
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    w.clusterA.forget(lost!);
    w.clusterA.setState(crashed!, 'crashed', 'qemu exited with status 1');
    await w.reconciler.reconcileOnce();
    const lostRow = (await w.row(lost!))!;
    assert.deepEqual([lostRow.state, lostRow.private_ip], ['terminated', null]);
    assert.match(lostRow.state_reason!, /^Server\.InternalError/);
    const crashedRow = (await w.row(crashed!))!;
    assert.equal(crashedRow.state, 'stopped');
    assert.match(crashedRow.state_reason!, /qemu exited with status 1/);
    assert.equal((await w.row(fine!))!.state, 'running');
    const view = (await w.call(w.A, 'DescribeInstances', { InstanceIds: [crashed] })).Reservations[0].Instances[0];
    assert.equal(view.StateReason.Code, 'Server.InternalError');
  });

  it('gives a launch in progress time, then counts an unplaced pending instance as lost', async () => {
    const id = idsOf(await w.launch())[0]!;
    // As if RunInstances had written the row but the cluster had not placed it yet.
    await w.store.db.updateTable('instances').set({ node_id: null }).where('id', '=', id).execute();
    w.clusterA.forget(id);
    await w.reconciler.reconcileOnce();
    assert.equal((await w.row(id))!.state, 'pending');
    await w.store.db.updateTable('instances').set({ state_changed_at: new Date(Date.now() - 3_600_000).toISOString() }).where('id', '=', id).execute();
    await w.reconciler.reconcileOnce();
    const row = (await w.row(id))!;
    assert.deepEqual([row.state, row.private_ip], ['terminated', null]);
  });

  it('an instance that shuts itself down becomes stopped', async () => {
    const id = idsOf(await w.launch())[0]!;
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    w.clusterA.setState(id, 'stopped');
    await w.reconciler.reconcileOnce();
    const row = (await w.row(id))!;
    assert.deepEqual([row.state, row.state_reason], ['stopped', 'Client.InstanceInitiatedShutdown: Instance initiated shutdown']);
  });

  it('a cluster that does not answer changes nothing', async () => {
    const id = idsOf(await w.launch())[0]!;
    w.clusterA.progress();
    w.clusterA.unreachable = true;
    await w.reconciler.reconcileOnce();
    assert.equal((await w.row(id))!.state, 'pending');
    w.clusterA.instances.clear();
    await w.reconciler.reconcileOnce();
    assert.equal((await w.row(id))!.state, 'pending');
  });

  it('terminates instances the cluster runs that no row wants', async () => {
    const id = idsOf(await w.launch())[0]!;
    const spec = (w.clusterA.callsTo('runInstances')[0]![0] as InstanceSpec[])[0]!;
    w.clusterA.instances.set('i-0000000000000dead', { spec: { ...spec, instanceId: 'i-0000000000000dead' }, state: 'running', nodeId: 'n', since: '' });
    await w.reconciler.reconcileOnce();
    assert.deepEqual(w.clusterA.callsTo('terminateInstance'), [['i-0000000000000dead']]);
    assert.equal((await w.row(id))!.state, 'pending');
  });

  it('deletes terminated instances and their tags once the retention has passed', async () => {
    const id = idsOf(await w.launch({ TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'a', Value: 'b' }] }] }))[0]!;
    await w.call(w.A, 'TerminateInstances', { InstanceIds: [id] });
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    assert.equal((await w.row(id))!.state, 'terminated');
    await w.reconciler.reconcileOnce();
    assert.ok(await w.row(id), 'still visible within the retention');
    await w.store.db.updateTable('instances').set({ state_changed_at: new Date(Date.now() - 61_000).toISOString() }).where('id', '=', id).execute();
    await w.reconciler.reconcileOnce();
    assert.equal(await w.row(id), undefined);
    assert.equal((await w.store.db.selectFrom('tags').select('key').where('resource_id', '=', id).execute()).length, 0);
    await expectEc2Error(w.call(w.A, 'DescribeInstances', { InstanceIds: [id] }), 'InvalidInstanceID.NotFound');
  });

  it('start and stop poll on their own', async () => {
    const r = new InstanceReconciler({ store: w.store, directory: w.directory, log: quiet, intervalMs: 5 });
    const id = idsOf(await w.launch())[0]!;
    w.clusterA.progress();
    r.start();
    // Generous: the reconciler's own 5 ms loop is what is tested, not how fast a loaded machine runs it.
    const deadline = Date.now() + 60_000;
    while ((await w.row(id))!.state !== 'running' && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
    await r.stop();
    assert.equal((await w.row(id))!.state, 'running');
    const calls = w.clusterA.callsTo('describeInstances').length;
    await new Promise((res) => setTimeout(res, 30));
    assert.equal(w.clusterA.callsTo('describeInstances').length, calls, 'no polling after stop');
  });
});

for (const backend of storeBackends()) describe(`instance-initiated shutdown behavior on ${backend.name}`, () => {
  let w: World;
  beforeEach(async () => { w = await makeWorld({ backend }); });
  afterEach(async () => w.close());

  const attr = (id: string) => w.call(w.A, 'DescribeInstanceAttribute', { InstanceId: id, Attribute: 'instanceInitiatedShutdownBehavior' });
  const running = async (input: object = {}) => {
    const ids = idsOf(await w.launch(input));
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    return ids;
  };

  it('is stored at launch, described, and modified in either form; bad values change nothing', async () => {
    const [plain] = idsOf(await w.launch());
    const [doomed] = idsOf(await w.launch({ InstanceInitiatedShutdownBehavior: 'terminate' }));
    assert.deepEqual(await attr(plain!), { InstanceId: plain, InstanceInitiatedShutdownBehavior: { Value: 'stop' } });
    assert.deepEqual(await attr(doomed!), { InstanceId: doomed, InstanceInitiatedShutdownBehavior: { Value: 'terminate' } });
    assert.equal((await w.row(doomed!))!.shutdown_behavior, 'terminate');
    const count = (await w.store.db.selectFrom('instances').select('id').execute()).length;
    await expectEc2Error(w.launch({ InstanceInitiatedShutdownBehavior: 'hibernate' }), 'InvalidParameterValue',
      'Value (hibernate) for parameter instanceInitiatedShutdownBehavior is invalid. Valid values are: stop, terminate.');
    assert.equal((await w.store.db.selectFrom('instances').select('id').execute()).length, count, 'nothing launched');

    // EC2 lets it change while the instance runs.
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    await w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: plain, InstanceInitiatedShutdownBehavior: { Value: 'terminate' } });
    assert.deepEqual((await attr(plain!)).InstanceInitiatedShutdownBehavior, { Value: 'terminate' });
    await w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: plain, Attribute: 'instanceInitiatedShutdownBehavior', Value: 'stop' });
    assert.deepEqual((await attr(plain!)).InstanceInitiatedShutdownBehavior, { Value: 'stop' });
    await expectEc2Error(w.call(w.A, 'ModifyInstanceAttribute', { InstanceId: plain, InstanceInitiatedShutdownBehavior: { Value: 'explode' } }),
      'InvalidParameterValue', /Valid values are: stop, terminate/);
    await expectEc2Error(w.call(w.B, 'ModifyInstanceAttribute', { InstanceId: plain, InstanceInitiatedShutdownBehavior: { Value: 'terminate' } }),
      'InvalidInstanceID.NotFound');
    assert.deepEqual((await attr(plain!)).InstanceInitiatedShutdownBehavior, { Value: 'stop' });
  });

  it('a guest power-off terminates an instance whose behavior is terminate, and stops one whose behavior is stop', async () => {
    const [doomed] = await running({ InstanceInitiatedShutdownBehavior: 'terminate' });
    const [kept] = await running();
    w.clusterA.setState(doomed!, 'stopped', 'Client.InstanceInitiatedShutdown: Instance initiated shutdown');
    w.clusterA.setState(kept!, 'stopped', 'Client.InstanceInitiatedShutdown: Instance initiated shutdown');
    await w.reconciler.reconcileOnce();
    const shutting = (await w.row(doomed!))!;
    assert.deepEqual([shutting.state, shutting.state_reason], ['shutting-down', 'Client.InstanceInitiatedShutdown: Instance initiated shutdown']);
    assert.deepEqual(w.clusterA.callsTo('terminateInstance'), [[doomed]], 'the node is told at once, so it frees the disk and tap');
    const stopped = (await w.row(kept!))!;
    assert.deepEqual([stopped.state, stopped.state_reason], ['stopped', 'Client.InstanceInitiatedShutdown: Instance initiated shutdown']);
    assert.equal(stopped.private_ip, '10.1.0.5', 'a stopped instance keeps its address');

    await w.reconciler.reconcileOnce();
    assert.equal((await w.row(doomed!))!.state, 'shutting-down', 'stays shutting-down while the node still has it');
    assert.equal(w.clusterA.callsTo('terminateInstance').length, 1, 'not sent again before the resend interval');
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    const view = (await w.call(w.A, 'DescribeInstances', { InstanceIds: [doomed] })).Reservations[0].Instances[0];
    assert.deepEqual(view.State, { Code: 48, Name: 'terminated' });
    assert.deepEqual(view.StateReason, { Code: 'Client.InstanceInitiatedShutdown', Message: 'Client.InstanceInitiatedShutdown: Instance initiated shutdown' });
    assert.equal(view.StateTransitionReason, 'Client.InstanceInitiatedShutdown: Instance initiated shutdown');
    assert.equal((await w.row(doomed!))!.private_ip, null);
    assert.equal((await w.row(kept!))!.state, 'stopped');
  });

  it('an asked-for stop of an instance whose behavior is terminate just stops it, and it starts again', async () => {
    const [id] = await running({ InstanceInitiatedShutdownBehavior: 'terminate' });
    await w.call(w.A, 'StopInstances', { InstanceIds: [id] });
    // The node reports stopped while the reconciler still sees the row as it was.
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    const row = (await w.row(id!))!;
    assert.deepEqual([row.state, row.state_reason], ['stopped', 'Client.UserInitiatedShutdown: User initiated shutdown']);
    assert.deepEqual(w.clusterA.callsTo('terminateInstance'), []);
    await w.call(w.A, 'StartInstances', { InstanceIds: [id] });
    w.clusterA.progress();
    await w.reconciler.reconcileOnce();
    assert.equal((await w.row(id!))!.state, 'running');
  });

  it('a guest that powers off before it was seen running is shut down too, not restarted as a missed start', async () => {
    const w2 = await makeWorld({ resendAfterMs: 0 });
    try {
      const [doomed, kept] = [...idsOf(await w2.launch({ InstanceInitiatedShutdownBehavior: 'terminate' })), ...idsOf(await w2.launch())];
      await new Promise((r) => setTimeout(r, 5)); // the node's stop comes after the launch
      w2.clusterA.setState(doomed!, 'stopped', 'Client.InstanceInitiatedShutdown: Instance initiated shutdown');
      w2.clusterA.setState(kept!, 'stopped', 'Client.InstanceInitiatedShutdown: Instance initiated shutdown');
      await w2.reconciler.reconcileOnce();
      assert.equal((await w2.row(doomed!))!.state, 'shutting-down');
      assert.deepEqual([(await w2.row(kept!))!.state, (await w2.row(kept!))!.state_reason], ['stopped', 'Client.InstanceInitiatedShutdown: Instance initiated shutdown']);
      assert.deepEqual(w2.clusterA.callsTo('startInstance'), [], 'neither is booted again');

      // A stop from before a StartInstances is a start the node missed: that one is repeated.
      w2.clusterA.progress();
      await w2.reconciler.reconcileOnce();
      await new Promise((r) => setTimeout(r, 5));
      w2.clusterA.autoProgress = false;
      await w2.call(w2.A, 'StartInstances', { InstanceIds: [kept] });
      w2.clusterA.setState(kept!, 'stopped', 'Client.InstanceInitiatedShutdown: Instance initiated shutdown');
      const before = w2.clusterA.callsTo('startInstance').length;
      await new Promise((r) => setTimeout(r, 5));
      // Backdate the node's stop to before the start request, as a node that never saw it would report.
      w2.clusterA.instances.get(kept!)!.since = new Date(Date.now() - 60_000).toISOString();
      await w2.reconciler.reconcileOnce();
      assert.equal((await w2.row(kept!))!.state, 'pending');
      assert.equal(w2.clusterA.callsTo('startInstance').length, before + 1, 'the start is sent again');
    } finally {
      await w2.store.close();
    }
  });

  it('a crash is not a shutdown: the instance stops whatever its behavior', async () => {
    const [id] = await running({ InstanceInitiatedShutdownBehavior: 'terminate' });
    w.clusterA.setState(id!, 'crashed', 'qemu exited with status 1');
    await w.reconciler.reconcileOnce();
    assert.equal((await w.row(id!))!.state, 'stopped');
    assert.deepEqual(w.clusterA.callsTo('terminateInstance'), []);
  });
});

describe('guest power-off through a cluster controller and node agent (fake driver)', () => {
  it('terminates an instance whose behavior is terminate on its node too, and stops one whose behavior is stop', async () => {
    const root = await mkdtemp(join(tmpdir(), 'ib-shutdown-'));
    const store = await openStore({ url: ':memory:' });
    const cluster = new ClusterController({ zone: ZONE_A, cidr: '10.1.0.0/16', policy: 'round-robin', pollIntervalMs: 0 });
    try {
      await ensureZone(store, { name: ZONE_A, cidr: '10.1.0.0/16', region: REGION });
      await seedVmTypes(store.db);
      const A = (await createAccountWithDefaults(store, 'alpha')).account.id;
      const file = async (name: string, bytes: number) => {
        const data = randomBytes(bytes);
        const path = join(root, name);
        await writeFile(path, data);
        return { path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes };
      };
      const image = await registerImageFiles(store, {
        name: 'guest', ownerAccountId: A, public: false, kernelCmdline: 'console=ttyS0',
        kernel: await file('vmlinuz', 1024), rootfs: { ...await file('rootfs.img', 8192), format: 'raw' },
      });
      const driver = new FakeDriver();
      const agent = new NodeAgent({
        nodeId: 'node-a', stateDir: join(root, 'node'), driver, imageCache: new ImageCache(join(root, 'node', 'images')),
        capacity: { cores: 4, memoryMiB: 4096, diskGiB: 100 },
      });
      await cluster.addNode('node-a', { name: 'a', address: 'local', client: agent });
      const directory = new ComputeDirectory();
      directory.register(cluster);
      const ops = instanceOperations({ directory, log: quiet });
      const reconciler = new InstanceReconciler({ store, directory, log: quiet });
      const call = (action: string, input: object) => callOperation(contextFor(store, A), ops, action, input);
      const row = async (id: string) => (await store.db.selectFrom('instances').selectAll().where('id', '=', id).executeTakeFirst())!;
      /** The node settles, the cluster reads it, the cloud reconciles. */
      const pass = async (ids: string[]) => {
        for (const id of ids) await agent.settled(id);
        await cluster.pollOnce();
        await reconciler.reconcileOnce();
      };

      const launch = async (behavior: string) => idsOf(await call('RunInstances', {
        ImageId: image.imageId, MinCount: 1, MaxCount: 1, Placement: { AvailabilityZone: ZONE_A }, InstanceInitiatedShutdownBehavior: behavior,
      }))[0]!;
      const doomed = await launch('terminate');
      const kept = await launch('stop');
      await pass([doomed, kept]);
      assert.deepEqual([(await row(doomed)).state, (await row(kept)).state], ['running', 'running']);

      driver.simulateGuestPowerOff(doomed);
      driver.simulateGuestPowerOff(kept);
      await pass([doomed, kept]);
      assert.equal((await row(doomed)).state, 'shutting-down');
      assert.equal((await driver.info(doomed))?.state, 'destroyed', 'the node ended the VM and released what it held');
      assert.deepEqual((await agent.describeInstances()).map((i) => [i.instanceId, i.state]), [[kept, 'stopped']]);
      await pass([]);
      const gone = await row(doomed);
      assert.deepEqual([gone.state, gone.state_reason, gone.private_ip], ['terminated', 'Client.InstanceInitiatedShutdown: Instance initiated shutdown', null]);
      const stopped = await row(kept);
      assert.deepEqual([stopped.state, stopped.state_reason], ['stopped', 'Client.InstanceInitiatedShutdown: Instance initiated shutdown']);
      assert.equal((await driver.info(kept))?.state, 'stopped', 'its VM stays, to start again');
    } finally {
      await cluster.close();
      await store.close();
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('10,000 instances', () => {
  it('DescribeInstances and a reconcile pass stay fast', async () => {
    const w = await makeWorld();
    try {
      const groups = JSON.stringify([{ id: 'sg-0123456789abcdef0', name: 'default' }]);
      const now = new Date().toISOString();
      const rows: InstancesTable[] = [];
      for (let n = 0; n < 10_000; n++) {
        const id = `i-${n.toString(16).padStart(17, '0')}`;
        rows.push({
          id, account_id: w.A, reservation_id: `r-${Math.floor(n / 10).toString(16).padStart(17, '0')}`, client_token: null, request_hash: null,
          image_id: w.image.imageId, kernel_id: w.image.kernelId, ramdisk_id: w.image.ramdiskId ?? null, instance_type: 'm1.small', zone: ZONE_A,
          vpc_id: 'vpc-0123456789abcdef0', subnet_id: 'subnet-0123456789abcdef0', private_ip: `10.1.${Math.floor(n / 250) + 1}.${(n % 250) + 4}`,
          public_ip: null, mac: macForInstance(id), key_name: null, user_data: null, security_groups: groups, launch_index: n % 10, launch_time: now,
          state: 'pending', state_reason: null, state_changed_at: now, node_id: 'node-a', disable_api_termination: 0, status_impaired: 0, accelerator: null, shutdown_behavior: 'stop',
        });
      }
      await w.store.transaction(async (tx) => {
        for (let i = 0; i < rows.length; i += 500) await tx.insertInto('instances').values(rows.slice(i, i + 500)).execute();
        const tags = rows.filter((_, n) => n % 2 === 0).map((r) => ({ account_id: w.A, resource_id: r.id, resource_type: 'instance', key: 'team', value: r.launch_index % 2 ? 'odd' : 'even' }));
        for (let i = 0; i < tags.length; i += 500) await tx.insertInto('tags').values(tags.slice(i, i + 500)).execute();
      });
      const spec = { vmType: { name: 'm1.small', cores: 1, memoryMiB: 256, diskGiB: 5 } } as InstanceSpec;
      for (const r of rows) w.clusterA.instances.set(r.id, { spec, state: 'running', nodeId: 'node-a', since: now });

      let t = performance.now();
      await w.reconciler.reconcileOnce();
      const reconcileMs = performance.now() - t;
      const running = await w.store.db.selectFrom('instances').select((eb) => eb.fn.countAll<number>().as('n')).where('state', '=', 'running').executeTakeFirstOrThrow();
      assert.equal(Number(running.n), 10_000);

      t = performance.now();
      const all = await w.call(w.A, 'DescribeInstances');
      const describeMs = performance.now() - t;
      assert.equal(all.Reservations.length, 1000);
      assert.equal(all.Reservations.reduce((n: number, r: any) => n + r.Instances.length, 0), 10_000);

      t = performance.now();
      const filtered = await w.call(w.A, 'DescribeInstances', { Filters: [{ Name: 'tag:team', Values: ['even'] }, { Name: 'instance-state-name', Values: ['running'] }] });
      const filterMs = performance.now() - t;
      assert.equal(filtered.Reservations.reduce((n: number, r: any) => n + r.Instances.length, 0), 5000);

      t = performance.now();
      const page = await w.call(w.A, 'DescribeInstances', { MaxResults: 1000 });
      const pageMs = performance.now() - t;
      assert.ok(page.NextToken);
      console.log(`# 10,000 instances: reconcile ${reconcileMs.toFixed(0)} ms, DescribeInstances all ${describeMs.toFixed(0)} ms, ` +
        `filtered ${filterMs.toFixed(0)} ms, page of 1000 ${pageMs.toFixed(0)} ms`);
    } finally {
      await w.store.close();
    }
  });
});

// ---- issue 8, item 3: state changes answer at once; the nodes act and the reconciler converges ----

/** A node whose instance commands (not its reports) wait while the test holds them. */
class HeldNode extends GatedNode {
  #held: Promise<void> | undefined;
  #release: (() => void) | undefined;
  /** Commands as they reached the node, and the specs of launches. */
  readonly received: string[] = [];
  readonly runSpecs: InstanceSpec[] = [];
  holdsRuns = false;
  hold(): void {
    this.#held ??= new Promise<void>((resolve) => { this.#release = resolve; });
  }
  release(): void {
    this.#release?.();
    this.#held = this.#release = undefined;
  }
  protected gate<T>(call: () => Promise<T>): Promise<T> { return call(); }
  #command<T>(name: string, call: () => Promise<T>): Promise<T> {
    this.received.push(name);
    const held = this.#held;
    return held ? held.then(call) : call();
  }
  override runInstance(spec: InstanceSpec) {
    if (!this.holdsRuns) return super.runInstance(spec);
    this.runSpecs.push(spec);
    return this.#command('run', () => super.runInstance(spec));
  }
  override startInstance(id: string, update?: InstanceUpdate) { return this.#command('start', () => super.startInstance(id, update)); }
  override stopInstance(id: string, force?: boolean) { return this.#command('stop', () => super.stopInstance(id, force)); }
  override rebootInstance(id: string) { return this.#command('reboot', () => super.rebootInstance(id)); }
  override terminateInstance(id: string) { return this.#command('terminate', () => super.terminateInstance(id)); }
}

/** A cloud over a real cluster controller and node agents (fake driver) reached through HeldNodes. */
async function cloudOverRealNodes(opts: { nodes?: number; guestStopMs?: number; stopTimeoutMs?: number } = {}) {
  const root = await mkdtemp(join(tmpdir(), 'ib-async-'));
  const store = await openStore({ url: ':memory:' });
  const cluster = new ClusterController({ zone: ZONE_A, cidr: '10.1.0.0/16', policy: 'round-robin', pollIntervalMs: 0 });
  await ensureZone(store, { name: ZONE_A, cidr: '10.1.0.0/16', region: REGION });
  await seedVmTypes(store.db);
  const A = (await createAccountWithDefaults(store, 'alpha')).account.id;
  const file = async (name: string, bytes: number) => {
    const data = randomBytes(bytes);
    const path = join(root, name);
    await writeFile(path, data);
    return { path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes };
  };
  const image = await registerImageFiles(store, {
    name: 'guest', ownerAccountId: A, public: false, kernelCmdline: 'console=ttyS0',
    kernel: await file('vmlinuz', 1024), rootfs: { ...await file('rootfs.img', 8192), format: 'raw' },
  });
  const agents: NodeAgent[] = [];
  const nodes: HeldNode[] = [];
  for (let n = 0; n < (opts.nodes ?? 1); n++) {
    const agent = new NodeAgent({
      nodeId: `node-${n}`, stateDir: join(root, `node-${n}`), imageCache: new ImageCache(join(root, `node-${n}`, 'images')),
      driver: new FakeDriver({ delays: { stopMs: opts.guestStopMs ?? 0 } }), stopTimeoutMs: opts.stopTimeoutMs,
      capacity: { cores: 4, memoryMiB: 4096, diskGiB: 100 },
    });
    const node = new HeldNode(agent);
    await cluster.addNode(`node-${n}`, { name: `n${n}`, address: 'local', client: node });
    agents.push(agent);
    nodes.push(node);
  }
  const directory = new ComputeDirectory();
  directory.register(cluster);
  const ops = instanceOperations({ directory, log: quiet });
  const reconciler = new InstanceReconciler({ store, directory, log: quiet });
  const call = (action: string, input: object) => callOperation(contextFor(store, A), ops, action, input);
  const row = async (id: string) => (await store.db.selectFrom('instances').selectAll().where('id', '=', id).executeTakeFirst())!;
  const nodeState = async (id: string) => (await agents[0]!.describeInstances()).find((i) => i.instanceId === id)?.state;
  /** The cluster reads its nodes and the cloud reconciles, again and again until `done` holds (generously bounded). */
  const until = async (what: string, done: () => Promise<boolean>) => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      await cluster.pollOnce();
      await reconciler.reconcileOnce();
      if (await done()) return;
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const launch = async (input: object = {}) => idsOf(await call('RunInstances', {
    ImageId: image.imageId, MinCount: 1, MaxCount: 1, Placement: { AvailabilityZone: ZONE_A }, ...input,
  }));
  return {
    store, cluster, agents, node: nodes[0]!, nodes, call, row, nodeState, until, launch,
    async close() {
      for (const n of nodes) n.release();
      await cluster.close();
      for (const agent of agents) for (const i of await agent.describeInstances()) await agent.settled(i.instanceId);
      await store.close();
      await rm(root, { recursive: true, force: true, maxRetries: 5 });
    },
  };
}

describe('state changes answer at once; the nodes act in the background', () => {
  it('Stop, Start, Reboot and Terminate answer with EC2\'s transition states before the node acts, and converge once it does', async () => {
    const c = await cloudOverRealNodes();
    try {
      const [id] = await c.launch();
      await c.until('running', async () => (await c.row(id!)).state === 'running');

      c.node.hold();
      assert.deepEqual(await c.call('StopInstances', { InstanceIds: [id] }), { StoppingInstances: [stateChange(id!, [16, 'running'], [64, 'stopping'])] });
      assert.equal(await c.nodeState(id!), 'running', 'answered before the node was told');
      assert.equal((await c.row(id!)).state, 'stopping');
      c.node.release();
      await c.until('stopped', async () => (await c.row(id!)).state === 'stopped');
      assert.equal((await c.row(id!)).state_reason, 'Client.UserInitiatedShutdown: User initiated shutdown');

      c.node.hold();
      assert.deepEqual(await c.call('StartInstances', { InstanceIds: [id] }), { StartingInstances: [stateChange(id!, [80, 'stopped'], [0, 'pending'])] });
      assert.equal(await c.nodeState(id!), 'stopped');
      c.node.release();
      await c.until('running again', async () => (await c.row(id!)).state === 'running');

      c.node.hold();
      assert.deepEqual(await c.call('RebootInstances', { InstanceIds: [id] }), {});
      assert.ok((await c.row(id!)).reboot_requested_at, 'the request is kept until a cluster takes it');
      c.node.release();
      await c.until('the reboot delivered', async () => (await c.row(id!)).reboot_requested_at === null);
      assert.match(await c.agents[0]!.consoleOutput(id!), /boot 2 complete/);

      c.node.hold();
      assert.deepEqual(await c.call('TerminateInstances', { InstanceIds: [id] }), { TerminatingInstances: [stateChange(id!, [16, 'running'], [32, 'shutting-down'])] });
      assert.equal(await c.nodeState(id!), 'running');
      c.node.release();
      await c.until('terminated', async () => (await c.row(id!)).state === 'terminated');
      assert.deepEqual(await c.agents[0]!.describeInstances(), []);
      assert.deepEqual(c.node.received, ['stop', 'start', 'reboot', 'terminate'], 'each command reached the node once');
    } finally {
      await c.close();
    }
  });

  it('a guest that never powers off does not hold up the answers; a forced stop or a terminate ends it', async () => {
    // The guest takes an hour to power off and the node gives it that long: only force ends it.
    const c = await cloudOverRealNodes({ guestStopMs: 3_600_000, stopTimeoutMs: 3_600_000 });
    try {
      const [a, b] = [...await c.launch(), ...await c.launch()];
      await c.until('running', async () => (await c.row(a!)).state === 'running' && (await c.row(b!)).state === 'running');

      assert.deepEqual((await c.call('StopInstances', { InstanceIds: [a, b] })).StoppingInstances,
        [stateChange(a!, [16, 'running'], [64, 'stopping']), stateChange(b!, [16, 'running'], [64, 'stopping'])]);
      // The cluster's calls to the node answer at once too: it reports the stops under way.
      await c.until('the cluster to report both stopping', async () => (await c.cluster.describeInstances()).every((i) => i.state === 'stopping'));
      assert.equal((await c.row(a!)).state, 'stopping');

      assert.deepEqual((await c.call('StopInstances', { InstanceIds: [a], Force: true })).StoppingInstances, [stateChange(a!, [64, 'stopping'], [64, 'stopping'])]);
      assert.deepEqual((await c.call('TerminateInstances', { InstanceIds: [b] })).TerminatingInstances, [stateChange(b!, [64, 'stopping'], [32, 'shutting-down'])]);
      await c.until('a stopped and b terminated', async () => (await c.row(a!)).state === 'stopped' && (await c.row(b!)).state === 'terminated');
    } finally {
      await c.close();
    }
  });

  it('a command no cluster got is sent again by the reconciler: after a failed call, and after the cloud restarted before sending it', async () => {
    const w = await makeWorld({ resendAfterMs: 0 });
    try {
      const [a, b, c, d] = idsOf(await w.launch({ MaxCount: 4 }));
      w.clusterA.progress();
      await w.reconciler.reconcileOnce();
      await w.call(w.A, 'StopInstances', { InstanceIds: [c] });
      w.clusterA.progress();
      await w.reconciler.reconcileOnce();
      assert.equal((await w.row(c!))!.state, 'stopped');

      // A failed call: the reboot stays recorded, and the next pass delivers it.
      w.clusterA.unreachable = true;
      assert.deepEqual(await w.call(w.A, 'RebootInstances', { InstanceIds: [a] }), {});
      assert.ok((await w.row(a!))!.reboot_requested_at);
      w.clusterA.unreachable = false;
      await w.reconciler.reconcileOnce();
      assert.equal(w.clusterA.callsTo('rebootInstance').length, 2, 'the failed call, then the reconciler\'s');
      assert.equal((await w.row(a!))!.reboot_requested_at, null, 'acknowledged');
      await w.reconciler.reconcileOnce();
      assert.equal(w.clusterA.callsTo('rebootInstance').length, 2, 'not sent a third time');

      // The cloud answers and stops before any cluster hears of the changes (its calls never get through).
      const gone = new HeldCluster(new FakeCluster(ZONE_A));
      gone.hold();
      w.directory.register(gone);
      await w.call(w.A, 'RebootInstances', { InstanceIds: [a] });
      await w.call(w.A, 'StopInstances', { InstanceIds: [b] });
      await w.call(w.A, 'StartInstances', { InstanceIds: [c] });
      await w.call(w.A, 'TerminateInstances', { InstanceIds: [d] });
      assert.deepEqual(gone.asked.map((m) => m.method), ['rebootInstance', 'stopInstance', 'startInstance', 'terminateInstance']);
      // A fresh cloud over the same store and the zone's cluster, which never heard of them.
      const directory = new ComputeDirectory();
      directory.register(w.clusterA);
      const restarted = new InstanceReconciler({ store: w.store, directory, log: quiet, resendAfterMs: 0 });
      const before = w.clusterA.calls.length;
      await restarted.reconcileOnce();
      const sent = w.clusterA.calls.slice(before).filter((x) => x.method !== 'describeInstances' && x.method !== 'describeNodes').map((x) => [x.method, x.args[0]]);
      assert.deepEqual(sent.sort(), [['rebootInstance', a], ['startInstance', c], ['stopInstance', b], ['terminateInstance', d]].sort());
      w.clusterA.progress();
      await restarted.reconcileOnce();
      assert.deepEqual(await Promise.all([a, b, c, d].map(async (id) => (await w.row(id!))!.state)), ['running', 'stopped', 'running', 'terminated']);
      assert.equal((await w.row(a!))!.reboot_requested_at, null);
    } finally {
      await w.store.close();
    }
  });
});

// ---- issue 8, item 5: a launch cut short by a crash is placed again, never left hanging ----

/** A ClusterApi in front of a FakeCluster whose calls (not its reports) wait while held: held for good, a cloud killed mid-call. */
class HeldCluster implements ClusterApi {
  readonly zone: string;
  readonly asked: { method: string; args: unknown[] }[] = [];
  #held: Promise<void> | undefined;
  #release: (() => void) | undefined;
  constructor(readonly inner: FakeCluster) { this.zone = inner.zone; }
  hold(): void { this.#held ??= new Promise<void>((resolve) => { this.#release = resolve; }); }
  release(): void { this.#release?.(); this.#held = this.#release = undefined; }
  #call<T>(method: string, args: unknown[], call: () => Promise<T>): Promise<T> {
    this.asked.push({ method, args });
    const held = this.#held;
    return held ? held.then(call) : call();
  }
  runInstances(specs: InstanceSpec[]) { return this.#call('runInstances', [specs], () => this.inner.runInstances(specs)); }
  startInstance(id: string, update?: InstanceUpdate) { return this.#call('startInstance', [id], () => this.inner.startInstance(id)); }
  stopInstance(id: string, force?: boolean) { return this.#call('stopInstance', [id], () => this.inner.stopInstance(id, force)); }
  rebootInstance(id: string) { return this.#call('rebootInstance', [id], () => this.inner.rebootInstance(id)); }
  terminateInstance(id: string) { return this.#call('terminateInstance', [id], () => this.inner.terminateInstance(id)); }
  consoleOutput(id: string) { return this.#call('consoleOutput', [id], () => this.inner.consoleOutput(id)); }
  describeInstances() { return this.inner.describeInstances(); }
  describeNodes() { return this.inner.describeNodes(); }
}

describe('launches cut short by a crash of the cloud', () => {
  const imageUrl = (id: string) => `http://cluster/images/${id}`;
  /**
   * RunInstances writes its rows and asks the cluster, which never answers: the cloud was killed
   * (kill -9) while it waited, and the caller's connection dropped. Resolves with the rows.
   */
  async function launchCutShort(w: World, input: object) {
    const gone = new HeldCluster(new FakeCluster(ZONE_A));
    gone.hold();
    w.directory.register(gone);
    void w.launch(input).catch(() => undefined);
    const deadline = Date.now() + 30_000;
    for (;;) {
      const asked = gone.asked.find((m) => m.method === 'runInstances');
      if (asked) {
        const specs = asked.args[0] as InstanceSpec[];
        const rows = await w.store.db.selectFrom('instances').selectAll().where('id', 'in', specs.map((s) => s.instanceId)).execute();
        return { rows, specs };
      }
      if (Date.now() > deadline) assert.fail('RunInstances never asked its cluster');
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  /** The cloud as it starts again: the same store, a fresh directory and the zone's cluster, which never heard of the launch. */
  function restartedCloud(w: World, cluster = new FakeCluster(ZONE_A)) {
    const directory = new ComputeDirectory();
    directory.register(cluster);
    const ops = instanceOperations({ directory, imageUrl, log: quiet });
    const reconciler = new InstanceReconciler({ store: w.store, directory, log: quiet, resendAfterMs: 0, imageUrl });
    const launch = (input: object) => callOperation(contextFor(w.store, w.A), ops, 'RunInstances',
      { ImageId: w.image.imageId, MinCount: 1, MaxCount: 1, Placement: { AvailabilityZone: ZONE_A }, ...input });
    return { cluster, directory, reconciler, launch };
  }
  const userData = Buffer.from('#!/bin/sh\necho hi\n').toString('base64');

  it('the restarted cloud\'s reconciler places them with the spec the launch would have sent, and they run; a replay then answers the same reservation', async () => {
    const w = await makeWorld();
    try {
      const input = { ClientToken: 'burst-1', MaxCount: 2, KeyName: 'mykey', UserData: userData, InstanceType: 't2.micro' };
      const { rows, specs } = await launchCutShort(w, input);
      assert.deepEqual(rows.map((r) => [r.state, r.node_id]), [['pending', null], ['pending', null]]);

      const cloud = restartedCloud(w);
      await cloud.reconciler.reconcileOnce();
      const placed = cloud.cluster.callsTo('runInstances');
      assert.equal(placed.length, 1);
      const bySpecId = (list: InstanceSpec[]) => [...list].sort((x, y) => x.instanceId.localeCompare(y.instanceId));
      assert.deepEqual(bySpecId(placed[0]![0] as InstanceSpec[]), bySpecId(specs), 'the same spec RunInstances gave its cluster');
      for (const r of rows) assert.equal((await w.row(r.id))!.node_id, `node-${ZONE_A}`);
      cloud.cluster.progress();
      await cloud.reconciler.reconcileOnce();
      assert.deepEqual(await Promise.all(rows.map(async (r) => (await w.row(r.id))!.state)), ['running', 'running']);

      const replay = await cloud.launch(input);
      assert.equal(replay.ReservationId, rows[0]!.reservation_id);
      assert.deepEqual(idsOf(replay).sort(), rows.map((r) => r.id).sort());
      assert.deepEqual(replay.Instances.map((i: any) => i.State.Name), ['running', 'running']);
      assert.equal(cloud.cluster.callsTo('runInstances').length, 1, 'nothing launched twice');
    } finally {
      await w.store.close();
    }
  });

  it('a ClientToken replay places them at once and answers with them', async () => {
    const w = await makeWorld();
    try {
      const input = { ClientToken: 'burst-2', KeyName: 'mykey' };
      const { rows, specs } = await launchCutShort(w, input);
      const cloud = restartedCloud(w);
      const replay = await cloud.launch(input);
      assert.equal(replay.ReservationId, rows[0]!.reservation_id);
      assert.deepEqual(idsOf(replay), [rows[0]!.id]);
      assert.deepEqual(cloud.cluster.callsTo('runInstances'), [[specs]]);
      assert.equal((await w.row(rows[0]!.id))!.node_id, `node-${ZONE_A}`);
      assert.equal(await cloud.launch(input).then((r: any) => r.ReservationId), rows[0]!.reservation_id);
      assert.equal(cloud.cluster.callsTo('runInstances').length, 1, 'a second replay finds them placed');
      cloud.cluster.progress();
      await cloud.reconciler.reconcileOnce();
      assert.equal((await w.row(rows[0]!.id))!.state, 'running');
    } finally {
      await w.store.close();
    }
  });

  it('a replay while the first launch still waits for its cluster joins it; the reconciler leaves it alone', async () => {
    const w = await makeWorld({ resendAfterMs: 0 });
    try {
      const held = new HeldCluster(w.clusterA);
      held.hold();
      w.directory.register(held);
      const input = { ClientToken: 'slow-1', MaxCount: 2 };
      const first = w.launch(input);
      const deadline = Date.now() + 30_000;
      while (!held.asked.some((m) => m.method === 'runInstances')) {
        if (Date.now() > deadline) assert.fail('RunInstances never asked its cluster');
        await new Promise((r) => setTimeout(r, 5));
      }
      const second = w.launch(input);
      await w.reconciler.reconcileOnce();
      held.release();
      const [one, two] = await Promise.all([first, second]);
      assert.equal(one.ReservationId, two.ReservationId);
      assert.deepEqual(idsOf(one), idsOf(two));
      assert.equal(held.asked.filter((m) => m.method === 'runInstances').length, 1, 'the cluster was asked once');
      assert.deepEqual(two.Instances.map((i: any) => i.State.Name), ['pending', 'pending']);
    } finally {
      await w.store.close();
    }
  });

  it('without room, the reconciler ends them as EC2 ends a launch it cannot fulfil, and a replay fails as the launch would have', async () => {
    const w = await makeWorld();
    try {
      const first = await launchCutShort(w, { ClientToken: 'full-1' });
      const cloud = restartedCloud(w, new FakeCluster(ZONE_A, { capacity: 0 }));
      await cloud.reconciler.reconcileOnce();
      const ended = (await w.row(first.rows[0]!.id))!;
      assert.deepEqual([ended.state, ended.private_ip], ['terminated', null]);
      const view = (await w.call(w.A, 'DescribeInstances', { InstanceIds: [ended.id] })).Reservations[0].Instances[0];
      assert.deepEqual(view.StateReason, { Code: 'Server.InsufficientInstanceCapacity', Message: 'Server.InsufficientInstanceCapacity: Insufficient capacity to satisfy instance request' });

      const second = await launchCutShort(w, { ClientToken: 'full-2' });
      const again = restartedCloud(w, new FakeCluster(ZONE_A, { capacity: 0 }));
      await expectEc2Error(again.launch({ ClientToken: 'full-2' }), 'InsufficientInstanceCapacity');
      assert.equal(await w.row(second.rows[0]!.id), undefined, 'nothing left behind, as after any refused launch');
    } finally {
      await w.store.close();
    }
  });

  it('a cluster asked again for instances it is still placing joins that placement instead of placing them twice', async () => {
    const c = await cloudOverRealNodes({ nodes: 2 });
    try {
      for (const n of c.nodes) { n.holdsRuns = true; n.hold(); }
      const launched = c.launch({ MaxCount: 2 });
      await c.until('the nodes to be asked', async () => c.nodes.reduce((k, n) => k + n.runSpecs.length, 0) === 2);
      const specs = c.nodes.flatMap((n) => n.runSpecs);
      const again = c.cluster.runInstances(specs);
      for (const n of c.nodes) n.release();
      const [ids, placements] = await Promise.all([launched, again]);
      assert.deepEqual(placements.map((p) => p.instanceId).sort(), [...ids].sort());
      for (const id of ids) {
        assert.equal(c.nodes.filter((n) => n.runSpecs.some((x) => x.instanceId === id)).length, 1, `${id} was asked of one node only`);
      }
      assert.deepEqual(placements, await Promise.all(ids.map(async (id) => ({ instanceId: id, nodeId: (await c.row(id)).node_id }))));
      await c.until('running', async () => (await Promise.all(ids.map((id) => c.row(id)))).every((r) => r.state === 'running'));
      const vms = (await Promise.all(c.agents.map((a) => a.describeInstances()))).flat().map((i) => i.instanceId).sort();
      assert.deepEqual(vms, [...ids].sort(), 'one VM per instance');
    } finally {
      await c.close();
    }
  });
});
