// serializeOutput / serializeError against the real AWS SDK v3: our XML is the HTTP response the
// SDK reads, and what it makes of it must be exactly what we serialized.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DescribeInstancesCommand, DescribeSecurityGroupsCommand, CreateKeyPairCommand, DescribeRegionsCommand,
  DeleteKeyPairCommand, EnableEbsEncryptionByDefaultCommand, RebootInstancesCommand, DescribeKeyPairsCommand,
} from '@aws-sdk/client-ec2';
import { XMLParser } from 'fast-xml-parser';
import { serializeOutput, serializeError, serializeStructure } from '../../src/protocol/xml-serializer.ts';
import { resolveShape, type RawShape } from '../../src/protocol/model.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';
import { offlineEc2Client, sdkV2ParseXml } from '../helpers/sdk-oracle.ts';

/** A client whose transport answers with the XML and status the test sets. */
function answeringClient() {
  const reply = { status: 200, xml: '' };
  const client = offlineEc2Client(() => reply);
  return { client, reply };
}

const { client, reply } = answeringClient();

async function sdkReads(operation: string, command: object, output: unknown): Promise<Record<string, unknown>> {
  reply.status = 200;
  reply.xml = serializeOutput(operation, output, 'req-0001');
  const { $metadata: _metadata, ...result } = await client.send(command as any);
  return result;
}

test('DescribeInstances: reservations, instances, tags, groups, timestamps, numbers, booleans', async () => {
  const output = {
    Reservations: [
      {
        ReservationId: 'r-0123456789abcdef0',
        OwnerId: '123456789012',
        Groups: [],
        Instances: [
          {
            InstanceId: 'i-0123456789abcdef0',
            ImageId: 'ami-1',
            InstanceType: 't3.micro',
            KeyName: 'k & <k>',
            LaunchTime: new Date('2024-02-03T04:05:06.789Z'),
            State: { Code: 16, Name: 'running' },
            StateTransitionReason: '',
            Placement: { AvailabilityZone: 'zone-a', Tenancy: 'default' },
            Monitoring: { State: 'disabled' },
            PrivateIpAddress: '10.0.0.5',
            PublicIpAddress: '198.51.100.7',
            AmiLaunchIndex: 0,
            EbsOptimized: false,
            EnaSupport: true,
            Architecture: 'x86_64',
            RootDeviceName: '/dev/xvda',
            RootDeviceType: 'ebs',
            BlockDeviceMappings: [
              { DeviceName: '/dev/xvda', Ebs: { VolumeId: 'vol-1', Status: 'attached', DeleteOnTermination: true, AttachTime: new Date('2024-02-03T04:05:07.000Z') } },
            ],
            SecurityGroups: [{ GroupId: 'sg-1', GroupName: 'default' }, { GroupId: 'sg-2', GroupName: 'web' }],
            Tags: [{ Key: 'Name', Value: 'web "1"' }, { Key: 'multi', Value: 'line one\nline two\r\nthree' }],
            NetworkInterfaces: [{
              NetworkInterfaceId: 'eni-1', SubnetId: 'subnet-1', VpcId: 'vpc-1', SourceDestCheck: true,
              Attachment: { AttachmentId: 'eni-attach-1', DeviceIndex: 0, Status: 'attached', AttachTime: new Date('2024-02-03T04:05:06.000Z'), DeleteOnTermination: true },
              PrivateIpAddresses: [{ Primary: true, PrivateIpAddress: '10.0.0.5' }],
              Groups: [{ GroupId: 'sg-1', GroupName: 'default' }],
            }],
          },
          { InstanceId: 'i-2', State: { Code: 80, Name: 'stopped' }, Tags: [] },
        ],
      },
    ],
    NextToken: 'tok/+=',
  };
  assert.deepEqual(await sdkReads('DescribeInstances', new DescribeInstancesCommand({}), output), output);
});

test('DescribeSecurityGroups: ingress and egress permissions', async () => {
  const output = {
    SecurityGroups: [{
      GroupId: 'sg-1', GroupName: 'web', Description: 'web <servers>', OwnerId: '123456789012', VpcId: 'vpc-1',
      IpPermissions: [
        {
          IpProtocol: 'tcp', FromPort: 22, ToPort: 22,
          IpRanges: [{ CidrIp: '10.0.0.0/8', Description: 'office' }],
          Ipv6Ranges: [{ CidrIpv6: '::/0' }],
          PrefixListIds: [],
          UserIdGroupPairs: [{ GroupId: 'sg-2', UserId: '123456789012' }],
        },
      ],
      IpPermissionsEgress: [{ IpProtocol: '-1', IpRanges: [{ CidrIp: '0.0.0.0/0' }], Ipv6Ranges: [], PrefixListIds: [], UserIdGroupPairs: [] }],
      Tags: [{ Key: 'team', Value: 'a' }],
    }],
  };
  assert.deepEqual(await sdkReads('DescribeSecurityGroups', new DescribeSecurityGroupsCommand({}), output), output);
});

test('CreateKeyPair: multi-line key material', async () => {
  const output = {
    KeyName: 'my-key',
    KeyPairId: 'key-0123456789abcdef0',
    KeyFingerprint: '1f:51:ae:28:bf:89:e9:d8:1f:25:5d:37:2d:7d:b8:ca:9f:f5:f1:6f',
    KeyMaterial: '-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA+/=\n-----END RSA PRIVATE KEY-----',
    Tags: [{ Key: 'purpose', Value: 'test' }],
  };
  assert.deepEqual(await sdkReads('CreateKeyPair', new CreateKeyPairCommand({ KeyName: 'my-key' }), output), output);
});

