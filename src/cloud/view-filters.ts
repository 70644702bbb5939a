// Filters that read the structure a Describe answer shows, for the many documented filters whose
// attribute this cloud fixes or does not model (an instance's metadata options, an instance type's
// EBS info, a subnet's IPv6 associations): such a filter matches exactly the value the answer
// shows, and nothing where the answer shows nothing, never everything.
import type { FilterAccessors } from '../protocol/filters.ts';

/** Follows a dotted member path (`NetworkInterfaces.Attachment.Status`) through objects; lists are searched element by element. */
function pick(value: unknown, keys: readonly string[], from = 0): unknown {
  if (value === undefined || value === null) return undefined;
  if (Array.isArray(value)) {
    const found = value.flatMap((v) => {
      const x = pick(v, keys, from);
      return x === undefined ? [] : Array.isArray(x) ? x : [x];
    });
    return found.length > 0 ? found : undefined;
  }
  if (from === keys.length) return value;
  if (typeof value !== 'object') return undefined;
  return pick((value as Record<string, unknown>)[keys[from]!], keys, from + 1);
}

/**
 * Filters by name, each reading a member path of the view `view(item)` (made once per item, only
 * when one of these filters is used).
 */
export function viewFilters<T extends object>(view: (item: T) => unknown, paths: Record<string, string>): FilterAccessors<T> {
  const views = new WeakMap<T, unknown>();
  const shown = (item: T): unknown => {
    if (!views.has(item)) views.set(item, view(item));
    return views.get(item);
  };
  const out: FilterAccessors<T> = {};
  for (const [name, keys] of splitPathsOf(paths)) out[name] = (item) => pick(shown(item), keys);
  return out;
}

// The accessors are made on every Describe call (their view depends on the call); the member
// paths, fixed tables of a hundred entries, are split once.
const splitPaths = new WeakMap<Record<string, string>, Array<[string, string[]]>>();

function splitPathsOf(paths: Record<string, string>): Array<[string, string[]]> {
  let split = splitPaths.get(paths);
  if (split === undefined) splitPaths.set(paths, split = Object.entries(paths).map(([name, path]) => [name, path.split('.')]));
  return split;
}

/** A documented filter on an attribute nothing in this cloud has: it matches no item (EC2 shows no value). */
export const noValue = (): undefined => undefined;

/** The same accessor under every name in `names`. */
export function noValueFilters(names: readonly string[]): Record<string, typeof noValue> {
  return Object.fromEntries(names.map((n) => [n, noValue]));
}
