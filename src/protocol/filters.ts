// Describe-call filtering as EC2 does it: Filter.N.Name / Filter.N.Value.M. Values of one filter
// are OR-ed, filters are AND-ed, `*` and `?` are wildcards, and `tag:KEY`, `tag-key`, `tag-value`
// work on every resource that has tags.
import { Ec2Error, excerpt } from './errors.ts';
import { compileWildcard, type WildcardMatcher } from './wildcard.ts';

export interface Filter { Name?: string; Values?: string[] }

/** How to read a filter's field from an item; may return one value, a list, or undefined. */
export type FilterAccessors<T> = Record<string, (item: T) => unknown>;

export type TagsOf<T> = (item: T) => { Key: string; Value: string }[] | undefined;

const matcherCache = new Map<string, WildcardMatcher>();
/** Longer values are compiled per request: caching them would let requests fill memory. */
const MAX_CACHED_VALUE_CHARS = 256;

function matcher(value: string): WildcardMatcher {
  let m = matcherCache.get(value);
  if (m === undefined) {
    m = compileWildcard(value);
    if (value.length > MAX_CACHED_VALUE_CHARS) return m;
    if (matcherCache.size > 10_000) matcherCache.clear();
    matcherCache.set(value, m);
  }
  return m;
}

/**
 * The accessor of a filter name, from the table's own entries only: a name such as `constructor`,
 * `toString` or `__proto__` is an unknown filter, not something inherited from Object.prototype.
 */
function accessorOf<T>(accessors: FilterAccessors<T>, name: string): ((item: T) => unknown) | undefined {
  return Object.hasOwn(accessors, name) ? accessors[name] : undefined;
}

function valueMatches(actual: unknown, wanted: WildcardMatcher[]): boolean {
  if (actual === undefined || actual === null) return false;
  if (Array.isArray(actual)) return actual.some((a) => valueMatches(a, wanted));
  const s = typeof actual === 'boolean' ? String(actual) : actual instanceof Date ? actual.toISOString() : String(actual);
  return wanted.some((w) => w(s));
}

/**
 * Keeps the items that pass every filter. An unknown filter name is an EC2 error
 * (`InvalidParameterValue`, as EC2 answers), never a silently ignored filter.
 */
export function applyFilters<T>(items: T[], filters: Filter[] | undefined, accessors: FilterAccessors<T>, tagsOf?: TagsOf<T>): T[] {
  if (!filters || filters.length === 0) return items;
  const checks: ((item: T) => boolean)[] = [];
  for (const f of filters) {
    const name = f.Name;
    if (!name) throw new Ec2Error('InvalidParameterValue', 'The filter name must not be empty.');
    const wanted = (f.Values ?? []).map(matcher);
    if (wanted.length === 0) throw new Ec2Error('InvalidParameterValue', `The filter '${excerpt(name)}' requires at least one value.`);
    if (tagsOf && name.startsWith('tag:')) {
      const key = name.slice(4);
      checks.push((item) => (tagsOf(item) ?? []).some((t) => t.Key === key && valueMatches(t.Value, wanted)));
    } else if (tagsOf && name === 'tag-key') {
      checks.push((item) => (tagsOf(item) ?? []).some((t) => valueMatches(t.Key, wanted)));
    } else if (tagsOf && name === 'tag-value') {
      checks.push((item) => (tagsOf(item) ?? []).some((t) => valueMatches(t.Value, wanted)));
    } else {
      const read = accessorOf(accessors, name);
      if (!read) throw new Ec2Error('InvalidParameterValue', `The filter '${excerpt(name)}' is invalid`);
      checks.push((item) => valueMatches(read(item), wanted));
    }
  }
  return items.filter((item) => checks.every((c) => c(item)));
}
