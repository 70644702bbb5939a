// Runs the host tools that build node networking (ip, nft, dnsmasq), optionally inside a named
// network namespace, and turns their failures into errors that say exactly what was run.
import { execFile } from 'node:child_process';
import { Ec2Error } from '../protocol/errors.ts';
import { describeCommandFailure } from './command-failure.ts';

export class HostCommandError extends Ec2Error {
  readonly command: string;
  readonly exitCode: number | null;
  readonly stderr: string;
  constructor(argv: string[], exitCode: number | null, stderr: string, cause?: string, signal?: string | null, timedOut?: boolean) {
    super('InternalError', `Host command ${describeCommandFailure({ argv, exitCode, signal, stderr, cause, timedOut })}`);
    const command = argv.join(' ');
    this.name = 'HostCommandError';
    this.command = command;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

export interface CommandOptions {
  /** Named network namespace (as made by `ip netns add`) to run the command in. */
  netns?: string;
  /** Text written to the command's standard input. */
  input?: string;
}

/** The argv that runs `file args` inside `netns` (or as is, without one). */
export function inNamespace(netns: string | undefined, file: string, args: string[]): [string, string[]] {
  if (!netns) return [file, args];
  return ['ip', ['netns', 'exec', netns, file, ...args]];
}

export function runCommand(file: string, args: string[], options: CommandOptions = {}): Promise<string> {
  const [cmd, argv] = inNamespace(options.netns, file, args);
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, argv, { maxBuffer: 16 * 1024 * 1024, timeout: 30_000 }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      const code = typeof error.code === 'number' ? error.code : null;
      // execFile's own message repeats the command and its stderr; keep it only when it says more.
      const cause = code === null && !error.killed ? error.message : undefined;
      reject(new HostCommandError([cmd, ...argv], code, String(stderr ?? ''), cause, error.signal, error.killed));
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** `ip ...` with JSON output parsed; returns [] when the object does not exist. */
export async function ipJson<T>(args: string[], netns?: string): Promise<T[]> {
  try {
    const out = await runCommand('ip', ['-j', ...args], { netns });
    return out.trim() ? (JSON.parse(out) as T[]) : [];
  } catch (e) {
    if (e instanceof HostCommandError && /does not exist|Cannot find device/i.test(e.stderr)) return [];
    throw e;
  }
}
