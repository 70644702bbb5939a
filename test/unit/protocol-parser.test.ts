// parseInput against the real AWS SDK v3: the SDK serializes a request, we parse its form body,
// and the result must be exactly the input the SDK was given.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  RunInstancesCommand, AuthorizeSecurityGroupIngressCommand, DescribeInstancesCommand,
  ModifyInstanceAttributeCommand, CreateTagsCommand, DescribeKeyPairsCommand,
} from '@aws-sdk/client-ec2';
import { parseInput, parseParams } from '../../src/protocol/query-parser.ts';
import { resolveShape, type RawShape } from '../../src/protocol/model.ts';
import { expectEc2ErrorSync } from '../helpers/ec2-errors.ts';
import { offlineEc2Client, sdkV2QueryParams } from '../helpers/sdk-oracle.ts';

/** A client whose transport records the form body and answers an empty success. */
function capturingClient() {
  const captured = { body: '' };
  const client = offlineEc2Client((body) => {
    captured.body = body;
    const action = new URLSearchParams(body).get('Action');
    return { xml: `<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r-1</requestId></${action}Response>` };
  });
  return { client, captured };
}

const { client, captured } = capturingClient();

async function roundTrip(command: { input: object }, action: string): Promise<{ parsed: Record<string, any>; params: Record<string, string> }> {
  await client.send(command as any);
  const params = Object.fromEntries(new URLSearchParams(captured.body));
  assert.equal(params.Action, action);
  assert.equal(params.Version, '2016-11-15');
  return { parsed: parseInput(action, params), params };
}

test('RunInstances: block devices, tag specifications, network interfaces, user data, nested timestamps', async () => {
  const input = {
    ImageId: 'ami-0123456789abcdef0',
    InstanceType: 't3.micro' as const,
    MinCount: 1,
    MaxCount: 3,
    KeyName: 'my key & <friends>',
    UserData: Buffer.from('#!/bin/sh\necho "hi" > /tmp/x\n').toString('base64'),
    ClientToken: 'token-1',
    SecurityGroupIds: ['sg-1', 'sg-2'],
    BlockDeviceMappings: [
      { DeviceName: '/dev/xvda', Ebs: { VolumeSize: 20, VolumeType: 'gp3' as const, DeleteOnTermination: true, Encrypted: false, Iops: 3000 } },
      { DeviceName: '/dev/sdb', VirtualName: 'ephemeral0' },
      { DeviceName: '/dev/sdc', NoDevice: '' },
    ],
    TagSpecifications: [
      { ResourceType: 'instance' as const, Tags: [{ Key: 'Name', Value: 'web 1' }, { Key: 'env', Value: 'a=b&c' }] },
      { ResourceType: 'volume' as const, Tags: [{ Key: 'Name', Value: '' }] },
    ],
    NetworkInterfaces: [{
      DeviceIndex: 0,
      AssociatePublicIpAddress: true,
      Groups: ['sg-3'],
      Ipv6Addresses: [{ Ipv6Address: '2001:db8::1' }],
      PrivateIpAddresses: [{ Primary: true, PrivateIpAddress: '10.0.0.5' }, { Primary: false, PrivateIpAddress: '10.0.0.6' }],
      SubnetId: 'subnet-1',
    }],
    Placement: { AvailabilityZone: 'zone-a', Tenancy: 'default' as const },
    Monitoring: { Enabled: false },
    MetadataOptions: { HttpTokens: 'required' as const, HttpPutResponseHopLimit: 2 },
    InstanceMarketOptions: { MarketType: 'spot' as const, SpotOptions: { ValidUntil: new Date('2030-05-06T07:08:09.123Z'), MaxPrice: '0.5' } },
    ElasticInferenceAccelerators: [{ Type: 'eia1.medium', Count: 1 }],
    DryRun: false,
  };
  const { parsed, params } = await roundTrip(new RunInstancesCommand(input), 'RunInstances');
  // The wire names are EC2's, not the model's member names.
  assert.equal(params['BlockDeviceMapping.1.Ebs.VolumeSize'], '20');
  assert.equal(params['NetworkInterface.1.Ipv6Addresses.1.Ipv6Address'], '2001:db8::1');
  assert.equal(params['NetworkInterface.1.SecurityGroupId.1'], 'sg-3');
  assert.equal(params['TagSpecification.2.Tag.1.Key'], 'Name');
  assert.deepEqual(parsed, input);
});

