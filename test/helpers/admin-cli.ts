// `bin/ironbark admin …` as a child process against a test cloud, as an operator runs it: the
// cloud's endpoint and data directory are given as flags, and no AWS_* or IRONBARK_* variable of
// the test's own environment leaks into it.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from './cloud.ts';

export interface AdminResult { code: number | null; stdout: string; stderr: string }

export function adminCli(cloud: { url: string; dataDir: string }) {
  function admin(args: string[]): Promise<AdminResult> {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AWS_') && !k.startsWith('IRONBARK_') && v !== undefined) env[k] = v;
    const child = spawn(join(REPO_ROOT, 'bin/ironbark'), ['admin', ...args, '--endpoint', cloud.url, '--data-dir', cloud.dataDir], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  }

  /** Runs the command and answers its output; a non-zero exit fails the test with what it printed. */
  async function ok(args: string[]): Promise<string> {
    const r = await admin(args);
    assert.equal(r.code, 0, `ironbark admin ${args.join(' ')} failed:\n${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  return { admin, ok };
}
