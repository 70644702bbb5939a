// Elastic IPs and public addresses through their operation handlers, an in-memory store and a fake
// cluster: zones' public ranges, AllocateAddress (a given address, tags, the operator's quota and
// DescribeAccountAttributes), AssociateAddress (by instance or interface, AllowReassociation),
// DisassociateAddress, ReleaseAddress, DescribeAddresses with its filters, DescribeAddressesAttribute,
// launch-time public addresses (MapPublicIpOnLaunch, NetworkInterfaces' AssociatePublicIpAddress),
// given back at a stop and renewed at the start, released at termination, DescribeInstances' public fields, and the zone's firewall
// document carrying each instance's public address to the nodes. The API suites run on every store back-end.
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { openStore, type Store } from '../../src/store/store.ts';
import { createAccountWithDefaults, ensureZone } from '../../src/cloud/provision.ts';
import { seedVmTypes } from '../../src/cloud/vm-types.ts';
import { registerImageFiles, type RegisteredImage } from '../../src/cloud/images/images.ts';
import { instanceOperations } from '../../src/cloud/instances.ts';
import { InstanceReconciler } from '../../src/cloud/instance-reconciler.ts';
import { ComputeDirectory } from '../../src/cloud/compute-directory.ts';
import { taggingOperations } from '../../src/cloud/tagging.ts';
import { accountAttributeOperations } from '../../src/cloud/account-attributes.ts';
import { addressOperations } from '../../src/cloud/network/addresses.ts';
import { subnetAttributeOperations } from '../../src/cloud/network/subnet-attributes.ts';
import { vpcOperations } from '../../src/cloud/vpcs.ts';
import { setPublicRange } from '../../src/cloud/network/public-ranges.ts';
import { buildFirewallDocument } from '../../src/cloud/network/firewall-document.ts';
import { setQuota } from '../../src/cloud/quotas.ts';
import type { OperationTable } from '../../src/cloud/context.ts';
import { FakeCluster } from '../helpers/fake-cluster.ts';
import { REGION, callOperation, contextFor, expectEc2Error } from '../helpers/handler-context.ts';
import { storeBackends, type StoreBackend } from '../helpers/stores.ts';

const ZONE_A = 'ironbark-1a';
const ZONE_B = 'ironbark-1b';
const RANGE_A = '203.0.113.0/29'; // six usable addresses: .1 to .6
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const quiet = { info() {}, warn() {}, error() {} };

interface World {
  store: Store;
  A: string;
  B: string;
  image: RegisteredImage;
  clusterA: FakeCluster;
  reconciler: InstanceReconciler;
  call(account: string, action: string, input?: object): Promise<any>;
  launch(input?: object, account?: string): Promise<string>;
  instance(id: string, account?: string): Promise<any>;
  heldAddresses(): Promise<{ public_ip: string; allocation_id: string | null; instance_id: string | null }[]>;
  /** Closes the store (and drops a PostgreSQL test database). */
  close(): Promise<void>;
}

async function makeWorld(backend?: StoreBackend): Promise<World> {
  const { store, dispose } = backend ? await backend.open() : await openStore({ url: ':memory:' }).then((st) => ({ store: st, dispose: () => st.close() }));
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
  const clusterA = new FakeCluster(ZONE_A);
  const clusterB = new FakeCluster(ZONE_B);
  const directory = new ComputeDirectory();
  directory.register(clusterA);
  directory.register(clusterB);
  const ops: OperationTable = {
    ...instanceOperations({ directory, imageUrl: (id) => `http://cluster/images/${id}`, statusInitializingMs: 0, log: quiet }),
    ...taggingOperations, ...accountAttributeOperations, ...addressOperations, ...subnetAttributeOperations, ...vpcOperations,
  };
  const reconciler = new InstanceReconciler({ store, directory, log: quiet });
  const call = (account: string, action: string, input: object = {}) => callOperation(contextFor(store, account), ops, action, input);
  return {
    store, A, B, image, clusterA, reconciler, call, close: dispose,
    launch: async (input = {}, account = A) => (await call(account, 'RunInstances', {
      ImageId: image.imageId, MinCount: 1, MaxCount: 1, Placement: { AvailabilityZone: ZONE_A }, ...input,
    })).Instances[0].InstanceId,
    instance: async (id, account = A) => (await call(account, 'DescribeInstances', { InstanceIds: [id] })).Reservations[0].Instances[0],
    heldAddresses: () => store.db.selectFrom('addresses').select(['public_ip', 'allocation_id', 'instance_id']).orderBy('public_ip').execute(),
  };
}

const setRange = (w: World, zone: string, cidr: string | null) => w.store.transaction((tx) => setPublicRange(tx, zone, cidr));

