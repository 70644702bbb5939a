// Every filter name EC2 documents for the Describe operations this cloud implements is accepted,
// and none silently matches everything (issue 8, item 8e). The names are EC2's API reference
// (botocore's copy of the EC2 model carries it as documentation: the aws-sdk model this cloud
// loads does not); when that model is on the machine, the lists below are checked against it.
// A documented filter whose attribute this cloud does not model must still match the real value:
// the one DescribeX shows, or nothing when DescribeX shows none.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import {
  EC2Client, AuthorizeSecurityGroupIngressCommand, CreateKeyPairCommand, CreateSecurityGroupCommand, CreateTagsCommand,
  DescribeAvailabilityZonesCommand, DescribeImagesCommand, DescribeInstancesCommand, DescribeInstanceStatusCommand,
  DescribeInstanceTypesCommand, DescribeKeyPairsCommand, DescribeRegionsCommand, DescribeSecurityGroupRulesCommand,
  DescribeSecurityGroupsCommand, DescribeSubnetsCommand, DescribeTagsCommand, DescribeVpcsCommand, RunInstancesCommand,
  AllocateAddressCommand, AssociateAddressCommand, DescribeAddressesCommand, type Filter,
} from '@aws-sdk/client-ec2';
import { startInProcessCloud, ec2Client, type TestCloud } from '../helpers/cloud.ts';
import { FakeCluster } from '../helpers/fake-cluster.ts';
import { registerImageFiles } from '../../src/cloud/images/images.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';
import { setPublicRange } from '../../src/cloud/network/public-ranges.ts';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

