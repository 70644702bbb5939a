// Network namespaces a test makes for itself, so bridges, taps and firewall rules never touch the
// host's own network. Removed in `dispose`, even when the test failed.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export function canUseNetns(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root for network namespaces';
  if (spawnSync('ip', ['-V']).status !== 0) return 'needs iproute2 (ip)';
  return undefined;
}

export class TestNetns {
  readonly name: string;
  constructor(prefix = 'ibt') {
    this.name = `${prefix}-${randomBytes(3).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', this.name]);
    this.exec('ip', ['link', 'set', 'lo', 'up']);
  }

  exec(cmd: string, args: string[], opts: { input?: string; timeout?: number } = {}): string {
    return execFileSync('ip', ['netns', 'exec', this.name, cmd, ...args], { encoding: 'utf8', input: opts.input, timeout: opts.timeout ?? 60_000 });
  }

  /** argv prefix that runs a command inside the namespace. */
  wrap(cmd: string, args: string[]): [string, string[]] {
    return ['ip', ['netns', 'exec', this.name, cmd, ...args]];
  }

  dispose(): void {
    // Kill anything still running inside, then delete the namespace (its links go with it).
    const pids = spawnSync('ip', ['netns', 'pids', this.name], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean);
    for (const pid of pids) { try { process.kill(Number(pid), 'SIGKILL'); } catch { /* already gone */ } }
    spawnSync('ip', ['netns', 'delete', this.name]);
  }
}
