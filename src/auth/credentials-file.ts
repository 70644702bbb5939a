// The files an operator hands to users after set-up: `credentials.env` to source in a shell (like
// Eucalyptus' eucarc) and `aws-config`, an aws CLI profile to paste. Both hold a secret, so they
// are private to the owner (0600) and replaced atomically, never left half-written.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensurePrivateDirSync, writePrivateFileSync } from '../store/private-files.ts';

export interface CloudCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  endpoint: string;
  accountId: string;
}

export const CREDENTIALS_ENV = 'credentials.env';
export const AWS_CONFIG = 'aws-config';
export const PROFILE_NAME = 'ironbark';

const SAFE_SHELL_WORD = /^[A-Za-z0-9_@%+=:,./-]+$/;

function shellQuote(value: string): string {
  return SAFE_SHELL_WORD.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

function assertSingleLine(c: CloudCredentials): void {
  for (const [name, value] of Object.entries(c)) {
    if (typeof value !== 'string' || value === '' || /[\r\n]/.test(value)) {
      throw new Error(`credentials file: ${name} must be a non-empty single-line string`);
    }
  }
}

export function credentialsEnvText(c: CloudCredentials): string {
  const vars: Array<[string, string]> = [
    ['AWS_ACCESS_KEY_ID', c.accessKeyId],
    ['AWS_SECRET_ACCESS_KEY', c.secretAccessKey],
    ['AWS_DEFAULT_REGION', c.region],
    // SDKs for JavaScript, Go and Java read AWS_REGION rather than AWS_DEFAULT_REGION.
    ['AWS_REGION', c.region],
    ['AWS_ENDPOINT_URL_EC2', c.endpoint],
    ['IRONBARK_ACCOUNT_ID', c.accountId],
  ];
  return [
    `# Ironbark credentials for account ${c.accountId}. Use them with: . ${CREDENTIALS_ENV}`,
    '# Keep this file private: it holds a secret access key.',
    ...vars.map(([k, v]) => `export ${k}=${shellQuote(v)}`),
    '',
  ].join('\n');
}

export function awsConfigText(c: CloudCredentials): string {
  return [
    `# Ironbark aws CLI profile for account ${c.accountId}.`,
    `# Paste the [profile ${PROFILE_NAME}] section into ~/.aws/config and the [${PROFILE_NAME}] section into`,
    `# ~/.aws/credentials, then run e.g.: aws --profile ${PROFILE_NAME} ec2 describe-instances`,
    `# Or use this file as it is: AWS_CONFIG_FILE=<this file> AWS_SHARED_CREDENTIALS_FILE=<this file> aws --profile ${PROFILE_NAME} ...`,
    '',
    `[profile ${PROFILE_NAME}]`,
    `region = ${c.region}`,
    `endpoint_url = ${c.endpoint}`,
    '',
    `[${PROFILE_NAME}]`,
    `aws_access_key_id = ${c.accessKeyId}`,
    `aws_secret_access_key = ${c.secretAccessKey}`,
    '',
  ].join('\n');
}

/** Writes DIR/credentials.env and DIR/aws-config (mode 0600, DIR 0700) and returns their paths. */
export function writeCredentialsFiles(dataDir: string, credentials: CloudCredentials): { envFile: string; awsConfigFile: string } {
  assertSingleLine(credentials);
  ensurePrivateDirSync(dataDir);
  const envFile = join(dataDir, CREDENTIALS_ENV);
  const awsConfigFile = join(dataDir, AWS_CONFIG);
  writePrivateFileSync(envFile, credentialsEnvText(credentials));
  writePrivateFileSync(awsConfigFile, awsConfigText(credentials));
  return { envFile, awsConfigFile };
}

function shellUnquote(raw: string): string {
  let out = '';
  let i = 0;
  while (i < raw.length) {
    const ch = raw[i]!;
    if (ch === "'") {
      const end = raw.indexOf("'", i + 1);
      if (end < 0) throw new Error('credentials file: unterminated quote');
      out += raw.slice(i + 1, end);
      i = end + 1;
    } else if (ch === '"') {
      const end = raw.indexOf('"', i + 1);
      if (end < 0) throw new Error('credentials file: unterminated quote');
      out += raw.slice(i + 1, end).replace(/\\(["\\$`])/g, '$1');
      i = end + 1;
    } else if (ch === '\\' && i + 1 < raw.length) {
      out += raw[i + 1];
      i += 2;
    } else {
      out += ch;
      i++;
    }
  }
  return out;
}

/** The variables DIR/credentials.env sets, by name (e.g. `AWS_ACCESS_KEY_ID`). */
export function readCredentialsEnv(dataDir: string): Record<string, string> {
  const text = readFileSync(join(dataDir, CREDENTIALS_ENV), 'utf8');
  const vars: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (m) vars[m[1]!] = shellUnquote(m[2]!.trim());
  }
  return vars;
}

/** DIR/credentials.env as credentials; throws if the file lacks any value it must hold. */
export function readCredentials(dataDir: string): CloudCredentials {
  const vars = readCredentialsEnv(dataDir);
  const pick = (name: string): string => {
    const v = vars[name];
    if (!v) throw new Error(`${join(dataDir, CREDENTIALS_ENV)} does not set ${name}`);
    return v;
  };
  return {
    accessKeyId: pick('AWS_ACCESS_KEY_ID'),
    secretAccessKey: pick('AWS_SECRET_ACCESS_KEY'),
    region: vars['AWS_DEFAULT_REGION'] || pick('AWS_REGION'),
    endpoint: pick('AWS_ENDPOINT_URL_EC2'),
    accountId: pick('IRONBARK_ACCOUNT_ID'),
  };
}