/** EC2's documented filter names per operation (`tag:<key>` stands for every tag filter). */
const DOCUMENTED: Record<string, string[]> = {
  DescribeInstances: [
    'affinity', 'architecture', 'availability-zone', 'availability-zone-id', 'block-device-mapping.attach-time',
    'block-device-mapping.delete-on-termination', 'block-device-mapping.device-name', 'block-device-mapping.status',
    'block-device-mapping.volume-id', 'boot-mode', 'capacity-reservation-id',
    'capacity-reservation-specification.capacity-reservation-preference',
    'capacity-reservation-specification.capacity-reservation-target.capacity-reservation-id',
    'capacity-reservation-specification.capacity-reservation-target.capacity-reservation-resource-group-arn', 'client-token',
    'current-instance-boot-mode', 'dns-name', 'ebs-optimized', 'ena-support', 'enclave-options.enabled', 'group-id', 'group-name',
    'hibernation-options.configured', 'host-id', 'hypervisor', 'iam-instance-profile.arn', 'iam-instance-profile.id', 'image-id',
    'instance-id', 'instance-lifecycle', 'instance-state-code', 'instance-state-name', 'instance-type', 'instance.group-id',
    'instance.group-name', 'ip-address', 'ipv6-address', 'kernel-id', 'key-name', 'launch-index', 'launch-time',
    'maintenance-options.auto-recovery', 'metadata-options.http-endpoint', 'metadata-options.http-protocol-ipv4',
    'metadata-options.http-protocol-ipv6', 'metadata-options.http-put-response-hop-limit', 'metadata-options.http-tokens',
    'metadata-options.instance-metadata-tags', 'metadata-options.state', 'monitoring-state',
    'network-interface.addresses.association.allocation-id', 'network-interface.addresses.association.association-id',
    'network-interface.addresses.association.carrier-ip', 'network-interface.addresses.association.customer-owned-ip',
    'network-interface.addresses.association.ip-owner-id', 'network-interface.addresses.association.public-dns-name',
    'network-interface.addresses.association.public-ip', 'network-interface.addresses.primary',
    'network-interface.addresses.private-dns-name', 'network-interface.addresses.private-ip-address',
    'network-interface.association.allocation-id', 'network-interface.association.association-id',
    'network-interface.association.carrier-ip', 'network-interface.association.customer-owned-ip',
    'network-interface.association.ip-owner-id', 'network-interface.association.public-dns-name',
    'network-interface.association.public-ip', 'network-interface.attachment.attach-time',
    'network-interface.attachment.attachment-id', 'network-interface.attachment.delete-on-termination',
    'network-interface.attachment.device-index', 'network-interface.attachment.instance-id',
    'network-interface.attachment.instance-owner-id', 'network-interface.attachment.network-card-index',
    'network-interface.attachment.status', 'network-interface.availability-zone', 'network-interface.deny-all-igw-traffic',
    'network-interface.description', 'network-interface.group-id', 'network-interface.group-name',
    'network-interface.ipv4-prefixes.ipv4-prefix', 'network-interface.ipv6-address',
    'network-interface.ipv6-addresses.ipv6-address', 'network-interface.ipv6-addresses.is-primary-ipv6',
    'network-interface.ipv6-native', 'network-interface.ipv6-prefixes.ipv6-prefix', 'network-interface.mac-address',
    'network-interface.network-interface-id', 'network-interface.operator.managed', 'network-interface.operator.principal',
    'network-interface.outpost-arn', 'network-interface.owner-id', 'network-interface.private-dns-name',
    'network-interface.private-ip-address', 'network-interface.public-dns-name', 'network-interface.requester-id',
    'network-interface.requester-managed', 'network-interface.source-dest-check', 'network-interface.status',
    'network-interface.subnet-id', 'network-interface.tag-key', 'network-interface.tag-value', 'network-interface.vpc-id',
    'network-performance-options.bandwidth-weighting', 'operator.managed', 'operator.principal', 'outpost-arn', 'owner-id',
    'placement-group-name', 'placement-partition-number', 'platform', 'platform-details', 'private-dns-name',
    'private-dns-name-options.enable-resource-name-dns-a-record', 'private-dns-name-options.enable-resource-name-dns-aaaa-record',
    'private-dns-name-options.hostname-type', 'private-ip-address', 'product-code', 'product-code.type', 'ramdisk-id', 'reason',
    'requester-id', 'reservation-id', 'root-device-name', 'root-device-type', 'source-dest-check', 'spot-instance-request-id',
    'state-reason-code', 'state-reason-message', 'subnet-id', 'tag-key', 'tag:<key>', 'tenancy', 'tpm-support', 'usage-operation',
    'usage-operation-update-time', 'virtualization-type', 'vpc-id',
  ],
  DescribeInstanceStatus: [
    'attached-ebs-status.status', 'availability-zone', 'availability-zone-id', 'event.code', 'event.description',
    'event.instance-event-id', 'event.not-after', 'event.not-before', 'event.not-before-deadline', 'instance-state-code',
    'instance-state-name', 'instance-status.reachability', 'instance-status.status', 'operator.managed', 'operator.principal',
    'system-status.reachability', 'system-status.status',
  ],
  DescribeImages: [
    'architecture', 'block-device-mapping.delete-on-termination', 'block-device-mapping.device-name',
    'block-device-mapping.encrypted', 'block-device-mapping.snapshot-id', 'block-device-mapping.volume-size',
    'block-device-mapping.volume-type', 'creation-date', 'description', 'ena-support', 'free-tier-eligible', 'hypervisor',
    'image-allowed', 'image-id', 'image-type', 'is-public', 'kernel-id', 'manifest-location', 'name', 'owner-alias', 'owner-id',
    'platform', 'product-code', 'product-code.type', 'ramdisk-id', 'root-device-name', 'root-device-type', 'source-image-id',
    'source-image-region', 'source-instance-id', 'sriov-net-support', 'state', 'state-reason-code', 'state-reason-message',
    'tag-key', 'tag:<key>', 'virtualization-type',
  ],
  DescribeKeyPairs: [
    'fingerprint', 'key-name', 'key-pair-id', 'tag-key', 'tag:<key>',
  ],
  DescribeSecurityGroups: [
    'description', 'egress.ip-permission.cidr', 'egress.ip-permission.from-port', 'egress.ip-permission.group-id',
    'egress.ip-permission.group-name', 'egress.ip-permission.ipv6-cidr', 'egress.ip-permission.prefix-list-id',
    'egress.ip-permission.protocol', 'egress.ip-permission.to-port', 'egress.ip-permission.user-id', 'group-id', 'group-name',
    'ip-permission.cidr', 'ip-permission.from-port', 'ip-permission.group-id', 'ip-permission.group-name',
    'ip-permission.ipv6-cidr', 'ip-permission.prefix-list-id', 'ip-permission.protocol', 'ip-permission.to-port',
    'ip-permission.user-id', 'owner-id', 'tag-key', 'tag:<key>', 'vpc-id',
  ],
  DescribeSecurityGroupRules: [
    'group-id', 'security-group-rule-id', 'tag:<key>',
  ],
  DescribeVpcs: [
    'cidr', 'cidr-block-association.association-id', 'cidr-block-association.cidr-block', 'cidr-block-association.state',
    'dhcp-options-id', 'ipv6-cidr-block-association.association-id', 'ipv6-cidr-block-association.ipv6-cidr-block',
    'ipv6-cidr-block-association.ipv6-pool', 'ipv6-cidr-block-association.state', 'is-default', 'owner-id', 'state', 'tag-key',
    'tag:<key>', 'vpc-id',
  ],
  DescribeSubnets: [
    'availability-zone', 'availability-zone-id', 'available-ip-address-count', 'cidr-block', 'customer-owned-ipv4-pool',
    'default-for-az', 'enable-dns64', 'enable-lni-at-device-index', 'ipv6-cidr-block-association.association-id',
    'ipv6-cidr-block-association.ipv6-cidr-block', 'ipv6-cidr-block-association.state', 'ipv6-native',
    'map-customer-owned-ip-on-launch', 'map-public-ip-on-launch', 'outpost-arn', 'owner-id',
    'private-dns-name-options-on-launch.enable-resource-name-dns-a-record',
    'private-dns-name-options-on-launch.enable-resource-name-dns-aaaa-record', 'private-dns-name-options-on-launch.hostname-type',
    'state', 'subnet-arn', 'subnet-id', 'tag-key', 'tag:<key>', 'vpc-id',
  ],
  DescribeRegions: [
    'endpoint', 'opt-in-status', 'region-name',
  ],
  DescribeAvailabilityZones: [
    'group-long-name', 'group-name', 'message', 'opt-in-status', 'parent-zone-id', 'parent-zone-name', 'parent-zoneID',
    'parent-zoneName', 'region-name', 'state',
    'zone-id', 'zone-name', 'zone-type',
  ],
  DescribeAddresses: [
    'allocation-id', 'association-id', 'domain', 'instance-id', 'network-border-group', 'network-interface-id', 'network-interface-owner-id',
    'private-ip-address', 'public-ip', 'tag-key', 'tag:<key>',
  ],
  DescribeTags: [
    'key', 'resource-id', 'resource-type', 'tag:<key>', 'value',
  ],
  DescribeInstanceTypes: [
    'auto-recovery-supported', 'bare-metal', 'burstable-performance-supported', 'current-generation', 'dedicated-hosts-supported',
    'ebs-info.attachment-limit-type', 'ebs-info.ebs-optimized-info.baseline-bandwidth-in-mbps',
    'ebs-info.ebs-optimized-info.baseline-iops', 'ebs-info.ebs-optimized-info.baseline-throughput-in-mbps',
    'ebs-info.ebs-optimized-info.maximum-bandwidth-in-mbps', 'ebs-info.ebs-optimized-info.maximum-iops',
    'ebs-info.ebs-optimized-info.maximum-throughput-in-mbps', 'ebs-info.ebs-optimized-support', 'ebs-info.encryption-support',
    'ebs-info.maximum-ebs-attachments', 'ebs-info.nvme-support', 'free-tier-eligible', 'hibernation-supported', 'hypervisor',
    'instance-storage-info.disk.count', 'instance-storage-info.disk.size-in-gb', 'instance-storage-info.disk.type',
    'instance-storage-info.encryption-support', 'instance-storage-info.nvme-support', 'instance-storage-info.total-size-in-gb',
    'instance-storage-supported', 'instance-type', 'memory-info.size-in-mib', 'network-info.bandwidth-weightings',
    'network-info.efa-info.maximum-efa-interfaces', 'network-info.efa-supported', 'network-info.ena-support',
    'network-info.encryption-in-transit-supported', 'network-info.flexible-ena-queues-support',
    'network-info.ipv4-addresses-per-interface', 'network-info.ipv6-addresses-per-interface', 'network-info.ipv6-supported',
    'network-info.maximum-network-cards', 'network-info.maximum-network-interfaces', 'network-info.network-performance',
    'nitro-enclaves-support', 'nitro-tpm-info.supported-versions', 'nitro-tpm-support', 'processor-info.supported-architecture',
    'processor-info.supported-features', 'processor-info.sustained-clock-speed-in-ghz', 'reboot-migration-support',
    'supported-boot-mode', 'supported-root-device-type', 'supported-usage-class', 'supported-virtualization-type',
    'vcpu-info.default-cores', 'vcpu-info.default-threads-per-core', 'vcpu-info.default-vcpus', 'vcpu-info.valid-cores',
    'vcpu-info.valid-threads-per-core',
  ],
};

