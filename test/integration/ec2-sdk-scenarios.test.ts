// Scenarios through the real AWS SDK for JavaScript v3 against a running cloud controller.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import {
  EC2Client, DescribeRegionsCommand, DescribeAvailabilityZonesCommand, DescribeAccountAttributesCommand,
  CreateKeyPairCommand, ImportKeyPairCommand, DescribeKeyPairsCommand, DeleteKeyPairCommand,
  CreateSecurityGroupCommand, DescribeSecurityGroupsCommand, DeleteSecurityGroupCommand,
  AuthorizeSecurityGroupIngressCommand, AuthorizeSecurityGroupEgressCommand, RevokeSecurityGroupIngressCommand,
  DescribeSecurityGroupRulesCommand, CreateTagsCommand, DeleteTagsCommand, DescribeTagsCommand,
  DescribeVpcsCommand, DescribeSubnetsCommand, DescribeVpnGatewaysCommand, paginateDescribeTags,
} from '@aws-sdk/client-ec2';
import { startInProcessCloud, ec2Client, type TestCloud } from '../helpers/cloud.ts';
import { createAccountWithDefaults } from '../../src/cloud/provision.ts';
import { createAccessKey, createUser } from '../../src/auth/identities.ts';
import { freshPostgresDatabase } from '../helpers/stores.ts';
import { testPostgresUrl } from '../helpers/prerequisites.ts';

async function ec2ErrorCode(p: Promise<unknown>): Promise<string> {
  try { await p; } catch (e) { return (e as { name: string }).name; }
  return 'no error';
}

