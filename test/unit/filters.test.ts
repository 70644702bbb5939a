// Describe-call filtering and paging, as EC2 users see them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyFilters, type FilterAccessors } from '../../src/protocol/filters.ts';
import { paginate } from '../../src/protocol/pagination.ts';
import { parseInput } from '../../src/protocol/query-parser.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';
import { compileWildcard } from '../../src/protocol/wildcard.ts';

interface Item { id: string; name: string; state: string; size: number; encrypted: boolean; created: Date; groups: string[]; tags?: { Key: string; Value: string }[] }

const items: Item[] = [
  { id: 'vol-1', name: 'web-1', state: 'available', size: 8, encrypted: true, created: new Date('2024-01-01T00:00:00Z'), groups: ['sg-a'], tags: [{ Key: 'Name', Value: 'web server' }, { Key: 'env', Value: 'prod' }] },
  { id: 'vol-2', name: 'web-22', state: 'in-use', size: 16, encrypted: false, created: new Date('2024-02-01T00:00:00Z'), groups: ['sg-a', 'sg-b'], tags: [{ Key: 'Name', Value: 'db*primary' }] },
  { id: 'vol-3', name: 'db?1', state: 'available', size: 8, encrypted: false, created: new Date('2024-03-01T00:00:00Z'), groups: [], tags: [{ Key: 'env', Value: 'dev' }, { Key: 'back\\slash', Value: 'a\\b' }] },
  { id: 'vol-4', name: '日本😀x', state: 'deleting', size: 1, encrypted: false, created: new Date('2024-04-01T00:00:00Z'), groups: ['sg-c'] },
];

const accessors: FilterAccessors<Item> = {
  'volume-id': (i) => i.id,
  name: (i) => i.name,
  status: (i) => i.state,
  size: (i) => i.size,
  encrypted: (i) => i.encrypted,
  'create-time': (i) => i.created,
  'group-id': (i) => i.groups,
};
const tagsOf = (i: Item) => i.tags;

function ids(filters: { Name?: string; Values?: string[] }[] | undefined): string[] {
  return applyFilters(items, filters, accessors, tagsOf).map((i) => i.id);
}

test('no filters keeps everything', () => {
  assert.deepEqual(ids(undefined), ['vol-1', 'vol-2', 'vol-3', 'vol-4']);
  assert.deepEqual(ids([]), ['vol-1', 'vol-2', 'vol-3', 'vol-4']);
});

test('values of one filter are OR-ed, filters are AND-ed', () => {
  assert.deepEqual(ids([{ Name: 'status', Values: ['available', 'deleting'] }]), ['vol-1', 'vol-3', 'vol-4']);
  assert.deepEqual(ids([{ Name: 'status', Values: ['available'] }, { Name: 'size', Values: ['8'] }, { Name: 'encrypted', Values: ['false'] }]), ['vol-3']);
  assert.deepEqual(ids([{ Name: 'group-id', Values: ['sg-b', 'sg-c'] }]), ['vol-2', 'vol-4']);
  assert.deepEqual(ids([{ Name: 'create-time', Values: ['2024-02-01T00:00:00.000Z'] }]), ['vol-2']);
});

test('exact values are not substrings', () => {
  assert.deepEqual(ids([{ Name: 'name', Values: ['web'] }]), []);
  assert.deepEqual(ids([{ Name: 'name', Values: ['web-1'] }]), ['vol-1']);
});

test('wildcards: * is any run, ? is exactly one character', () => {
  assert.deepEqual(ids([{ Name: 'name', Values: ['web-*'] }]), ['vol-1', 'vol-2']);
  assert.deepEqual(ids([{ Name: 'name', Values: ['web-?'] }]), ['vol-1']);
  assert.deepEqual(ids([{ Name: 'name', Values: ['web-??'] }]), ['vol-2']);
  assert.deepEqual(ids([{ Name: 'name', Values: ['*'] }]), ['vol-1', 'vol-2', 'vol-3', 'vol-4']);
  assert.deepEqual(ids([{ Name: 'name', Values: ['*2'] }]), ['vol-2']);
  // `?` is one character even outside the Basic Multilingual Plane.
  assert.deepEqual(ids([{ Name: 'name', Values: ['日本?x'] }]), ['vol-4']);
  // Regular-expression syntax in a value is literal.
  assert.deepEqual(ids([{ Name: 'name', Values: ['web.*'] }]), []);
  assert.deepEqual(ids([{ Name: 'volume-id', Values: ['vol-[12]'] }]), []);
});

