// What real tools send on their first calls, through the AWS SDK v3 against a running cloud
// controller (issue 8): Ansible's ec2_instance looks up the default VPC with the `isDefault`
// filter and always sends a `volume` TagSpecification at RunInstances; OpenStack's EC2 suite sends
// ModifyInstanceAttribute `Value=False`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  DescribeInstanceAttributeCommand, DescribeInstancesCommand, DescribeTagsCommand, DescribeVpcsCommand,
  ModifyInstanceAttributeCommand, RunInstancesCommand, type EC2Client,
} from '@aws-sdk/client-ec2';
import { startInProcessCloud, ec2Client, type TestCloud } from '../helpers/cloud.ts';
import { FakeCluster } from '../helpers/fake-cluster.ts';
import { registerImageFiles } from '../../src/cloud/images/images.ts';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

async function errorCode(p: Promise<unknown>): Promise<string> {
  try { await p; } catch (e) { return (e as { name: string }).name; }
  return 'no error';
}

describe('the first calls of real tools', () => {
  let cloud: TestCloud;
  let ec2: EC2Client;
  let imageId: string;

  before(async () => {
    cloud = await startInProcessCloud();
    cloud.cloud!.directory.register(new FakeCluster('ironbark-1a', { autoProgress: true }));
    imageId = (await registerImageFiles(cloud.cloud!.store, {
      name: 'guest', ownerAccountId: cloud.accountId, public: true, kernelCmdline: 'console=ttyS0',
      kernel: { path: '/img/vmlinuz', sha256: sha('k'), sizeBytes: 10 },
      rootfs: { path: '/img/rootfs.qcow2', sha256: sha('root'), sizeBytes: 30, format: 'qcow2' },
    })).imageId;
    ec2 = ec2Client(cloud, cloud);
  });
  after(async () => { await cloud.stop(); });

  it('finds the default VPC with the filter isDefault as well as is-default', async () => {
    const kebab = await ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: 'is-default', Values: ['true'] }] }));
    const camel = await ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: 'isDefault', Values: ['true'] }] }));
    assert.equal(camel.Vpcs?.length, 1);
    assert.equal(camel.Vpcs![0]!.IsDefault, true);
    assert.deepEqual(camel.Vpcs, kebab.Vpcs);
    const none = await ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: 'isDefault', Values: ['false'] }] }));
    assert.deepEqual(none.Vpcs, []);
  });

  it('launches with a volume (and network-interface) TagSpecification beside the instance one', async () => {
    const out = await ec2.send(new RunInstancesCommand({
      ImageId: imageId, MinCount: 1, MaxCount: 1,
      TagSpecifications: [
        { ResourceType: 'instance', Tags: [{ Key: 'Name', Value: 'web' }] },
        { ResourceType: 'volume', Tags: [{ Key: 'Name', Value: 'web' }] },
        { ResourceType: 'network-interface', Tags: [{ Key: 'Name', Value: 'web' }] },
      ],
    }));
    const id = out.Instances![0]!.InstanceId!;
    assert.deepEqual(out.Instances![0]!.Tags, [{ Key: 'Name', Value: 'web' }]);
    // Only the instance holds tags: there is no volume or interface resource to carry the others.
    const tags = await ec2.send(new DescribeTagsCommand({ Filters: [{ Name: 'key', Values: ['Name'] }] }));
    assert.deepEqual(tags.Tags?.map((t) => [t.ResourceId, t.ResourceType]), [[id, 'instance']]);
    // A type RunInstances cannot tag is still refused, and so are bad volume tags.
    assert.equal(await errorCode(ec2.send(new RunInstancesCommand({
      ImageId: imageId, MinCount: 1, MaxCount: 1, TagSpecifications: [{ ResourceType: 'snapshot', Tags: [{ Key: 'a', Value: 'b' }] }],
    }))), 'InvalidParameterValue');
    assert.equal(await errorCode(ec2.send(new RunInstancesCommand({
      ImageId: imageId, MinCount: 1, MaxCount: 1, TagSpecifications: [{ ResourceType: 'volume', Tags: [{ Key: 'aws:x', Value: 'b' }] }],
    }))), 'InvalidParameterValue');
    const reservations = await ec2.send(new DescribeInstancesCommand({}));
    assert.equal(reservations.Reservations!.flatMap((r) => r.Instances!).length, 1);
  });

  it('reads ModifyInstanceAttribute Value=False / TRUE in any case and refuses other words', async () => {
    const id = (await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1 }))).Instances![0]!.InstanceId!;
    const flag = async () => (await ec2.send(new DescribeInstanceAttributeCommand({ InstanceId: id, Attribute: 'disableApiTermination' })))
      .DisableApiTermination?.Value;
    await ec2.send(new ModifyInstanceAttributeCommand({ InstanceId: id, Attribute: 'disableApiTermination', Value: 'TRUE' }));
    assert.equal(await flag(), true);
    await ec2.send(new ModifyInstanceAttributeCommand({ InstanceId: id, Attribute: 'disableApiTermination', Value: 'False' }));
    assert.equal(await flag(), false);
    await ec2.send(new ModifyInstanceAttributeCommand({ InstanceId: id, Attribute: 'disableApiTermination', Value: 'True' }));
    assert.equal(await flag(), true);
    assert.equal(await errorCode(ec2.send(new ModifyInstanceAttributeCommand({ InstanceId: id, Attribute: 'disableApiTermination', Value: 'yes' }))),
      'InvalidParameterValue');
    assert.equal(await flag(), true);
  });
});
