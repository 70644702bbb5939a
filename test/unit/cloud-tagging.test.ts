// CreateTags, DeleteTags and DescribeTags over the registered resource kinds, called as handlers
// on an in-memory store with two accounts.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Store } from '../../src/store/store.ts';
import type { RequestContext } from '../../src/cloud/context.ts';
import { taggingOperations } from '../../src/cloud/tagging.ts';
import { keyPairOperations } from '../../src/cloud/key-pairs.ts';
import { registerTaggable } from '../../src/cloud/resource-registry.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';
import { contextFor, isEc2Error, openTestCloudStore } from '../helpers/handler-context.ts';

const ALICE = '111111111111';
const BOB = '222222222222';
const now = () => new Date().toISOString();

const ALICE_VPC = 'vpc-0a0a0a0a0a0a0a0a0';
const ALICE_SUBNET = 'subnet-0a0a0a0a0a0a0a0a0';
const ALICE_SG = 'sg-0a0a0a0a0a0a0a0a0';
const BOB_VPC = 'vpc-0b0b0b0b0b0b0b0b0';

const filter = (Name: string, ...Values: string[]) => [{ Name, Values }];
const { CreateTags, DeleteTags, DescribeTags } = taggingOperations;

interface TagOut { ResourceId: string; ResourceType: string; Key: string; Value: string }

