// The `ironbark` command as operators and scripts meet it: run through a symlink from any
// directory, and `ironbark up` publishing its credentials only once instances can launch.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DescribeImagesCommand, RunInstancesCommand, TerminateInstancesCommand } from '@aws-sdk/client-ec2';
import { REPO_ROOT, ec2Client, withUpProcess } from '../helpers/cloud.ts';
import { readCredentialsEnv } from '../../src/auth/credentials-file.ts';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

function runIronbark(bin: string, args: string[], cwd: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(bin, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('bin/ironbark from anywhere', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ironbark-path-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('runs through a symlink on PATH from a directory outside the checkout', async () => {
    const link = join(dir, 'ironbark');
    symlinkSync(join(REPO_ROOT, 'bin/ironbark'), link);
    for (const args of [['admin', '--help'], ['image', '--help'], ['up', '--help']]) {
      const r = await runIronbark(link, args, dir);
      assert.equal(r.code, 0, `ironbark ${args.join(' ')} from ${dir}:\n${r.stderr}`);
      assert.match(r.stdout, /^Usage: ironbark /);
      assert.doesNotMatch(r.stderr, /ERR_MODULE_NOT_FOUND|installing/);
    }
  });
});

describe('ironbark up: ready means ready', () => {
  it('writes credentials.env only once RunInstances can succeed', { timeout: 15 * 60_000 }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'ironbark-ready-'));
    try {
      // Use the file the moment it appears, as a script waiting for it would.
      await withUpProcess(dataDir, () => existsSync(join(dataDir, 'credentials.env')), async () => {
        const env = readCredentialsEnv(dataDir);
        const ec2 = ec2Client({ url: env.AWS_ENDPOINT_URL_EC2! }, { accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY! });
        const images = await ec2.send(new DescribeImagesCommand({}));
        const imageId = images.Images?.find((i) => i.ImageId?.startsWith('ami-'))?.ImageId;
        assert.ok(imageId, 'the default image is registered');
        const run = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, InstanceType: 'm1.small' }));
        assert.equal(run.Instances?.length, 1);
        await ec2.send(new TerminateInstancesCommand({ InstanceIds: [run.Instances![0]!.InstanceId!] }));
      });
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
