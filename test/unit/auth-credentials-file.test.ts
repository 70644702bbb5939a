import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { writeCredentialsFiles, readCredentialsEnv, readCredentials } from '../../src/auth/credentials-file.ts';

const creds = {
  accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
  region: 'ironbark-1',
  endpoint: 'http://10.0.0.5:8773/',
  accountId: '123456789012',
};

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'ironbark-creds-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('writes credentials.env and aws-config, private to the owner, and reads them back', () => {
  withDir((dir) => {
    const { envFile, awsConfigFile } = writeCredentialsFiles(dir, creds);
    assert.equal(statSync(envFile).mode & 0o777, 0o600);
    assert.equal(statSync(awsConfigFile).mode & 0o777, 0o600);
    const env = readFileSync(envFile, 'utf8');
    assert.match(env, /^export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE$/m);
    assert.match(env, /^export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI\/K7MDENG\/bPxRfiCYEXAMPLEKEY$/m);
    assert.match(env, /^export AWS_DEFAULT_REGION=ironbark-1$/m);
    assert.match(env, /^export AWS_ENDPOINT_URL_EC2=http:\/\/10\.0\.0\.5:8773\/$/m);
    assert.deepEqual(readCredentials(dir), creds);
    assert.deepEqual(readCredentialsEnv(dir), {
      AWS_ACCESS_KEY_ID: creds.accessKeyId, AWS_SECRET_ACCESS_KEY: creds.secretAccessKey, AWS_DEFAULT_REGION: 'ironbark-1',
      AWS_REGION: 'ironbark-1', AWS_ENDPOINT_URL_EC2: creds.endpoint, IRONBARK_ACCOUNT_ID: creds.accountId,
    });

    const config = readFileSync(awsConfigFile, 'utf8');
    assert.match(config, /^\[profile ironbark\]\nregion = ironbark-1\nendpoint_url = http:\/\/10\.0\.0\.5:8773\/$/m);
    assert.match(config, /^\[ironbark\]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI\/K7MDENG\/bPxRfiCYEXAMPLEKEY$/m);
    assert.deepEqual(readdirSync(dir).sort(), ['aws-config', 'credentials.env'], 'no temporary files left');
  });
});

test('a shell sourcing credentials.env gets exactly the values, even ones needing quotes', () => {
  withDir((dir) => {
    const odd = { ...creds, secretAccessKey: "it's $HOME `x` \"q\" a b" };
    writeCredentialsFiles(dir, odd);
    const out = execFileSync('sh', ['-c', `. "${join(dir, 'credentials.env')}" && printf '%s' "$AWS_SECRET_ACCESS_KEY"`], { encoding: 'utf8' });
    assert.equal(out, odd.secretAccessKey);
    assert.equal(readCredentialsEnv(dir)['AWS_SECRET_ACCESS_KEY'], odd.secretAccessKey);
  });
});

test('rewriting replaces the files and restores their private mode', () => {
  withDir((dir) => {
    writeFileSync(join(dir, 'credentials.env'), 'old', { mode: 0o644 });
    chmodSync(join(dir, 'credentials.env'), 0o644);
    writeCredentialsFiles(dir, { ...creds, accessKeyId: 'AKIANEWKEY0000000000' });
    assert.equal(statSync(join(dir, 'credentials.env')).mode & 0o777, 0o600);
    assert.equal(readCredentials(dir).accessKeyId, 'AKIANEWKEY0000000000');
  });
});

test('refuses values that would break the file, and reports missing ones on read', () => {
  withDir((dir) => {
    assert.throws(() => writeCredentialsFiles(dir, { ...creds, region: 'a\nexport X=1' }), /single-line/);
    assert.throws(() => writeCredentialsFiles(dir, { ...creds, endpoint: '' }), /endpoint/);
    writeFileSync(join(dir, 'credentials.env'), 'export AWS_ACCESS_KEY_ID=x\n');
    assert.throws(() => readCredentials(dir), /AWS_SECRET_ACCESS_KEY/);
  });
});
