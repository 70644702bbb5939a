// The README's promise, checked with the real aws CLI against `ironbark up` run as a process:
// the printed credentials work and every operation of the API answers as EC2 would.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCloudProcess } from '../helpers/cloud.ts';
import { awsCli, cliErrorCode } from '../helpers/aws-cli.ts';

describe('aws CLI against ironbark up', () => {
  let cloud: Awaited<ReturnType<typeof startCloudProcess>>;
  let aws: ReturnType<typeof awsCli>;
  let work: string;

  before(async () => {
    cloud = await startCloudProcess();
    aws = awsCli(cloud);
    work = mkdtempSync(join(tmpdir(), 'ironbark-cli-work-'));
  });
  after(async () => {
    await cloud?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('writes the credentials 0600 and, its output not being a terminal, names the file instead of printing the secret', () => {
    const file = join(cloud.dataDir, 'credentials.env');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const text = readFileSync(file, 'utf8');
    for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_DEFAULT_REGION', 'AWS_ENDPOINT_URL_EC2']) {
      assert.match(text, new RegExp(`^export ${name}=\\S+$`, 'm'));
    }
    assert.match(cloud.output(), new RegExp(`access key ${cloud.accessKeyId}\\) are in ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    assert.ok(!cloud.output().includes(cloud.secretAccessKey), 'the secret stays in the 0600 file');
  });

  it('describes regions, zones, account attributes, the default VPC and subnets', async () => {
    const regions = await aws('ec2', 'describe-regions');
    assert.equal(regions.code, 0, regions.stderr);
    assert.deepEqual(regions.json.Regions.map((r: any) => r.RegionName), ['ironbark-1']);
    const zones = await aws('ec2', 'describe-availability-zones');
    assert.deepEqual(zones.json.AvailabilityZones.map((z: any) => z.ZoneName), ['ironbark-1a']);
    const attrs = await aws('ec2', 'describe-account-attributes', '--attribute-names', 'default-vpc');
    const vpcId = attrs.json.AccountAttributes[0].AttributeValues[0].AttributeValue;
    const vpcs = await aws('ec2', 'describe-vpcs', '--filters', 'Name=is-default,Values=true');
    assert.equal(vpcs.json.Vpcs[0].VpcId, vpcId);
    const subnets = await aws('ec2', 'describe-subnets', '--filters', `Name=vpc-id,Values=${vpcId}`);
    assert.deepEqual(subnets.json.Subnets.map((s: any) => [s.AvailabilityZone, s.CidrBlock, s.DefaultForAz]), [['ironbark-1a', '10.1.0.0/16', true]]);
  });

  it('creates, imports, describes and deletes key pairs; the private key is usable by ssh-keygen', async () => {
    const created = await aws('ec2', 'create-key-pair', '--key-name', 'cli-key', '--query', 'KeyMaterial', '--output', 'text');
    assert.equal(created.code, 0, created.stderr);
    const pem = join(work, 'cli-key.pem');
    writeFileSync(pem, created.stdout.trim() + '\n', { mode: 0o600 });
    const derivedPub = execFileSync('ssh-keygen', ['-y', '-f', pem], { encoding: 'utf8' }).trim();
    assert.match(derivedPub, /^ssh-rsa /);

    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(work, 'mine')]);
    const imported = await aws('ec2', 'import-key-pair', '--key-name', 'mine', '--public-key-material', `fileb://${join(work, 'mine.pub')}`);
    assert.equal(imported.code, 0, imported.stderr);
    // EC2's ED25519 fingerprint is the base64 SHA-256 that ssh-keygen -l prints.
    const sshFp = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', join(work, 'mine.pub')], { encoding: 'utf8' }).split(' ')[1]!.replace(/^SHA256:/, '');
    assert.equal(imported.json.KeyFingerprint.replace(/=$/, ''), sshFp);

    const dup = await aws('ec2', 'create-key-pair', '--key-name', 'cli-key');
    assert.notEqual(dup.code, 0);
    assert.equal(cliErrorCode(dup), 'InvalidKeyPair.Duplicate');
    const listed = await aws('ec2', 'describe-key-pairs', '--filters', 'Name=key-name,Values=cli-*');
    assert.deepEqual(listed.json.KeyPairs.map((k: any) => k.KeyName), ['cli-key']);
    assert.equal((await aws('ec2', 'delete-key-pair', '--key-name', 'mine')).code, 0);
    assert.equal(cliErrorCode(await aws('ec2', 'describe-key-pairs', '--key-names', 'mine')), 'InvalidKeyPair.NotFound');
  });

  it('runs the security group lifecycle and its errors', async () => {
    const created = await aws('ec2', 'create-security-group', '--group-name', 'cli-web', '--description', 'web tier',
      '--tag-specifications', 'ResourceType=security-group,Tags=[{Key=tier,Value=web}]');
    assert.equal(created.code, 0, created.stderr);
    const gid = created.json.GroupId;
    const auth = await aws('ec2', 'authorize-security-group-ingress', '--group-id', gid, '--protocol', 'tcp', '--port', '22', '--cidr', '0.0.0.0/0');
    assert.equal(auth.code, 0, auth.stderr);
    assert.equal(auth.json.Return, true);
    assert.equal(cliErrorCode(await aws('ec2', 'authorize-security-group-ingress', '--group-id', gid, '--protocol', 'tcp', '--port', '22', '--cidr', '0.0.0.0/0')), 'InvalidPermission.Duplicate');
    const selfRef = await aws('ec2', 'authorize-security-group-ingress', '--group-id', gid, '--ip-permissions', `IpProtocol=-1,UserIdGroupPairs=[{GroupId=${gid}}]`);
    assert.equal(selfRef.code, 0, selfRef.stderr);
    const rules = await aws('ec2', 'describe-security-group-rules', '--filters', `Name=group-id,Values=${gid}`);
    assert.equal(rules.json.SecurityGroupRules.filter((r: any) => !r.IsEgress).length, 2);
    const byTag = await aws('ec2', 'describe-security-groups', '--filters', 'Name=tag:tier,Values=web');
    assert.deepEqual(byTag.json.SecurityGroups.map((g: any) => g.GroupId), [gid]);
    const byName = await aws('ec2', 'describe-security-groups', '--group-names', 'cli-web');
    assert.equal(byName.json.SecurityGroups[0].GroupId, gid);
    const revoke = await aws('ec2', 'revoke-security-group-ingress', '--group-id', gid, '--protocol', 'tcp', '--port', '22', '--cidr', '0.0.0.0/0');
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.equal(cliErrorCode(await aws('ec2', 'delete-security-group', '--group-name', 'default')), 'CannotDelete');
    assert.equal((await aws('ec2', 'delete-security-group', '--group-id', gid)).code, 0);
    assert.equal(cliErrorCode(await aws('ec2', 'delete-security-group', '--group-id', gid)), 'InvalidGroup.NotFound');
    assert.equal(cliErrorCode(await aws('ec2', 'describe-security-groups', '--group-ids', 'banana')), 'InvalidGroupId.Malformed');
  });

  it('tags and untags, and reports bad input with EC2 errors', async () => {
    const vpcId = (await aws('ec2', 'describe-vpcs')).json.Vpcs[0].VpcId;
    assert.equal((await aws('ec2', 'create-tags', '--resources', vpcId, '--tags', 'Key=Name,Value=main')).code, 0);
    const tags = await aws('ec2', 'describe-tags', '--filters', `Name=resource-id,Values=${vpcId}`);
    assert.deepEqual(tags.json.Tags.map((t: any) => [t.Key, t.Value, t.ResourceType]), [['Name', 'main', 'vpc']]);
    assert.equal((await aws('ec2', 'delete-tags', '--resources', vpcId, '--tags', 'Key=Name')).code, 0);
    assert.deepEqual((await aws('ec2', 'describe-tags', '--filters', `Name=resource-id,Values=${vpcId}`)).json.Tags, []);
    assert.equal(cliErrorCode(await aws('ec2', 'create-tags', '--resources', 'vpc-00000000000000000', '--tags', 'Key=a,Value=b')), 'InvalidVpcID.NotFound');
    assert.equal(cliErrorCode(await aws('ec2', 'describe-key-pairs', '--dry-run')), 'DryRunOperation');
  });

  it('refuses wrong credentials with AuthFailure and SignatureDoesNotMatch', async () => {
    const unknown = awsCli({ ...cloud, accessKeyId: 'AKIAIOSFODNN7EXAMPLE' });
    assert.equal(cliErrorCode(await unknown('ec2', 'describe-regions')), 'AuthFailure');
    const wrongSecret = awsCli({ ...cloud, secretAccessKey: 'x'.repeat(40) });
    assert.equal(cliErrorCode(await wrongSecret('ec2', 'describe-regions')), 'SignatureDoesNotMatch');
  });

  it('stops cleanly on SIGTERM', async () => {
    cloud.process.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => cloud.process.once('exit', (c) => r(c)));
    assert.equal(code, 0);
  });
});