test('DescribeRegions', async () => {
  const output = { Regions: [{ RegionName: 'home-1', Endpoint: 'ec2.home-1.example', OptInStatus: 'opt-in-not-required' }, { RegionName: 'home-2', Endpoint: 'ec2.home-2.example' }] };
  assert.deepEqual(await sdkReads('DescribeRegions', new DescribeRegionsCommand({}), output), output);
});

test('boolean outputs, true and false', async () => {
  assert.deepEqual(await sdkReads('DeleteKeyPair', new DeleteKeyPairCommand({ KeyName: 'k' }), { Return: true, KeyPairId: 'key-1' }), { Return: true, KeyPairId: 'key-1' });
  assert.deepEqual(await sdkReads('EnableEbsEncryptionByDefault', new EnableEbsEncryptionByDefaultCommand({}), { EbsEncryptionByDefault: false }), { EbsEncryptionByDefault: false });
});

test('an operation without output answers just its requestId', async () => {
  const xml = serializeOutput('RebootInstances', undefined, 'req-9');
  assert.equal(xml, '<?xml version="1.0" encoding="UTF-8"?>\n<RebootInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>req-9</requestId></RebootInstancesResponse>');
  assert.deepEqual(await sdkReads('RebootInstances', new RebootInstancesCommand({ InstanceIds: ['i-1'] }), {}), {});
});

test('the document EC2 writes: namespace, requestId first, item lists, ISO timestamps with milliseconds', () => {
  const xml = serializeOutput('DescribeKeyPairs', {
    KeyPairs: [{ KeyName: 'a', CreateTime: new Date(Date.UTC(2024, 0, 2, 3, 4, 5)), Tags: [{ Key: 'k', Value: 'v' }] }],
  }, 'req-1');
  assert.equal(xml, '<?xml version="1.0" encoding="UTF-8"?>\n<DescribeKeyPairsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    + '<requestId>req-1</requestId><keySet><item><keyName>a</keyName><tagSet><item><key>k</key><value>v</value></item></tagSet>'
    + '<createTime>2024-01-02T03:04:05.000Z</createTime></item></keySet></DescribeKeyPairsResponse>');
});

test('members outside the shape, null and undefined are left out', async () => {
  const xml = serializeOutput('DescribeKeyPairs', { KeyPairs: [{ KeyName: 'a', KeyFingerprint: null, KeyType: undefined, Secret: 'leak' }], Internal: 1 }, 'r');
  assert.doesNotMatch(xml, /leak|Secret|Internal|keyFingerprint|keyType/);
  assert.deepEqual(await sdkReads('DescribeKeyPairs', new DescribeKeyPairsCommand({}), { KeyPairs: [{ KeyName: 'a', Secret: 'leak' }] }), { KeyPairs: [{ KeyName: 'a' }] });
});

test('text that XML cannot hold as is', async () => {
  const value = `a&b<c>d"e'f]]>g\r\nh\u2028i\u0085j`;
  const result = await sdkReads('DescribeRegions', new DescribeRegionsCommand({}), { Regions: [{ RegionName: value }] });
  assert.deepEqual(result, { Regions: [{ RegionName: value }] });
  // Control characters have no XML form at all; the document must still parse.
  const controls = await sdkReads('DescribeRegions', new DescribeRegionsCommand({}), { Regions: [{ RegionName: 'x\u0001y\u001Fz' }] });
  assert.deepEqual(controls, { Regions: [{ RegionName: 'x\uFFFDy\uFFFDz' }] });
});

test('errors: the SDK raises the EC2 code and message', async () => {
  const cases = [
    new Ec2Error('InvalidInstanceID.NotFound', "The instance ID 'i-0123456789abcdef0' does not exist"),
    new Ec2Error('MissingParameter', 'The request must contain the parameter MaxCount'),
    new Ec2Error('UnauthorizedOperation', 'You are not authorized to perform this operation. <&>'),
  ];
  for (const err of cases) {
    reply.status = err.status;
    reply.xml = serializeError(err, 'req-err-1');
    await assert.rejects(client.send(new DescribeInstancesCommand({})), (e: any) => {
      assert.equal(e.name, err.code);
      assert.equal(e.message, err.message);
      assert.equal(e.$metadata.httpStatusCode, err.status);
      return true;
    });
  }
});

test('the error document has EC2 shape', () => {
  const xml = serializeError(new Ec2Error('InvalidParameterValue', "Invalid value 'a<b' for MaxCount"), 'req-2');
  assert.ok(xml.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'));
  const doc = new XMLParser().parse(xml);
  assert.deepEqual(doc.Response, { Errors: { Error: { Code: 'InvalidParameterValue', Message: "Invalid value 'a<b' for MaxCount" } }, RequestID: 'req-2' });
});

test('maps, which the EC2 model may grow: we serialize, aws-sdk v2 parses back', () => {
  const raw: RawShape = {
    type: 'structure',
    members: {
      Limits: { type: 'map', locationName: 'limitSet', key: { locationName: 'name' }, value: { type: 'integer', locationName: 'max' } },
      Labels: { type: 'map', key: {}, value: {} },
    },
  };
  const value = { Limits: { cores: 8, disks: 2 }, Labels: { team: 'a&b' } };
  const xml = `<r>${serializeStructure(resolveShape(raw), value)}</r>`;
  assert.equal(xml, '<r><limitSet><entry><name>cores</name><max>8</max></entry><entry><name>disks</name><max>2</max></entry></limitSet>'
    + '<Labels><entry><key>team</key><value>a&amp;b</value></entry></Labels></r>');
  assert.deepEqual(sdkV2ParseXml(raw, xml), value);
});
