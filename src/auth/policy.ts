// User policies: a JSON array of action patterns ("ec2:*", "ec2:Describe*", "ec2:RunInstances"),
// where an entry starting with '!' denies. A deny beats any allow; anything not allowed is denied.
import { Ec2Error } from '../protocol/errors.ts';

const PATTERN = /^!?(\*|[A-Za-z0-9-]+:[A-Za-z0-9*?]+)$/;

interface CompiledPolicy {
  allow: RegExp[];
  deny: RegExp[];
}

// Policies are few and requests many: compile each distinct policy text once.
const COMPILED_LIMIT = 1000;
const compiled = new Map<string, CompiledPolicy | null>();

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\-]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  // IAM matches action names case-insensitively.
  return new RegExp(`^${body}$`, 'i');
}

function compile(policyJson: string): CompiledPolicy | null {
  let patterns: unknown;
  try {
    patterns = JSON.parse(policyJson);
  } catch {
    return null;
  }
  if (!Array.isArray(patterns)) return null;
  const policy: CompiledPolicy = { allow: [], deny: [] };
  for (const p of patterns) {
    if (typeof p !== 'string' || !PATTERN.test(p)) return null;
    if (p.startsWith('!')) policy.deny.push(globToRegExp(p.slice(1)));
    else policy.allow.push(globToRegExp(p));
  }
  return policy;
}

/** `action` is "ec2:RunInstances" or a bare EC2 action name ("RunInstances"). A malformed policy allows nothing. */
export function isActionAllowed(policyJson: string, action: string): boolean {
  let policy = compiled.get(policyJson);
  if (policy === undefined) {
    policy = compile(policyJson);
    if (compiled.size >= COMPILED_LIMIT) compiled.clear();
    compiled.set(policyJson, policy);
  }
  if (policy === null) return false;
  const qualified = action.includes(':') ? action : `ec2:${action}`;
  if (policy.deny.some((re) => re.test(qualified))) return false;
  return policy.allow.some((re) => re.test(qualified));
}

/** Checks a list of patterns and returns the JSON text stored for it. */
export function policyToJson(patterns: readonly string[]): string {
  if (!Array.isArray(patterns)) {
    throw new Ec2Error('InvalidParameterValue', 'A policy must be a list of action patterns such as "ec2:Describe*".');
  }
  for (const p of patterns) {
    if (typeof p !== 'string' || !PATTERN.test(p)) {
      throw new Ec2Error('InvalidParameterValue',
        `Invalid policy entry ${JSON.stringify(p)}: expected an action pattern such as "ec2:*", "ec2:Describe*" or "!ec2:TerminateInstances".`);
    }
  }
  return JSON.stringify(patterns);
}
