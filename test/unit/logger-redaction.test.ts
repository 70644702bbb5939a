// Log lines never carry a secret (issue 11, item 1): fields named like one are redacted by the
// logger every role uses, whatever object a log call passes (a row, credentials, a body).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../src/cli/logger.ts';

test('secret-named fields are redacted at the top level and one level down', () => {
  const lines: string[] = [];
  const log = createLogger('test', { write: (line: string) => { lines.push(line); } });
  log.info({ secret: 's3cr3t-cluster', row: { access_key_id: 'AKIAEXAMPLE', secret_access_key: 's3cr3t-key' }, creds: { secretAccessKey: 's3cr3t-sdk' }, token: 's3cr3t-token' }, 'hello');
  assert.equal(lines.length, 1);
  const entry = JSON.parse(lines[0]!);
  assert.equal(entry.row.access_key_id, 'AKIAEXAMPLE');
  for (const secret of ['s3cr3t-cluster', 's3cr3t-key', 's3cr3t-sdk', 's3cr3t-token']) assert.equal(lines[0]!.includes(secret), false, secret);
  assert.equal(entry.secret, '[redacted]');
  assert.equal(entry.row.secret_access_key, '[redacted]');
});
