// DescribeVpcs and DescribeSubnets over the provisioned default network, with filters, paging,
// errors, and no sight of another account's network.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Store } from '../../src/store/store.ts';
import { vpcOperations } from '../../src/cloud/vpcs.ts';
import { writeTags } from '../../src/cloud/tags.ts';
import { callOperation, contextFor, expectEc2Error, openTestCloudStore, provisionDefaultNetworks } from '../helpers/handler-context.ts';

const now = () => new Date().toISOString();
const A = '111111111111';
const B = '222222222222';

describe('vpcs and subnets', () => {
  let store: Store;
  let vpcA: string;
  let vpcB: string;
  const call = (account: string, action: 'DescribeVpcs' | 'DescribeSubnets', input: object = {}) =>
    callOperation(contextFor(store, account), vpcOperations, action, input);

  before(async () => {
    store = await openTestCloudStore({
      accounts: [A, B],
      zones: [
        { name: 'ironbark-1a', cidr: '10.10.0.0/16', zoneId: 'ibk1-az1' },
        { name: 'ironbark-1b', cidr: '10.11.0.0/24', zoneId: 'ibk1-az2' },
      ],
    });
    [vpcA, vpcB] = await provisionDefaultNetworks(store, A, B);
  });
  after(async () => store.close());

  it('DescribeVpcs shows the default VPC as EC2 does', async () => {
    const out = await call(A, 'DescribeVpcs');
    assert.equal(out.Vpcs.length, 1);
    const vpc = out.Vpcs[0];
    assert.equal(vpc.VpcId, vpcA);
    assert.equal(vpc.CidrBlock, '10.10.0.0/15');
    assert.equal(vpc.IsDefault, true);
    assert.equal(vpc.State, 'available');
    assert.equal(vpc.OwnerId, A);
    assert.equal(vpc.InstanceTenancy, 'default');
    assert.match(vpc.DhcpOptionsId, /^dopt-/);
    assert.deepEqual(vpc.CidrBlockAssociationSet, [{ AssociationId: `vpc-cidr-assoc-${vpcA.slice(4)}`, CidrBlock: '10.10.0.0/15', CidrBlockState: { State: 'associated' } }]);
    assert.deepEqual(vpc.Tags, []);
    assert.equal(out.NextToken, undefined);
  });

  it('DescribeVpcs by id, with errors for unknown, foreign and malformed ids', async () => {
    assert.equal((await call(A, 'DescribeVpcs', { VpcIds: [vpcA] })).Vpcs[0].VpcId, vpcA);
    await expectEc2Error(call(A, 'DescribeVpcs', { VpcIds: ['vpc-0123456789abcdef0'] }), 'InvalidVpcID.NotFound', "The vpc ID 'vpc-0123456789abcdef0' does not exist");
    await expectEc2Error(call(A, 'DescribeVpcs', { VpcIds: [vpcB] }), 'InvalidVpcID.NotFound', `The vpc ID '${vpcB}' does not exist`);
    await expectEc2Error(call(A, 'DescribeVpcs', { VpcIds: ['banana'] }), 'InvalidVpcID.Malformed', 'Invalid id: "banana" (expecting "vpc-...")');
  });

  it('DescribeVpcs filters', async () => {
    await writeTags(store.db, A, vpcA, [{ Key: 'env', Value: 'prod' }]);
    const ids = async (Filters: object[]) => (await call(A, 'DescribeVpcs', { Filters })).Vpcs.map((v: any) => v.VpcId);
    assert.deepEqual(await ids([{ Name: 'is-default', Values: ['true'] }]), [vpcA]);
    assert.deepEqual(await ids([{ Name: 'is-default', Values: ['false'] }]), []);
    assert.deepEqual(await ids([{ Name: 'cidr', Values: ['10.10.0.0/15'] }]), [vpcA]);
    assert.deepEqual(await ids([{ Name: 'cidr-block-association.cidr-block', Values: ['10.10.*'] }]), [vpcA]);
    assert.deepEqual(await ids([{ Name: 'state', Values: ['available'] }, { Name: 'owner-id', Values: [A] }]), [vpcA]);
    assert.deepEqual(await ids([{ Name: 'owner-id', Values: [B] }]), []);
    assert.deepEqual(await ids([{ Name: 'vpc-id', Values: [vpcA, vpcB] }]), [vpcA]);
    assert.deepEqual(await ids([{ Name: 'tag:env', Values: ['prod'] }]), [vpcA]);
    assert.deepEqual(await ids([{ Name: 'tag:env', Values: ['dev'] }]), []);
    const vpc = (await call(A, 'DescribeVpcs')).Vpcs[0];
    assert.deepEqual(vpc.Tags, [{ Key: 'env', Value: 'prod' }]);
    assert.deepEqual(await ids([{ Name: 'dhcp-options-id', Values: [vpc.DhcpOptionsId] }]), [vpcA]);
    await expectEc2Error(call(A, 'DescribeVpcs', { Filters: [{ Name: 'colour', Values: ['red'] }] }), 'InvalidParameterValue');
  });

  it('DescribeVpcs pages with MaxResults/NextToken', async () => {
    for (let i = 0; i < 6; i++) {
      await store.db.insertInto('vpcs').values({
        id: `vpc-${String(i).padStart(17, '0')}`, account_id: A, cidr: `192.168.${i}.0/24`, is_default: 0,
        state: 'available', dhcp_options_id: 'dopt-00000000', created_at: now(),
      }).execute();
    }
    const first = await call(A, 'DescribeVpcs', { MaxResults: 5 });
    assert.equal(first.Vpcs.length, 5);
    assert.ok(first.NextToken);
    const second = await call(A, 'DescribeVpcs', { MaxResults: 5, NextToken: first.NextToken });
    assert.equal(second.Vpcs.length, 2);
    assert.equal(second.NextToken, undefined);
    const all = [...first.Vpcs, ...second.Vpcs].map((v: any) => v.VpcId);
    assert.equal(new Set(all).size, 7);
    assert.deepEqual((await call(A, 'DescribeVpcs', { Filters: [{ Name: 'is-default', Values: ['false'] }] })).Vpcs.length, 6);
    await expectEc2Error(call(A, 'DescribeVpcs', { MaxResults: 2 }), 'InvalidParameterValue');
    // Account B still sees only its own VPC.
    assert.deepEqual((await call(B, 'DescribeVpcs')).Vpcs.map((v: any) => v.VpcId), [vpcB]);
  });

  it('DescribeSubnets shows one default subnet per zone', async () => {
    const out = await call(A, 'DescribeSubnets');
    const subnets = [...out.Subnets].sort((x: any, y: any) => x.AvailabilityZone.localeCompare(y.AvailabilityZone));
    assert.equal(subnets.length, 2);
    const [a, b] = subnets;
    assert.match(a.SubnetId, /^subnet-[0-9a-f]{17}$/);
    assert.equal(a.VpcId, vpcA);
    assert.equal(a.CidrBlock, '10.10.0.0/16');
    assert.equal(a.AvailabilityZone, 'ironbark-1a');
    assert.equal(a.AvailabilityZoneId, 'ibk1-az1');
    assert.equal(a.AvailableIpAddressCount, 65531);
    assert.equal(a.DefaultForAz, true);
    assert.equal(a.MapPublicIpOnLaunch, true);
    assert.equal(a.State, 'available');
    assert.equal(a.OwnerId, A);
    assert.equal(a.SubnetArn, `arn:aws:ec2:ironbark-1:${A}:subnet/${a.SubnetId}`);
    assert.equal(b.CidrBlock, '10.11.0.0/24');
    assert.equal(b.AvailabilityZoneId, 'ibk1-az2');
    assert.equal(b.AvailableIpAddressCount, 251);
  });

  it('DescribeSubnets by id and filters; errors for unknown, foreign and malformed ids', async () => {
    const mine = (await call(A, 'DescribeSubnets')).Subnets;
    const theirs = (await call(B, 'DescribeSubnets')).Subnets;
    const inZoneA = mine.find((s: any) => s.AvailabilityZone === 'ironbark-1a');
    assert.equal((await call(A, 'DescribeSubnets', { SubnetIds: [inZoneA.SubnetId] })).Subnets[0].SubnetId, inZoneA.SubnetId);
    await expectEc2Error(call(A, 'DescribeSubnets', { SubnetIds: [theirs[0].SubnetId] }), 'InvalidSubnetID.NotFound', `The subnet ID '${theirs[0].SubnetId}' does not exist`);
    await expectEc2Error(call(A, 'DescribeSubnets', { SubnetIds: ['subnet-0123456789abcdef0'] }), 'InvalidSubnetID.NotFound');
    await expectEc2Error(call(A, 'DescribeSubnets', { SubnetIds: ['subnet-xyz'] }), 'InvalidSubnetID.Malformed');

    await writeTags(store.db, A, inZoneA.SubnetId, [{ Key: 'Name', Value: 'front' }]);
    const ids = async (Filters: object[]) => (await call(A, 'DescribeSubnets', { Filters })).Subnets.map((s: any) => s.SubnetId).sort();
    const both = mine.map((s: any) => s.SubnetId).sort();
    assert.deepEqual(await ids([{ Name: 'availability-zone', Values: ['ironbark-1a'] }]), [inZoneA.SubnetId]);
    assert.deepEqual(await ids([{ Name: 'availability-zone-id', Values: ['ibk1-az1'] }]), [inZoneA.SubnetId]);
    assert.deepEqual(await ids([{ Name: 'default-for-az', Values: ['true'] }]), both);
    assert.deepEqual(await ids([{ Name: 'defaultForAz', Values: ['false'] }]), []);
    assert.deepEqual(await ids([{ Name: 'vpc-id', Values: [vpcA] }]), both);
    assert.deepEqual(await ids([{ Name: 'vpc-id', Values: [vpcB] }]), []);
    assert.deepEqual(await ids([{ Name: 'cidr-block', Values: ['10.10.0.0/16'] }]), [inZoneA.SubnetId]);
    assert.deepEqual(await ids([{ Name: 'cidr', Values: ['10.11.*'] }]), [mine.find((s: any) => s.AvailabilityZone === 'ironbark-1b').SubnetId]);
    assert.deepEqual(await ids([{ Name: 'state', Values: ['available'] }, { Name: 'owner-id', Values: [A] }]), both);
    assert.deepEqual(await ids([{ Name: 'map-public-ip-on-launch', Values: ['true'] }]), both);
    assert.deepEqual(await ids([{ Name: 'subnet-id', Values: [inZoneA.SubnetId, theirs[0].SubnetId] }]), [inZoneA.SubnetId]);
    assert.deepEqual(await ids([{ Name: 'tag:Name', Values: ['fr*'] }]), [inZoneA.SubnetId]);
    assert.deepEqual(await ids([{ Name: 'tag-key', Values: ['Name'] }]), [inZoneA.SubnetId]);
  });

  it('DescribeSubnets pages', async () => {
    const first = await call(A, 'DescribeSubnets', { MaxResults: 5 });
    assert.equal(first.Subnets.length, 2);
    assert.equal(first.NextToken, undefined);
    await expectEc2Error(call(A, 'DescribeSubnets', { NextToken: 'garbage' }), 'InvalidNextToken');
  });
});