/** The names as sent: `tag:<key>` becomes a real tag filter. */
const wireName = (name: string) => (name === 'tag:<key>' ? 'tag:Name' : name);

/** A value no resource of this cloud has, for any filter. */
const NOWHERE = 'no-such-value-\u2603';

/** Where a copy of botocore's EC2 model (with its documentation) may be on this machine. */
function botocoreEc2Model(): string | undefined {
  const candidates = [
    '/usr/lib/python3/dist-packages/botocore/data/ec2/2016-11-15/service-2.json',
    // Debian's awscli package (installed by the test command) carries its own botocore.
    '/usr/lib/python3/dist-packages/awscli/botocore/data/ec2/2016-11-15/service-2.json',
    '/usr/share/awscli/botocore/data/ec2/2016-11-15/service-2.json',
  ];
  try {
    // The botocore of the python3 first in PATH (a pip-installed aws CLI).
    const dir = execFileSync('python3', ['-c', 'import botocore, os; print(os.path.dirname(botocore.__file__))'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (dir) candidates.push(`${dir}/data/ec2/2016-11-15/service-2.json`);
  } catch { /* no python3 or no botocore */ }
  for (const base of candidates) {
    for (const file of [base, `${base}.gz`]) {
      if (!existsSync(file)) continue;
      const raw = readFileSync(file);
      return (file.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8');
    }
  }
  return undefined;
}

describe('documented Describe filters', () => {
  let cloud: TestCloud;
  let ec2: EC2Client;
  let operations: Record<string, (Filters: Filter[]) => Promise<unknown[]>>;
  let instanceId: string;

  before(async () => {
    cloud = await startInProcessCloud();
    cloud.cloud!.directory.register(new FakeCluster('ironbark-1a', { autoProgress: true }));
    const imageId = (await registerImageFiles(cloud.cloud!.store, {
      name: 'guest', description: 'a guest', ownerAccountId: cloud.accountId, public: true, kernelCmdline: 'console=ttyS0',
      kernel: { path: '/img/vmlinuz', sha256: sha('k'), sizeBytes: 10 },
      rootfs: { path: '/img/rootfs.qcow2', sha256: sha('root'), sizeBytes: 30, format: 'qcow2' },
    })).imageId;
    ec2 = ec2Client(cloud, cloud);
    await ec2.send(new CreateKeyPairCommand({ KeyName: 'k1' }));
    const group = await ec2.send(new CreateSecurityGroupCommand({ GroupName: 'web', Description: 'web servers' }));
    await ec2.send(new AuthorizeSecurityGroupIngressCommand({
      GroupId: group.GroupId, IpPermissions: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '10.0.0.0/8' }] }],
      TagSpecifications: [{ ResourceType: 'security-group-rule', Tags: [{ Key: 'Name', Value: 'tagged' }] }],
    }));
    const run = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, KeyName: 'k1', SecurityGroupIds: [group.GroupId!] }));
    instanceId = run.Instances![0]!.InstanceId!;
    const vpcs = await ec2.send(new DescribeVpcsCommand({}));
    const subnets = await ec2.send(new DescribeSubnetsCommand({}));
    const keys = await ec2.send(new DescribeKeyPairsCommand({}));
    await cloud.cloud!.store.transaction((tx) => setPublicRange(tx, 'ironbark-1a', '198.51.100.0/28'));
    const eip = await ec2.send(new AllocateAddressCommand({ Domain: 'vpc' }));
    await ec2.send(new AssociateAddressCommand({ AllocationId: eip.AllocationId, InstanceId: instanceId }));
    await ec2.send(new CreateTagsCommand({
      Resources: [instanceId, imageId, group.GroupId!, vpcs.Vpcs![0]!.VpcId!, subnets.Subnets![0]!.SubnetId!, keys.KeyPairs![0]!.KeyPairId!, eip.AllocationId!],
      Tags: [{ Key: 'Name', Value: 'tagged' }],
    }));
    operations = {
      DescribeInstances: async (Filters) => (await ec2.send(new DescribeInstancesCommand({ Filters }))).Reservations!.flatMap((r) => r.Instances!),
      DescribeInstanceStatus: async (Filters) => (await ec2.send(new DescribeInstanceStatusCommand({ Filters, IncludeAllInstances: true }))).InstanceStatuses!,
      DescribeImages: async (Filters) => (await ec2.send(new DescribeImagesCommand({ Filters }))).Images!,
      DescribeKeyPairs: async (Filters) => (await ec2.send(new DescribeKeyPairsCommand({ Filters }))).KeyPairs!,
      DescribeSecurityGroups: async (Filters) => (await ec2.send(new DescribeSecurityGroupsCommand({ Filters }))).SecurityGroups!,
      DescribeSecurityGroupRules: async (Filters) => (await ec2.send(new DescribeSecurityGroupRulesCommand({ Filters }))).SecurityGroupRules!,
      DescribeVpcs: async (Filters) => (await ec2.send(new DescribeVpcsCommand({ Filters }))).Vpcs!,
      DescribeSubnets: async (Filters) => (await ec2.send(new DescribeSubnetsCommand({ Filters }))).Subnets!,
      DescribeRegions: async (Filters) => (await ec2.send(new DescribeRegionsCommand({ Filters }))).Regions!,
      DescribeAvailabilityZones: async (Filters) => (await ec2.send(new DescribeAvailabilityZonesCommand({ Filters }))).AvailabilityZones!,
      DescribeAddresses: async (Filters) => (await ec2.send(new DescribeAddressesCommand({ Filters }))).Addresses!,
      DescribeTags: async (Filters) => (await ec2.send(new DescribeTagsCommand({ Filters }))).Tags!,
      DescribeInstanceTypes: async (Filters) => (await ec2.send(new DescribeInstanceTypesCommand({ Filters }))).InstanceTypes!,
    };
  });
  after(async () => { await cloud.stop(); });

  it('lists every operation that has filters', () => {
    assert.deepEqual(Object.keys(operations).sort(), Object.keys(DOCUMENTED).sort());
  });

  it('each operation finds something unfiltered, so that "matches nothing" below means something', async () => {
    for (const [op, describeOp] of Object.entries(operations)) assert.ok((await describeOp([])).length > 0, `${op} finds nothing`);
  });

  it('accepts every documented filter name, and a value no resource has matches nothing', async () => {
    const problems: string[] = [];
    for (const [op, names] of Object.entries(DOCUMENTED)) {
      for (const name of names) {
        try {
          const found = await operations[op]!([{ Name: wireName(name), Values: [NOWHERE] }]);
          if (found.length > 0) problems.push(`${op} ${name}: matched ${found.length} with a value nothing has`);
        } catch (err) {
          problems.push(`${op} ${name}: ${(err as Error).name}: ${(err as Error).message}`);
        }
      }
    }
    assert.equal(problems.length, 0, `\n${problems.join('\n')}`);
  });

  it('attributes this cloud fixes match what Describe shows, and only that', async () => {
    const count = async (op: string, name: string, value: string) => (await operations[op]!([{ Name: name, Values: [value] }])).length;
    const instance = (await operations.DescribeInstances!([]))[0] as Record<string, any>;
    // What DescribeInstances shows for the instance is what its filters match.
    const shown: [string, string][] = [
      ['hypervisor', instance.Hypervisor], ['architecture', instance.Architecture], ['ebs-optimized', String(instance.EbsOptimized)],
      ['ena-support', String(instance.EnaSupport)], ['metadata-options.http-tokens', instance.MetadataOptions.HttpTokens],
      ['network-interface.network-interface-id', instance.NetworkInterfaces[0].NetworkInterfaceId],
      ['network-interface.attachment.status', 'attached'], ['network-interface.status', 'in-use'],
      ['network-interface.source-dest-check', 'true'], ['network-interface.addresses.primary', 'true'],
      ['source-dest-check', 'true'], ['platform-details', 'Linux/UNIX'], ['usage-operation', 'RunInstances'],
      ['availability-zone', 'ironbark-1a'], ['key-name', 'k1'], ['instance.group-name', 'web'],
    ];
    for (const [name, value] of shown) assert.equal(await count('DescribeInstances', name, value), 1, `${name}=${value}`);
    // Attributes an instance here does not have match nothing, not everything.
    for (const [name, value] of [['capacity-reservation-id', '*'], ['spot-instance-request-id', '*'], ['iam-instance-profile.arn', '*'], ['ipv6-address', '*']]) {
      assert.equal(await count('DescribeInstances', name!, value!), 0, name);
    }
    assert.equal(await count('DescribeInstances', 'hypervisor', 'xen'), 0);
    assert.equal(await count('DescribeVpcs', 'isDefault', 'true'), 1);
    assert.equal(await count('DescribeVpcs', 'is-default', 'false'), 0);
    const zoneId = ((await operations.DescribeAvailabilityZones!([]))[0] as Record<string, any>).ZoneId;
    assert.equal(await count('DescribeSubnets', 'availability-zone-id', zoneId), 1);
    assert.equal(await count('DescribeInstances', 'availability-zone-id', zoneId), 1);
    assert.equal(await count('DescribeInstanceStatus', 'availability-zone-id', zoneId), 1);
    assert.equal(await count('DescribeInstances', 'availability-zone-id', `${zoneId}x`), 0);
    assert.equal(await count('DescribeInstances', 'network-interface.attachment.instance-id', instanceId), 1);
    const types = (await operations.DescribeInstanceTypes!([])) as Record<string, any>[];
    const micro = types.find((t) => t.InstanceType === 't2.micro')!;
    assert.deepEqual((await operations.DescribeInstanceTypes!([{ Name: 'vcpu-info.default-vcpus', Values: [String(micro.VCpuInfo.DefaultVCpus)] }, { Name: 'instance-type', Values: ['t2.micro'] }])).length, 1);
    assert.equal(await count('DescribeInstanceTypes', 'hypervisor', micro.Hypervisor), types.length);
    assert.equal(await count('DescribeInstanceTypes', 'network-info.ena-support', micro.NetworkInfo.EnaSupport), types.length);
    const images = await operations.DescribeImages!([]);
    assert.equal(await count('DescribeImages', 'root-device-type', 'instance-store'), images.length);
    assert.equal(await count('DescribeImages', 'ena-support', 'false'), images.length);
    assert.equal(await count('DescribeImages', 'block-device-mapping.volume-size', '*'), 0);
  });

  const model = botocoreEc2Model();
  it('the lists hold every name the EC2 documentation on this machine gives', { skip: skipUnlessPresent(!model && 'a botocore EC2 model (Debian awscli)') }, () => {
    const doc = JSON.parse(model!) as { operations: Record<string, { input: { shape: string } }>; shapes: Record<string, { members?: Record<string, { documentation?: string }> }> };
    const missing: string[] = [];
    for (const [op, names] of Object.entries(DOCUMENTED)) {
      const text = doc.shapes[doc.operations[op]!.input.shape]!.members?.Filters?.documentation ?? '';
      for (const m of text.matchAll(/<li>\s*<p>\s*<code>([^<]+)<\/code>/g)) {
        const name = m[1]!.replace('&lt;key&gt;', '<key>');
        const listed = name === 'tag' || name === 'tag:<key>' ? names.includes('tag:<key>') : names.includes(name);
        if (!listed) missing.push(`${op} ${name}`);
      }
    }
    assert.deepEqual(missing, []);
  });
});
