// Allocation policies by name, as an operator writes them in the cluster configuration:
//   greedy | round-robin | power-save        (Eucalyptus' GREEDY, ROUNDROBIN, POWERSAVE also work)
//   module:/path/policy.ts                   a JS/TS module exporting a policy
//   exec:/path/tool                          an executable answering on stdout
// A bare path ending in .js/.mjs/.cjs/.ts/.mts is a module; any other path to an executable file is exec.
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import type { AllocationPolicy } from '../policy.ts';
import { GreedyPolicy } from './greedy.ts';
import { ExecutablePolicy } from './plugin-executable.ts';
import { loadPolicyModule, PolicyPluginError } from './plugin-module.ts';
import { PowerSavePolicy } from './power-save.ts';
import { RoundRobinPolicy } from './round-robin.ts';

export { PolicyPluginError } from './plugin-module.ts';

export const BUILT_IN_POLICIES = ['greedy', 'round-robin', 'power-save'] as const;

export interface CreatePolicyOptions {
  /** How long an executable plugin may take per instance (default 5 s). */
  timeoutMs?: number;
  /** Handed to the constructor when a module plugin exports a class. */
  pluginOptions?: unknown;
}

const BUILT_INS: Record<string, () => AllocationPolicy> = {
  greedy: () => new GreedyPolicy(),
  roundrobin: () => new RoundRobinPolicy(),
  powersave: () => new PowerSavePolicy(),
};

const MODULE_EXTENSIONS = /\.(?:js|mjs|cjs|ts|mts)$/;

export async function createPolicy(nameOrSpec: string, opts: CreatePolicyOptions = {}): Promise<AllocationPolicy> {
  const spec = nameOrSpec.trim();
  if (spec.startsWith('module:')) return loadPolicyModule(spec.slice('module:'.length), opts.pluginOptions);
  if (spec.startsWith('exec:')) return executable(spec.slice('exec:'.length), opts);
  const builtIn = BUILT_INS[spec.toLowerCase().replace(/[-_]/g, '')];
  if (builtIn) return builtIn();
  if (spec.includes('/')) {
    if (MODULE_EXTENSIONS.test(spec)) return loadPolicyModule(spec, opts.pluginOptions);
    return executable(spec, opts);
  }
  throw new PolicyPluginError(
    `unknown allocation policy ${JSON.stringify(nameOrSpec)}: use one of ${BUILT_IN_POLICIES.join(', ')}, module:/path/to/policy.ts or exec:/path/to/program`);
}

async function executable(path: string, opts: CreatePolicyOptions): Promise<AllocationPolicy> {
  try {
    if (!(await stat(path)).isFile()) throw new Error('not a regular file');
    await access(path, constants.X_OK);
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'EACCES' ? 'not executable' : (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message;
    throw new PolicyPluginError(`policy plugin ${path} cannot be used: ${why}`);
  }
  return new ExecutablePolicy(path, { timeoutMs: opts.timeoutMs });
}