test('escaped wildcards are literal', () => {
  assert.deepEqual(ids([{ Name: 'name', Values: ['db\\?1'] }]), ['vol-3']);
  assert.deepEqual(ids([{ Name: 'name', Values: ['db\\?*'] }]), ['vol-3']);
  assert.deepEqual(ids([{ Name: 'name', Values: ['web\\?1'] }]), []);
  assert.deepEqual(ids([{ Name: 'tag:Name', Values: ['db\\*primary'] }]), ['vol-2']);
  assert.deepEqual(ids([{ Name: 'tag:Name', Values: ['db\\**'] }]), ['vol-2']);
  // `\\` is one literal backslash, with or without wildcards around it.
  assert.deepEqual(ids([{ Name: 'tag-value', Values: ['a\\\\b'] }]), ['vol-3']);
  assert.deepEqual(ids([{ Name: 'tag-value', Values: ['a\\\\*'] }]), ['vol-3']);
});

test('tag:KEY, tag-key and tag-value', () => {
  assert.deepEqual(ids([{ Name: 'tag:env', Values: ['prod', 'dev'] }]), ['vol-1', 'vol-3']);
  assert.deepEqual(ids([{ Name: 'tag:env', Values: ['p*'] }]), ['vol-1']);
  // The key after `tag:` is exact and case-sensitive.
  assert.deepEqual(ids([{ Name: 'tag:Env', Values: ['prod'] }]), []);
  assert.deepEqual(ids([{ Name: 'tag:back\\slash', Values: ['*'] }]), ['vol-3']);
  assert.deepEqual(ids([{ Name: 'tag-key', Values: ['Name'] }]), ['vol-1', 'vol-2']);
  assert.deepEqual(ids([{ Name: 'tag-key', Values: ['e?v'] }]), ['vol-1', 'vol-3']);
  assert.deepEqual(ids([{ Name: 'tag-value', Values: ['web *'] }]), ['vol-1']);
  // A key and a value from different tags do not make a match for tag:KEY.
  assert.deepEqual(ids([{ Name: 'tag:Name', Values: ['prod'] }]), []);
});

test('an unknown filter is an EC2 error, not ignored', () => {
  assert.throws(() => ids([{ Name: 'colour', Values: ['red'] }]), (e: unknown) => e instanceof Ec2Error && e.code === 'InvalidParameterValue' && e.message === "The filter 'colour' is invalid");
  // Without a tag reader, tag filters are unknown too.
  assert.throws(() => applyFilters(items, [{ Name: 'tag:env', Values: ['prod'] }], accessors), (e: unknown) => e instanceof Ec2Error && e.code === 'InvalidParameterValue');
  assert.throws(() => ids([{ Name: 'status', Values: [] }]), (e: unknown) => e instanceof Ec2Error && e.code === 'InvalidParameterValue');
  assert.throws(() => ids([{ Values: ['x'] }]), (e: unknown) => e instanceof Ec2Error && e.code === 'InvalidParameterValue');
});

test('wildcard semantics: *, ?, and the escapes \\*, \\? and \\\\', () => {
  const match = (pattern: string, text: string) => compileWildcard(pattern)(text);
  assert.equal(match('*', ''), true);
  assert.equal(match('a*', 'a'), true);
  assert.equal(match('a*c', 'abbbc'), true);
  assert.equal(match('a*c', 'abbbd'), false);
  assert.equal(match('*a*b*', 'xxaxxbxx'), true);
  assert.equal(match('*a*b', 'xxaxxbxxc'), false);
  assert.equal(match('?', ''), false);
  assert.equal(match('??', 'ab'), true);
  assert.equal(match('a?c', 'abc'), true);
  assert.equal(match('a?c', 'ac'), false);
  assert.equal(match('😀?', '😀😀'), true);
  assert.equal(match('?', '😀'), true);
  // The last star must be able to give back what it took: `*ab` against `aab`.
  assert.equal(match('*ab', 'aab'), true);
  assert.equal(match('*?b', 'b'), false);
  assert.equal(match('*?b', 'xb'), true);
  // Escapes: `\*` and `\?` are the characters themselves, `\\` one backslash.
  assert.equal(match('a\\*', 'a*'), true);
  assert.equal(match('a\\*', 'ab'), false);
  assert.equal(match('a\\?', 'a?'), true);
  assert.equal(match('a\\?', 'ab'), false);
  assert.equal(match('a\\\\b', 'a\\b'), true);
  assert.equal(match('a\\\\*', 'a\\anything'), true);
  assert.equal(match('a\\\\*', 'a*'), false);
  // A backslash before any other character is itself literal, and so is a trailing one.
  assert.equal(match('a\\b', 'a\\b'), true);
  assert.equal(match('a\\', 'a\\'), true);
  // RegExp syntax means nothing.
  assert.equal(match('.*', 'abc'), false);
  assert.equal(match('(a|b)*', '(a|b)zz'), true);
});

