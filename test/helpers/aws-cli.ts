// Runs the real `aws` CLI (Debian's awscli when present) against a test cloud.
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface AwsResult { code: number; stdout: string; stderr: string; json?: any }

export function awsCli(cloud: { url: string; accessKeyId: string; secretAccessKey: string }) {
  const home = mkdtempSync(join(tmpdir(), 'ironbark-awscli-'));
  const bin = process.env.IRONBARK_AWS_CLI ?? 'aws';
  return function aws(...args: string[]): Promise<AwsResult> {
    return new Promise((resolve) => {
      execFile(bin, ['--endpoint-url', cloud.url, '--output', 'json', ...args], {
        env: {
          PATH: process.env.PATH, HOME: home, AWS_ACCESS_KEY_ID: cloud.accessKeyId, AWS_SECRET_ACCESS_KEY: cloud.secretAccessKey,
          AWS_DEFAULT_REGION: 'ironbark-1', AWS_PAGER: '', AWS_MAX_ATTEMPTS: '1', AWS_EC2_METADATA_DISABLED: 'true',
        },
        timeout: 60_000, maxBuffer: 16 * 1024 * 1024,
      }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as any).code === 'number' ? (err as any).code : 1) : 0;
        let json: any;
        if (code === 0 && stdout.trim()) { try { json = JSON.parse(stdout); } catch { /* not JSON */ } }
        resolve({ code, stdout, stderr, json });
      });
    });
  };
}

/** The EC2 error code in the CLI's "An error occurred (Code) when calling ..." line. */
export function cliErrorCode(r: AwsResult): string | undefined {
  return /An error occurred \(([^)]+)\)/.exec(r.stderr)?.[1];
}

/**
 * The aws CLI run to its end inside a test's network namespace, as a user on that host would run
 * it; `home` keeps its config away from the real one.
 */
export function awsInNetns(netns: string, endpoint: string, home: string, env: Record<string, string>, args: string[]): { code: number; out: string; err: string; json: any } {
  const bin = process.env.IRONBARK_AWS_CLI ?? 'aws';
  const r = spawnSync('ip', ['netns', 'exec', netns, bin, '--endpoint-url', endpoint, '--output', 'json', ...args], {
    encoding: 'utf8', timeout: 120_000,
    env: { PATH: process.env.PATH, HOME: home, AWS_PAGER: '', AWS_MAX_ATTEMPTS: '1', AWS_EC2_METADATA_DISABLED: 'true', ...env },
  });
  let json: any;
  try { json = r.stdout.trim() ? JSON.parse(r.stdout) : undefined; } catch { /* text output */ }
  return { code: r.status ?? 1, out: r.stdout, err: r.stderr, json };
}
