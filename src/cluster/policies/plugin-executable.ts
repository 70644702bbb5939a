// An operator's own allocation policy as an executable (Eucalyptus' user scheduler, with JSON
// instead of temp files and exit codes). For each instance the program gets on stdin
//   {"request": {requestId, instanceId, vmType, accountId, imageId, index, count},
//    "candidates": [NodeView...], "placed": [{instanceId, nodeId}...]}
// and prints the chosen node's id, either bare on the first line or as {"nodeId": "..."};
// {"nodeId": null, "reason": "..."} declines. A non-zero exit, a timeout or unreadable output is
// an error naming the program, which the scheduler logs and turns into a failed placement.
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import type { AllocationPolicy, Choice, NodeView, PlacementUnit, PolicyState } from '../policy.ts';
import { PolicyPluginError } from './plugin-module.ts';

const MAX_OUTPUT_BYTES = 64 * 1024;

export interface ExecutablePolicyOptions {
  timeoutMs?: number;
}

interface RunOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export class ExecutablePolicy implements AllocationPolicy {
  readonly name: string;
  readonly path: string;
  private readonly timeoutMs: number;

  constructor(path: string, opts: ExecutablePolicyOptions = {}) {
    this.path = resolve(path);
    this.name = `exec:${this.path}`;
    this.timeoutMs = opts.timeoutMs ?? 5_000;
  }

  async choose(req: PlacementUnit, candidates: readonly NodeView[], state: PolicyState): Promise<Choice> {
    const input = JSON.stringify({ request: req, candidates, placed: state.placed });
    const out = await this.run(input);
    if (out.timedOut) throw this.error(`did not answer within ${this.timeoutMs} ms`);
    if (out.code !== 0) {
      const detail = out.stderr.trim().split('\n')[0];
      throw this.error(`${out.code === null ? `was killed by ${out.signal}` : `exited with code ${out.code}`}${detail ? `: ${detail}` : ''}`);
    }
    return this.parse(out.stdout);
  }

  private parse(stdout: string): Choice {
    const text = stdout.trim();
    if (!text) throw this.error('printed no node id');
    if (text.startsWith('{')) {
      let answer: { nodeId?: unknown; reason?: unknown };
      try {
        answer = JSON.parse(text) as typeof answer;
      } catch {
        throw this.error(`printed malformed JSON: ${text.slice(0, 200)}`);
      }
      const reason = typeof answer.reason === 'string' ? answer.reason : `chosen by ${this.path}`;
      if (answer.nodeId === null || answer.nodeId === undefined) return { nodeId: undefined, reason: typeof answer.reason === 'string' ? answer.reason : 'the plugin declined' };
      if (typeof answer.nodeId !== 'string' || !answer.nodeId) throw this.error(`printed a nodeId that is not a string: ${text.slice(0, 200)}`);
      return { nodeId: answer.nodeId, reason };
    }
    const nodeId = text.split('\n')[0]!.trim();
    if (/\s/.test(nodeId)) throw this.error(`printed something that is not a node id: ${nodeId.slice(0, 200)}`);
    return { nodeId, reason: `chosen by ${this.path}` };
  }

  private error(message: string): PolicyPluginError {
    return new PolicyPluginError(`policy plugin ${this.path} ${message}`);
  }

  private run(input: string): Promise<RunOutcome> {
    return new Promise((done, fail) => {
      // Its own process group, so a timeout also ends whatever the plugin started.
      const child = spawn(this.path, [], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      let settled = false;
      const finish = (outcome: RunOutcome): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        done(outcome);
      };
      const timer = setTimeout(() => {
        timedOut = true;
        try { process.kill(-child.pid!, 'SIGKILL'); } catch { child.kill('SIGKILL'); }
        // Its grandchildren may keep the pipes open; do not wait for them to close.
        finish({ code: null, signal: 'SIGKILL', stdout, stderr, timedOut });
      }, this.timeoutMs);
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        if (stdout.length < MAX_OUTPUT_BYTES) stdout += chunk;
      });
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        if (stderr.length < MAX_OUTPUT_BYTES) stderr += chunk;
      });
      child.on('error', (e) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fail(this.error(`could not be started: ${e.message}`));
      });
      child.on('close', (code, signal) => finish({ code, signal, stdout, stderr, timedOut }));
      // A plugin that exits without reading its input must not crash us with EPIPE.
      child.stdin.on('error', () => {});
      child.stdin.end(input);
    });
  }
}
