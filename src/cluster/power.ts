// Putting idle nodes to sleep and waking them for power-save scheduling (Eucalyptus' POWERSAVE:
// ncPowerDown after POWER_IDLETHRESH seconds with no instances, powerwake before use). The
// commands are the operator's own shell lines, e.g. `ssh root@{host} systemctl suspend` and
// `wakeonlan {mac}`; placeholders ({node}, {id}, {address}: the node's URL, {host}: its host part,
// {mac}) are replaced by shell-quoted values.
import { execFile } from 'node:child_process';
import { placementLog, type NodeState, type NodeView, type PlacementLog, type PlacementLogSink } from './policy.ts';

export interface CommandOutcome {
  exitCode: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export type CommandRunner = (command: string, timeoutMs: number) => Promise<CommandOutcome>;

/** What carries out a sleep or a wake: the operator's shell commands, or simulated nodes' switch. */
export interface PowerSwitch {
  readonly canSleep: boolean;
  readonly canWake: boolean;
  /** Puts `node` to sleep or wakes it: what was done (for the log), and why it failed if it did. */
  switchNode(action: 'sleep' | 'wake', node: NodeView): Promise<{ command: string; error?: string }>;
}

export interface PowerOptions {
  /** Seconds a node must sit with no instances before it is put to sleep (Eucalyptus: 300). */
  idleThresholdS?: number;
  /** Seconds a sleep or wake is taken to be under way while the node's own report has not caught up. */
  transitionS?: number;
  sleepCommand?: string;
  wakeCommand?: string;
  commandTimeoutMs?: number;
  now?: () => number;
  run?: CommandRunner;
  /** Carries out sleeps and wakes instead of the commands (simulated nodes). */
  switch?: PowerSwitch;
  log?: PlacementLogSink;
}

export interface PowerAction {
  nodeId: string;
  action: 'sleep' | 'wake';
  command: string;
  ok: boolean;
  error?: string;
}

interface Transition {
  to: 'asleep' | 'waking';
  at: number;
}

export const runShellCommand: CommandRunner = (command, timeoutMs) =>
  new Promise((resolve) => {
    execFile('/bin/sh', ['-c', command], { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const failure = err as (NodeJS.ErrnoException & { killed?: boolean; code?: number | string }) | null;
      const exitCode = failure ? (typeof failure.code === 'number' ? failure.code : null) : 0;
      resolve({ exitCode, stdout: String(stdout), stderr: String(stderr), timedOut: Boolean(failure?.killed) });
    });
  });

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** The host part of a node's address (which is a URL for a node on another host). */
function hostOf(address: string): string {
  try {
    return new URL(address).hostname.replace(/^\[(.*)\]$/, '$1');
  } catch {
    return address;
  }
}

export function expandPowerCommand(template: string, node: NodeView): string {
  return template.replace(/\{(node|address|host|mac|id)\}/g, (_, key: string) => {
    const value = key === 'node' ? node.name : key === 'address' ? node.address : key === 'host' ? hostOf(node.address)
      : key === 'mac' ? node.mac : node.id;
    if (!value) throw new Error(`node ${node.name} has no ${key === 'mac' ? 'MAC address' : key} for {${key}}`);
    return shellQuote(value);
  });
}

/** Runs the operator's sleep and wake commands, with the node's placeholders filled in. */
export class ShellPowerSwitch implements PowerSwitch {
  constructor(
    private readonly commands: { sleep?: string; wake?: string },
    private readonly run: CommandRunner = runShellCommand,
    private readonly timeoutMs = 30_000,
  ) {}

  get canSleep(): boolean { return this.commands.sleep !== undefined; }
  get canWake(): boolean { return this.commands.wake !== undefined; }

