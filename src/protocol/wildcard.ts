// EC2 filter-value wildcards: `*` is any run of characters (none too), `?` exactly one character
// (a whole code point), and a backslash makes the next `*`, `?` or `\` literal; a backslash before
// anything else is itself literal.
//
// Matched by two pointers, never by a RegExp: a backtracking RegExp built from a value such as
// `****…*#` takes exponential time on every item it is run against, and one such request would hold
// the event loop (and so the whole cloud) for seconds. Here the work is at most pattern length times
// text length, whatever the value.

/** A compiled pattern: literal code points (strings) and the two wildcards. */
type Token = string | typeof ANY_ONE | typeof ANY_RUN;
const ANY_ONE = 1;
const ANY_RUN = 2;

export type WildcardMatcher = (text: string) => boolean;

const SURROGATE = /[\uD800-\uDFFF]/;

function tokenize(pattern: string): Token[] {
  const chars = [...pattern];
  const tokens: Token[] = [];
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    const next = chars[i + 1];
    if (c === '\\' && (next === '*' || next === '?' || next === '\\')) {
      tokens.push(next);
      i++;
    } else if (c === '*') {
      // A run of stars matches what one star does; collapsing them keeps the scan short.
      if (tokens[tokens.length - 1] !== ANY_RUN) tokens.push(ANY_RUN);
    } else if (c === '?') {
      tokens.push(ANY_ONE);
    } else {
      tokens.push(c);
    }
  }
  return tokens;
}

/**
 * Greedy star matching with one remembered star: on a mismatch, the last star absorbs one more
 * character and the scan resumes right after it. Earlier stars never need revisiting, since the
 * last one can absorb whatever they would have.
 */
function matches(tokens: Token[], text: string | string[]): boolean {
  const n = text.length;
  const m = tokens.length;
  let p = 0;
  let t = 0;
  let star = -1;
  let starText = 0;
  while (t < n) {
    const token = tokens[p];
    if (p < m && (token === ANY_ONE || token === text[t])) {
      p++;
      t++;
    } else if (p < m && token === ANY_RUN) {
      star = p++;
      starText = t;
    } else if (star >= 0) {
      p = star + 1;
      t = ++starText;
    } else {
      return false;
    }
  }
  while (p < m && tokens[p] === ANY_RUN) p++;
  return p === m;
}

/** A matcher for `pattern`; plain equality when it has no wildcard or escape. */
export function compileWildcard(pattern: string): WildcardMatcher {
  if (!/[*?\\]/.test(pattern)) return (text) => text === pattern;
  const tokens = tokenize(pattern);
  // Texts are walked by code unit unless they hold surrogate pairs, so `?` is one code point.
  return (text) => matches(tokens, SURROGATE.test(text) ? [...text] : text);
}
