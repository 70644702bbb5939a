// The power-save flags shared by `ironbark cluster` and `ironbark up`, turned into the cluster
// controller's power options (see src/cluster/power.ts for the commands' placeholders).
import type { Command } from 'commander';
import type { ClusterPowerOptions } from '../cluster/cluster-controller.ts';

export interface PowerFlags {
  idleThreshold?: string;
  sleepCommand?: string;
  wakeCommand?: string;
  wakeTimeout?: string;
}

export function addPowerFlags(command: Command): Command {
  return command
    .option('--idle-threshold <seconds>', 'power-save: seconds a node has had no instances before it is put to sleep (default 300)')
    .option('--sleep-command <cmd>', 'power-save: shell command that puts a node to sleep; {node}, {host}, {address}, {mac} and {id} are replaced, quoted (`up --driver fake` simulates sleep without one)')
    .option('--wake-command <cmd>', 'shell command that wakes an asleep node before it is used, e.g. "wakeonlan {mac}"')
    .option('--wake-timeout <seconds>', 'how long a woken node may take to answer (default 120)');
}

function positiveSeconds(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${flag} must be a positive number of seconds, not "${value}"`);
  return n;
}

/**
 * The power options, or undefined when no power flag was given. Simulated nodes (the fake driver
 * under `up`) sleep and wake without commands, so for them the thresholds alone make sense.
 */
export function powerOptionsFrom(flags: PowerFlags, opts: { simulatedNodes?: boolean } = {}): ClusterPowerOptions | undefined {
  const idleThresholdS = positiveSeconds(flags.idleThreshold, 'idle-threshold');
  const wakeTimeoutS = positiveSeconds(flags.wakeTimeout, 'wake-timeout');
  if (!flags.sleepCommand && !flags.wakeCommand) {
    if (opts.simulatedNodes) return idleThresholdS === undefined && wakeTimeoutS === undefined ? undefined : { idleThresholdS, wakeTimeoutS };
    if (idleThresholdS !== undefined) throw new Error('--idle-threshold needs --sleep-command (and --wake-command to use asleep nodes again)');
    return undefined;
  }
  return { idleThresholdS, sleepCommand: flags.sleepCommand, wakeCommand: flags.wakeCommand, wakeTimeoutS };
}