test('AuthorizeSecurityGroupIngress: IpPermissions with every kind of source', async () => {
  const input = {
    GroupId: 'sg-0abc',
    IpPermissions: [
      {
        IpProtocol: 'tcp', FromPort: 22, ToPort: 22,
        IpRanges: [{ CidrIp: '10.0.0.0/8', Description: 'office "main"' }, { CidrIp: '192.168.1.0/24' }],
        Ipv6Ranges: [{ CidrIpv6: '::/0', Description: 'anywhere' }],
      },
      {
        IpProtocol: '-1',
        UserIdGroupPairs: [{ GroupId: 'sg-0def', UserId: '123456789012', Description: 'peers' }, { GroupName: 'default' }],
        PrefixListIds: [{ PrefixListId: 'pl-1', Description: 's3' }],
      },
      { IpProtocol: 'icmp', FromPort: -1, ToPort: -1, IpRanges: [{ CidrIp: '0.0.0.0/0' }] },
    ],
    TagSpecifications: [{ ResourceType: 'security-group-rule' as const, Tags: [{ Key: 'k', Value: 'v' }] }],
  };
  const { parsed, params } = await roundTrip(new AuthorizeSecurityGroupIngressCommand(input), 'AuthorizeSecurityGroupIngress');
  assert.equal(params['IpPermissions.1.IpRanges.1.CidrIp'], '10.0.0.0/8');
  assert.equal(params['IpPermissions.2.Groups.1.GroupId'], 'sg-0def');
  assert.deepEqual(parsed, input);
});

test('DescribeInstances: filters with several values, ids, paging', async () => {
  const input = {
    Filters: [
      { Name: 'instance-state-name', Values: ['running', 'pending'] },
      { Name: 'tag:Name', Values: ['web-*', 'db?'] },
    ],
    InstanceIds: ['i-0123456789abcdef0'],
    MaxResults: 5,
    NextToken: 'abc+/=',
  };
  const { parsed, params } = await roundTrip(new DescribeInstancesCommand(input), 'DescribeInstances');
  assert.equal(params['Filter.2.Value.1'], 'web-*');
  assert.deepEqual(parsed, input);
});

test('ModifyInstanceAttribute: the UserData blob arrives as bytes', async () => {
  const bytes = Buffer.from([0, 1, 2, 250, 251, 255, 10, 13]);
  const input = { InstanceId: 'i-1', UserData: { Value: bytes } };
  const { parsed } = await roundTrip(new ModifyInstanceAttributeCommand(input), 'ModifyInstanceAttribute');
  assert.ok(Buffer.isBuffer(parsed.UserData.Value));
  assert.deepEqual(parsed, { InstanceId: 'i-1', UserData: { Value: bytes } });
});

test('CreateTags and DescribeKeyPairs', async () => {
  const tags = { Resources: ['i-1', 'vol-2'], Tags: [{ Key: 'Name', Value: 'Ünïcødé 😀' }, { Key: 'empty', Value: '' }], DryRun: true };
  assert.deepEqual((await roundTrip(new CreateTagsCommand(tags), 'CreateTags')).parsed, tags);

  const keys = { KeyNames: ['a', 'b'], KeyPairIds: ['key-1'], IncludePublicKey: true, Filters: [{ Name: 'key-name', Values: ['a*'] }] };
  assert.deepEqual((await roundTrip(new DescribeKeyPairsCommand(keys), 'DescribeKeyPairs')).parsed, keys);
});

test('envelope and signature parameters are not part of the input', () => {
  const parsed = parseInput('DescribeRegions', {
    Action: 'DescribeRegions', Version: '2016-11-15', AWSAccessKeyId: 'AKID', Signature: 'sig', SignatureMethod: 'HmacSHA256',
    SignatureVersion: '2', Timestamp: '2024-01-01T00:00:00Z', Expires: '2024-01-01T00:00:00Z', SecurityToken: 'tok',
    'X-Amz-Algorithm': 'AWS4-HMAC-SHA256', 'X-Amz-Credential': 'c', 'X-Amz-Date': 'd', 'X-Amz-SignedHeaders': 'host', 'x-amz-signature': 's',
    AllRegions: 'TRUE',
  });
  assert.deepEqual(parsed, { AllRegions: true });
});