test('a value made to backtrack is matched at once (issue 8: 26 stars and a # froze the cloud)', () => {
  // With a backtracking RegExp each of these took seconds (26 stars) to far longer (more stars).
  const regions = [{ name: 'ironbark-1' }, { name: 'x'.repeat(200) }];
  const region = { 'region-name': (r: { name: string }) => r.name };
  for (const stars of [26, 60, 2000]) {
    const value = `${'*'.repeat(stars)}#`;
    assert.deepEqual(applyFilters(regions, [{ Name: 'region-name', Values: [value] }], region), []);
    assert.deepEqual(applyFilters(regions, [{ Name: 'region-name', Values: [`${'*?'.repeat(stars)}#`] }], region), []);
    assert.deepEqual(applyFilters(regions, [{ Name: 'region-name', Values: [`${'*x'.repeat(stars)}*`] }], region).length, stars <= 200 ? 1 : 0);
  }
});

test('filter names that are JavaScript built-ins are unknown filters', () => {
  for (const name of ['hasOwnProperty', '__proto__', 'valueOf', 'constructor', 'toString', 'isPrototypeOf', '__defineGetter__']) {
    assert.throws(() => ids([{ Name: name, Values: ['x'] }]),
      (e: unknown) => e instanceof Ec2Error && e.code === 'InvalidParameterValue' && e.status === 400 && e.message === `The filter '${name}' is invalid`, name);
  }
});

test('an unknown filter name is quoted only in part', () => {
  const name = 'n'.repeat(10_000);
  assert.throws(() => ids([{ Name: name, Values: ['x'] }]), (e: unknown) => e instanceof Ec2Error && e.message === `The filter '${'n'.repeat(64)}…' is invalid`);
});

test('filters straight from a parsed DescribeVolumes query', () => {
  const input = parseInput('DescribeVolumes', {
    Action: 'DescribeVolumes', 'Filter.1.Name': 'status', 'Filter.1.Value.1': 'available', 'Filter.2.Name': 'tag-key', 'Filter.2.Value.1': 'env',
  });
  assert.deepEqual(applyFilters(items, input.Filters, accessors, tagsOf).map((i) => i.id), ['vol-1', 'vol-3']);
});

const numbers = Array.from({ length: 12 }, (_, i) => i + 1);

test('pagination walks every item once, and the last page has no token', () => {
  const seen: number[] = [];
  let token: string | undefined;
  let pages = 0;
  do {
    const { page, nextToken } = paginate(numbers, { MaxResults: 5, NextToken: token }, 'q1');
    seen.push(...page);
    token = nextToken;
    pages++;
  } while (token);
  assert.deepEqual(seen, numbers);
  assert.equal(pages, 3);
  // An exactly full last page does not promise another.
  assert.equal(paginate(numbers.slice(0, 10), { MaxResults: 5, NextToken: paginate(numbers.slice(0, 10), { MaxResults: 5 }, 'q').nextToken }, 'q').nextToken, undefined);
});

test('without MaxResults everything comes back, from the token on when there is one', () => {
  assert.deepEqual(paginate(numbers, {}), { page: numbers });
  const first = paginate(numbers, { MaxResults: 5 }, 'q');
  assert.deepEqual(paginate(numbers, { NextToken: first.nextToken }, 'q').page, numbers.slice(5));
});

test('a token from another query, or a forged one, is refused', () => {
  const { nextToken } = paginate(numbers, { MaxResults: 5 }, 'filters=a');
  assert.ok(nextToken);
  const refused = (e: unknown) => e instanceof Ec2Error && e.code === 'InvalidNextToken' && e.status === 400;
  assert.throws(() => paginate(numbers, { MaxResults: 5, NextToken: nextToken }, 'filters=b'), refused);
  assert.throws(() => paginate(numbers, { MaxResults: 5, NextToken: 'garbage' }, 'filters=a'), refused);
  assert.throws(() => paginate(numbers, { MaxResults: 5, NextToken: Buffer.from('null').toString('base64url') }, 'filters=a'), refused);
  assert.throws(() => paginate(numbers, { MaxResults: 5, NextToken: Buffer.from(JSON.stringify({ o: -5, f: 'filters=a' })).toString('base64url') }, 'filters=a'), refused);
});

test('MaxResults out of range is refused with EC2 wording', () => {
  for (const MaxResults of [4, 1001, 2.5]) {
    assert.throws(() => paginate(numbers, { MaxResults }), (e: unknown) => e instanceof Ec2Error && e.code === 'InvalidParameterValue'
      && e.message === `Value ( ${MaxResults} ) for parameter maxResults is invalid. Parameter must be between 5 and 1000.`);
  }
  assert.deepEqual(paginate(numbers, { MaxResults: 2 }, '', { min: 1, max: 100 }).page, [1, 2]);
});