describe('public ranges', () => {
  let w: World;
  beforeEach(async () => { w = await makeWorld(); });
  afterEach(async () => w.close());

  it('refuses ranges that are not IPv4 blocks, too large, overlapping, or that would strand held addresses', async () => {
    await expectEc2Error(setRange(w, 'nowhere-1z', RANGE_A), 'InvalidParameterValue', 'There is no zone "nowhere-1z".');
    await expectEc2Error(setRange(w, ZONE_A, 'banana'), 'InvalidParameterValue');
    await expectEc2Error(setRange(w, ZONE_A, '203.0.113.1/29'), 'InvalidParameterValue', '"203.0.113.1/29" has host bits set: did you mean 203.0.113.0/29?');
    await expectEc2Error(setRange(w, ZONE_A, '198.0.0.0/8'), 'InvalidParameterValue', /at most a \/16/);
    await expectEc2Error(setRange(w, ZONE_A, '10.1.128.0/24'), 'InvalidParameterValue', /overlaps the private network 10\.1\.0\.0\/16 of zone ironbark-1a/);
    await setRange(w, ZONE_A, RANGE_A);
    await expectEc2Error(setRange(w, ZONE_B, '203.0.113.0/24'), 'InvalidParameterValue', /overlaps the public range 203\.0\.113\.0\/29 of zone ironbark-1a/);
    const { PublicIp } = await w.call(w.A, 'AllocateAddress', { Domain: 'vpc' });
    assert.equal(PublicIp, '203.0.113.1');
    await expectEc2Error(setRange(w, ZONE_A, '203.0.113.8/29'), 'DependencyViolation', /outside 203\.0\.113\.8\/29 \(e\.g\. 203\.0\.113\.1\)/);
    await expectEc2Error(setRange(w, ZONE_A, null), 'DependencyViolation', /release them before removing/);
    await setRange(w, ZONE_A, '203.0.113.0/28'); // a larger block that still holds it
    assert.deepEqual((await w.store.db.selectFrom('public_ranges').selectAll().execute()).map((r) => [r.zone, r.cidr]), [[ZONE_A, '203.0.113.0/28']]);
  });
});

