// Security groups and rules through their operation handlers: EC2's validation and error codes,
// the grouped IpPermission view, all-or-nothing rule changes, and strict account isolation.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Store } from '../../src/store/store.ts';
import { registerSecurityGroupUsageCheck, resolveSecurityGroups, securityGroupOperations } from '../../src/cloud/security-groups.ts';
import { callOperation, contextFor, expectEc2Error, openTestCloudStore, provisionDefaultNetworks } from '../helpers/handler-context.ts';

const now = () => new Date().toISOString();
const A = '111111111111';
const B = '222222222222';

const tcp = (port: number, ...cidrs: string[]) => ({ IpProtocol: 'tcp', FromPort: port, ToPort: port, IpRanges: cidrs.map((CidrIp) => ({ CidrIp })) });

describe('security groups', () => {
  let store: Store;
  let vpcA: string;
  let vpcB: string;
  let defaultA: string;
  let defaultB: string;
  const call = (account: string, action: string, input: object = {}) =>
    callOperation(contextFor(store, account), securityGroupOperations, action, input);
  const describeOne = async (account: string, groupId: string) => (await call(account, 'DescribeSecurityGroups', { GroupIds: [groupId] })).SecurityGroups[0];
  const create = async (account: string, name: string, extra: object = {}) =>
    (await call(account, 'CreateSecurityGroup', { GroupName: name, Description: `${name} group`, ...extra })).GroupId as string;
  const ruleCount = async (groupId: string) =>
    (await store.db.selectFrom('security_group_rules').select('id').where('group_id', '=', groupId).execute()).length;

  before(async () => {
    store = await openTestCloudStore({
      accounts: [A, B],
      zones: [
        { name: 'ironbark-1a', cidr: '10.10.0.0/16', zoneId: 'ibk1-az1' },
        { name: 'ironbark-1b', cidr: '10.11.0.0/16', zoneId: 'ibk1-az2' },
      ],
    });
    [vpcA, vpcB] = await provisionDefaultNetworks(store, A, B);
    defaultA = (await call(A, 'DescribeSecurityGroups', { GroupNames: ['default'] })).SecurityGroups[0].GroupId;
    defaultB = (await call(B, 'DescribeSecurityGroups', { GroupNames: ['default'] })).SecurityGroups[0].GroupId;
  });
  after(async () => store.close());

  it('shows the default group with its default rules', async () => {
    const g = await describeOne(A, defaultA);
    assert.equal(g.GroupName, 'default');
    assert.equal(g.Description, 'default VPC security group');
    assert.equal(g.VpcId, vpcA);
    assert.equal(g.OwnerId, A);
    assert.deepEqual(g.IpPermissions, [{ IpProtocol: '-1', IpRanges: [], Ipv6Ranges: [], PrefixListIds: [], UserIdGroupPairs: [{ UserId: A, GroupId: defaultA }] }]);
    assert.deepEqual(g.IpPermissionsEgress, [{ IpProtocol: '-1', IpRanges: [{ CidrIp: '0.0.0.0/0' }], Ipv6Ranges: [], PrefixListIds: [], UserIdGroupPairs: [] }]);
    assert.deepEqual(g.Tags, []);
  });

  it('CreateSecurityGroup creates a group with the default egress rule and tags', async () => {
    const out = await call(A, 'CreateSecurityGroup', {
      GroupName: 'web', Description: 'Web servers', TagSpecifications: [{ ResourceType: 'security-group', Tags: [{ Key: 'tier', Value: 'web' }] }],
    });
    assert.match(out.GroupId, /^sg-[0-9a-f]{17}$/);
    assert.deepEqual(out.Tags, [{ Key: 'tier', Value: 'web' }]);
    const g = await describeOne(A, out.GroupId);
    assert.equal(g.GroupName, 'web');
    assert.equal(g.Description, 'Web servers');
    assert.equal(g.VpcId, vpcA);
    assert.deepEqual(g.IpPermissions, []);
    assert.deepEqual(g.IpPermissionsEgress, [{ IpProtocol: '-1', IpRanges: [{ CidrIp: '0.0.0.0/0' }], Ipv6Ranges: [], PrefixListIds: [], UserIdGroupPairs: [] }]);
    assert.deepEqual(g.Tags, [{ Key: 'tier', Value: 'web' }]);
    // Another account may use the same name in its own VPC.
    const other = await create(B, 'web');
    assert.notEqual(other, out.GroupId);
  });

  it('CreateSecurityGroup refuses duplicates, reserved and malformed names and bad VPCs', async () => {
    await expectEc2Error(call(A, 'CreateSecurityGroup', { GroupName: 'web', Description: 'again' }), 'InvalidGroup.Duplicate', `The security group 'web' already exists for VPC '${vpcA}'`);
    await expectEc2Error(call(A, 'CreateSecurityGroup', { GroupName: 'default', Description: 'x' }), 'InvalidParameterValue', 'Cannot use reserved security group name: default');
    await expectEc2Error(call(A, 'CreateSecurityGroup', { GroupName: 'sg-mine', Description: 'x' }), 'InvalidParameterValue', /sg-\*/);
    await expectEc2Error(call(A, 'CreateSecurityGroup', { GroupName: 'x'.repeat(256), Description: 'x' }), 'InvalidParameterValue', /GroupName.*255/);
    await expectEc2Error(call(A, 'CreateSecurityGroup', { GroupName: 'ok', Description: 'd'.repeat(256) }), 'InvalidParameterValue', /GroupDescription.*255/);
    await expectEc2Error(call(A, 'CreateSecurityGroup', { GroupName: 'bad<name>', Description: 'x' }), 'InvalidParameterValue', /group name/);
    await expectEc2Error(call(A, 'CreateSecurityGroup', { GroupName: 'ok', Description: 'caf\u00e9' }), 'InvalidParameterValue', /beyond ASCII/);
    await expectEc2Error(call(A, 'CreateSecurityGroup', { GroupName: '', Description: 'x' }), 'InvalidParameterValue', /Empty value/);
    await expectEc2Error(call(A, 'CreateSecurityGroup', { GroupName: 'ok' }), 'MissingParameter');
    await expectEc2Error(call(A, 'CreateSecurityGroup', { GroupName: 'ok', Description: 'x', VpcId: vpcB }), 'InvalidVpcID.NotFound', `The vpc ID '${vpcB}' does not exist`);
    await expectEc2Error(call(A, 'CreateSecurityGroup', { GroupName: 'ok', Description: 'x', VpcId: 'vpc-nope' }), 'InvalidVpcID.Malformed');
    await expectEc2Error(call(A, 'CreateSecurityGroup', { GroupName: 'ok', Description: 'x', TagSpecifications: [{ ResourceType: 'instance', Tags: [] }] }), 'InvalidParameterValue');
    const names = (await call(A, 'DescribeSecurityGroups')).SecurityGroups.map((g: any) => g.GroupName).sort();
    assert.deepEqual(names, ['default', 'web']);
    assert.match(await create(A, 'Valid name ._-:/()#,@[]+=&;{}!$*'), /^sg-/);
  });

  it('AuthorizeSecurityGroupIngress adds rules and DescribeSecurityGroups groups them as EC2 does', async () => {
    const app = await create(A, 'app');
    const out = await call(A, 'AuthorizeSecurityGroupIngress', {
      GroupId: app,
      IpPermissions: [
        { IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '10.0.0.0/8', Description: 'ssh from office' }, { CidrIp: '192.168.1.7/24' }],
          Ipv6Ranges: [{ CidrIpv6: '2001:DB8::/32' }] },
        { IpProtocol: '6', FromPort: 80, ToPort: 81, UserIdGroupPairs: [{ GroupId: defaultA, Description: 'from default' }, { GroupName: 'web', UserId: A }] },
        { IpProtocol: 'icmp', FromPort: 8, ToPort: -1, IpRanges: [{ CidrIp: '0.0.0.0/0' }] },
        { IpProtocol: '50', FromPort: 1, ToPort: 2, IpRanges: [{ CidrIp: '0.0.0.0/0' }] },
      ],
      TagSpecifications: [{ ResourceType: 'security-group-rule', Tags: [{ Key: 'purpose', Value: 'test' }] }],
    });
    assert.equal(out.Return, true);
    assert.equal(out.SecurityGroupRules.length, 7);
    const ssh = out.SecurityGroupRules[0];
    assert.match(ssh.SecurityGroupRuleId, /^sgr-[0-9a-f]{17}$/);
    assert.deepEqual({ ...ssh, SecurityGroupRuleId: undefined }, {
      SecurityGroupRuleId: undefined, GroupId: app, GroupOwnerId: A, IsEgress: false, IpProtocol: 'tcp', FromPort: 22, ToPort: 22,
      CidrIpv4: '10.0.0.0/8', CidrIpv6: undefined, PrefixListId: undefined, ReferencedGroupInfo: undefined,
      Description: 'ssh from office', Tags: [{ Key: 'purpose', Value: 'test' }],
    });
    assert.equal(out.SecurityGroupRules[2].CidrIpv6, '2001:db8::/32');
    assert.deepEqual(out.SecurityGroupRules[3].ReferencedGroupInfo, { GroupId: defaultA, UserId: A });
    const esp = out.SecurityGroupRules[6];
    assert.deepEqual([esp.IpProtocol, esp.FromPort, esp.ToPort], ['50', -1, -1]);

    const webId = (await call(A, 'DescribeSecurityGroups', { GroupNames: ['web'] })).SecurityGroups[0].GroupId;
    const g = await describeOne(A, app);
    // Rules of one request are shown in a stable order: protocol, ports, then peer.
    const fromDefaultFirst = (pairs: any[]) => [...pairs].sort((x, y) => (x.GroupId === defaultA ? -1 : y.GroupId === defaultA ? 1 : 0));
    g.IpPermissions[3].UserIdGroupPairs = fromDefaultFirst(g.IpPermissions[3].UserIdGroupPairs);
    assert.deepEqual(g.IpPermissions, [
      { IpProtocol: '50', IpRanges: [{ CidrIp: '0.0.0.0/0' }], Ipv6Ranges: [], PrefixListIds: [], UserIdGroupPairs: [] },
      { IpProtocol: 'icmp', FromPort: 8, ToPort: -1, IpRanges: [{ CidrIp: '0.0.0.0/0' }], Ipv6Ranges: [], PrefixListIds: [], UserIdGroupPairs: [] },
      { IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '10.0.0.0/8', Description: 'ssh from office' }, { CidrIp: '192.168.1.0/24' }],
        Ipv6Ranges: [{ CidrIpv6: '2001:db8::/32' }], PrefixListIds: [], UserIdGroupPairs: [] },
      { IpProtocol: 'tcp', FromPort: 80, ToPort: 81, IpRanges: [], Ipv6Ranges: [], PrefixListIds: [],
        UserIdGroupPairs: [{ UserId: A, GroupId: defaultA, Description: 'from default' }, { UserId: A, GroupId: webId }] },
    ]);
    // Describe is deterministic.
    assert.deepEqual((await describeOne(A, app)).IpPermissions.map((p: any) => p.IpProtocol), ['50', 'icmp', 'tcp', 'tcp']);
  });

  it('AuthorizeSecurityGroupIngress accepts the legacy top-level form and GroupName', async () => {
    const legacy = await create(A, 'legacy');
    await call(A, 'AuthorizeSecurityGroupIngress', { GroupName: 'legacy', IpProtocol: 'TCP', FromPort: 443, ToPort: 443, CidrIp: '0.0.0.0/0' });
    await call(A, 'AuthorizeSecurityGroupIngress', { GroupId: legacy, SourceSecurityGroupName: 'web' });
    const g = await describeOne(A, legacy);
    assert.equal(g.IpPermissions.length, 2);
    // Two calls in the same millisecond may list in either order.
    const tcpRule = g.IpPermissions.find((p: any) => p.IpProtocol === 'tcp');
    const allRule = g.IpPermissions.find((p: any) => p.IpProtocol === '-1');
    assert.deepEqual([tcpRule.IpProtocol, tcpRule.FromPort, tcpRule.IpRanges], ['tcp', 443, [{ CidrIp: '0.0.0.0/0' }]]);
    assert.equal(allRule.UserIdGroupPairs.length, 1);
    await expectEc2Error(call(A, 'AuthorizeSecurityGroupIngress', { GroupId: legacy, CidrIp: '1.0.0.0/8', IpPermissions: [tcp(1, '1.0.0.0/8')] }), 'InvalidParameterCombination');
    await expectEc2Error(call(A, 'AuthorizeSecurityGroupIngress', { GroupName: 'nope', CidrIp: '1.0.0.0/8', IpProtocol: 'tcp', FromPort: 1, ToPort: 1 }),
      'InvalidGroup.NotFound', `The security group 'nope' does not exist in default VPC '${vpcA}'`);
  });

  it('refuses duplicate rules with EC2\'s message', async () => {
    const dup = await create(A, 'dup');
    await call(A, 'AuthorizeSecurityGroupIngress', { GroupId: dup, IpPermissions: [tcp(22, '0.0.0.0/0')] });
    await expectEc2Error(call(A, 'AuthorizeSecurityGroupIngress', { GroupId: dup, IpPermissions: [{ ...tcp(22), IpRanges: [{ CidrIp: '0.0.0.0/0', Description: 'other words' }] }] }),
      'InvalidPermission.Duplicate', 'the specified rule "peer: 0.0.0.0/0, TCP, from port: 22, to port: 22, ALLOW" already exists');
    await expectEc2Error(call(A, 'AuthorizeSecurityGroupIngress', { GroupId: dup, IpPermissions: [tcp(25, '1.2.3.0/24', '1.2.3.4/24')] }),
      'InvalidPermission.Duplicate', 'the specified rule "peer: 1.2.3.0/24, TCP, from port: 25, to port: 25, ALLOW" already exists');
    await expectEc2Error(call(A, 'AuthorizeSecurityGroupEgress', { GroupId: dup, IpPermissions: [{ IpProtocol: '-1', IpRanges: [{ CidrIp: '0.0.0.0/0' }] }] }),
      'InvalidPermission.Duplicate', 'the specified rule "peer: 0.0.0.0/0, ALL, ALLOW" already exists');
    assert.equal(await ruleCount(dup), 2);
  });

  it('validates protocols, ports, CIDRs, descriptions and peers, writing nothing on any error', async () => {
    const v = await create(A, 'validate');
    const bad = (permission: object) => call(A, 'AuthorizeSecurityGroupIngress', { GroupId: v, IpPermissions: [tcp(1, '9.9.9.0/24'), permission] });
    await expectEc2Error(bad({ IpProtocol: 'tcpx', FromPort: 1, ToPort: 1, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }), 'InvalidParameterValue', "Invalid value 'tcpx' for IP protocol. Unknown protocol.");
    await expectEc2Error(bad({ IpProtocol: '256', IpRanges: [{ CidrIp: '0.0.0.0/0' }] }), 'InvalidParameterValue', /Unknown protocol/);
    await expectEc2Error(bad({ IpProtocol: 'tcp', ToPort: 22, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }), 'InvalidParameterValue',
      "Invalid value 'Must specify both from and to ports with TCP/UDP.' for portRange.");
    await expectEc2Error(bad({ IpProtocol: 'udp', FromPort: 0, ToPort: 70000, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }), 'InvalidPermission.Malformed', 'TCP/UDP (to) port (70000) out of range');
    await expectEc2Error(bad({ IpProtocol: 'tcp', FromPort: -1, ToPort: -1, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }), 'InvalidPermission.Malformed', /out of range/);
    await expectEc2Error(bad({ IpProtocol: 'tcp', FromPort: 90, ToPort: 80, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }), 'InvalidParameterValue', /port range/);
    await expectEc2Error(bad({ IpProtocol: 'icmp', FromPort: 300, ToPort: 0, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }), 'InvalidParameterValue', 'ICMP type (300) out of range');
    await expectEc2Error(bad({ IpProtocol: 'icmp', FromPort: -1, ToPort: 3, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }), 'InvalidParameterValue', /ICMP code/);
    await expectEc2Error(bad({ IpProtocol: 'icmpv6', IpRanges: [{ CidrIp: '0.0.0.0/0' }] }), 'InvalidParameterValue', /ICMP/);
    await expectEc2Error(bad(tcp(22, '10.0.0.0/33')), 'InvalidParameterValue', 'Value (10.0.0.0/33) for parameter cidrIp is invalid. This is not a valid CIDR block.');
    await expectEc2Error(bad(tcp(22, '2001:db8::/32')), 'InvalidParameterValue', /cidrIp is invalid/);
    await expectEc2Error(bad({ ...tcp(22), Ipv6Ranges: [{ CidrIpv6: '10.0.0.0/8' }] }), 'InvalidParameterValue', /cidrIpv6 is invalid/);
    await expectEc2Error(bad({ ...tcp(22), IpRanges: [{ CidrIp: '0.0.0.0/0', Description: 'no <html>' }] }), 'InvalidParameterValue', /Invalid rule description/);
    await expectEc2Error(bad({ ...tcp(22), UserIdGroupPairs: [{ GroupId: 'sg-0123456789abcdef0' }] }), 'InvalidGroup.NotFound', "The security group 'sg-0123456789abcdef0' does not exist");
    await expectEc2Error(bad({ ...tcp(22), UserIdGroupPairs: [{ GroupId: 'sg-zz' }] }), 'InvalidGroupId.Malformed', 'Invalid id: "sg-zz" (expecting "sg-...")');
    await expectEc2Error(bad({ ...tcp(22), UserIdGroupPairs: [{ GroupId: defaultB }] }), 'InvalidGroup.NotFound', `The security group '${defaultB}' does not exist`);
    await expectEc2Error(bad({ ...tcp(22), UserIdGroupPairs: [{ GroupId: defaultA, UserId: B }] }), 'InvalidGroup.NotFound');
    await expectEc2Error(bad({ ...tcp(22), PrefixListIds: [{ PrefixListId: 'pl-0123456789abcdef0' }] }), 'InvalidPrefixListID.NotFound', "The prefix list ID 'pl-0123456789abcdef0' does not exist");
    await expectEc2Error(bad({ ...tcp(22), PrefixListIds: [{ PrefixListId: 'nope' }] }), 'InvalidPrefixListId.Malformed');
    await expectEc2Error(bad(tcp(22)), 'InvalidParameterValue', /at least one source/);
    await expectEc2Error(call(A, 'AuthorizeSecurityGroupIngress', { GroupId: v }), 'MissingParameter');
    // The good first permission of every failed call was not written either.
    assert.equal(await ruleCount(v), 1);
  });

  it('enforces 60 rules per direction, counting the whole request before writing', async () => {
    const many = await create(A, 'many');
    const cidrs = (from: number, n: number) => Array.from({ length: n }, (_, i) => `10.${from + i}.0.0/16`);
    await call(A, 'AuthorizeSecurityGroupIngress', { GroupId: many, IpPermissions: [tcp(22, ...cidrs(0, 59))] });
    await expectEc2Error(call(A, 'AuthorizeSecurityGroupIngress', { GroupId: many, IpPermissions: [tcp(22, ...cidrs(100, 2))] }), 'RulesPerSecurityGroupLimitExceeded');
    assert.equal(await ruleCount(many), 60);
    await call(A, 'AuthorizeSecurityGroupIngress', { GroupId: many, IpPermissions: [tcp(22, '10.200.0.0/16')] });
    await expectEc2Error(call(A, 'AuthorizeSecurityGroupIngress', { GroupId: many, IpPermissions: [tcp(22, '10.201.0.0/16')] }), 'RulesPerSecurityGroupLimitExceeded');
    // Egress has its own 60 (one used by the default egress rule).
    await call(A, 'AuthorizeSecurityGroupEgress', { GroupId: many, IpPermissions: [tcp(443, ...cidrs(0, 59))] });
    await expectEc2Error(call(A, 'AuthorizeSecurityGroupEgress', { GroupId: many, IpPermissions: [tcp(443, '10.201.0.0/16')] }), 'RulesPerSecurityGroupLimitExceeded');
    await call(A, 'DeleteSecurityGroup', { GroupId: many });
  });

  it('AuthorizeSecurityGroupEgress needs GroupId and IpPermissions', async () => {
    const out = await create(A, 'egress');
    const res = await call(A, 'AuthorizeSecurityGroupEgress', { GroupId: out, IpPermissions: [{ IpProtocol: 'udp', FromPort: 53, ToPort: 53, Ipv6Ranges: [{ CidrIpv6: '::/0' }] }] });
    assert.equal(res.SecurityGroupRules[0].IsEgress, true);
    const g = await describeOne(A, out);
    assert.deepEqual(g.IpPermissionsEgress[1], { IpProtocol: 'udp', FromPort: 53, ToPort: 53, IpRanges: [], Ipv6Ranges: [{ CidrIpv6: '::/0' }], PrefixListIds: [], UserIdGroupPairs: [] });
    await expectEc2Error(call(A, 'AuthorizeSecurityGroupEgress', { GroupName: 'egress', IpPermissions: [tcp(1, '1.0.0.0/8')] }), 'MissingParameter');
    await expectEc2Error(call(A, 'AuthorizeSecurityGroupEgress', { GroupId: out, IpProtocol: 'tcp', FromPort: 1, ToPort: 1, CidrIp: '1.0.0.0/8' }), 'InvalidParameterValue');
  });

  it('RevokeSecurityGroupIngress by permission; unknown rules are reported in a default VPC', async () => {
    const r = await create(A, 'revoke');
    await call(A, 'AuthorizeSecurityGroupIngress', { GroupId: r, IpPermissions: [tcp(22, '10.0.0.0/8', '172.16.0.0/12'), tcp(80, '0.0.0.0/0')] });
    const out = await call(A, 'RevokeSecurityGroupIngress', { GroupId: r, IpPermissions: [tcp(22, '10.0.0.0/8'), tcp(23, '10.0.0.0/8')] });
    assert.equal(out.Return, true);
    assert.deepEqual(out.UnknownIpPermissions, [{ IpProtocol: 'tcp', FromPort: 23, ToPort: 23, IpRanges: [{ CidrIp: '10.0.0.0/8' }], Ipv6Ranges: [], PrefixListIds: [], UserIdGroupPairs: [] }]);
    let g = await describeOne(A, r);
    assert.deepEqual(g.IpPermissions.map((p: any) => [p.FromPort, p.IpRanges.map((x: any) => x.CidrIp)]), [[22, ['172.16.0.0/12']], [80, ['0.0.0.0/0']]]);
    const clean = await call(A, 'RevokeSecurityGroupIngress', { GroupName: 'revoke', CidrIp: '0.0.0.0/0', IpProtocol: 'tcp', FromPort: 80, ToPort: 80 });
    assert.deepEqual(clean, { Return: true });
    g = await describeOne(A, r);
    assert.equal(g.IpPermissions.length, 1);
    await expectEc2Error(call(A, 'RevokeSecurityGroupIngress', { GroupId: r, IpPermissions: [tcp(99999, '1.0.0.0/8')] }), 'InvalidPermission.Malformed');
    await expectEc2Error(call(A, 'RevokeSecurityGroupIngress', { GroupId: r }), 'MissingParameter');
  });

  it('RevokeSecurityGroup* in a non-default VPC refuses unknown rules and revokes nothing', async () => {
    const otherVpc = 'vpc-00000000000000abc';
    await store.db.insertInto('vpcs').values({ id: otherVpc, account_id: A, cidr: '192.168.0.0/16', is_default: 0, state: 'available', dhcp_options_id: 'dopt-00000000', created_at: now() }).execute();
    const g = await create(A, 'custom', { VpcId: otherVpc });
    assert.equal((await describeOne(A, g)).VpcId, otherVpc);
    // Same name may exist in another VPC; GroupName lookups only see the default VPC.
    await expectEc2Error(call(A, 'DescribeSecurityGroups', { GroupNames: ['custom'] }), 'InvalidGroup.NotFound', `The security group 'custom' does not exist in default VPC '${vpcA}'`);
    await call(A, 'AuthorizeSecurityGroupIngress', { GroupId: g, IpPermissions: [tcp(22, '10.0.0.0/8')] });
    await expectEc2Error(call(A, 'RevokeSecurityGroupIngress', { GroupId: g, IpPermissions: [tcp(22, '10.0.0.0/8'), tcp(23, '10.0.0.0/8')] }),
      'InvalidPermission.NotFound', 'The specified rule does not exist in this security group.');
    assert.equal((await describeOne(A, g)).IpPermissions.length, 1);
    // Groups of different VPCs cannot reference each other.
    await expectEc2Error(call(A, 'AuthorizeSecurityGroupIngress', { GroupId: g, IpPermissions: [{ ...tcp(22), UserIdGroupPairs: [{ GroupId: defaultA }] }] }),
      'InvalidGroup.NotFound', /different networks/);
    await expectEc2Error(resolveSecurityGroups(store.db, A, { ids: [g], vpcId: vpcA }), 'InvalidParameter', /different networks/);
    assert.deepEqual((await resolveSecurityGroups(store.db, A, { names: ['custom'], vpcId: otherVpc })).map((x) => x.id), [g]);
  });

  it('Revoke by SecurityGroupRuleIds, direction by direction', async () => {
    const r = await create(A, 'byid');
    const added = await call(A, 'AuthorizeSecurityGroupIngress', { GroupId: r, IpPermissions: [tcp(22, '10.0.0.0/8'), tcp(80, '10.0.0.0/8')] });
    const egressId = (await call(A, 'DescribeSecurityGroupRules', { Filters: [{ Name: 'group-id', Values: [r] }] }))
      .SecurityGroupRules.find((x: any) => x.IsEgress).SecurityGroupRuleId;
    await expectEc2Error(call(A, 'RevokeSecurityGroupIngress', { GroupId: r, SecurityGroupRuleIds: [egressId] }), 'InvalidSecurityGroupRuleId.NotFound', `The security group rule ID '${egressId}' does not exist`);
    await expectEc2Error(call(A, 'RevokeSecurityGroupIngress', { GroupId: r, SecurityGroupRuleIds: ['sgr-bad'] }), 'InvalidSecurityGroupRuleId.Malformed');
    await expectEc2Error(call(A, 'RevokeSecurityGroupIngress', { GroupId: r, SecurityGroupRuleIds: [added.SecurityGroupRules[0].SecurityGroupRuleId, 'sgr-0123456789abcdef0'] }),
      'InvalidSecurityGroupRuleId.NotFound');
    assert.equal(await ruleCount(r), 3);
    assert.deepEqual(await call(A, 'RevokeSecurityGroupIngress', { GroupId: r, SecurityGroupRuleIds: [added.SecurityGroupRules[0].SecurityGroupRuleId] }), { Return: true });
    assert.deepEqual(await call(A, 'RevokeSecurityGroupEgress', { GroupId: r, SecurityGroupRuleIds: [egressId] }), { Return: true });
    const g = await describeOne(A, r);
    assert.deepEqual(g.IpPermissions.map((p: any) => p.FromPort), [80]);
    assert.deepEqual(g.IpPermissionsEgress, []);
  });

  it('DescribeSecurityGroups filters and pages', async () => {
    const web = (await call(A, 'DescribeSecurityGroups', { GroupNames: ['web'] })).SecurityGroups[0].GroupId;
    const app = (await call(A, 'DescribeSecurityGroups', { GroupNames: ['app'] })).SecurityGroups[0].GroupId;
    const egress = (await call(A, 'DescribeSecurityGroups', { GroupNames: ['egress'] })).SecurityGroups[0].GroupId;
    const names = async (Filters: object[]) => (await call(A, 'DescribeSecurityGroups', { Filters })).SecurityGroups.map((g: any) => g.GroupName).sort();
    assert.deepEqual(await names([{ Name: 'group-name', Values: ['web', 'app'] }]), ['app', 'web']);
    assert.deepEqual(await names([{ Name: 'group-id', Values: [web] }]), ['web']);
    assert.deepEqual(await names([{ Name: 'description', Values: ['Web*'] }]), ['web']);
    assert.deepEqual(await names([{ Name: 'tag:tier', Values: ['web'] }]), ['web']);
    assert.deepEqual(await names([{ Name: 'ip-permission.cidr', Values: ['10.0.0.0/8'] }, { Name: 'group-name', Values: ['app'] }]), ['app']);
    assert.deepEqual(await names([{ Name: 'ip-permission.from-port', Values: ['80'] }, { Name: 'ip-permission.to-port', Values: ['81'] }]), ['app']);
    assert.deepEqual(await names([{ Name: 'ip-permission.protocol', Values: ['50'] }]), ['app']);
    assert.deepEqual(await names([{ Name: 'ip-permission.protocol', Values: ['icmp'] }]), ['app']);
    assert.deepEqual(await names([{ Name: 'ip-permission.group-id', Values: [web] }]), ['app', 'legacy']);
    assert.deepEqual(await names([{ Name: 'ip-permission.group-name', Values: ['web'] }]), ['app', 'legacy']);
    assert.deepEqual(await names([{ Name: 'ip-permission.user-id', Values: [A] }, { Name: 'group-name', Values: ['default', 'app'] }]), ['app', 'default']);
    assert.deepEqual(await names([{ Name: 'ip-permission.ipv6-cidr', Values: ['2001:db8::/32'] }]), ['app']);
    assert.deepEqual(await names([{ Name: 'ip-permission.prefix-list-id', Values: ['*'] }]), []);
    assert.deepEqual(await names([{ Name: 'egress.ip-permission.ipv6-cidr', Values: ['::/0'] }]), ['egress']);
    assert.deepEqual(await names([{ Name: 'egress.ip-permission.protocol', Values: ['udp'] }]), ['egress']);
    assert.ok((await names([{ Name: 'egress.ip-permission.cidr', Values: ['0.0.0.0/0'] }])).includes('web'));
    assert.deepEqual(await names([{ Name: 'vpc-id', Values: [vpcB] }]), []);
    assert.ok((await names([{ Name: 'owner-id', Values: [A] }])).length > 5);
    await expectEc2Error(call(A, 'DescribeSecurityGroups', { Filters: [{ Name: 'ip-permission.colour', Values: ['x'] }] }), 'InvalidParameterValue');

    const all = (await call(A, 'DescribeSecurityGroups')).SecurityGroups;
    const seen: string[] = [];
    let token: string | undefined;
    do {
      const page = await call(A, 'DescribeSecurityGroups', { MaxResults: 5, NextToken: token });
      assert.ok(page.SecurityGroups.length <= 5);
      seen.push(...page.SecurityGroups.map((g: any) => g.GroupId));
      token = page.NextToken;
    } while (token);
    assert.deepEqual(seen, all.map((g: any) => g.GroupId));

    const both = await call(A, 'DescribeSecurityGroups', { GroupIds: [app], GroupNames: ['egress'] });
    assert.deepEqual(both.SecurityGroups.map((g: any) => g.GroupId).sort(), [app, egress].sort());
    await expectEc2Error(call(A, 'DescribeSecurityGroups', { GroupIds: ['sg-0123456789abcdef0'] }), 'InvalidGroup.NotFound', "The security group 'sg-0123456789abcdef0' does not exist");
    await expectEc2Error(call(A, 'DescribeSecurityGroups', { GroupIds: ['banana'] }), 'InvalidGroupId.Malformed', 'Invalid id: "banana" (expecting "sg-...")');
  });

  it('DescribeSecurityGroupRules by id, filter, tags and pages', async () => {
    const app = (await call(A, 'DescribeSecurityGroups', { GroupNames: ['app'] })).SecurityGroups[0].GroupId;
    const rules = (await call(A, 'DescribeSecurityGroupRules', { Filters: [{ Name: 'group-id', Values: [app] }] })).SecurityGroupRules;
    assert.equal(rules.length, 8);
    assert.ok(rules.every((r: any) => r.GroupId === app && r.GroupOwnerId === A));
    const egress = rules.filter((r: any) => r.IsEgress);
    assert.deepEqual(egress.map((r: any) => [r.IpProtocol, r.FromPort, r.ToPort, r.CidrIpv4]), [['-1', -1, -1, '0.0.0.0/0']]);
    const tagged = (await call(A, 'DescribeSecurityGroupRules', { Filters: [{ Name: 'tag:purpose', Values: ['test'] }] })).SecurityGroupRules;
    assert.equal(tagged.length, 7);
    const one = await call(A, 'DescribeSecurityGroupRules', { SecurityGroupRuleIds: [rules[0].SecurityGroupRuleId] });
    assert.deepEqual(one.SecurityGroupRules, [rules[0]]);
    const byFilter = await call(A, 'DescribeSecurityGroupRules', { Filters: [{ Name: 'security-group-rule-id', Values: [rules[1].SecurityGroupRuleId] }] });
    assert.deepEqual(byFilter.SecurityGroupRules, [rules[1]]);
    const first = await call(A, 'DescribeSecurityGroupRules', { Filters: [{ Name: 'group-id', Values: [app] }], MaxResults: 5 });
    const second = await call(A, 'DescribeSecurityGroupRules', { Filters: [{ Name: 'group-id', Values: [app] }], MaxResults: 5, NextToken: first.NextToken });
    assert.deepEqual([...first.SecurityGroupRules, ...second.SecurityGroupRules], rules);
    assert.equal(second.NextToken, undefined);
    await expectEc2Error(call(A, 'DescribeSecurityGroupRules', { MaxResults: 5, NextToken: first.NextToken }), 'InvalidNextToken');
    await expectEc2Error(call(A, 'DescribeSecurityGroupRules', { SecurityGroupRuleIds: ['sgr-0123456789abcdef0'] }), 'InvalidSecurityGroupRuleId.NotFound');
    await expectEc2Error(call(A, 'DescribeSecurityGroupRules', { SecurityGroupRuleIds: ['rule-1'] }), 'InvalidSecurityGroupRuleId.Malformed');
    const foreignRule = (await call(B, 'DescribeSecurityGroupRules')).SecurityGroupRules[0].SecurityGroupRuleId;
    await expectEc2Error(call(A, 'DescribeSecurityGroupRules', { SecurityGroupRuleIds: [foreignRule] }), 'InvalidSecurityGroupRuleId.NotFound');
  });

  it('ModifySecurityGroupRules replaces a rule, refusing duplicates and unknown ids', async () => {
    const m = await create(A, 'modify');
    const added = (await call(A, 'AuthorizeSecurityGroupIngress', { GroupId: m, IpPermissions: [tcp(22, '10.0.0.0/8'), tcp(80, '10.0.0.0/8')] })).SecurityGroupRules;
    const [ssh, http] = added.map((r: any) => r.SecurityGroupRuleId);
    assert.deepEqual(await call(A, 'ModifySecurityGroupRules', {
      GroupId: m, SecurityGroupRules: [{ SecurityGroupRuleId: ssh, SecurityGroupRule: { IpProtocol: 'tcp', FromPort: 2222, ToPort: 2222, CidrIpv4: '192.168.0.0/16', Description: 'moved' } }],
    }), { Return: true });
    const [rule] = (await call(A, 'DescribeSecurityGroupRules', { SecurityGroupRuleIds: [ssh] })).SecurityGroupRules;
    assert.deepEqual([rule.FromPort, rule.ToPort, rule.CidrIpv4, rule.Description], [2222, 2222, '192.168.0.0/16', 'moved']);
    await expectEc2Error(call(A, 'ModifySecurityGroupRules', {
      GroupId: m, SecurityGroupRules: [{ SecurityGroupRuleId: http, SecurityGroupRule: { IpProtocol: 'tcp', FromPort: 2222, ToPort: 2222, CidrIpv4: '192.168.0.0/16' } }],
    }), 'InvalidPermission.Duplicate');
    await expectEc2Error(call(A, 'ModifySecurityGroupRules', {
      GroupId: m, SecurityGroupRules: [{ SecurityGroupRuleId: 'sgr-0123456789abcdef0', SecurityGroupRule: { IpProtocol: '-1', CidrIpv4: '0.0.0.0/0' } }],
    }), 'InvalidSecurityGroupRuleId.NotFound');
    await expectEc2Error(call(A, 'ModifySecurityGroupRules', {
      GroupId: m, SecurityGroupRules: [{ SecurityGroupRuleId: http, SecurityGroupRule: { IpProtocol: '-1', CidrIpv4: '0.0.0.0/0', CidrIpv6: '::/0' } }],
    }), 'InvalidParameterCombination');
    // Swapping two rules in one call is fine: duplicates are judged on the end result.
    assert.deepEqual(await call(A, 'ModifySecurityGroupRules', {
      GroupId: m, SecurityGroupRules: [
        { SecurityGroupRuleId: ssh, SecurityGroupRule: { IpProtocol: 'tcp', FromPort: 80, ToPort: 80, CidrIpv4: '10.0.0.0/8' } },
        { SecurityGroupRuleId: http, SecurityGroupRule: { IpProtocol: 'tcp', FromPort: 2222, ToPort: 2222, CidrIpv4: '192.168.0.0/16' } },
      ],
    }), { Return: true });
  });

  it('UpdateSecurityGroupRuleDescriptions* by permission and by rule id', async () => {
    const d = await create(A, 'describe-me');
    const [rule] = (await call(A, 'AuthorizeSecurityGroupIngress', { GroupId: d, IpPermissions: [tcp(22, '10.0.0.0/8')] })).SecurityGroupRules;
    await call(A, 'UpdateSecurityGroupRuleDescriptionsIngress', { GroupId: d, IpPermissions: [{ ...tcp(22), IpRanges: [{ CidrIp: '10.0.0.0/8', Description: 'office ssh' }] }] });
    assert.equal((await describeOne(A, d)).IpPermissions[0].IpRanges[0].Description, 'office ssh');
    await call(A, 'UpdateSecurityGroupRuleDescriptionsIngress', { GroupName: 'describe-me', SecurityGroupRuleDescriptions: [{ SecurityGroupRuleId: rule.SecurityGroupRuleId, Description: 'vpn ssh' }] });
    assert.equal((await describeOne(A, d)).IpPermissions[0].IpRanges[0].Description, 'vpn ssh');
    const egressRule = (await call(A, 'DescribeSecurityGroupRules', { Filters: [{ Name: 'group-id', Values: [d] }] })).SecurityGroupRules.find((r: any) => r.IsEgress);
    await call(A, 'UpdateSecurityGroupRuleDescriptionsEgress', { GroupId: d, SecurityGroupRuleDescriptions: [{ SecurityGroupRuleId: egressRule.SecurityGroupRuleId, Description: 'anywhere' }] });
    assert.deepEqual((await describeOne(A, d)).IpPermissionsEgress[0].IpRanges, [{ CidrIp: '0.0.0.0/0', Description: 'anywhere' }]);
    await expectEc2Error(call(A, 'UpdateSecurityGroupRuleDescriptionsIngress', { GroupId: d, IpPermissions: [tcp(23, '10.0.0.0/8')] }), 'InvalidPermission.NotFound');
    await expectEc2Error(call(A, 'UpdateSecurityGroupRuleDescriptionsIngress', { GroupId: d, SecurityGroupRuleDescriptions: [{ SecurityGroupRuleId: egressRule.SecurityGroupRuleId, Description: 'x' }] }),
      'InvalidSecurityGroupRuleId.NotFound');
  });

  it('DeleteSecurityGroup: default group, dependencies, usage and success', async () => {
    await expectEc2Error(call(A, 'DeleteSecurityGroup', { GroupId: defaultA }), 'CannotDelete', `the specified group: "${defaultA}" name: "default" cannot be deleted by a user`);
    const web = (await call(A, 'DescribeSecurityGroups', { GroupNames: ['web'] })).SecurityGroups[0].GroupId;
    await expectEc2Error(call(A, 'DeleteSecurityGroup', { GroupId: web }), 'DependencyViolation', `resource ${web} has a dependent object`);

    const busy = await create(A, 'busy');
    const unregister = registerSecurityGroupUsageCheck(async (_db, accountId, groupId) => accountId === A && groupId === busy);
    try {
      await expectEc2Error(call(A, 'DeleteSecurityGroup', { GroupId: busy }), 'DependencyViolation');
    } finally {
      unregister();
    }

    // A group whose only reference is to itself, with tagged rules, goes away completely.
    const [selfRule] = (await call(A, 'AuthorizeSecurityGroupIngress', {
      GroupId: busy, IpPermissions: [{ IpProtocol: '-1', UserIdGroupPairs: [{ GroupId: busy }] }],
      TagSpecifications: [{ ResourceType: 'security-group-rule', Tags: [{ Key: 'k', Value: 'v' }] }],
    })).SecurityGroupRules;
    assert.deepEqual(await call(A, 'DeleteSecurityGroup', { GroupName: 'busy' }), {});
    await expectEc2Error(call(A, 'DescribeSecurityGroups', { GroupIds: [busy] }), 'InvalidGroup.NotFound');
    assert.equal(await ruleCount(busy), 0);
    assert.equal((await store.db.selectFrom('tags').select('key').where('resource_id', '=', selfRule.SecurityGroupRuleId).execute()).length, 0);

    // Once the referencing rules are gone, the referenced group can be deleted.
    await expectEc2Error(call(A, 'DeleteSecurityGroup', { GroupName: 'nope' }), 'InvalidGroup.NotFound', `The security group 'nope' does not exist in default VPC '${vpcA}'`);
    await expectEc2Error(call(A, 'DeleteSecurityGroup', {}), 'MissingParameter');
    await expectEc2Error(call(A, 'DeleteSecurityGroup', { GroupId: 'sg-1' }), 'InvalidGroupId.Malformed');
    const tagsBefore = (await store.db.selectFrom('tags').select('key').where('resource_id', '=', web).execute()).length;
    assert.equal(tagsBefore, 1);
    for (const name of ['app', 'legacy']) {
      const id = (await call(A, 'DescribeSecurityGroups', { GroupNames: [name] })).SecurityGroups[0].GroupId;
      await call(A, 'DeleteSecurityGroup', { GroupId: id });
    }
    await call(A, 'DeleteSecurityGroup', { GroupId: web });
    assert.equal((await store.db.selectFrom('tags').select('key').where('resource_id', '=', web).execute()).length, 0);
  });

  it('another account can neither see nor touch the first account\'s groups', async () => {
    const secret = await create(A, 'secret');
    await call(A, 'AuthorizeSecurityGroupIngress', { GroupId: secret, IpPermissions: [tcp(22, '10.0.0.0/8')] });
    const before = await describeOne(A, secret);
    const notFound = `The security group '${secret}' does not exist`;
    const bNames = (await call(B, 'DescribeSecurityGroups')).SecurityGroups.map((g: any) => g.GroupName).sort();
    assert.deepEqual(bNames, ['default', 'web']);
    assert.deepEqual((await call(B, 'DescribeSecurityGroups', { Filters: [{ Name: 'group-id', Values: [secret] }] })).SecurityGroups, []);
    await expectEc2Error(call(B, 'DescribeSecurityGroups', { GroupIds: [secret] }), 'InvalidGroup.NotFound', notFound);
    await expectEc2Error(call(B, 'DescribeSecurityGroups', { GroupNames: ['secret'] }), 'InvalidGroup.NotFound', `The security group 'secret' does not exist in default VPC '${vpcB}'`);
    await expectEc2Error(call(B, 'AuthorizeSecurityGroupIngress', { GroupId: secret, IpPermissions: [tcp(80, '0.0.0.0/0')] }), 'InvalidGroup.NotFound', notFound);
    await expectEc2Error(call(B, 'AuthorizeSecurityGroupEgress', { GroupId: secret, IpPermissions: [tcp(80, '0.0.0.0/0')] }), 'InvalidGroup.NotFound', notFound);
    await expectEc2Error(call(B, 'RevokeSecurityGroupIngress', { GroupId: secret, IpPermissions: [tcp(22, '10.0.0.0/8')] }), 'InvalidGroup.NotFound', notFound);
    await expectEc2Error(call(B, 'DeleteSecurityGroup', { GroupId: secret }), 'InvalidGroup.NotFound', notFound);
    await expectEc2Error(call(B, 'ModifySecurityGroupRules', { GroupId: secret, SecurityGroupRules: [{ SecurityGroupRuleId: 'sgr-0123456789abcdef0', SecurityGroupRule: { IpProtocol: '-1', CidrIpv4: '0.0.0.0/0' } }] }), 'InvalidGroup.NotFound', notFound);
    await expectEc2Error(call(B, 'UpdateSecurityGroupRuleDescriptionsIngress', { GroupId: secret, IpPermissions: [tcp(22, '10.0.0.0/8')] }), 'InvalidGroup.NotFound', notFound);
    // B's own group cannot reference A's group either.
    await expectEc2Error(call(B, 'AuthorizeSecurityGroupIngress', { GroupId: defaultB, IpPermissions: [{ ...tcp(22), UserIdGroupPairs: [{ GroupId: secret, UserId: A }] }] }), 'InvalidGroup.NotFound', notFound);
    await expectEc2Error(call(B, 'CreateSecurityGroup', { GroupName: 'x', Description: 'x', VpcId: vpcA }), 'InvalidVpcID.NotFound');
    const ruleIds = (await call(A, 'DescribeSecurityGroupRules', { Filters: [{ Name: 'group-id', Values: [secret] }] })).SecurityGroupRules.map((r: any) => r.SecurityGroupRuleId);
    await expectEc2Error(call(B, 'RevokeSecurityGroupIngress', { GroupId: defaultB, SecurityGroupRuleIds: ruleIds.slice(0, 1) }), 'InvalidSecurityGroupRuleId.NotFound');
    assert.deepEqual(await describeOne(A, secret), before);
  });

  it('resolveSecurityGroups finds groups for instance launches', async () => {
    assert.deepEqual((await resolveSecurityGroups(store.db, A, { names: ['default'] })).map((g) => g.id), [defaultA]);
    assert.deepEqual((await resolveSecurityGroups(store.db, A, { ids: [defaultA], names: ['default'], vpcId: vpcA })).map((g) => g.id), [defaultA]);
    assert.deepEqual(await resolveSecurityGroups(store.db, A, {}), []);
    await expectEc2Error(resolveSecurityGroups(store.db, A, { ids: [defaultB] }), 'InvalidGroup.NotFound');
    await expectEc2Error(resolveSecurityGroups(store.db, B, { names: ['secret'] }), 'InvalidGroup.NotFound');
    await expectEc2Error(resolveSecurityGroups(store.db, A, { ids: ['sg-?'] }), 'InvalidGroupId.Malformed');
  });
});
