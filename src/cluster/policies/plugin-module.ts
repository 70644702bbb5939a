// An operator's own allocation policy as a JavaScript or TypeScript module, loaded by path. The
// module default-exports (or exports as `policy`) either a policy object or a class whose
// instances are policies; a class is constructed with the operator's plugin options.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { AllocationPolicy } from '../policy.ts';

export class PolicyPluginError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PolicyPluginError';
  }
}

const SHAPE = 'an allocation policy: an object (or a class whose instances are objects) with a string `name` and a `choose(request, candidates, state)` method';

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'function') return `a function without a choose() method on its prototype (${value.name || 'anonymous'})`;
  if (typeof value === 'object') return `an object with keys [${Object.keys(value).join(', ')}]`;
  return `a ${typeof value}`;
}

function isPolicy(value: unknown): value is AllocationPolicy {
  const v = value as Partial<AllocationPolicy> | null;
  return typeof v === 'object' && v !== null && typeof v.name === 'string' && v.name.length > 0 && typeof v.choose === 'function';
}

export async function loadPolicyModule(path: string, pluginOptions?: unknown): Promise<AllocationPolicy> {
  const fullPath = resolve(path);
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(fullPath).href) as Record<string, unknown>;
  } catch (e) {
    throw new PolicyPluginError(`policy module ${fullPath} could not be loaded: ${e instanceof Error ? e.message : String(e)}`);
  }
  const exported = mod.default ?? mod.policy;
  if (exported === undefined) {
    throw new PolicyPluginError(`policy module ${fullPath} has neither a default export nor an export named \`policy\`; it must export ${SHAPE}`);
  }
  let policy: unknown = exported;
  if (typeof exported === 'function' && typeof (exported as { prototype?: { choose?: unknown } }).prototype?.choose === 'function') {
    try {
      policy = new (exported as new (options?: unknown) => unknown)(pluginOptions);
    } catch (e) {
      throw new PolicyPluginError(`policy module ${fullPath}: constructing ${exported.name || 'its policy class'} failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  if (!isPolicy(policy)) throw new PolicyPluginError(`policy module ${fullPath} must export ${SHAPE}; found ${describe(policy)}`);
  return policy;
}
