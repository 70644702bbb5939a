// The network an account starts with (default VPC, subnets, `default` group), zones added later,
// and the CIDR helpers underneath.
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { openStore, type Store } from '../../src/store/store.ts';
import { defaultVpcId, provisionAccount, provisionZone } from '../../src/cloud/account-setup.ts';
import {
  canonicalIpv4Cidr, canonicalIpv6Cidr, formatIpv4Cidr, ipv4Supernet, parseIpv4Cidr, parseIpv6Address, formatIpv6Address,
} from '../../src/cloud/cidr.ts';

const now = () => new Date().toISOString();
const A = '111111111111';
const B = '222222222222';

async function addZone(store: Store, name: string, cidr: string, n: number) {
  await store.db.insertInto('zones').values({ name, region: 'ironbark-1', cidr, state: 'available', zone_id: `ibk1-az${n}`, created_at: now() }).execute();
}

async function addAccount(store: Store, id: string) {
  await store.db.insertInto('accounts').values({ id, name: `acct-${id}`, status: 'active', created_at: now() }).execute();
}

describe('provisionAccount', () => {
  let store: Store;
  beforeEach(async () => {
    store = await openStore({ url: ':memory:' });
    await addAccount(store, A);
    await addAccount(store, B);
  });
  afterEach(async () => store.close());

  it('creates the default VPC covering every zone, one default subnet per zone and the default group', async () => {
    await addZone(store, 'ironbark-1a', '10.10.0.0/16', 1);
    await addZone(store, 'ironbark-1b', '10.11.0.0/16', 2);
    const vpcId = await store.transaction((tx) => provisionAccount(tx, A));
    assert.match(vpcId, /^vpc-[0-9a-f]{17}$/);
    assert.equal(await defaultVpcId(store.db, A), vpcId);

    const vpc = await store.db.selectFrom('vpcs').selectAll().where('id', '=', vpcId).executeTakeFirstOrThrow();
    assert.equal(vpc.account_id, A);
    assert.equal(vpc.is_default, 1);
    assert.equal(vpc.cidr, '10.10.0.0/15');
    assert.equal(vpc.state, 'available');
    assert.match(vpc.dhcp_options_id, /^dopt-/);

    const subnets = await store.db.selectFrom('subnets').selectAll().where('vpc_id', '=', vpcId).orderBy('zone').execute();
    assert.deepEqual(subnets.map((s) => [s.zone, s.cidr, s.default_for_az, s.map_public_ip_on_launch, s.account_id]), [
      ['ironbark-1a', '10.10.0.0/16', 1, 1, A],
      ['ironbark-1b', '10.11.0.0/16', 1, 1, A],
    ]);

    const groups = await store.db.selectFrom('security_groups').selectAll().where('account_id', '=', A).execute();
    assert.equal(groups.length, 1);
    assert.equal(groups[0]!.name, 'default');
    assert.equal(groups[0]!.description, 'default VPC security group');
    assert.equal(groups[0]!.vpc_id, vpcId);
    const rules = await store.db.selectFrom('security_group_rules').selectAll().where('group_id', '=', groups[0]!.id).orderBy('is_egress').execute();
    assert.equal(rules.length, 2);
    assert.deepEqual([rules[0]!.is_egress, rules[0]!.ip_protocol, rules[0]!.referenced_group_id, rules[0]!.referenced_account_id, rules[0]!.cidr_ipv4],
      [0, '-1', groups[0]!.id, A, null]);
    assert.deepEqual([rules[1]!.is_egress, rules[1]!.ip_protocol, rules[1]!.cidr_ipv4, rules[1]!.referenced_group_id],
      [1, '-1', '0.0.0.0/0', null]);
  });

  it('is idempotent', async () => {
    await addZone(store, 'ironbark-1a', '10.10.0.0/16', 1);
    const first = await store.transaction((tx) => provisionAccount(tx, A));
    const second = await store.transaction((tx) => provisionAccount(tx, A));
    assert.equal(first, second);
    assert.equal((await store.db.selectFrom('vpcs').selectAll().where('account_id', '=', A).execute()).length, 1);
    assert.equal((await store.db.selectFrom('subnets').selectAll().where('account_id', '=', A).execute()).length, 1);
    assert.equal((await store.db.selectFrom('security_groups').selectAll().where('account_id', '=', A).execute()).length, 1);
    assert.equal((await store.db.selectFrom('security_group_rules').selectAll().where('account_id', '=', A).execute()).length, 2);
  });

  it('uses 172.31.0.0/16 before any zone exists, and widens the VPC when zones arrive', async () => {
    const vpcId = await store.transaction((tx) => provisionAccount(tx, A));
    assert.equal((await store.db.selectFrom('vpcs').select('cidr').where('id', '=', vpcId).executeTakeFirstOrThrow()).cidr, '172.31.0.0/16');
    assert.equal((await store.db.selectFrom('subnets').selectAll().execute()).length, 0);

    await addZone(store, 'ironbark-1a', '10.10.0.0/16', 1);
    await store.transaction((tx) => provisionZone(tx, 'ironbark-1a'));
    assert.equal((await store.db.selectFrom('vpcs').select('cidr').where('id', '=', vpcId).executeTakeFirstOrThrow()).cidr, '10.10.0.0/16');

    await addZone(store, 'ironbark-1b', '10.20.0.0/16', 2);
    await store.transaction((tx) => provisionZone(tx, 'ironbark-1b'));
    assert.equal((await store.db.selectFrom('vpcs').select('cidr').where('id', '=', vpcId).executeTakeFirstOrThrow()).cidr, '10.0.0.0/11');
    const zones = (await store.db.selectFrom('subnets').select('zone').where('vpc_id', '=', vpcId).orderBy('zone').execute()).map((s) => s.zone);
    assert.deepEqual(zones, ['ironbark-1a', 'ironbark-1b']);
  });

  it('provisionZone adds the subnet to every account with a default VPC, once', async () => {
    await addZone(store, 'ironbark-1a', '10.10.0.0/16', 1);
    const vpcA = await store.transaction((tx) => provisionAccount(tx, A));
    const vpcB = await store.transaction((tx) => provisionAccount(tx, B));
    await addZone(store, 'ironbark-1b', '10.11.0.0/16', 2);
    await store.transaction((tx) => provisionZone(tx, 'ironbark-1b'));
    await store.transaction((tx) => provisionZone(tx, 'ironbark-1b'));
    for (const [account, vpc] of [[A, vpcA], [B, vpcB]] as const) {
      const subnets = await store.db.selectFrom('subnets').selectAll().where('account_id', '=', account).orderBy('zone').execute();
      assert.deepEqual(subnets.map((s) => [s.vpc_id, s.zone, s.cidr]), [[vpc, 'ironbark-1a', '10.10.0.0/16'], [vpc, 'ironbark-1b', '10.11.0.0/16']]);
    }
    await assert.rejects(store.transaction((tx) => provisionZone(tx, 'nowhere')), /zone nowhere does not exist/);
  });

  it('accepts zones that reuse the same range', async () => {
    await addZone(store, 'ironbark-1a', '10.10.0.0/16', 1);
    await addZone(store, 'ironbark-1b', '10.10.0.0/16', 2);
    const vpcId = await store.transaction((tx) => provisionAccount(tx, A));
    assert.equal((await store.db.selectFrom('vpcs').select('cidr').where('id', '=', vpcId).executeTakeFirstOrThrow()).cidr, '10.10.0.0/16');
    assert.equal((await store.db.selectFrom('subnets').selectAll().where('vpc_id', '=', vpcId).execute()).length, 2);
  });

  it('defaultVpcId is per account', async () => {
    await store.transaction((tx) => provisionAccount(tx, A));
    assert.equal(await defaultVpcId(store.db, B), undefined);
  });
});

