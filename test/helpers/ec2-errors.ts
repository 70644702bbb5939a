// Assertions that a call failed with one particular EC2 error, for handler, protocol and auth tests.
import assert from 'node:assert/strict';
import { Ec2Error } from '../../src/protocol/errors.ts';

export interface Ec2ErrorExpectation {
  /** The HTTP status the error must carry (auth failures differ only in it). */
  status?: number;
}

/**
 * A validator for `assert.rejects` / `assert.throws`: the error is an Ec2Error with this code and,
 * when given, this exact message (string) or a message matching it (RegExp).
 */
export function isEc2Error(code: string, message?: string | RegExp, expected: Ec2ErrorExpectation = {}) {
  return (e: unknown): true => {
    assert.ok(e instanceof Ec2Error, `expected Ec2Error ${code}, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (expected.status !== undefined) assert.equal(e.status, expected.status, `${code}: ${e.message}`);
    if (typeof message === 'string') assert.equal(e.message, message);
    else if (message) assert.match(e.message, message);
    return true;
  };
}

/** Awaits `promise` and asserts it rejected with the EC2 error described (see isEc2Error). */
export async function expectEc2Error(promise: Promise<unknown>, code: string, message?: string | RegExp, expected: Ec2ErrorExpectation = {}): Promise<void> {
  await assert.rejects(promise, isEc2Error(code, message, expected));
}

/** Calls `fn` and asserts it threw the EC2 error described (see isEc2Error). */
export function expectEc2ErrorSync(fn: () => unknown, code: string, message?: string | RegExp, expected: Ec2ErrorExpectation = {}): void {
  assert.throws(fn, isEc2Error(code, message, expected));
}