// The same scenarios on each store back-end: the embedded SQLite file and PostgreSQL.
const pgUrl = testPostgresUrl();
for (const backend of ['sqlite', ...(pgUrl ? ['postgres'] : [])]) describe(`EC2 API through the AWS SDK v3 (${backend} store)`, () => {
  let cloud: TestCloud;
  let ec2: EC2Client;
  let other: EC2Client; // a second account
  let database: { url: string; drop(): Promise<void> } | undefined;

  before(async () => {
    if (backend === 'postgres') database = await freshPostgresDatabase(pgUrl!);
    cloud = await startInProcessCloud({ storeUrl: database?.url, zones: [{ name: 'ironbark-1a', cidr: '10.1.0.0/16' }, { name: 'ironbark-1b', cidr: '10.2.0.0/16' }] });
    ec2 = ec2Client(cloud, cloud);
    const second = await createAccountWithDefaults(cloud.cloud!.store, 'tenant-two');
    other = ec2Client(cloud, { accessKeyId: second.accessKey.access_key_id, secretAccessKey: second.accessKey.secret_access_key });
  });
  after(async () => { await cloud.stop(); await database?.drop(); });

  it('describes the region, its zones and the account attributes', async () => {
    const regions = await ec2.send(new DescribeRegionsCommand({}));
    assert.deepEqual(regions.Regions?.map((r) => r.RegionName), ['ironbark-1']);
    const zones = await ec2.send(new DescribeAvailabilityZonesCommand({}));
    assert.deepEqual(zones.AvailabilityZones?.map((z) => [z.ZoneName, z.State, z.RegionName]),
      [['ironbark-1a', 'available', 'ironbark-1'], ['ironbark-1b', 'available', 'ironbark-1']]);
    const one = await ec2.send(new DescribeAvailabilityZonesCommand({ Filters: [{ Name: 'zone-name', Values: ['*b'] }] }));
    assert.deepEqual(one.AvailabilityZones?.map((z) => z.ZoneName), ['ironbark-1b']);
    const attrs = await ec2.send(new DescribeAccountAttributesCommand({}));
    const byName = Object.fromEntries(attrs.AccountAttributes!.map((a) => [a.AttributeName, a.AttributeValues!.map((v) => v.AttributeValue)]));
    assert.deepEqual(byName['supported-platforms'], ['VPC']);
    assert.match(byName['default-vpc']![0]!, /^vpc-[0-9a-f]{17}$/);
  });

  it('shows a default VPC with one default subnet per zone, on the zone\'s network', async () => {
    const vpcs = await ec2.send(new DescribeVpcsCommand({}));
    assert.equal(vpcs.Vpcs?.length, 1);
    assert.equal(vpcs.Vpcs![0]!.IsDefault, true);
    const subnets = await ec2.send(new DescribeSubnetsCommand({ Filters: [{ Name: 'default-for-az', Values: ['true'] }] }));
    const byZone = Object.fromEntries(subnets.Subnets!.map((s) => [s.AvailabilityZone, s.CidrBlock]));
    assert.deepEqual(byZone, { 'ironbark-1a': '10.1.0.0/16', 'ironbark-1b': '10.2.0.0/16' });
    assert.ok(subnets.Subnets!.every((s) => s.VpcId === vpcs.Vpcs![0]!.VpcId));
  });

  it('creates working RSA and ED25519 key pairs with EC2 fingerprints', async () => {
    const rsa = await ec2.send(new CreateKeyPairCommand({ KeyName: 'rsa-key', TagSpecifications: [{ ResourceType: 'key-pair', Tags: [{ Key: 'team', Value: 'blue' }] }] }));
    assert.match(rsa.KeyMaterial!, /^-----BEGIN RSA PRIVATE KEY-----/);
    assert.match(rsa.KeyFingerprint!, /^([0-9a-f]{2}:){19}[0-9a-f]{2}$/);
    const priv = createPrivateKey(rsa.KeyMaterial!);
    const sig = sign('sha256', Buffer.from('hello'), priv);
    assert.ok(verify('sha256', Buffer.from('hello'), createPublicKey(priv), sig));
    const ed = await ec2.send(new CreateKeyPairCommand({ KeyName: 'ed-key', KeyType: 'ed25519' }));
    assert.match(ed.KeyMaterial!, /^-----BEGIN OPENSSH PRIVATE KEY-----/);
    assert.match(ed.KeyFingerprint!, /^[A-Za-z0-9+/]{43}=$/);

    assert.equal(await ec2ErrorCode(ec2.send(new CreateKeyPairCommand({ KeyName: 'rsa-key' }))), 'InvalidKeyPair.Duplicate');

    const { publicKey } = generateKeyPairSync('ed25519');
    const openssh = `ssh-ed25519 ${sshEd25519Blob(publicKey.export({ format: 'der', type: 'spki' })).toString('base64')} me@laptop`;
    const imported = await ec2.send(new ImportKeyPairCommand({ KeyName: 'imported', PublicKeyMaterial: Buffer.from(openssh) }));
    assert.match(imported.KeyPairId!, /^key-[0-9a-f]{17}$/);
    assert.equal(await ec2ErrorCode(ec2.send(new ImportKeyPairCommand({ KeyName: 'junk', PublicKeyMaterial: Buffer.from('not a key') }))), 'InvalidKey.Format');

    const tagged = await ec2.send(new DescribeKeyPairsCommand({ Filters: [{ Name: 'tag:team', Values: ['blue'] }] }));
    assert.deepEqual(tagged.KeyPairs?.map((k) => k.KeyName), ['rsa-key']);
    const all = await ec2.send(new DescribeKeyPairsCommand({}));
    assert.deepEqual(all.KeyPairs?.map((k) => k.KeyName).sort(), ['ed-key', 'imported', 'rsa-key']);
    assert.equal(await ec2ErrorCode(ec2.send(new DescribeKeyPairsCommand({ KeyNames: ['nope'] }))), 'InvalidKeyPair.NotFound');
    // Another account sees none of them and cannot delete them.
    assert.deepEqual((await other.send(new DescribeKeyPairsCommand({}))).KeyPairs, []);
    assert.equal(await ec2ErrorCode(other.send(new DescribeKeyPairsCommand({ KeyPairIds: [imported.KeyPairId!] }))), 'InvalidKeyPair.NotFound');

    await ec2.send(new DeleteKeyPairCommand({ KeyName: 'imported' }));
    assert.deepEqual((await ec2.send(new DescribeKeyPairsCommand({}))).KeyPairs?.map((k) => k.KeyName).sort(), ['ed-key', 'rsa-key']);
  });

  it('manages security groups, rules, group-to-group references and their errors', async () => {
    const web = await ec2.send(new CreateSecurityGroupCommand({ GroupName: 'web', Description: 'web servers' }));
    const db = await ec2.send(new CreateSecurityGroupCommand({ GroupName: 'db', Description: 'databases' }));
    assert.equal(await ec2ErrorCode(ec2.send(new CreateSecurityGroupCommand({ GroupName: 'web', Description: 'again' }))), 'InvalidGroup.Duplicate');

    await ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: web.GroupId, IpPermissions: [
      { IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '0.0.0.0/0', Description: 'ssh' }] },
      { IpProtocol: 'tcp', FromPort: 80, ToPort: 80, IpRanges: [{ CidrIp: '10.0.0.0/8' }] },
    ] }));
    await ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: db.GroupId, IpPermissions: [
      { IpProtocol: 'tcp', FromPort: 5432, ToPort: 5432, UserIdGroupPairs: [{ GroupId: web.GroupId }] },
    ] }));
    assert.equal(await ec2ErrorCode(ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: web.GroupId, IpPermissions: [
      { IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }] }))), 'InvalidPermission.Duplicate');
    assert.equal(await ec2ErrorCode(ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: web.GroupId, IpPermissions: [
      { IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '300.1.2.3/8' }] }] }))), 'InvalidParameterValue');
    await ec2.send(new AuthorizeSecurityGroupEgressCommand({ GroupId: db.GroupId, IpPermissions: [
      { IpProtocol: 'udp', FromPort: 53, ToPort: 53, IpRanges: [{ CidrIp: '10.1.0.2/32' }] }] }));

    const described = await ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [web.GroupId!, db.GroupId!] }));
    const webGroup = described.SecurityGroups!.find((g) => g.GroupId === web.GroupId)!;
    assert.deepEqual(webGroup.IpPermissions!.map((p) => [p.IpProtocol, p.FromPort, p.ToPort, p.IpRanges!.map((r) => r.CidrIp)]).sort(),
      [['tcp', 22, 22, ['0.0.0.0/0']], ['tcp', 80, 80, ['10.0.0.0/8']]]);
    const dbGroup = described.SecurityGroups!.find((g) => g.GroupId === db.GroupId)!;
    assert.equal(dbGroup.IpPermissions![0]!.UserIdGroupPairs![0]!.GroupId, web.GroupId);

    const byPort = await ec2.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'ip-permission.from-port', Values: ['22'] }] }));
    assert.deepEqual(byPort.SecurityGroups!.map((g) => g.GroupName), ['web']);
    const byName = await ec2.send(new DescribeSecurityGroupsCommand({ GroupNames: ['default'] }));
    assert.equal(byName.SecurityGroups!.length, 1);

    const rules = await ec2.send(new DescribeSecurityGroupRulesCommand({ Filters: [{ Name: 'group-id', Values: [web.GroupId!] }] }));
    assert.equal(rules.SecurityGroupRules!.filter((r) => !r.IsEgress).length, 2);
    assert.equal(rules.SecurityGroupRules!.filter((r) => r.IsEgress).length, 1, 'a new group has the default egress rule');

    // web is referenced by db's rule: cannot be deleted; the default group never can.
    assert.equal(await ec2ErrorCode(ec2.send(new DeleteSecurityGroupCommand({ GroupId: web.GroupId }))), 'DependencyViolation');
    const defaultGroup = byName.SecurityGroups![0]!;
    assert.equal(await ec2ErrorCode(ec2.send(new DeleteSecurityGroupCommand({ GroupId: defaultGroup.GroupId }))), 'CannotDelete');
    // The other account cannot see or change them.
    assert.equal(await ec2ErrorCode(other.send(new DescribeSecurityGroupsCommand({ GroupIds: [web.GroupId!] }))), 'InvalidGroup.NotFound');
    assert.equal(await ec2ErrorCode(other.send(new DeleteSecurityGroupCommand({ GroupId: db.GroupId }))), 'InvalidGroup.NotFound');

    await ec2.send(new RevokeSecurityGroupIngressCommand({ GroupId: db.GroupId, IpPermissions: [
      { IpProtocol: 'tcp', FromPort: 5432, ToPort: 5432, UserIdGroupPairs: [{ GroupId: web.GroupId }] }] }));
    await ec2.send(new DeleteSecurityGroupCommand({ GroupId: web.GroupId }));
    assert.equal(await ec2ErrorCode(ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [web.GroupId!] }))), 'InvalidGroup.NotFound');
    assert.equal(await ec2ErrorCode(ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: ['sg-nothex'] }))), 'InvalidGroupId.Malformed');
  });

  it('tags resources, filters on tags everywhere and pages DescribeTags', async () => {
    const vpcId = (await ec2.send(new DescribeVpcsCommand({}))).Vpcs![0]!.VpcId!;
    const sg = await ec2.send(new CreateSecurityGroupCommand({ GroupName: 'tagged', Description: 'x' }));
    await ec2.send(new CreateTagsCommand({ Resources: [vpcId, sg.GroupId!], Tags: [{ Key: 'env', Value: 'prod' }, { Key: 'Name', Value: 'main' }] }));
    assert.equal(await ec2ErrorCode(ec2.send(new CreateTagsCommand({ Resources: [vpcId, 'sg-0123456789abcdef0'], Tags: [{ Key: 'x', Value: 'y' }] }))), 'InvalidGroup.NotFound');
    // Nothing of the failed call was written.
    const xTags = await ec2.send(new DescribeTagsCommand({ Filters: [{ Name: 'key', Values: ['x'] }] }));
    assert.deepEqual(xTags.Tags, []);

    const prodVpcs = await ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: 'tag:env', Values: ['pr?d'] }] }));
    assert.equal(prodVpcs.Vpcs!.length, 1);
    const keyed = await ec2.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'tag-key', Values: ['env'] }] }));
    assert.deepEqual(keyed.SecurityGroups!.map((g) => g.GroupId), [sg.GroupId]);

    await ec2.send(new CreateTagsCommand({ Resources: [sg.GroupId!], Tags: Array.from({ length: 8 }, (_, i) => ({ Key: `k${i}`, Value: String(i) })) }));
    const pages: number[] = [];
    for await (const page of paginateDescribeTags({ client: ec2, pageSize: 5 }, {})) pages.push(page.Tags!.length);
    assert.ok(pages.length >= 2, `expected several pages, got ${pages}`);
    assert.equal(pages.reduce((a, b) => a + b, 0), (await ec2.send(new DescribeTagsCommand({}))).Tags!.length);

    await ec2.send(new DeleteTagsCommand({ Resources: [vpcId], Tags: [{ Key: 'env', Value: 'wrong' }] }));
    assert.equal((await ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: 'tag:env', Values: ['prod'] }] }))).Vpcs!.length, 1);
    await ec2.send(new DeleteTagsCommand({ Resources: [vpcId], Tags: [{ Key: 'env' }] }));
    assert.equal((await ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: 'tag:env', Values: ['prod'] }] }))).Vpcs!.length, 0);
    assert.deepEqual((await other.send(new DescribeTagsCommand({}))).Tags, []);
  });

  it('lets a user do only what its policy allows, DryRun included', async () => {
    const store = cloud.cloud!.store;
    const key = await store.transaction(async (tx) => {
      const user = await createUser(tx, cloud.accountId, 'auditor', ['ec2:Describe*']);
      return createAccessKey(tx, user.id);
    });
    const auditor = ec2Client(cloud, { accessKeyId: key.access_key_id, secretAccessKey: key.secret_access_key });
    assert.ok((await auditor.send(new DescribeKeyPairsCommand({}))).KeyPairs!.length > 0, 'sees the account\'s key pairs');
    assert.equal(await ec2ErrorCode(auditor.send(new DescribeKeyPairsCommand({ DryRun: true }))), 'DryRunOperation');
    assert.equal(await ec2ErrorCode(auditor.send(new CreateKeyPairCommand({ KeyName: 'nope', DryRun: true }))), 'UnauthorizedOperation');
    assert.equal(await ec2ErrorCode(auditor.send(new CreateKeyPairCommand({ KeyName: 'nope' }))), 'UnauthorizedOperation');
    assert.equal(await ec2ErrorCode(ec2.send(new DescribeKeyPairsCommand({ KeyNames: ['nope'] }))), 'InvalidKeyPair.NotFound', 'nothing was created');
  });

  it('answers DryRun, unknown filters and unimplemented operations with EC2 errors', async () => {
    assert.equal(await ec2ErrorCode(ec2.send(new CreateKeyPairCommand({ KeyName: 'dry', DryRun: true }))), 'DryRunOperation');
    assert.deepEqual((await ec2.send(new DescribeKeyPairsCommand({ KeyNames: ['dry'] })).catch((e) => e.name)), 'InvalidKeyPair.NotFound');
    assert.equal(await ec2ErrorCode(ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: 'no-such-filter', Values: ['x'] }] }))), 'InvalidParameterValue');
    // An operation of the model that this cloud does not implement (VPN gateways).
    const unsupported = await ec2.send(new DescribeVpnGatewaysCommand({})).then(() => undefined, (e) => e);
    assert.ok(unsupported, 'DescribeVpnGateways is refused');
    assert.equal(unsupported.name, 'UnsupportedOperation');
    assert.equal(unsupported.$metadata?.httpStatusCode, 400);
  });
});

/** The OpenSSH wire blob of an ED25519 public key from its SPKI DER. */
function sshEd25519Blob(spki: Buffer): Buffer {
  const raw = spki.subarray(spki.length - 32);
  const part = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  return Buffer.concat([part(Buffer.from('ssh-ed25519')), part(raw)]);
}