describe('cidr helpers', () => {
  it('parses and canonicalises IPv4 blocks', () => {
    assert.equal(canonicalIpv4Cidr('10.0.0.5/24'), '10.0.0.0/24');
    assert.equal(canonicalIpv4Cidr('0.0.0.0/0'), '0.0.0.0/0');
    assert.equal(canonicalIpv4Cidr('255.255.255.255/32'), '255.255.255.255/32');
    for (const bad of ['10.0.0.0', '10.0.0.0/33', '256.0.0.0/8', '10.0.0/8', '10.0.0.0/-1', '01.0.0.0/8', 'a.b.c.d/8', '10.0.0.0/8/8', '']) {
      assert.equal(canonicalIpv4Cidr(bad), undefined, bad);
    }
  });

  it('parses and canonicalises IPv6 blocks', () => {
    assert.equal(canonicalIpv6Cidr('::/0'), '::/0');
    assert.equal(canonicalIpv6Cidr('2001:DB8:0:0:0:0:0:1/128'), '2001:db8::1/128');
    assert.equal(canonicalIpv6Cidr('2001:db8:abcd:12::ff/64'), '2001:db8:abcd:12::/64');
    assert.equal(canonicalIpv6Cidr('::ffff:10.0.0.1/128'), '::ffff:a00:1/128');
    assert.equal(formatIpv6Address(parseIpv6Address('1:0:0:2:0:0:0:3')!), '1:0:0:2::3');
    assert.equal(formatIpv6Address(parseIpv6Address('1:0:2:3:4:5:6:7')!), '1:0:2:3:4:5:6:7');
    for (const bad of ['2001:db8::/129', '2001:db8::1::2/64', '2001:db8:/64', '12345::/16', '1:2:3:4:5:6:7:8:9/64', 'fe80::', '10.0.0.0/8']) {
      assert.equal(canonicalIpv6Cidr(bad), undefined, bad);
    }
  });

  it('finds the smallest covering supernet', () => {
    const sn = (...cidrs: string[]) => formatIpv4Cidr(ipv4Supernet(cidrs.map((c) => parseIpv4Cidr(c)!)));
    assert.equal(sn('10.10.0.0/16'), '10.10.0.0/16');
    assert.equal(sn('10.10.0.0/16', '10.11.0.0/16'), '10.10.0.0/15');
    assert.equal(sn('10.0.0.0/16', '10.2.0.0/16'), '10.0.0.0/14');
    assert.equal(sn('10.0.0.0/24', '10.0.0.0/16'), '10.0.0.0/16');
    assert.equal(sn('10.0.0.0/8', '192.168.0.0/16'), '0.0.0.0/0');
    assert.equal(sn('172.16.5.0/24', '172.16.5.0/24'), '172.16.5.0/24');
  });
});
