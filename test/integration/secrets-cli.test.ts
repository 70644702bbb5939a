// Secrets at rest as an operator meets them (issue 11, item 1): `ironbark up` whose output is
// not a terminal prints no secret and points at the 0600 credentials file; the store it made
// holds no plaintext secret; without its key file the cloud refuses to start in one sentence;
// `ironbark admin master-key rotate` re-encrypts and the cloud starts with the new key alone.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DescribeRegionsCommand } from '@aws-sdk/client-ec2';
import { REPO_ROOT, ec2Client, withUpProcess } from '../helpers/cloud.ts';
import { readCredentialsEnv } from '../../src/auth/credentials-file.ts';
import { readKeyRingFile } from '../../src/store/master-key-file.ts';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

const BIN = join(REPO_ROOT, 'bin/ironbark');

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IRONBARK_LOG_LEVEL: 'warn' } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

/** `ironbark up` with stdout and stderr piped (not a terminal), until it says it is up; then stopped. */
function upOnce(dataDir: string): Promise<{ output: string; secret: string; url: string }> {
  return withUpProcess(dataDir, (output) => output.includes('aws ec2 run-instances'), async (output) => {
    const env = readCredentialsEnv(dataDir);
    const ec2 = ec2Client({ url: env.AWS_ENDPOINT_URL_EC2! }, { accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY! });
    assert.ok((await ec2.send(new DescribeRegionsCommand({}))).Regions?.length, 'the admin key signs requests');
    return { output: output(), secret: env.AWS_SECRET_ACCESS_KEY!, url: env.AWS_ENDPOINT_URL_EC2! };
  }, { logLevel: 'info' });
}

describe('secrets at rest, from the command line', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'ironbark-secrets-cli-'));
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  it('up prints no secret when its output is not a terminal; the store holds none; the key file is 0600', { timeout: 15 * 60_000 }, async () => {
    const { output, secret } = await upOnce(dataDir);
    assert.equal(output.includes(secret), false, 'the admin secret is in the output');
    assert.match(output, new RegExp(`are in ${dataDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/credentials\\.env \\(mode 0600\\)`));
    assert.match(output, /"msg":"made a new master key for the secrets in the store"/);
    assert.equal(statSync(join(dataDir, 'master.key')).mode & 0o777, 0o600);
    const db = join(dataDir, 'ironbark.sqlite');
    const bytes = [db, `${db}-wal`].filter((f) => existsSync(f)).map((f) => readFileSync(f).toString('latin1')).join('');
    assert.equal(bytes.includes(secret), false, 'the admin secret is stored in plaintext');
  });

  it('without its key file the cloud refuses to start, in one sentence and without a stack trace', async () => {
    const keyFile = join(dataDir, 'master.key');
    renameSync(keyFile, `${keyFile}.away`);
    try {
      const r = await run(['cloud', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--no-default-image']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^ironbark: The store holds secrets encrypted under master key [0-9a-f]{16}, but there is no master key file at .*master\.key\. Restore that file \(or name it with --master-key-file or IRONBARK_MASTER_KEY_FILE\); a new key could not read those secrets\.\n$/);
      assert.equal(existsSync(keyFile), false, 'a new key was made');
    } finally {
      renameSync(`${keyFile}.away`, keyFile);
    }
  });

  it('admin master-key rotate re-encrypts, and up starts again with the new key alone', { timeout: 15 * 60_000 }, async () => {
    const keyFile = join(dataDir, 'master.key');
    const [before] = readKeyRingFile(keyFile)!;
    copyFileSync(keyFile, join(dataDir, 'old.key'));
    const r = await run(['admin', '--data-dir', dataDir, 'master-key', 'rotate']);
    assert.equal(r.code, 0, r.stderr);
    const after = readKeyRingFile(keyFile)!;
    assert.equal(after.length, 1);
    assert.notEqual(after[0]!.id, before!.id);
    assert.match(r.stdout, new RegExp(`^Master key ${after[0]!.id} is current; \\d+ secrets? (was|were) encrypted again under it\\.\\nRemoved from the key file: ${before!.id}`));
    const status = await run(['admin', '--data-dir', dataDir, '--json', 'master-key', 'status']);
    assert.deepEqual(JSON.parse(status.stdout).keys.map((k: { id: string; state: string }) => [k.id, k.state]), [[after[0]!.id, 'current']]);
    const { output, secret } = await upOnce(dataDir);
    assert.equal(output.includes(secret), false);
    const refused = await run(['cloud', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--no-default-image', '--master-key-file', join(dataDir, 'old.key')]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^ironbark: The store's secrets are encrypted under master key [0-9a-f]{16}, which .*old\.key does not hold/);
  });
});