  async switchNode(action: 'sleep' | 'wake', node: NodeView): Promise<{ command: string; error?: string }> {
    const template = this.commands[action];
    if (template === undefined) return { command: '', error: `no ${action} command is configured` };
    let command = '';
    try {
      command = expandPowerCommand(template, node);
      const outcome = await this.run(command, this.timeoutMs);
      if (outcome.timedOut) return { command, error: `${action} command timed out after ${this.timeoutMs} ms` };
      if (outcome.exitCode !== 0) {
        const detail = outcome.stderr.trim().split('\n')[0];
        return { command, error: `${action} command exited with ${outcome.exitCode ?? 'a signal'}${detail ? `: ${detail}` : ''}` };
      }
      return { command };
    } catch (e) {
      return { command, error: e instanceof Error ? e.message : String(e) };
    }
  }
}

export class PowerManager {
  readonly idleThresholdS: number;
  private readonly transitionMs: number;
  private readonly switch: PowerSwitch;
  private readonly now: () => number;
  private readonly log: PlacementLog;
  private readonly transitions = new Map<string, Transition>();

  constructor(opts: PowerOptions = {}) {
    const idle = opts.idleThresholdS ?? 300;
    if (!(idle > 0)) throw new Error(`idleThresholdS must be a positive number of seconds, not ${idle}`);
    this.idleThresholdS = idle;
    this.transitionMs = (opts.transitionS ?? 300) * 1000;
    this.switch = opts.switch ?? new ShellPowerSwitch(
      { sleep: opts.sleepCommand || undefined, wake: opts.wakeCommand || undefined }, opts.run, opts.commandTimeoutMs);
    this.now = opts.now ?? Date.now;
    this.log = placementLog(opts.log);
  }

  get canSleep(): boolean {
    return this.switch.canSleep;
  }

  get canWake(): boolean {
    return this.switch.canWake;
  }

  /**
   * The node's state with our own recent sleeps and wakes applied: a node we just put to sleep
   * still reports 'up' until its next report, and must not be given instances meanwhile.
   */
  effectiveState(node: NodeView): NodeState {
    if (this.transitions.size === 0) return node.state;
    const t = this.transitions.get(node.id);
    if (!t) return node.state;
    const settled = t.to === 'asleep' ? node.state !== 'up' : node.state !== 'asleep';
    if (settled || this.now() - t.at >= this.transitionMs) {
      this.transitions.delete(node.id);
      return node.state;
    }
    return t.to;
  }

  /** Puts to sleep every node idle for longer than the threshold, except those `isBusy` names (reserved, say). */
  async tick(nodes: readonly NodeView[], isBusy: (nodeId: string) => boolean = () => false): Promise<PowerAction[]> {
    if (!this.switch.canSleep) return [];
    const now = this.now();
    const limitMs = this.idleThresholdS * 1000;
    const idle = nodes.filter((node) =>
      this.effectiveState(node) === 'up' && node.instanceCount === 0 && node.idleSince !== undefined &&
      now - node.idleSince >= limitMs && !isBusy(node.id));
    return Promise.all(idle.map((node) => this.execute('sleep', node)));
  }

  /** Runs the wake command for an asleep node; a node already being woken is not woken twice. */
  async wake(node: NodeView): Promise<PowerAction> {
    if (!this.switch.canWake) return { nodeId: node.id, action: 'wake', command: '', ok: false, error: 'no wake command is configured' };
    if (this.effectiveState(node) === 'waking') return { nodeId: node.id, action: 'wake', command: '', ok: true };
    return this.execute('wake', node);
  }

  private async execute(action: 'sleep' | 'wake', node: NodeView): Promise<PowerAction> {
    let outcome: { command: string; error?: string };
    try {
      outcome = await this.switch.switchNode(action, node);
    } catch (e) {
      outcome = { command: '', error: e instanceof Error ? e.message : String(e) };
    }
    const { command, error } = outcome;
    if (error) {
      this.log.write('warn', `could not ${action} node ${node.name}: ${error}`, { nodeId: node.id, action, command });
      return { nodeId: node.id, action, command, ok: false, error };
    }
    this.transitions.set(node.id, { to: action === 'sleep' ? 'asleep' : 'waking', at: this.now() });
    this.log.write('info', `${action === 'sleep' ? 'put idle node to sleep' : 'woke node'} ${node.name}`, { nodeId: node.id, action, command });
    return { nodeId: node.id, action, command, ok: true };
  }
}
