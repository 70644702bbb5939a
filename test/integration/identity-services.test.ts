// STS and IAM on the cloud's endpoint (issue 8, item 8c): Terraform's AWS provider and Ansible's
// modules call STS GetCallerIdentity, then IAM GetUser, on the endpoint they were given. Requests
// are routed by the service of their SigV4 credential scope; the answers and errors are in the
// AWS Query protocol those services use, checked with the real SDK v3 clients, raw signed requests
// and the aws CLI; a scope naming a service or region this cloud does not serve is refused.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { XMLParser } from 'fast-xml-parser';
import { STSClient, GetCallerIdentityCommand } from '@aws-sdk/client-sts';
import { IAMClient, GetUserCommand } from '@aws-sdk/client-iam';
import { DescribeRegionsCommand } from '@aws-sdk/client-ec2';
import { startInProcessCloud, ec2Client, REGION, type TestCloud } from '../helpers/cloud.ts';
import { awsCli, cliErrorCode } from '../helpers/aws-cli.ts';
import { createAccessKey, createUser } from '../../src/auth/identities.ts';
import { credentialScope } from '../../src/cloud/identity/service-router.ts';

const Sha256 = Hash.bind(null, 'sha256');
const xml = new XMLParser({ ignoreAttributes: false, parseTagValue: false });

interface Creds { accessKeyId: string; secretAccessKey: string }

async function failure(p: Promise<unknown>): Promise<{ name: string; message: string; status?: number }> {
  try { await p; } catch (e) {
    const err = e as { name: string; message: string; $metadata?: { httpStatusCode?: number } };
    return { name: err.name, message: err.message, status: err.$metadata?.httpStatusCode };
  }
  return { name: 'no error', message: '' };
}

