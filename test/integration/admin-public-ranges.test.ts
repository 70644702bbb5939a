// The operator's side of public addresses, end to end: `bin/ironbark admin zone public-range`
// and `admin quota set --max-elastic-ips` as child processes against an in-process cloud, and the
// EC2 calls a user makes with the AWS SDK through the cloud's endpoint (the wire format of the
// address calls: AllocateAddress, DescribeAddresses with tags and filters, DescribeAddressesAttribute,
// DescribeAccountAttributes, ReleaseAddress, and their errors).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  AllocateAddressCommand, DescribeAccountAttributesCommand, type AccountAttributeName, DescribeAddressesAttributeCommand, DescribeAddressesCommand, EC2Client,
  ReleaseAddressCommand,
} from '@aws-sdk/client-ec2';
import { startInProcessCloud, REGION, type TestCloud } from '../helpers/cloud.ts';
import { adminCli } from '../helpers/admin-cli.ts';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

let cloud: TestCloud;
let ec2: EC2Client;
const ZONE = `${REGION}a`;

before(async () => {
  cloud = await startInProcessCloud();
  ec2 = new EC2Client({ endpoint: cloud.url, region: REGION, credentials: { accessKeyId: cloud.accessKeyId, secretAccessKey: cloud.secretAccessKey } });
});

after(async () => {
  ec2?.destroy();
  await cloud?.stop();
});

const admin = (args: string[]) => adminCli(cloud).admin(args);
const ok = (args: string[]) => adminCli(cloud).ok(args);

test('the operator gives a zone a public range and a quota; users allocate, see and release addresses', async () => {
  await assert.rejects(ec2.send(new AllocateAddressCommand({ Domain: 'vpc' })), (e: Error) => e.name === 'InsufficientAddressCapacity');
  assert.match(await ok(['zone', 'public-ranges']), /no zone has a public range/);
  const bad = await admin(['zone', 'public-range', ZONE, '10.1.5.0/24']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /overlaps the private network 10\.1\.0\.0\/16/);
  assert.match(await ok(['zone', 'public-range', ZONE, '198.51.100.0/28']), /gives public addresses from 198\.51\.100\.0\/28 \(14 of 14 free\)/);

  const first = await ec2.send(new AllocateAddressCommand({
    Domain: 'vpc', TagSpecifications: [{ ResourceType: 'elastic-ip', Tags: [{ Key: 'Name', Value: 'front' }] }],
  }));
  assert.equal(first.PublicIp, '198.51.100.1');
  assert.match(first.AllocationId!, /^eipalloc-/);
  assert.equal(first.Domain, 'vpc');
  const listed = await ec2.send(new DescribeAddressesCommand({ Filters: [{ Name: 'tag:Name', Values: ['front'] }] }));
  assert.deepEqual(listed.Addresses?.map((a) => [a.PublicIp, a.AllocationId, a.Domain, a.NetworkBorderGroup, a.Tags?.[0]?.Value]),
    [['198.51.100.1', first.AllocationId, 'vpc', REGION, 'front']]);
  const ptr = await ec2.send(new DescribeAddressesAttributeCommand({ AllocationIds: [first.AllocationId!], Attribute: 'domain-name' }));
  assert.equal(ptr.Addresses?.[0]?.PtrRecord, `ec2-198-51-100-1.${REGION}.compute.amazonaws.com.`);
  const row = (await admin(['zone', 'public-ranges', '--json'])).stdout;
  assert.deepEqual(JSON.parse(row).publicRanges, [{ zone: ZONE, cidr: '198.51.100.0/28', size: 14, used: 1, free: 13 }]);

  await ok(['quota', 'set', '--account', cloud.accountId, '--max-elastic-ips', '1']);
  // The SDK's type names only the two attributes still documented; EC2 answers this one too.
  const names: string[] = ['vpc-max-elastic-ips'];
  const attributes = await ec2.send(new DescribeAccountAttributesCommand({ AttributeNames: names as AccountAttributeName[] }));
  assert.equal(attributes.AccountAttributes?.[0]?.AttributeValues?.[0]?.AttributeValue, '1');
  await assert.rejects(ec2.send(new AllocateAddressCommand({ Domain: 'vpc' })), (e: Error) => e.name === 'AddressLimitExceeded');

  const refused = await admin(['zone', 'public-range', ZONE, '--remove']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /release them before removing/);
  await assert.rejects(ec2.send(new ReleaseAddressCommand({ AllocationId: 'eipalloc-0123456789abcdef0' })), (e: Error) => e.name === 'InvalidAllocationID.NotFound');
  await ec2.send(new ReleaseAddressCommand({ AllocationId: first.AllocationId }));
  assert.match(await ok(['zone', 'public-range', ZONE, '--remove']), new RegExp(`Zone ${ZONE} has no public range any more`));
  assert.match(await ok(['zone', 'public-range', ZONE]), /has no public range/);
});

test('admin cluster add --public-range gives the new zone its range, and a refused range adds no cluster', async () => {
  const refused = await admin(['cluster', 'add', '--zone', 'ironbark-1c', '--url', 'http://127.0.0.1:9', '--cidr', '10.3.0.0/16', '--public-range', '10.3.1.0/24']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /overlaps the private network 10\.3\.0\.0\/16 of zone ironbark-1c/);
  assert.doesNotMatch(await ok(['cluster', 'list']), /ironbark-1c/);
  assert.match(await ok(['cluster', 'add', '--zone', 'ironbark-1c', '--url', 'http://127.0.0.1:9', '--cidr', '10.3.0.0/16', '--public-range', '198.51.100.32/28']),
    /Cluster of zone ironbark-1c added: http:\/\/127\.0\.0\.1:9 \(network 10\.3\.0\.0\/16, public range 198\.51\.100\.32\/28\)/);
  const ranges = JSON.parse(await ok(['zone', 'public-ranges', '--json'])).publicRanges;
  assert.deepEqual(ranges.find((r: { zone: string }) => r.zone === 'ironbark-1c'), { zone: 'ironbark-1c', cidr: '198.51.100.32/28', size: 14, used: 0, free: 14 });
});