for (const backend of storeBackends()) describe(`AllocateAddress, DescribeAddresses, ReleaseAddress on ${backend.name}`, () => {
  let w: World;
  beforeEach(async () => { w = await makeWorld(backend); });
  afterEach(async () => w.close());

  it('has nothing to give before the operator sets a range', async () => {
    await expectEc2Error(w.call(w.A, 'AllocateAddress', { Domain: 'vpc' }), 'InsufficientAddressCapacity', /no zone a public range/);
    assert.deepEqual(await w.call(w.A, 'DescribeAddresses'), { Addresses: [] });
  });

  it('allocates from the range with tags, shows, filters and releases elastic IPs', async () => {
    await setRange(w, ZONE_A, RANGE_A);
    const first = await w.call(w.A, 'AllocateAddress', {
      Domain: 'vpc', TagSpecifications: [{ ResourceType: 'elastic-ip', Tags: [{ Key: 'Name', Value: 'web' }] }],
    });
    assert.match(first.AllocationId, /^eipalloc-[0-9a-f]{17}$/);
    assert.deepEqual(first, { PublicIp: '203.0.113.1', AllocationId: first.AllocationId, PublicIpv4Pool: 'amazon', NetworkBorderGroup: REGION, Domain: 'vpc' });
    const second = await w.call(w.A, 'AllocateAddress', {});
    assert.equal(second.PublicIp, '203.0.113.2');
    const chosen = await w.call(w.A, 'AllocateAddress', { Address: '203.0.113.6' });
    assert.equal(chosen.PublicIp, '203.0.113.6');
    await expectEc2Error(w.call(w.B, 'AllocateAddress', { Address: '203.0.113.6' }), 'InvalidParameterValue', /already allocated/);
    await expectEc2Error(w.call(w.A, 'AllocateAddress', { Address: '198.51.100.7' }), 'InvalidAddress.NotFound', 'Address 198.51.100.7 not found.');
    await expectEc2Error(w.call(w.A, 'AllocateAddress', { Address: '203.0.113.7' }), 'InvalidAddress.NotFound', 'Address 203.0.113.7 not found.'); // the broadcast address
    await expectEc2Error(w.call(w.A, 'AllocateAddress', { Address: '203.0.113.07' }), 'InvalidParameterValue');
    await expectEc2Error(w.call(w.A, 'AllocateAddress', { Domain: 'standard' }), 'InvalidParameterValue', /EC2-Classic/);
    await expectEc2Error(w.call(w.A, 'AllocateAddress', { Domain: 'moon' }), 'InvalidParameterValue');
    await expectEc2Error(w.call(w.A, 'AllocateAddress', { NetworkBorderGroup: 'us-east-1' }), 'InvalidParameterValue');
    await expectEc2Error(w.call(w.A, 'AllocateAddress', { PublicIpv4Pool: 'ipv4pool-ec2-0123456789abcdef0' }), 'InvalidParameterValue');
    await expectEc2Error(w.call(w.A, 'AllocateAddress', { TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'a', Value: 'b' }] }] }), 'InvalidParameterValue');

    const all = (await w.call(w.A, 'DescribeAddresses')).Addresses;
    assert.deepEqual(all.map((a: any) => a.PublicIp), ['203.0.113.1', '203.0.113.2', '203.0.113.6']);
    assert.deepEqual(all[0], {
      PublicIp: '203.0.113.1', AllocationId: first.AllocationId, Domain: 'vpc', PublicIpv4Pool: 'amazon', NetworkBorderGroup: REGION,
      Tags: [{ Key: 'Name', Value: 'web' }],
    });
    assert.deepEqual((await w.call(w.B, 'DescribeAddresses')).Addresses, [], "another account's addresses are not shown");
    const ips = async (input: object) => (await w.call(w.A, 'DescribeAddresses', input)).Addresses.map((a: any) => a.PublicIp);
    assert.deepEqual(await ips({ PublicIps: ['203.0.113.2'] }), ['203.0.113.2']);
    assert.deepEqual(await ips({ AllocationIds: [chosen.AllocationId, first.AllocationId] }), ['203.0.113.1', '203.0.113.6']);
    assert.deepEqual(await ips({ Filters: [{ Name: 'tag:Name', Values: ['web'] }] }), ['203.0.113.1']);
    assert.deepEqual(await ips({ Filters: [{ Name: 'tag-key', Values: ['Name'] }] }), ['203.0.113.1']);
    assert.deepEqual(await ips({ Filters: [{ Name: 'public-ip', Values: ['203.0.113.?'] }, { Name: 'domain', Values: ['vpc'] }] }), ['203.0.113.1', '203.0.113.2', '203.0.113.6']);
    assert.deepEqual(await ips({ Filters: [{ Name: 'allocation-id', Values: [second.AllocationId] }] }), ['203.0.113.2']);
    assert.deepEqual(await ips({ Filters: [{ Name: 'association-id', Values: ['*'] }] }), []);
    await expectEc2Error(w.call(w.A, 'DescribeAddresses', { Filters: [{ Name: 'colour', Values: ['red'] }] }), 'InvalidParameterValue');
    await expectEc2Error(w.call(w.A, 'DescribeAddresses', { PublicIps: ['198.51.100.1'] }), 'InvalidAddress.NotFound', 'Address 198.51.100.1 not found.');
    await expectEc2Error(w.call(w.B, 'DescribeAddresses', { AllocationIds: [first.AllocationId] }), 'InvalidAllocationID.NotFound',
      `The allocation ID '${first.AllocationId}' does not exist`);
    await expectEc2Error(w.call(w.A, 'DescribeAddresses', { AllocationIds: ['eipalloc-nothex'] }), 'InvalidAllocationID.Malformed');

    // Tags through CreateTags/DescribeTags, like any other resource.
    await w.call(w.A, 'CreateTags', { Resources: [second.AllocationId], Tags: [{ Key: 'role', Value: 'db' }] });
    const tags = (await w.call(w.A, 'DescribeTags', { Filters: [{ Name: 'resource-type', Values: ['elastic-ip'] }] })).Tags;
    assert.deepEqual(tags.map((t: any) => [t.ResourceId, t.Key, t.Value]).sort(), [[first.AllocationId, 'Name', 'web'], [second.AllocationId, 'role', 'db']].sort());
    await expectEc2Error(w.call(w.B, 'CreateTags', { Resources: [second.AllocationId], Tags: [{ Key: 'x', Value: 'y' }] }), 'InvalidAllocationID.NotFound');

    const attributes = await w.call(w.A, 'DescribeAddressesAttribute', { AllocationIds: [first.AllocationId], Attribute: 'domain-name' });
    assert.deepEqual(attributes, { Addresses: [{ PublicIp: '203.0.113.1', AllocationId: first.AllocationId, PtrRecord: `ec2-203-0-113-1.${REGION}.compute.amazonaws.com.` }] });
    const paged = await w.call(w.A, 'DescribeAddressesAttribute', { Attribute: 'domain-name', MaxResults: 2 });
    assert.equal(paged.Addresses.length, 2);
    const rest = await w.call(w.A, 'DescribeAddressesAttribute', { Attribute: 'domain-name', MaxResults: 2, NextToken: paged.NextToken });
    assert.deepEqual(rest.Addresses.map((a: any) => a.PublicIp), ['203.0.113.6']);
    await expectEc2Error(w.call(w.A, 'DescribeAddressesAttribute', { Attribute: 'colour' }), 'InvalidParameterValue');

    assert.deepEqual(await w.call(w.A, 'ReleaseAddress', { AllocationId: first.AllocationId }), {});
    await expectEc2Error(w.call(w.A, 'ReleaseAddress', { AllocationId: first.AllocationId }), 'InvalidAllocationID.NotFound');
    await expectEc2Error(w.call(w.B, 'ReleaseAddress', { AllocationId: second.AllocationId }), 'InvalidAllocationID.NotFound');
    await expectEc2Error(w.call(w.A, 'ReleaseAddress', { PublicIp: '203.0.113.5' }), 'InvalidAddress.NotFound');
    await expectEc2Error(w.call(w.A, 'ReleaseAddress', {}), 'MissingParameter');
    assert.deepEqual(await w.call(w.A, 'ReleaseAddress', { PublicIp: '203.0.113.6' }), {}, 'euca2ools releases by address');
    assert.deepEqual(await ips({}), ['203.0.113.2']);
    assert.equal((await w.store.db.selectFrom('tags').selectAll().where('resource_id', '=', first.AllocationId).execute()).length, 0);
    // A released address goes back to the range.
    assert.equal((await w.call(w.B, 'AllocateAddress', {})).PublicIp, '203.0.113.1');
  });

  it("enforces the operator's quota, which DescribeAccountAttributes reports, and the range's size", async () => {
    await setRange(w, ZONE_A, RANGE_A);
    const attribute = async (account: string) => (await w.call(account, 'DescribeAccountAttributes', { AttributeNames: ['vpc-max-elastic-ips'] }))
      .AccountAttributes[0].AttributeValues[0].AttributeValue;
    assert.equal(await attribute(w.A), '5');
    await setQuota(w.store.db, w.A, 'max-elastic-ips', 2);
    assert.equal(await attribute(w.A), '2');
    assert.equal(await attribute(w.B), '5', 'per account');
    await w.call(w.A, 'AllocateAddress', {});
    await w.call(w.A, 'AllocateAddress', {});
    await expectEc2Error(w.call(w.A, 'AllocateAddress', {}), 'AddressLimitExceeded', 'The maximum number of addresses has been reached.');
    assert.equal((await w.call(w.A, 'DescribeAddresses')).Addresses.length, 2, 'a refusal leaves nothing behind');
    for (let i = 0; i < 4; i++) await w.call(w.B, 'AllocateAddress', {});
    await expectEc2Error(w.call(w.B, 'AllocateAddress', {}), 'InsufficientAddressCapacity', /availability zone ironbark-1a/);
  });
});

