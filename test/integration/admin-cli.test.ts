// `bin/ironbark admin …` as a child process against a real cloud: an in-process cloud controller
// (its EC2 endpoint and data directory with credentials.env) and, beside it on the same store,
// an HTTP server with the admin API mounted at /admin, as the cloud controller mounts it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Hono } from 'hono';
import { serve, type ServerType } from '@hono/node-server';
import pino from 'pino';
import { DescribeSecurityGroupsCommand, DescribeKeyPairsCommand, EC2Client } from '@aws-sdk/client-ec2';
import { startInProcessCloud, REPO_ROOT, type TestCloud } from '../helpers/cloud.ts';
import { createKeyResolver } from '../../src/auth/key-cache.ts';
import { createAdminApi, adminNotFound } from '../../src/cloud/admin-api.ts';
import { newId } from '../../src/cloud/ids.ts';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

let cloud: TestCloud;
let server: ServerType;
let adminUrl: string;

before(async () => {
  cloud = await startInProcessCloud();
  const store = cloud.cloud!.store;
  const app = new Hono();
  app.route('/admin', createAdminApi({ store, settings: cloud.cloud!.settings, log: pino({ level: 'silent' }), keys: createKeyResolver(store) }));
  app.all('/admin/*', adminNotFound);
  server = await new Promise<ServerType>((resolve) => {
    const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s));
  });
  adminUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await cloud.stop();
});

interface Run { code: number | null; stdout: string; stderr: string }

