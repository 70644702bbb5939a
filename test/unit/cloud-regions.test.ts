// DescribeRegions, DescribeAvailabilityZones and DescribeAccountAttributes, called as handlers
// on an in-memory store.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Store } from '../../src/store/store.ts';
import type { RequestContext } from '../../src/cloud/context.ts';
import { regionOperations } from '../../src/cloud/regions.ts';
import { accountAttributeOperations } from '../../src/cloud/account-attributes.ts';
import { quotaSettingKey } from '../../src/cloud/quotas.ts';
import { contextFor, isEc2Error, openTestCloudStore } from '../helpers/handler-context.ts';

const ALICE = '111111111111';
const BOB = '222222222222';
const now = () => new Date().toISOString();

const filter = (Name: string, ...Values: string[]) => [{ Name, Values }];

describe('regions, zones and account attributes', () => {
  let store: Store;
  let alice: RequestContext;
  let bob: RequestContext;
  const { DescribeRegions, DescribeAvailabilityZones } = regionOperations;
  const { DescribeAccountAttributes } = accountAttributeOperations;

  before(async () => {
    store = await openTestCloudStore({
      accounts: [ALICE, BOB],
      zones: [
        { name: 'ironbark-1b', cidr: '10.2.0.0/16', zoneId: 'ibk1-az2', state: 'impaired' },
        { name: 'ironbark-1a', cidr: '10.1.0.0/16', zoneId: 'ibk1-az1' },
        { name: 'other-1a', cidr: '10.9.0.0/16', zoneId: 'oth1-az1', region: 'other-1' },
      ],
    });
    await store.db.insertInto('vpcs').values({
      id: 'vpc-0123456789abcdef0', account_id: ALICE, cidr: '172.31.0.0/16', is_default: 1, state: 'available',
      dhcp_options_id: 'dopt-01234567', created_at: now(),
    }).execute();
    alice = contextFor(store, ALICE);
    bob = contextFor(store, BOB);
  });
  after(async () => store.close());

  describe('DescribeRegions', () => {
    it('lists the one region, with the endpoint host and no opt-in', async () => {
      const out = await DescribeRegions(alice, {});
      assert.deepEqual(out, { Regions: [{ RegionName: 'ironbark-1', Endpoint: '127.0.0.1:8773', OptInStatus: 'opt-in-not-required' }] });
      const named = await DescribeRegions(contextFor(store, ALICE, { endpoint: 'https://ec2.cloud.example' }), { RegionNames: ['ironbark-1'], AllRegions: true });
      assert.equal(named.Regions[0].Endpoint, 'ec2.cloud.example');
    });

    it('filters by region-name, endpoint and opt-in-status, with wildcards', async () => {
      assert.equal((await DescribeRegions(alice, { Filters: filter('region-name', 'ironbark-*') })).Regions.length, 1);
      assert.equal((await DescribeRegions(alice, { Filters: filter('region-name', 'us-east-1') })).Regions.length, 0);
      assert.equal((await DescribeRegions(alice, { Filters: filter('endpoint', '*8773') })).Regions.length, 1);
      assert.equal((await DescribeRegions(alice, { Filters: filter('opt-in-status', 'opted-in') })).Regions.length, 0);
      await assert.rejects(DescribeRegions(alice, { Filters: filter('tag:Name', 'x') }), isEc2Error('InvalidParameterValue', "The filter 'tag:Name' is invalid"));
    });

    it('refuses region names it does not have, naming the first one', async () => {
      await assert.rejects(DescribeRegions(alice, { RegionNames: ['ironbark-1', 'zz-9', 'us-east-1'] }), isEc2Error('InvalidParameterValue', 'Invalid region: [us-east-1]'));
    });
  });

  describe('DescribeAvailabilityZones', () => {
    it('lists this region\'s zones in name order, shaped as EC2 shows them', async () => {
      const out = await DescribeAvailabilityZones(alice, {});
      assert.deepEqual(out.AvailabilityZones.map((z: { ZoneName: string }) => z.ZoneName), ['ironbark-1a', 'ironbark-1b']);
      assert.deepEqual(out.AvailabilityZones[0], {
        State: 'available', OptInStatus: 'opt-in-not-required', Messages: [], RegionName: 'ironbark-1', ZoneName: 'ironbark-1a',
        ZoneId: 'ibk1-az1', GroupName: 'ironbark-1', NetworkBorderGroup: 'ironbark-1', ZoneType: 'availability-zone',
      });
    });

    it('selects by ZoneNames and ZoneIds', async () => {
      const byName = await DescribeAvailabilityZones(alice, { ZoneNames: ['ironbark-1b'] });
      assert.deepEqual(byName.AvailabilityZones.map((z: { ZoneId: string }) => z.ZoneId), ['ibk1-az2']);
      const both = await DescribeAvailabilityZones(alice, { ZoneNames: ['ironbark-1b'], ZoneIds: ['ibk1-az1'] });
      assert.equal(both.AvailabilityZones.length, 2);
    });

    it('refuses unknown zone names and ids, including another region\'s', async () => {
      await assert.rejects(DescribeAvailabilityZones(alice, { ZoneNames: ['ironbark-1a', 'other-1a', 'ironbark-1z'] }),
        isEc2Error('InvalidParameterValue', 'Invalid availability zone: [other-1a]'));
      await assert.rejects(DescribeAvailabilityZones(alice, { ZoneIds: ['ibk1-az9'] }),
        isEc2Error('InvalidParameterValue', 'Invalid availability zone-id: [ibk1-az9]'));
    });

    it('filters by the fields EC2 documents', async () => {
      const names = async (Filters: unknown) =>
        (await DescribeAvailabilityZones(alice, { Filters })).AvailabilityZones.map((z: { ZoneName: string }) => z.ZoneName);
      assert.deepEqual(await names(filter('state', 'available')), ['ironbark-1a']);
      assert.deepEqual(await names(filter('zone-id', 'ibk1-az2')), ['ironbark-1b']);
      assert.deepEqual(await names(filter('zone-name', 'ironbark-1?')), ['ironbark-1a', 'ironbark-1b']);
      assert.deepEqual(await names([...filter('region-name', 'ironbark-1'), ...filter('zone-type', 'availability-zone'),
        ...filter('group-name', 'ironbark-1'), ...filter('opt-in-status', 'opt-in-not-required')]), ['ironbark-1a', 'ironbark-1b']);
      assert.deepEqual(await names(filter('parent-zone-name', '*')), []);
      assert.deepEqual(await names(filter('message', '*')), []);
      await assert.rejects(names(filter('bogus', 'x')), isEc2Error('InvalidParameterValue', "The filter 'bogus' is invalid"));
    });
  });

  describe('DescribeAccountAttributes', () => {
    const asMap = (out: { AccountAttributes: { AttributeName: string; AttributeValues: { AttributeValue: string }[] }[] }) =>
      Object.fromEntries(out.AccountAttributes.map((a) => [a.AttributeName, a.AttributeValues.map((v) => v.AttributeValue)]));

    it('answers every attribute, with the caller\'s own default VPC', async () => {
      assert.deepEqual(asMap(await DescribeAccountAttributes(alice, {})), {
        'vpc-max-security-groups-per-interface': ['5'], 'max-instances': ['20'], 'supported-platforms': ['VPC'],
        'default-vpc': ['vpc-0123456789abcdef0'], 'max-elastic-ips': ['5'], 'vpc-max-elastic-ips': ['5'],
      });
      assert.deepEqual(asMap(await DescribeAccountAttributes(bob, { AttributeNames: ['default-vpc'] })), { 'default-vpc': ['none'] });
    });

    it('selects a subset in the order asked for', async () => {
      const out = await DescribeAccountAttributes(alice, { AttributeNames: ['supported-platforms', 'default-vpc'] });
      assert.deepEqual(out.AccountAttributes.map((a: { AttributeName: string }) => a.AttributeName), ['supported-platforms', 'default-vpc']);
    });

    it('reads a per-account instance quota from the settings', async () => {
      await store.db.insertInto('settings').values({ key: quotaSettingKey(BOB, 'max-instances'), value: '64' }).execute();
      assert.deepEqual(asMap(await DescribeAccountAttributes(bob, { AttributeNames: ['max-instances'] })), { 'max-instances': ['64'] });
      assert.deepEqual(asMap(await DescribeAccountAttributes(alice, { AttributeNames: ['max-instances'] })), { 'max-instances': ['20'] });
    });

    it('refuses an unknown attribute name', async () => {
      await assert.rejects(DescribeAccountAttributes(alice, { AttributeNames: ['default-vpc', 'max-cats'] }), isEc2Error('InvalidParameterValue', /max-cats/));
    });
  });
});