test('lists follow their index, with gaps, and not the order of the parameters', () => {
  const parsed = parseInput('DescribeInstances', {
    'Filter.10.Name': 'c', 'Filter.10.Value.1': 'z',
    'Filter.2.Name': 'b', 'Filter.2.Value.7': 'y2', 'Filter.2.Value.3': 'y1',
    'InstanceId.3': 'i-3', 'InstanceId.1': 'i-1',
  });
  assert.deepEqual(parsed, {
    Filters: [{ Name: 'b', Values: ['y1', 'y2'] }, { Name: 'c', Values: ['z'] }],
    InstanceIds: ['i-1', 'i-3'],
  });
});

test('scalars: booleans in any case, numbers, timestamps as ISO-8601 or epoch seconds', () => {
  assert.deepEqual(parseInput('DescribeKeyPairs', { DryRun: 'False', IncludePublicKey: 'tRuE' }), { DryRun: false, IncludePublicKey: true });
  const spot = (validUntil: string) => parseInput('RunInstances', { MinCount: '1', MaxCount: '+2', 'InstanceMarketOptions.SpotOptions.ValidUntil': validUntil });
  assert.deepEqual(spot('2030-01-02T03:04:05Z'), { MinCount: 1, MaxCount: 2, InstanceMarketOptions: { SpotOptions: { ValidUntil: new Date('2030-01-02T03:04:05.000Z') } } });
  assert.deepEqual(spot('2030-01-02T03:04:05.5+02:00').InstanceMarketOptions.SpotOptions.ValidUntil, new Date('2030-01-02T01:04:05.500Z'));
  assert.deepEqual(spot('2030-01-02T03:04:05').InstanceMarketOptions.SpotOptions.ValidUntil, new Date('2030-01-02T03:04:05.000Z'));
  assert.deepEqual(spot('1893456000').InstanceMarketOptions.SpotOptions.ValidUntil, new Date('2030-01-01T00:00:00.000Z'));
  const spotPrice = parseInput('RequestSpotInstances', { SpotPrice: '0.05', InstanceCount: '2' });
  assert.deepEqual(spotPrice, { SpotPrice: '0.05', InstanceCount: 2 });
  const weighted = parseInput('CreateCapacityReservationFleet', { 'InstanceTypeSpecification.1.Weight': '1.5e0', TotalTargetCapacity: '4' });
  assert.equal(weighted.InstanceTypeSpecifications[0].Weight, 1.5);
});

test('missing required parameters, also inside nested structures that are present', () => {
  expectEc2ErrorSync(() => parseInput('RunInstances', { MinCount: '1' }), 'MissingParameter', 'The request must contain the parameter MaxCount');
  expectEc2ErrorSync(() => parseInput('CreateTags', { 'ResourceId.1': 'i-1' }), 'MissingParameter', 'The request must contain the parameter Tag');
  expectEc2ErrorSync(
    () => parseInput('RunInstances', { MinCount: '1', MaxCount: '1', 'ElasticInferenceAccelerator.1.Count': '2' }),
    'MissingParameter', 'The request must contain the parameter ElasticInferenceAccelerator.1.Type',
  );
  // An absent optional structure does not make its required members required.
  assert.deepEqual(parseInput('RunInstances', { MinCount: '1', MaxCount: '1' }), { MinCount: 1, MaxCount: 1 });
});

