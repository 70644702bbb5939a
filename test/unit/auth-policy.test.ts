import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isActionAllowed, policyToJson } from '../../src/auth/policy.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';

test('ec2:* allows every EC2 action, qualified or bare', () => {
  const p = '["ec2:*"]';
  assert.equal(isActionAllowed(p, 'RunInstances'), true);
  assert.equal(isActionAllowed(p, 'ec2:TerminateInstances'), true);
  assert.equal(isActionAllowed(p, 'iam:CreateUser'), false);
});

test('prefix patterns and exact names, matched case-insensitively like IAM', () => {
  const p = '["ec2:Describe*", "ec2:RunInstances"]';
  assert.equal(isActionAllowed(p, 'DescribeInstances'), true);
  assert.equal(isActionAllowed(p, 'ec2:describeimages'), true);
  assert.equal(isActionAllowed(p, 'RunInstances'), true);
  assert.equal(isActionAllowed(p, 'RunInstancesX'), false);
  assert.equal(isActionAllowed(p, 'TerminateInstances'), false);
  assert.equal(isActionAllowed('["ec2:?escribeRegions"]', 'DescribeRegions'), true);
});

test('a deny entry beats any allow', () => {
  const p = '["ec2:*", "!ec2:TerminateInstances", "!ec2:Delete*"]';
  assert.equal(isActionAllowed(p, 'RunInstances'), true);
  assert.equal(isActionAllowed(p, 'TerminateInstances'), false);
  assert.equal(isActionAllowed(p, 'DeleteKeyPair'), false);
  assert.equal(isActionAllowed('["!ec2:RunInstances"]', 'DescribeRegions'), false);
});

test('empty or malformed policies allow nothing', () => {
  for (const p of ['[]', '', 'ec2:*', '{"a":1}', '["ec2:*", 5]', '["ec2:(.*)"]', 'null']) {
    assert.equal(isActionAllowed(p, 'DescribeRegions'), false, p);
  }
});

test('regular-expression characters in patterns are literal', () => {
  assert.equal(isActionAllowed('["ec2:Describe-Regions"]', 'DescribeXRegions'), false);
});

test('policyToJson validates patterns', () => {
  assert.equal(policyToJson(['ec2:Describe*', '!ec2:DescribeKeyPairs']), '["ec2:Describe*","!ec2:DescribeKeyPairs"]');
  assert.throws(() => policyToJson(['ec2:Describe Instances']), (e: unknown) => e instanceof Ec2Error && e.code === 'InvalidParameterValue');
  assert.throws(() => policyToJson('ec2:*' as unknown as string[]), Ec2Error);
});