/** Runs `bin/ironbark admin ARGS --endpoint … --data-dir …` without any AWS_* variables of ours. */
function ironbark(args: string[], opts: { env?: Record<string, string>; connection?: boolean } = {}): Promise<Run> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AWS_') && !k.startsWith('IRONBARK_') && v !== undefined) env[k] = v;
  const connection = opts.connection === false ? [] : ['--endpoint', adminUrl, '--data-dir', cloud.dataDir];
  const child = spawn(join(REPO_ROOT, 'bin/ironbark'), ['admin', ...args, ...connection], {
    env: { ...env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

async function ok(args: string[]): Promise<string> {
  const r = await ironbark(args);
  assert.equal(r.code, 0, `ironbark admin ${args.join(' ')} failed:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

async function okJson(args: string[]): Promise<any> {
  return JSON.parse(await ok([...args, '--json']));
}

/** The variables a POSIX shell gets from pasting the printed `export` lines. */
async function sourceExports(stdout: string): Promise<Record<string, string>> {
  const file = join(cloud.dataDir, `pasted-${newId('x')}.sh`);
  writeFileSync(file, stdout.split('\n').filter((l) => l.startsWith('export ')).join('\n') + '\n');
  const child = spawn('sh', ['-c', `. "${file}" && env`], { stdio: ['ignore', 'pipe', 'inherit'], env: {} });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  await new Promise((r) => child.on('close', r));
  return Object.fromEntries(out.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

test('account create prints pasteable credentials that work with the AWS SDK; list, show, disable, enable, delete', async () => {
  const created = await ok(['account', 'create', 'team-a']);
  assert.match(created, /^Created account team-a \(\d{12}\)/);
  const vars = await sourceExports(created);
  assert.match(vars.AWS_ACCESS_KEY_ID!, /^AKIA/);
  assert.equal(vars.AWS_ENDPOINT_URL_EC2, cloud.url);
  const accountId = vars.IRONBARK_ACCOUNT_ID!;

  const ec2 = new EC2Client({
    endpoint: vars.AWS_ENDPOINT_URL_EC2, region: vars.AWS_REGION, maxAttempts: 1,
    credentials: { accessKeyId: vars.AWS_ACCESS_KEY_ID!, secretAccessKey: vars.AWS_SECRET_ACCESS_KEY! },
  });
  const groups = await ec2.send(new DescribeSecurityGroupsCommand({}));
  assert.equal(groups.SecurityGroups?.length, 1);
  assert.equal(groups.SecurityGroups![0]!.GroupName, 'default');
  assert.equal(groups.SecurityGroups![0]!.OwnerId, accountId);

  const list = await ok(['account', 'list']);
  assert.match(list.split('\n')[0]!, /^ID\s+NAME\s+STATUS\s+CREATED$/);
  assert.match(list, new RegExp(`^${accountId}\\s+team-a\\s+active`, 'm'));
  assert.match(list, /admin \(cloud admin\)/);
  assert.ok((await okJson(['account', 'list'])).accounts.some((a: any) => a.id === accountId));

  const shown = await ok(['account', 'show', 'team-a']);
  assert.match(shown, new RegExp(`Account:\\s+team-a \\(${accountId}\\)`));
  assert.match(shown, /Security groups:\s+1/);
  assert.match(shown, new RegExp(`${vars.AWS_ACCESS_KEY_ID}\\s+admin\\s+Active`));
  assert.ok(!shown.includes(vars.AWS_SECRET_ACCESS_KEY!), 'show never prints a secret');

  const status = async () => (await cloud.cloud!.store.db.selectFrom('accounts').select('status').where('id', '=', accountId).executeTakeFirstOrThrow()).status;
  assert.equal(await ok(['account', 'disable', accountId]), `Account team-a (${accountId}) disabled: its access keys no longer work.\n`);
  assert.equal(await status(), 'disabled');
  assert.equal(await ok(['account', 'enable', 'team-a']), `Account team-a (${accountId}) enabled.\n`);
  assert.equal(await status(), 'active');

  assert.equal(await ok(['account', 'delete', 'team-a']), `Account ${accountId} deleted.\n`);
  const gone = await ironbark(['account', 'show', accountId]);
  assert.equal(gone.code, 1);
  assert.equal(gone.stderr, `ironbark: The account ${accountId} does not exist.\n`);
});

test('user list, create with a policy, delete', async () => {
  await ok(['account', 'create', 'team-b']);
  const created = await ok(['user', 'create', '--account', 'team-b', 'reader', '--policy', '["ec2:Describe*"]']);
  assert.match(created, /^Created user reader \(AIDA\w+\) in account \d{12}, allowed: ec2:Describe\*\./);
  const list = await ok(['user', 'list', '--account', 'team-b']);
  assert.match(list, /^admin\s+AIDA\w+\s+yes\s+ec2:\*/m);
  assert.match(list, /^reader\s+AIDA\w+\s+no\s+ec2:Describe\*/m);

  const bad = await ironbark(['user', 'create', '--account', 'team-b', 'x', '--policy', 'not json']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^ironbark: --policy must be a JSON list/);

  assert.match(await ok(['user', 'delete', '--account', 'team-b', 'reader']), /User reader deleted/);
  assert.deepEqual((await okJson(['user', 'list', '--account', 'team-b'])).users.map((u: any) => u.name), ['admin']);
});

test('key create, list, deactivate, activate, delete', async () => {
  await ok(['account', 'create', 'team-c']);
  await ok(['user', 'create', '--account', 'team-c', 'worker']);
  const created = await ok(['key', 'create', '--account', 'team-c', '--user', 'worker']);
  const vars = await sourceExports(created);
  const keyId = vars.AWS_ACCESS_KEY_ID!;
  assert.match(created, new RegExp(`^Created access key ${keyId} for user worker`));

  const ec2 = new EC2Client({ endpoint: vars.AWS_ENDPOINT_URL_EC2, region: vars.AWS_REGION, maxAttempts: 1,
    credentials: { accessKeyId: keyId, secretAccessKey: vars.AWS_SECRET_ACCESS_KEY! } });
  assert.deepEqual((await ec2.send(new DescribeKeyPairsCommand({}))).KeyPairs, []);

  const list = await ok(['key', 'list', '--account', 'team-c']);
  assert.match(list, new RegExp(`^${keyId}\\s+\\d{12}\\s+worker\\s+Active`, 'm'));
  assert.ok(!list.includes(vars.AWS_SECRET_ACCESS_KEY!));
  assert.equal((await okJson(['key', 'list', '--account', 'team-c', '--user', 'worker'])).accessKeys.length, 1);

  assert.equal(await ok(['key', 'deactivate', keyId]), `Access key ${keyId} deactivated.\n`);
  assert.match(await ok(['key', 'list', '--account', 'team-c', '--user', 'worker']), new RegExp(`${keyId}.*Inactive`));
  assert.equal(await ok(['key', 'activate', keyId]), `Access key ${keyId} activated.\n`);
  assert.equal(await ok(['key', 'delete', keyId]), `Access key ${keyId} deleted.\n`);
  const again = await ironbark(['key', 'delete', keyId]);
  assert.equal(again.code, 1);
  assert.equal(again.stderr, `ironbark: The access key ${keyId} does not exist.\n`);
});

test('vm-type set, list, delete', async () => {
  assert.equal(await ok(['vm-type', 'set', 'z1.huge', '--cores', '16', '--memory', '65536', '--disk', '100']),
    'VM type z1.huge: 16 cores, 65536 MiB memory, 100 GiB disk.\n');
  const list = await ok(['vm-type', 'list']);
  assert.match(list, /^NAME\s+CORES\s+MEMORY MiB\s+DISK GiB$/m);
  assert.match(list, /^m1\.small\s+1\s+256\s+5$/m);
  assert.match(list, /^z1\.huge\s+16\s+65536\s+100$/m);

  const bad = await ironbark(['vm-type', 'set', 'z1.bad', '--cores', 'many', '--memory', '1', '--disk', '1']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--cores/);

  assert.equal(await ok(['vm-type', 'delete', 'z1.huge']), 'VM type z1.huge deleted.\n');
  assert.ok(!(await okJson(['vm-type', 'list'])).vmTypes.some((t: any) => t.name === 'z1.huge'));
});

test('quota set and get', async () => {
  const created = await okJson(['account', 'create', 'team-d']);
  const id = created.account.id;
  const set = await ok(['quota', 'set', '--account', id, '--max-instances', '5', '--max-cores', '10']);
  assert.match(set, /^max-instances\s+5$/m);
  assert.match(set, /^max-cores\s+10$/m);
  assert.match(set, /^max-memory-mib\s+unlimited \(default\)$/m);
  const got = await okJson(['quota', 'get', '--account', 'team-d']);
  // The instance quotas just set; the other families (elastic IPs, volumes) keep their defaults.
  const value = (name: string) => got.quotas.find((q: any) => q.name === name)?.value;
  assert.deepEqual([value('max-instances'), value('max-cores'), value('max-memory-mib')], [5, 10, null]);
  assert.ok(got.quotas.length > 3, 'the other families are listed too');
  assert.match(await ok(['quota', 'set', '--account', id, '--max-instances', 'default']), /^max-instances\s+20 \(default\)$/m);

  const none = await ironbark(['quota', 'set', '--account', id]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /^ironbark: Name at least one quota/);
});

test('usage per account and for one account', async () => {
  const created = await okJson(['account', 'create', 'team-e']);
  const store = cloud.cloud!.store;
  const now = new Date().toISOString();
  await store.db.insertInto('instances').values({
    id: newId('i'), account_id: created.account.id, reservation_id: newId('r'), client_token: null, request_hash: null,
    image_id: 'ami-00000000', kernel_id: null, ramdisk_id: null, instance_type: 'c1.medium', zone: 'ironbark-1a', vpc_id: 'vpc-0',
    subnet_id: 'subnet-0', private_ip: null, public_ip: null, mac: 'd0:0d:00:00:00:02', key_name: null, user_data: null,
    security_groups: '[]', launch_index: 0, launch_time: now, state: 'running', state_reason: null, state_changed_at: now,
    node_id: null, disable_api_termination: 0, status_impaired: 0, accelerator: null, shutdown_behavior: 'stop',
  }).execute();

  const all = await ok(['usage']);
  assert.match(all, /^ACCOUNT\s+NAME\s+STATUS\s+INSTANCES\s+CORES\s+MEMORY MiB\s+KEY PAIRS\s+SECURITY GROUPS$/m);
  assert.match(all, new RegExp(`^${created.account.id}\\s+team-e\\s+active\\s+1\\s+2\\s+512\\s+0\\s+1$`, 'm'));
  const one = await ok(['usage', '--account', 'team-e']);
  assert.match(one, /Live instances:\s+1 of 20/);
  assert.match(one, /by type:\s+c1\.medium 1/);
  assert.match(one, /Cores in use:\s+2/);

  // Live instances keep the account from being deleted.
  const refused = await ironbark(['account', 'delete', 'team-e']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^ironbark: The account \d{12} still has 1 instance\(s\) that are not terminated; terminate them before deleting it\.\n$/);
});

test('a key outside the cloud admin account is refused, and an unreachable endpoint is one clear sentence', async () => {
  const created = await okJson(['account', 'create', 'team-f']);
  const asTenant = await ironbark(['account', 'list', '--endpoint', adminUrl], {
    connection: false,
    env: { AWS_ACCESS_KEY_ID: created.accessKey.accessKeyId, AWS_SECRET_ACCESS_KEY: created.accessKey.secretAccessKey, AWS_REGION: 'ironbark-1' },
  });
  assert.equal(asTenant.code, 1);
  assert.match(asTenant.stderr, /^ironbark: The access key AKIA\w+ may not use the admin API: only admin users of the cloud's admin account may\.\n$/);

  const down = await ironbark(['account', 'list', '--endpoint', 'http://127.0.0.1:9', '--data-dir', cloud.dataDir], { connection: false });
  assert.equal(down.code, 1);
  assert.match(down.stderr, /^ironbark: Cannot reach the cloud at http:\/\/127\.0\.0\.1:9 \(ECONNREFUSED\)/);
  assert.equal(down.stderr.trim().split('\n').length, 1);
});
