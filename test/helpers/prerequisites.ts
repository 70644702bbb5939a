// What a test needs from the machine (a package, root, the guest image, PostgreSQL). Run by hand,
// a test whose prerequisite is missing is skipped with the reason; under CI=true the test command
// has installed everything, so a missing prerequisite is a failure that names it, never a skip
// that would let the suite go green without running the test.

export const underCi = process.env.CI === 'true' || process.env.CI === '1';

export class MissingPrerequisiteError extends Error {
  constructor(what: string) {
    super(`missing prerequisite: ${what}. Under CI=true nothing is skipped: npm test (scripts/test.sh) installs or builds it, so this means that step did not.`);
    this.name = 'MissingPrerequisiteError';
  }
}

/**
 * The `skip` option for a test or suite: false when nothing is missing, the reason when run by
 * hand, and a thrown MissingPrerequisiteError (failing the file) under CI.
 */
export function skipUnlessPresent(missing: string | undefined | false): string | false {
  if (!missing) return false;
  if (underCi) throw new MissingPrerequisiteError(missing);
  return missing;
}

/** The private PostgreSQL server the test command started, or undefined (an error under CI). */
export function testPostgresUrl(): string | undefined {
  const url = process.env.IRONBARK_TEST_PG_URL;
  if (!url) skipUnlessPresent('IRONBARK_TEST_PG_URL (the private PostgreSQL server scripts/test.sh starts)');
  return url || undefined;
}