describe('tagging', () => {
  let store: Store;
  let alice: RequestContext;
  let bob: RequestContext;
  let aliceKey: string;

  const tagsOf = async (ctx: RequestContext, resourceId: string) =>
    Object.fromEntries(((await DescribeTags(ctx, { Filters: filter('resource-id', resourceId) })).Tags as TagOut[]).map((t) => [t.Key, t.Value]));

  before(async () => {
    store = await openTestCloudStore({ accounts: [ALICE, BOB] });
    const vpc = (id: string, account_id: string) => ({ id, account_id, cidr: '172.31.0.0/16', is_default: 1, state: 'available', dhcp_options_id: 'dopt-01234567', created_at: now() });
    await store.db.insertInto('vpcs').values([vpc(ALICE_VPC, ALICE), vpc(BOB_VPC, BOB)]).execute();
    await store.db.insertInto('subnets').values({
      id: ALICE_SUBNET, account_id: ALICE, vpc_id: ALICE_VPC, zone: 'ironbark-1a', cidr: '172.31.0.0/20',
      default_for_az: 1, map_public_ip_on_launch: 1, state: 'available', created_at: now(),
    }).execute();
    await store.db.insertInto('security_groups').values({
      id: ALICE_SG, account_id: ALICE, vpc_id: ALICE_VPC, name: 'default', description: 'default VPC security group', created_at: now(),
    }).execute();
    alice = contextFor(store, ALICE);
    bob = contextFor(store, BOB);
    aliceKey = (await keyPairOperations.CreateKeyPair(alice, { KeyName: 'k', KeyType: 'ed25519' })).KeyPairId;
  });
  after(async () => store.close());

  describe('CreateTags', () => {
    it('tags every kind of resource at once and records each one\'s EC2 resource type', async () => {
      assert.deepEqual(await CreateTags(alice, { Resources: [ALICE_VPC, ALICE_SUBNET, ALICE_SG, aliceKey], Tags: [{ Key: 'env', Value: 'prod' }, { Key: 'empty' }] }), {});
      const rows = (await DescribeTags(alice, { Filters: filter('key', 'env') })).Tags as TagOut[];
      assert.deepEqual(rows.map((t) => [t.ResourceId, t.ResourceType]).sort(), [
        [aliceKey, 'key-pair'], [ALICE_SG, 'security-group'], [ALICE_SUBNET, 'subnet'], [ALICE_VPC, 'vpc'],
      ].sort());
      assert.deepEqual(await tagsOf(alice, ALICE_VPC), { env: 'prod', empty: '' });
    });

    it('overwrites the value of an existing key', async () => {
      await CreateTags(alice, { Resources: [ALICE_VPC], Tags: [{ Key: 'env', Value: 'staging' }] });
      assert.deepEqual(await tagsOf(alice, ALICE_VPC), { env: 'staging', empty: '' });
    });

    it('answers each kind\'s NotFound error, and a foreign resource exactly like a missing one', async () => {
      const cases: [string, string, string][] = [
        [BOB_VPC, 'InvalidVpcID.NotFound', `The vpc ID '${BOB_VPC}' does not exist`],
        ['vpc-0123456789abcdef0', 'InvalidVpcID.NotFound', "The vpc ID 'vpc-0123456789abcdef0' does not exist"],
        ['subnet-01234567', 'InvalidSubnetID.NotFound', "The subnet ID 'subnet-01234567' does not exist"],
        ['sg-0123456789abcdef0', 'InvalidGroup.NotFound', "The security group 'sg-0123456789abcdef0' does not exist"],
        ['key-0123456789abcdef0', 'InvalidKeyPair.NotFound', "The key pair 'key-0123456789abcdef0' does not exist"],
        ['foo-0123456789abcdef0', 'InvalidID', "The ID 'foo-0123456789abcdef0' is not valid"],
        ['vpc-xyz', 'InvalidID', "The ID 'vpc-xyz' is not valid"],
        ['nonsense', 'InvalidID', "The ID 'nonsense' is not valid"],
      ];
      for (const [id, code, message] of cases) {
        await assert.rejects(CreateTags(alice, { Resources: [ALICE_SG, id], Tags: [{ Key: 'new', Value: '1' }] }), isEc2Error(code, message), id);
      }
      // Nothing was written for the valid resource listed first.
      assert.deepEqual((await DescribeTags(alice, { Filters: filter('key', 'new') })).Tags, []);
      assert.deepEqual((await DescribeTags(bob, {})).Tags, []);
    });

    it('keeps the 50-tag limit across the whole request, writing nothing past it', async () => {
      const many = Array.from({ length: 49 }, (_, i) => ({ Key: `k${i}`, Value: 'v' }));
      await assert.rejects(CreateTags(alice, { Resources: [ALICE_SUBNET, ALICE_SG], Tags: many }), isEc2Error('TagLimitExceeded'));
      assert.deepEqual(Object.keys(await tagsOf(alice, ALICE_SUBNET)).sort(), ['empty', 'env']);
    });

    it('validates keys and values, and needs resources and tags', async () => {
      await assert.rejects(CreateTags(alice, { Resources: [ALICE_VPC], Tags: [{ Key: 'aws:owner', Value: 'x' }] }), isEc2Error('InvalidParameterValue'));
      await assert.rejects(CreateTags(alice, { Resources: [ALICE_VPC], Tags: [{ Key: 'k'.repeat(129), Value: 'x' }] }), isEc2Error('InvalidParameterValue'));
      await assert.rejects(CreateTags(alice, { Resources: [ALICE_VPC], Tags: [{ Key: 'k', Value: 'v'.repeat(257) }] }), isEc2Error('InvalidParameterValue'));
      await assert.rejects(CreateTags(alice, { Resources: [ALICE_VPC], Tags: [] }), isEc2Error('MissingParameter'));
      await assert.rejects(CreateTags(alice, { Resources: [], Tags: [{ Key: 'a', Value: 'b' }] }), isEc2Error('MissingParameter'));
    });

    it('works for kinds registered later by other resource families', async () => {
      const images = new Set(['ami-0123456789abcdef0']);
      registerTaggable('ami', async (_db, accountId, id) => accountId === ALICE && images.has(id),
        (id) => new Ec2Error('InvalidAMIID.NotFound', `The image id '[${id}]' does not exist`));
      await CreateTags(alice, { Resources: ['ami-0123456789abcdef0'], Tags: [{ Key: 'os', Value: 'debian' }] });
      const [row] = (await DescribeTags(alice, { Filters: filter('resource-id', 'ami-0123456789abcdef0') })).Tags as TagOut[];
      assert.deepEqual(row, { ResourceId: 'ami-0123456789abcdef0', ResourceType: 'image', Key: 'os', Value: 'debian' });
      await assert.rejects(CreateTags(bob, { Resources: ['ami-0123456789abcdef0'], Tags: [{ Key: 'os', Value: 'x' }] }), isEc2Error('InvalidAMIID.NotFound'));
    });
  });

  describe('DeleteTags', () => {
    before(async () => {
      await CreateTags(alice, { Resources: [ALICE_SUBNET], Tags: [{ Key: 'a', Value: '1' }, { Key: 'b', Value: '2' }, { Key: 'c', Value: '' }, { Key: 'd', Value: '4' }] });
    });

    it('deletes a key given alone, and a key with a value only when the value matches', async () => {
      await DeleteTags(alice, { Resources: [ALICE_SUBNET], Tags: [{ Key: 'a' }, { Key: 'b', Value: 'not-2' }, { Key: 'd', Value: '4' }] });
      assert.deepEqual(await tagsOf(alice, ALICE_SUBNET), { b: '2', c: '', empty: '', env: 'prod' });
      // An empty value is a value: it deletes only a tag whose value is empty.
      await DeleteTags(alice, { Resources: [ALICE_SUBNET], Tags: [{ Key: 'b', Value: '' }, { Key: 'c', Value: '' }] });
      assert.deepEqual(await tagsOf(alice, ALICE_SUBNET), { b: '2', empty: '', env: 'prod' });
    });

    it('deletes every tag when no tags are given, only on the listed resources', async () => {
      await DeleteTags(alice, { Resources: [ALICE_SUBNET] });
      assert.deepEqual(await tagsOf(alice, ALICE_SUBNET), {});
      assert.deepEqual(await tagsOf(alice, ALICE_SG), { env: 'prod', empty: '' });
    });

    it('checks the resources like CreateTags and leaves other accounts alone', async () => {
      await CreateTags(bob, { Resources: [BOB_VPC], Tags: [{ Key: 'owner', Value: 'bob' }] });
      await assert.rejects(DeleteTags(alice, { Resources: [ALICE_SG, BOB_VPC] }), isEc2Error('InvalidVpcID.NotFound', `The vpc ID '${BOB_VPC}' does not exist`));
      assert.deepEqual(await tagsOf(bob, BOB_VPC), { owner: 'bob' });
      assert.deepEqual(await tagsOf(alice, ALICE_SG), { env: 'prod', empty: '' });
      await assert.rejects(DeleteTags(alice, { Resources: [ALICE_SG], Tags: [{ Key: 'aws:cloudformation:stack-name' }] }), isEc2Error('InvalidParameterValue'));
    });
  });

  describe('DescribeTags', () => {
    before(async () => {
      for (let i = 0; i < 12; i++) await CreateTags(alice, { Resources: [ALICE_VPC], Tags: [{ Key: `n${String(i).padStart(2, '0')}`, Value: i % 2 ? 'odd' : 'even' }] });
    });

    it('lists the caller\'s tags sorted by resource id then key', async () => {
      const rows = (await DescribeTags(alice, {})).Tags as TagOut[];
      const order = rows.map((t) => `${t.ResourceId}/${t.Key}`);
      assert.deepEqual(order, [...order].sort());
      assert.ok(rows.every((t) => t.ResourceId !== BOB_VPC));
      assert.deepEqual(((await DescribeTags(bob, {})).Tags as TagOut[]).map((t) => t.ResourceId), [BOB_VPC]);
    });

    it('filters by key, value, resource-id, resource-type and tag:KEY', async () => {
      const count = async (Filters: unknown) => ((await DescribeTags(alice, { Filters })).Tags as TagOut[]).length;
      assert.equal(await count(filter('key', 'n*')), 12);
      assert.equal(await count([...filter('key', 'n*'), ...filter('value', 'odd')]), 6);
      assert.equal(await count(filter('resource-type', 'security-group')), 2);
      assert.equal(await count(filter('resource-type', 'vpc', 'key-pair')), 12 + 2 + 2);
      assert.equal(await count([...filter('resource-id', ALICE_VPC), ...filter('key', 'env')]), 1);
      assert.equal(await count(filter('tag:n03', 'odd')), 1);
      assert.equal(await count(filter('tag:n03', 'even')), 0);
      await assert.rejects(count(filter('colour', 'x')), isEc2Error('InvalidParameterValue', "The filter 'colour' is invalid"));
    });

    it('pages with MaxResults and NextToken without losing or repeating a tag', async () => {
      const all = ((await DescribeTags(alice, {})).Tags as TagOut[]).map((t) => `${t.ResourceId}/${t.Key}`);
      const seen: string[] = [];
      let NextToken: string | undefined;
      let pages = 0;
      do {
        const out = await DescribeTags(alice, { MaxResults: 5, NextToken });
        assert.ok(out.Tags.length <= 5);
        seen.push(...(out.Tags as TagOut[]).map((t) => `${t.ResourceId}/${t.Key}`));
        NextToken = out.NextToken;
        pages++;
      } while (NextToken);
      assert.deepEqual(seen, all);
      assert.equal(pages, Math.ceil(all.length / 5));
      const first = await DescribeTags(alice, { MaxResults: 5 });
      await assert.rejects(DescribeTags(alice, { MaxResults: 5, NextToken: first.NextToken, Filters: filter('key', 'n*') }), isEc2Error('InvalidNextToken'));
      await assert.rejects(DescribeTags(alice, { MaxResults: 2 }), isEc2Error('InvalidParameterValue'));
    });

    it('forgets a key pair\'s tags when the key pair is deleted', async () => {
      await keyPairOperations.DeleteKeyPair(alice, { KeyPairId: aliceKey });
      assert.deepEqual((await DescribeTags(alice, { Filters: filter('resource-id', aliceKey) })).Tags, []);
    });
  });
});