for (const backend of storeBackends()) describe(`AssociateAddress, DisassociateAddress and public addresses of instances on ${backend.name}`, () => {
  let w: World;
  beforeEach(async () => { w = await makeWorld(backend); await setRange(w, ZONE_A, RANGE_A); });
  afterEach(async () => w.close());

  it('gives a launch in a MapPublicIpOnLaunch subnet a public address, unless the interface says no', async () => {
    const id = await w.launch();
    const view = await w.instance(id);
    assert.equal(view.PublicIpAddress, '203.0.113.1');
    const spec = (w.clusterA.callsTo('runInstances')[0]![0] as { publicIp?: string }[])[0]!;
    assert.equal(spec.publicIp, '203.0.113.1', "the node's metadata service starts with it");
    assert.equal(view.PublicDnsName, `ec2-203-0-113-1.${REGION}.compute.amazonaws.com`);
    assert.deepEqual(view.NetworkInterfaces[0].Association, { IpOwnerId: 'amazon', PublicDnsName: view.PublicDnsName, PublicIp: '203.0.113.1' });
    assert.deepEqual(view.NetworkInterfaces[0].PrivateIpAddresses[0].Association, view.NetworkInterfaces[0].Association);
    const found = await w.call(w.A, 'DescribeInstances', { Filters: [{ Name: 'ip-address', Values: ['203.0.113.1'] }] });
    assert.deepEqual(found.Reservations.flatMap((r: any) => r.Instances.map((i: any) => i.InstanceId)), [id]);
    assert.deepEqual((await w.call(w.A, 'DescribeAddresses')).Addresses, [], 'a launch-time address is not an elastic IP');

    const subnet = (await w.store.db.selectFrom('subnets').select('id').where('account_id', '=', w.A).where('zone', '=', ZONE_A).executeTakeFirstOrThrow()).id;
    const without = await w.launch({ Placement: undefined, NetworkInterfaces: [{ DeviceIndex: 0, SubnetId: subnet, AssociatePublicIpAddress: false }] });
    assert.equal((await w.instance(without)).PublicIpAddress, undefined);
    assert.equal((await w.instance(without)).PublicDnsName, '');
    await expectEc2Error(w.launch({ SubnetId: subnet, Placement: undefined, NetworkInterfaces: [{ DeviceIndex: 0, AssociatePublicIpAddress: true }] }),
      'InvalidParameterCombination', 'Network interfaces and an instance-level subnet ID may not be specified on the same request');
    await expectEc2Error(w.launch({ NetworkInterfaces: [{ DeviceIndex: 1, AssociatePublicIpAddress: true }] }), 'InvalidParameterValue');

    // A zone without a range: MapPublicIpOnLaunch gives nothing, an explicit ask is refused.
    const quiet = await w.launch({ Placement: { AvailabilityZone: ZONE_B } });
    assert.equal((await w.instance(quiet)).PublicIpAddress, undefined);
    const subnetB = (await w.store.db.selectFrom('subnets').select('id').where('account_id', '=', w.A).where('zone', '=', ZONE_B).executeTakeFirstOrThrow()).id;
    await expectEc2Error(w.launch({ Placement: undefined, NetworkInterfaces: [{ DeviceIndex: 0, SubnetId: subnetB, AssociatePublicIpAddress: true }] }),
      'InsufficientAddressCapacity');
    const live = await w.store.db.selectFrom('instances').select('id').where('zone', '=', ZONE_B).execute();
    assert.deepEqual(live.map((r) => r.id), [quiet], 'the refused launch left no instance behind');
  });

  it("follows the subnet's MapPublicIpOnLaunch, which ModifySubnetAttribute changes", async () => {
    const subnet = (await w.call(w.A, 'DescribeSubnets', { Filters: [{ Name: 'availability-zone', Values: [ZONE_A] }] })).Subnets[0];
    assert.equal(subnet.MapPublicIpOnLaunch, true, 'default subnets have it, as on EC2');
    assert.deepEqual(await w.call(w.A, 'ModifySubnetAttribute', { SubnetId: subnet.SubnetId, MapPublicIpOnLaunch: { Value: false } }), {});
    assert.equal((await w.call(w.A, 'DescribeSubnets', { SubnetIds: [subnet.SubnetId] })).Subnets[0].MapPublicIpOnLaunch, false);
    assert.equal((await w.instance(await w.launch())).PublicIpAddress, undefined);
    const asked = await w.launch({ NetworkInterfaces: [{ DeviceIndex: 0, AssociatePublicIpAddress: true }] });
    assert.equal((await w.instance(asked)).PublicIpAddress, '203.0.113.1', 'the interface can still ask for one');
    await w.call(w.A, 'ModifySubnetAttribute', { SubnetId: subnet.SubnetId, MapPublicIpOnLaunch: { Value: true } });
    assert.equal((await w.instance(await w.launch())).PublicIpAddress, '203.0.113.2');

    await expectEc2Error(w.call(w.B, 'ModifySubnetAttribute', { SubnetId: subnet.SubnetId, MapPublicIpOnLaunch: { Value: false } }), 'InvalidSubnetID.NotFound');
    await expectEc2Error(w.call(w.A, 'ModifySubnetAttribute', { SubnetId: 'subnet-x' , MapPublicIpOnLaunch: { Value: false } }), 'InvalidSubnetID.Malformed');
    await expectEc2Error(w.call(w.A, 'ModifySubnetAttribute', { SubnetId: subnet.SubnetId }), 'MissingParameter');
    await expectEc2Error(w.call(w.A, 'ModifySubnetAttribute', { SubnetId: subnet.SubnetId, MapPublicIpOnLaunch: { Value: false }, EnableDns64: { Value: false } }),
      'InvalidParameterCombination', 'Fields for multiple attribute types specified: MapPublicIpOnLaunch, EnableDns64');
    await expectEc2Error(w.call(w.A, 'ModifySubnetAttribute', { SubnetId: subnet.SubnetId, AssignIpv6AddressOnCreation: { Value: true } }), 'InvalidParameterValue');
    assert.deepEqual(await w.call(w.A, 'ModifySubnetAttribute', { SubnetId: subnet.SubnetId, AssignIpv6AddressOnCreation: { Value: false } }), {});
    assert.deepEqual(await w.call(w.A, 'ModifySubnetAttribute', { SubnetId: subnet.SubnetId, PrivateDnsHostnameTypeOnLaunch: 'ip-name' }), {});
    await expectEc2Error(w.call(w.A, 'ModifySubnetAttribute', { SubnetId: subnet.SubnetId, PrivateDnsHostnameTypeOnLaunch: 'resource-name' }), 'InvalidParameterValue');
    await expectEc2Error(w.call(w.A, 'ModifySubnetAttribute', { SubnetId: subnet.SubnetId, EnableLniAtDeviceIndex: 1 }), 'InvalidParameterValue');
    assert.equal((await w.call(w.A, 'DescribeSubnets', { SubnetIds: [subnet.SubnetId] })).Subnets[0].MapPublicIpOnLaunch, true, 'refusals changed nothing');
  });

  it('associates by instance or interface, refuses a second association unless allowed, and hands launch-time addresses back and forth', async () => {
    const one = await w.launch();
    const two = await w.launch();
    const three = await w.launch({ NetworkInterfaces: [{ DeviceIndex: 0, AssociatePublicIpAddress: false }] });
    assert.deepEqual([(await w.instance(one)).PublicIpAddress, (await w.instance(two)).PublicIpAddress], ['203.0.113.1', '203.0.113.2']);
    const eip = await w.call(w.A, 'AllocateAddress', { Domain: 'vpc' });
    assert.equal(eip.PublicIp, '203.0.113.3');

    const { AssociationId } = await w.call(w.A, 'AssociateAddress', { AllocationId: eip.AllocationId, InstanceId: one });
    assert.match(AssociationId, /^eipassoc-[0-9a-f]{17}$/);
    const view = await w.instance(one);
    assert.equal(view.PublicIpAddress, '203.0.113.3');
    // AllocationId and AssociationId are there for the association filters; the serializer shows the model's three.
    assert.deepEqual(view.NetworkInterfaces[0].Association, {
      IpOwnerId: w.A, PublicDnsName: `ec2-203-0-113-3.${REGION}.compute.amazonaws.com`, PublicIp: '203.0.113.3', AllocationId: eip.AllocationId, AssociationId,
    });
    const [shown] = (await w.call(w.A, 'DescribeAddresses', { AllocationIds: [eip.AllocationId] })).Addresses;
    assert.deepEqual(shown, {
      PublicIp: '203.0.113.3', AllocationId: eip.AllocationId, Domain: 'vpc', PublicIpv4Pool: 'amazon', NetworkBorderGroup: REGION,
      AssociationId, InstanceId: one, NetworkInterfaceId: view.NetworkInterfaces[0].NetworkInterfaceId, NetworkInterfaceOwnerId: w.A,
      PrivateIpAddress: view.PrivateIpAddress, Tags: [],
    });
    assert.deepEqual((await w.heldAddresses()).map((a) => a.public_ip), ['203.0.113.2', '203.0.113.3'], "the launch-time address went back to the range");
    const filtered = async (name: string, value: string) => (await w.call(w.A, 'DescribeAddresses', { Filters: [{ Name: name, Values: [value] }] })).Addresses.length;
    assert.equal(await filtered('instance-id', one), 1);
    assert.equal(await filtered('instance-id', two), 0);
    assert.equal(await filtered('association-id', AssociationId), 1);
    assert.equal(await filtered('private-ip-address', view.PrivateIpAddress), 1);
    assert.equal(await filtered('network-interface-id', view.NetworkInterfaces[0].NetworkInterfaceId), 1);
    assert.equal(await filtered('network-interface-owner-id', w.A), 1);
    const byAllocation = await w.call(w.A, 'DescribeInstances', { Filters: [{ Name: 'network-interface.association.allocation-id', Values: [eip.AllocationId] }] });
    assert.deepEqual(byAllocation.Reservations.flatMap((r: any) => r.Instances.map((i: any) => i.InstanceId)), [one]);

    assert.deepEqual(await w.call(w.A, 'AssociateAddress', { AllocationId: eip.AllocationId, InstanceId: one }), { AssociationId }, 'the same association again');
    await expectEc2Error(w.call(w.A, 'AssociateAddress', { AllocationId: eip.AllocationId, InstanceId: two }), 'Resource.AlreadyAssociated',
      `resource ${eip.AllocationId} is already associated with associate-id ${AssociationId}`);
    const twoEni = (await w.instance(two)).NetworkInterfaces[0].NetworkInterfaceId;
    const moved = await w.call(w.A, 'AssociateAddress', { AllocationId: eip.AllocationId, NetworkInterfaceId: twoEni, AllowReassociation: true });
    assert.notEqual(moved.AssociationId, AssociationId);
    assert.equal((await w.instance(two)).PublicIpAddress, '203.0.113.3');
    assert.equal((await w.instance(one)).PublicIpAddress, '203.0.113.1', 'the instance it left gets a launch-time address again');
    await expectEc2Error(w.call(w.A, 'DisassociateAddress', { AssociationId }), 'InvalidAssociationID.NotFound', `The association ID '${AssociationId}' does not exist`);

    await expectEc2Error(w.call(w.A, 'ReleaseAddress', { AllocationId: eip.AllocationId }), 'InvalidIPAddress.InUse');
    await expectEc2Error(w.call(w.B, 'DisassociateAddress', { AssociationId: moved.AssociationId }), 'InvalidAssociationID.NotFound');
    assert.deepEqual(await w.call(w.A, 'DisassociateAddress', { AssociationId: moved.AssociationId }), {});
    assert.equal((await w.instance(two)).PublicIpAddress, '203.0.113.2');
    const after = (await w.call(w.A, 'DescribeAddresses')).Addresses[0];
    assert.equal(after.AssociationId, undefined);
    assert.equal(after.InstanceId, undefined);

    // An instance launched without a public address has none once the elastic IP leaves it.
    await w.call(w.A, 'AssociateAddress', { PublicIp: '203.0.113.3', InstanceId: three });
    assert.equal((await w.instance(three)).PublicIpAddress, '203.0.113.3');
    await w.call(w.A, 'DisassociateAddress', { PublicIp: '203.0.113.3' });
    assert.equal((await w.instance(three)).PublicIpAddress, undefined);
    assert.deepEqual(await w.call(w.A, 'ReleaseAddress', { AllocationId: eip.AllocationId }), {});
  });

  it('gives each instance of a launch its own address, and refuses a launch the range cannot serve', async () => {
    const out = await w.call(w.A, 'RunInstances', { ImageId: w.image.imageId, MinCount: 3, MaxCount: 3, Placement: { AvailabilityZone: ZONE_A } });
    const ids = out.Instances.map((i: any) => i.InstanceId);
    const ips = await Promise.all(ids.map(async (id: string) => (await w.instance(id)).PublicIpAddress));
    assert.deepEqual(ips.sort(), ['203.0.113.1', '203.0.113.2', '203.0.113.3']);
    await expectEc2Error(w.call(w.A, 'RunInstances', { ImageId: w.image.imageId, MinCount: 4, MaxCount: 4, Placement: { AvailabilityZone: ZONE_A } }),
      'InsufficientAddressCapacity');
    assert.equal((await w.heldAddresses()).length, 3, 'the refused launch holds nothing');
    assert.equal((await w.store.db.selectFrom('instances').select('id').execute()).length, 3);
  });

  it('refuses what EC2 refuses', async () => {
    const one = await w.launch();
    const theirs = await w.launch({}, w.B);
    const inZoneB = await w.launch({ Placement: { AvailabilityZone: ZONE_B } });
    const eip = await w.call(w.A, 'AllocateAddress', {});
    await expectEc2Error(w.call(w.A, 'AssociateAddress', { InstanceId: one }), 'MissingParameter');
    await expectEc2Error(w.call(w.A, 'AssociateAddress', { AllocationId: eip.AllocationId }), 'MissingParameter');
    await expectEc2Error(w.call(w.A, 'AssociateAddress', { AllocationId: 'eipalloc-0123456789abcdef0', InstanceId: one }), 'InvalidAllocationID.NotFound');
    await expectEc2Error(w.call(w.B, 'AssociateAddress', { AllocationId: eip.AllocationId, InstanceId: theirs }), 'InvalidAllocationID.NotFound');
    await expectEc2Error(w.call(w.A, 'AssociateAddress', { AllocationId: eip.AllocationId, InstanceId: theirs }), 'InvalidInstanceID.NotFound');
    await expectEc2Error(w.call(w.A, 'AssociateAddress', { AllocationId: eip.AllocationId, NetworkInterfaceId: 'eni-0123456789abcdef0' }), 'InvalidNetworkInterfaceID.NotFound');
    await expectEc2Error(w.call(w.A, 'AssociateAddress', { AllocationId: eip.AllocationId, InstanceId: one, PrivateIpAddress: '10.1.9.9' }), 'InvalidParameterValue');
    await expectEc2Error(w.call(w.A, 'AssociateAddress', { AllocationId: eip.AllocationId, InstanceId: inZoneB }), 'InvalidParameterValue', /public range of availability zone ironbark-1a/);
    await expectEc2Error(w.call(w.A, 'DisassociateAddress', {}), 'MissingParameter');
    await expectEc2Error(w.call(w.A, 'DisassociateAddress', { AssociationId: 'eipassoc-0123456789abcdef0' }), 'InvalidAssociationID.NotFound');
    await expectEc2Error(w.call(w.A, 'DisassociateAddress', { AssociationId: 'assoc-1' }), 'InvalidAssociationID.Malformed');
    assert.equal((await w.instance(one)).PublicIpAddress, '203.0.113.1', 'refusals changed nothing');
  });

  it('releases launch-time addresses and disassociates elastic IPs when instances terminate', async () => {
    w.clusterA.autoProgress = true;
    const one = await w.launch();
    const two = await w.launch();
    const eip = await w.call(w.A, 'AllocateAddress', {});
    await w.call(w.A, 'AssociateAddress', { AllocationId: eip.AllocationId, InstanceId: two });
    await w.reconciler.reconcileOnce();
    await w.call(w.A, 'TerminateInstances', { InstanceIds: [one, two] });
    await w.reconciler.reconcileOnce();
    const gone = await w.instance(one);
    assert.equal(gone.State.Name, 'terminated');
    assert.equal(gone.PublicIpAddress, undefined);
    assert.deepEqual(await w.heldAddresses(), [{ public_ip: eip.PublicIp, allocation_id: eip.AllocationId, instance_id: null }]);
    const [shown] = (await w.call(w.A, 'DescribeAddresses')).Addresses;
    assert.equal(shown.AssociationId, undefined);
    await expectEc2Error(w.call(w.A, 'AssociateAddress', { AllocationId: eip.AllocationId, InstanceId: two }), 'IncorrectInstanceState');
  });

  it('gives a stopped instance\'s launch-time address back and a new one at start; an elastic IP stays through both', async () => {
    w.clusterA.autoProgress = true;
    const one = await w.launch();
    const two = await w.launch();
    const eip = await w.call(w.A, 'AllocateAddress', {});
    await w.call(w.A, 'AssociateAddress', { AllocationId: eip.AllocationId, InstanceId: two });
    await w.reconciler.reconcileOnce();
    assert.equal((await w.instance(one)).PublicIpAddress, '203.0.113.1');

    await w.call(w.A, 'StopInstances', { InstanceIds: [one, two] });
    assert.equal((await w.instance(one)).PublicIpAddress, '203.0.113.1', 'kept while stopping');
    await w.reconciler.reconcileOnce();
    const stopped = await w.instance(one);
    assert.equal(stopped.State.Name, 'stopped');
    assert.equal(stopped.PublicIpAddress, undefined);
    assert.equal(stopped.PublicDnsName, '');
    assert.equal((await w.instance(two)).PublicIpAddress, eip.PublicIp, 'the elastic IP stays with the stopped instance');
    const doc = await buildFirewallDocument(w.store.db, ZONE_A);
    assert.equal(doc.instances.find((i) => i.id === one)?.publicIp, undefined, 'no node answers for it any more');
    // Back in the range: the next launch takes it.
    const three = await w.launch();
    assert.equal((await w.instance(three)).PublicIpAddress, '203.0.113.1');

    await w.call(w.A, 'StartInstances', { InstanceIds: [one, two] });
    const started = await w.instance(one);
    // .1 went to the third instance, .3 is the elastic IP: the lowest free one is .2 (given back when two took the elastic IP).
    assert.equal(started.PublicIpAddress, '203.0.113.2', 'a new address from the range, at once');
    assert.equal((await w.instance(two)).PublicIpAddress, eip.PublicIp);
    assert.deepEqual((await w.heldAddresses()).filter((a) => a.instance_id === one).map((a) => [a.public_ip, a.allocation_id]), [[started.PublicIpAddress, null]]);
    await w.reconciler.reconcileOnce();
    assert.equal((await w.instance(one)).State.Name, 'running');
    assert.equal((await w.instance(one)).PublicIpAddress, started.PublicIpAddress);

    // A start the range cannot serve is refused, and the instance stays stopped with nothing taken.
    await w.call(w.A, 'StopInstances', { InstanceIds: [one] });
    await w.reconciler.reconcileOnce();
    while ((await w.heldAddresses()).length < 6) await w.call(w.A, 'AllocateAddress', {});
    await expectEc2Error(w.call(w.A, 'StartInstances', { InstanceIds: [one] }), 'InsufficientAddressCapacity');
    const refused = await w.instance(one);
    assert.equal(refused.State.Name, 'stopped');
    assert.equal(refused.PublicIpAddress, undefined);
  });

  it("puts each instance's public address in its zone's firewall document", async () => {
    const one = await w.launch();
    const two = await w.launch({ NetworkInterfaces: [{ DeviceIndex: 0, AssociatePublicIpAddress: false }] });
    const before = await buildFirewallDocument(w.store.db, ZONE_A);
    const byId = (doc: typeof before) => new Map(doc.instances.map((i) => [i.id, i.publicIp]));
    assert.equal(byId(before).get(one), '203.0.113.1');
    assert.equal(byId(before).get(two), undefined);
    const eip = await w.call(w.A, 'AllocateAddress', {});
    await w.call(w.A, 'AssociateAddress', { AllocationId: eip.AllocationId, InstanceId: two });
    const after = await buildFirewallDocument(w.store.db, ZONE_A);
    assert.equal(byId(after).get(two), eip.PublicIp);
    assert.notEqual(after.version, before.version, 'a new association is a new document');
  });
});