test('values of the wrong type', () => {
  expectEc2ErrorSync(() => parseInput('RunInstances', { MinCount: 'abc', MaxCount: '1' }), 'InvalidParameterValue', "Invalid value 'abc' for MinCount");
  expectEc2ErrorSync(() => parseInput('RunInstances', { MinCount: '1.5', MaxCount: '1' }), 'InvalidParameterValue', "Invalid value '1.5' for MinCount");
  expectEc2ErrorSync(() => parseInput('DescribeInstances', { DryRun: 'yes' }), 'InvalidParameterValue', "Invalid value 'yes' for DryRun");
  expectEc2ErrorSync(
    () => parseInput('RunInstances', { MinCount: '1', MaxCount: '1', 'BlockDeviceMapping.1.Ebs.VolumeSize': 'big' }),
    'InvalidParameterValue', "Invalid value 'big' for BlockDeviceMapping.1.Ebs.VolumeSize",
  );
  expectEc2ErrorSync(
    () => parseInput('RunInstances', { MinCount: '1', MaxCount: '1', 'InstanceMarketOptions.SpotOptions.ValidUntil': 'tomorrow' }),
    'InvalidParameterValue', "Invalid value 'tomorrow' for InstanceMarketOptions.SpotOptions.ValidUntil",
  );
  expectEc2ErrorSync(
    () => parseInput('RunInstances', { MinCount: '1', MaxCount: '1', 'InstanceMarketOptions.SpotOptions.ValidUntil': '2030-02-30T00:00:00Z' }),
    'InvalidParameterValue', /ValidUntil/,
  );
  expectEc2ErrorSync(() => parseInput('ModifyInstanceAttribute', { InstanceId: 'i-1', 'UserData.Value': 'not base64!' }), 'InvalidParameterValue', "Invalid value 'not base64!' for UserData.Value");
  expectEc2ErrorSync(() => parseInput('CreateCapacityReservationFleet', { 'InstanceTypeSpecification.1.Weight': 'heavy', TotalTargetCapacity: '1' }), 'InvalidParameterValue', /heavy/);
});

test('unknown parameters, also nested, also a list or structure given a bare value', () => {
  expectEc2ErrorSync(() => parseInput('DescribeInstances', { Foo: '1' }), 'UnknownParameter', 'The parameter Foo is not recognized');
  expectEc2ErrorSync(() => parseInput('DescribeInstances', { 'Filter.1.Name': 'a', 'Filter.1.Bogus': 'x' }), 'UnknownParameter', 'The parameter Filter.1.Bogus is not recognized');
  expectEc2ErrorSync(() => parseInput('DescribeInstances', { InstanceId: 'i-1' }), 'UnknownParameter', 'The parameter InstanceId is not recognized');
  expectEc2ErrorSync(() => parseInput('DescribeInstances', { 'DryRun.1': 'true' }), 'UnknownParameter', 'The parameter DryRun.1 is not recognized');
  // Model member names are not wire names when a locationName says otherwise.
  expectEc2ErrorSync(() => parseInput('DescribeInstances', { 'Filters.1.Name': 'a' }), 'UnknownParameter', 'The parameter Filters is not recognized');
  expectEc2ErrorSync(() => parseInput('DescribeInstances', JSON.parse('{"__proto__.polluted": "x"}')), 'UnknownParameter', 'The parameter __proto__ is not recognized');
  expectEc2ErrorSync(() => parseInput('DescribeInstances', { constructor: 'y' }), 'UnknownParameter', 'The parameter constructor is not recognized');
  assert.equal(({} as any).polluted, undefined);
});

test('malformed list indexes', () => {
  for (const index of ['0', 'x', '01', '-1', '1e3', '']) {
    expectEc2ErrorSync(() => parseInput('DescribeInstances', { [`InstanceId.${index}`]: 'i-1' }), 'InvalidParameterValue', new RegExp(`InstanceId\\.${index.replace(/\./g, '\\.')}`));
  }
});

test('an action that EC2 does not have', () => {
  expectEc2ErrorSync(() => parseInput('DescribeUnicorns', {}), 'InvalidAction', 'The action DescribeUnicorns is not valid for this web service.');
});

test('maps, which the EC2 model may grow: aws-sdk v2 serializes, we parse back', () => {
  const raw: RawShape = {
    type: 'structure',
    members: {
      Limits: { type: 'map', locationName: 'limit', key: { locationName: 'name' }, value: { type: 'integer', locationName: 'max' } },
      Labels: { type: 'map', key: {}, value: {} },
    },
  };
  const value = { Limits: { cores: 8, disks: 2 }, Labels: { team: 'a&b', 'dotted.key': 'y' } };
  const params = sdkV2QueryParams(raw, value);
  assert.equal(params['Limit.entry.2.name'], 'disks');
  assert.deepEqual(parseParams(resolveShape(raw), params), value);
  expectEc2ErrorSync(() => parseParams(resolveShape(raw), { 'Limit.entry.1.name': 'a', 'Limit.entry.1.max': 'lots' }), 'InvalidParameterValue', "Invalid value 'lots' for Limit.entry.1.max");
  expectEc2ErrorSync(() => parseParams(resolveShape(raw), { 'Limit.1.name': 'a' }), 'UnknownParameter', 'The parameter Limit.1 is not recognized');
});
