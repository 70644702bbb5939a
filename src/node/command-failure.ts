// One wording for a host tool that failed (apt-get, the image recipe, qemu-img, qemu, ip, nft,
// dnsmasq): the command as run, how it ended, and the last lines it wrote. A failure that reaches
// an operator with an empty reason cannot be acted on, so the message is never empty.

export interface CommandOutcome {
  /** The program and its arguments, as run. */
  argv: readonly string[];
  /** Exit status; null when it ended by a signal or never started. */
  exitCode: number | null;
  signal?: string | null;
  stderr?: string;
  stdout?: string;
  /** Why it could not run at all (e.g. ENOENT), or the runner's own message. */
  cause?: string;
  /** Whether it was killed for running too long. */
  timedOut?: boolean;
}

const TAIL_LINES = 15;

export function lastLines(text: string, count = TAIL_LINES): string {
  return text.trim().split('\n').filter((line) => line.trim() !== '').slice(-count).join('\n');
}

/** `cmd a b` with arguments that contain spaces or quotes shown quoted, as a shell would need them. */
export function printableCommand(argv: readonly string[]): string {
  return argv.map((a) => (a === '' || /[\s'"\\$`]/.test(a) ? `'${a.replace(/'/g, `'\\''`)}'` : a)).join(' ');
}

export function describeExit(outcome: Pick<CommandOutcome, 'exitCode' | 'signal' | 'timedOut'>): string {
  if (outcome.timedOut) return `timed out${outcome.signal ? ` (killed with ${outcome.signal})` : ''}`;
  if (outcome.exitCode !== null && outcome.exitCode !== undefined) return `exit status ${outcome.exitCode}`;
  if (outcome.signal) return `killed by ${outcome.signal}`;
  return 'did not run';
}

/** "`cmd args` failed (exit status 2):\n<last lines of stderr, else stdout, else why>". */
export function describeCommandFailure(outcome: CommandOutcome): string {
  const said = lastLines(outcome.stderr ?? '') || lastLines(outcome.stdout ?? '');
  const program = outcome.argv[0] ?? '?';
  const cause = outcome.cause && /ENOENT/.test(outcome.cause) ? `${program} is not installed or not on PATH` : outcome.cause;
  const reason = [said, cause && !said.includes(cause) ? cause : ''].filter(Boolean).join('\n') || 'it printed nothing';
  return `${printableCommand(outcome.argv)} failed (${describeExit(outcome)}):\n${reason}`;
}

export class CommandFailedError extends Error {
  readonly outcome: CommandOutcome;
  constructor(outcome: CommandOutcome, context?: string) {
    super(context ? `${context}: ${describeCommandFailure(outcome)}` : describeCommandFailure(outcome));
    this.name = 'CommandFailedError';
    this.outcome = outcome;
  }
}