function cliAvailable(bin: string): boolean {
  if (bin.includes('/')) return existsSync(bin);
  try { execFileSync(bin, ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

describe('STS and IAM on the cloud endpoint', () => {
  let cloud: TestCloud;
  let url: URL;
  let user: Creds & { userId: string };

  const sts = (creds: Creds, region = REGION) => new STSClient({ endpoint: cloud.url, region, credentials: creds, maxAttempts: 1 });
  const iam = (creds: Creds, region = REGION) => new IAMClient({ endpoint: cloud.url, region, credentials: creds, maxAttempts: 1 });

  /** A form POST signed for `service` in `region`, as any SigV4 client sends it. */
  async function signedPost(body: string, service: string, region = REGION, creds: Creds = cloud) {
    const signer = new SignatureV4({ service, region, sha256: Sha256, credentials: creds });
    const req = await signer.sign({ method: 'POST', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: '/',
      headers: { host: url.host, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }, body });
    const res = await fetch(`${cloud.url}/`, { method: 'POST', headers: req.headers as Record<string, string>, body });
    const text = await res.text();
    return { status: res.status, text, doc: xml.parse(text), requestId: res.headers.get('x-amzn-requestid') };
  }

  before(async () => {
    cloud = await startInProcessCloud();
    url = new URL(cloud.url);
    const store = cloud.cloud!.store;
    const dev = await store.transaction((tx) => createUser(tx, cloud.accountId, 'dev'));
    const key = await store.transaction((tx) => createAccessKey(tx, dev.id));
    user = { accessKeyId: key.access_key_id, secretAccessKey: key.secret_access_key, userId: dev.id };
  });
  after(async () => { await cloud.stop(); });

  it('GetCallerIdentity names the account root for the account\'s own key, signed for the cloud\'s region or us-east-1', async () => {
    for (const region of [REGION, 'us-east-1']) {
      const out = await sts(cloud, region).send(new GetCallerIdentityCommand({}));
      assert.equal(out.Account, cloud.accountId);
      assert.equal(out.Arn, `arn:aws:iam::${cloud.accountId}:root`);
      assert.equal(out.UserId, cloud.accountId);
      assert.match(out.$metadata.requestId ?? '', /\S/);
    }
  });

  it('GetCallerIdentity names the IAM user for a user\'s key', async () => {
    const out = await sts(user).send(new GetCallerIdentityCommand({}));
    assert.deepEqual([out.Account, out.Arn, out.UserId], [cloud.accountId, `arn:aws:iam::${cloud.accountId}:user/dev`, user.userId]);
  });

  it('GetUser describes the caller; another user needs the account\'s key; an unknown one is NoSuchEntity', async () => {
    const root = (await iam(cloud).send(new GetUserCommand({}))).User!;
    assert.equal(root.Arn, `arn:aws:iam::${cloud.accountId}:root`);
    assert.equal(root.UserId, cloud.accountId);
    assert.equal(root.UserName, 'admin');
    assert.equal(root.Path, '/');
    assert.ok(root.CreateDate instanceof Date && !Number.isNaN(root.CreateDate.getTime()));

    const self = (await iam(user, 'us-east-1').send(new GetUserCommand({}))).User!;
    assert.deepEqual([self.UserName, self.UserId, self.Arn, self.Path], ['dev', user.userId, `arn:aws:iam::${cloud.accountId}:user/dev`, '/']);
    assert.ok(self.CreateDate instanceof Date);
    assert.equal((await iam(user).send(new GetUserCommand({ UserName: 'dev' }))).User!.UserId, user.userId);

    assert.deepEqual((await iam(cloud).send(new GetUserCommand({ UserName: 'dev' }))).User!.Arn, `arn:aws:iam::${cloud.accountId}:user/dev`);
    const denied = await failure(iam(user).send(new GetUserCommand({ UserName: 'admin' })));
    assert.equal(denied.name, 'AccessDenied');
    assert.equal(denied.status, 403);
    const missing = await failure(iam(cloud).send(new GetUserCommand({ UserName: 'nobody' })));
    assert.equal(missing.name, 'NoSuchEntityException');
    assert.equal(missing.status, 404);
    assert.match(missing.message, /The user with name nobody cannot be found/);
  });

  it('answers in the Query protocol\'s own XML, errors included', async () => {
    const ok = await signedPost('Action=GetCallerIdentity&Version=2011-06-15', 'sts');
    assert.equal(ok.status, 200);
    assert.match(ok.text, /<GetCallerIdentityResponse xmlns="https:\/\/sts\.amazonaws\.com\/doc\/2011-06-15\/"><GetCallerIdentityResult>/);
    const result = ok.doc.GetCallerIdentityResponse;
    assert.equal(result.GetCallerIdentityResult.Account, cloud.accountId);
    assert.equal(result.ResponseMetadata.RequestId, ok.requestId);

    const user_ = await signedPost('Action=GetUser&Version=2010-05-08', 'iam');
    assert.match(user_.text, /<GetUserResponse xmlns="https:\/\/iam\.amazonaws\.com\/doc\/2010-05-08\/"><GetUserResult><User><Path>\/<\/Path><UserName>admin<\/UserName>/);
    assert.match(user_.text, /<CreateDate>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ<\/CreateDate>/);

    // In the model but not served here; not in the model at all; no action.
    for (const [body, message] of [
      ['Action=AssumeRole&Version=2011-06-15&RoleArn=arn:aws:iam::1:role/x&RoleSessionName=s', /AssumeRole is not supported/],
      ['Action=FlyToTheMoon&Version=2011-06-15', /Could not find operation FlyToTheMoon/],
      ['Version=2011-06-15', /Missing Action/],
    ] as const) {
      const bad = await signedPost(body, 'sts');
      assert.equal(bad.status, 400, bad.text);
      const error = bad.doc.ErrorResponse;
      assert.equal(error['@_xmlns'], 'https://sts.amazonaws.com/doc/2011-06-15/');
      assert.equal(error.Error.Type, 'Sender');
      assert.equal(error.Error.Code, message.source.startsWith('Missing') ? 'MissingAction' : 'InvalidAction');
      assert.match(error.Error.Message, message);
      assert.equal(error.RequestId, bad.requestId);
    }

    const unknownKey = await signedPost('Action=GetCallerIdentity&Version=2011-06-15', 'sts', REGION, { accessKeyId: 'AKIANOSUCHKEY0000000', secretAccessKey: 'x' });
    assert.equal(unknownKey.status, 403);
    assert.equal(unknownKey.doc.ErrorResponse.Error.Code, 'InvalidClientTokenId');
    const wrongSecret = await signedPost('Action=GetCallerIdentity&Version=2011-06-15', 'sts', REGION, { accessKeyId: cloud.accessKeyId, secretAccessKey: 'wrong' });
    assert.equal(wrongSecret.status, 403);
    assert.equal(wrongSecret.doc.ErrorResponse.Error.Code, 'SignatureDoesNotMatch');
  });

  it('refuses a scope naming a service or region this cloud does not serve', async () => {
    const s3 = await signedPost('Action=ListBuckets', 's3');
    assert.equal(s3.status, 403);
    assert.equal(s3.doc.Response.Errors.Error.Code, 'SignatureDoesNotMatch');
    assert.match(s3.doc.Response.Errors.Error.Message, /serves 'ec2', 'sts' and 'iam', not 's3'/);

    const ec2Elsewhere = await signedPost('Action=DescribeRegions&Version=2016-11-15', 'ec2', 'mars-1');
    assert.equal(ec2Elsewhere.status, 403);
    assert.equal(ec2Elsewhere.doc.Response.Errors.Error.Code, 'SignatureDoesNotMatch');
    assert.match(ec2Elsewhere.doc.Response.Errors.Error.Message, /scoped to a valid region, not 'mars-1'.*'ironbark-1'/);

    const stsElsewhere = await failure(sts(cloud, 'mars-1').send(new GetCallerIdentityCommand({})));
    assert.equal(stsElsewhere.name, 'SignatureDoesNotMatch');
    assert.match(stsElsewhere.message, /valid region, not 'mars-1'/);

    // EC2 goes on as before, signed for the cloud's region.
    const regions = await ec2Client(cloud, cloud).send(new DescribeRegionsCommand({}));
    assert.deepEqual(regions.Regions?.map((r) => r.RegionName), [REGION]);
  });

  it('reads the scope from the Authorization header or a presigned query; SigV2 and unsigned requests have none', () => {
    assert.deepEqual(credentialScope({ authorization: 'AWS4-HMAC-SHA256 Credential=AKIA/20250101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00' }, ''),
      { region: 'us-east-1', service: 'sts' });
    assert.deepEqual(credentialScope({}, 'Action=GetUser&X-Amz-Credential=AKIA%2F20250101%2Fironbark-1%2Fiam%2Faws4_request&X-Amz-Signature=00'),
      { region: 'ironbark-1', service: 'iam' });
    assert.equal(credentialScope({}, 'Action=DescribeRegions&AWSAccessKeyId=AKIA&SignatureVersion=2&Signature=x'), undefined);
    assert.equal(credentialScope({}, 'Action=DescribeRegions'), undefined);
    assert.equal(credentialScope({ authorization: 'AWS4-HMAC-SHA256 Credential=broken' }, ''), undefined);
  });

  const cliBin = process.env.IRONBARK_AWS_CLI ?? 'aws';
  it('the aws CLI: sts get-caller-identity and iam get-user', { skip: !cliAvailable(cliBin) && 'no aws CLI on this machine' }, async () => {
    const aws = awsCli(cloud);
    const identity = await aws('sts', 'get-caller-identity');
    assert.equal(identity.code, 0, identity.stderr);
    assert.deepEqual(identity.json, { UserId: cloud.accountId, Account: cloud.accountId, Arn: `arn:aws:iam::${cloud.accountId}:root` });
    const got = await aws('iam', 'get-user');
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.json.User.Arn, `arn:aws:iam::${cloud.accountId}:root`);
    const missing = await aws('iam', 'get-user', '--user-name', 'nobody');
    assert.equal(cliErrorCode(missing), 'NoSuchEntity');
  });
});
