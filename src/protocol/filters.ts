// Describe-call filtering as EC2 does it: Filter.N.Name / Filter.N.Value.M. Values of one filter
// are OR-ed, filters are AND-ed, `*` and `?` are wildcards, and `tag:KEY`, `tag-key`, `tag-value`
// work on every resource that has tags.
import { Ec2Error } from './errors.ts';

export interface Filter { Name?: string; Values?: string[] }

/** How to read a filter's field from an item; may return one value, a list, or undefined. */
export type FilterAccessors<T> = Record<string, (item: T) => unknown>;

export type TagsOf<T> = (item: T) => { Key: string; Value: string }[] | undefined;

const patternCache = new Map<string, RegExp | string>();

/**
 * A filter value as a matcher: a plain string when it has no wildcard or escape, else an anchored
 * RegExp. `*` is any run of characters, `?` exactly one character (a whole code point), and a
 * backslash makes the next `*`, `?` or `\\` literal, as in EC2.
 */
function matcher(value: string): RegExp | string {
  let m = patternCache.get(value);
  if (m === undefined) {
    if (!/[*?\\]/.test(value)) m = value;
    else {
      const chars = [...value];
      let re = '';
      for (let i = 0; i < chars.length; i++) {
        const c = chars[i]!;
        if (c === '\\' && (chars[i + 1] === '*' || chars[i + 1] === '?' || chars[i + 1] === '\\')) { re += '\\' + chars[++i]; continue; }
        if (c === '*') re += '[\\s\\S]*';
        else if (c === '?') re += '[\\s\\S]';
        else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
      }
      m = new RegExp(`^${re}$`, 'u');
    }
    if (patternCache.size > 10_000) patternCache.clear();
    patternCache.set(value, m);
  }
  return m;
}

function valueMatches(actual: unknown, wanted: (RegExp | string)[]): boolean {
  if (actual === undefined || actual === null) return false;
  if (Array.isArray(actual)) return actual.some((a) => valueMatches(a, wanted));
  const s = typeof actual === 'boolean' ? String(actual) : actual instanceof Date ? actual.toISOString() : String(actual);
  return wanted.some((w) => (typeof w === 'string' ? w === s : w.test(s)));
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
    if (wanted.length === 0) throw new Ec2Error('InvalidParameterValue', `The filter '${name}' requires at least one value.`);
    if (tagsOf && name.startsWith('tag:')) {
      const key = name.slice(4);
      checks.push((item) => (tagsOf(item) ?? []).some((t) => t.Key === key && valueMatches(t.Value, wanted)));
    } else if (tagsOf && name === 'tag-key') {
      checks.push((item) => (tagsOf(item) ?? []).some((t) => valueMatches(t.Key, wanted)));
    } else if (tagsOf && name === 'tag-value') {
      checks.push((item) => (tagsOf(item) ?? []).some((t) => valueMatches(t.Value, wanted)));
    } else {
      const read = accessors[name];
      if (!read) throw new Ec2Error('InvalidParameterValue', `The filter '${name}' is invalid`);
      checks.push((item) => valueMatches(read(item), wanted));
    }
  }
  return items.filter((item) => checks.every((c) => c(item)));
}
