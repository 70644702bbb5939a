// SSH key material: generated keys must really work (sign/verify, ssh-keygen, puttygen when the
// machine has them), imports accept EC2's formats and refuse the rest, fingerprints are EC2's.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPrivateKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sshpk from 'sshpk';
import { createSshKey, openSshPublicKey, parsePublicKeyMaterial, publicKeyObject } from '../../src/cloud/ssh-keys.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

function hasTool(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const sshKeygen = hasTool('ssh-keygen');
const puttygen = hasTool('puttygen');

function withTempDir<T>(work: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'ibk-ssh-'));
  try {
    return work(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `ssh-keygen -y`: the public key OpenSSH itself derives from a private key file. */
function sshKeygenPublic(privateKeyMaterial: string): string {
  return withTempDir((dir) => {
    const file = join(dir, 'key');
    writeFileSync(file, privateKeyMaterial, { mode: 0o600 });
    return execFileSync('ssh-keygen', ['-y', '-f', file], { encoding: 'utf8' }).trim();
  });
}

/** A node private key from any private key file sshpk reads (OpenSSH, PuTTY...). */
function nodePrivateKey(material: string | Buffer, format: 'ssh-private' | 'putty' | 'auto'): KeyObject {
  // @types/sshpk does not list the 'putty' format sshpk reads.
  const key = sshpk.parsePrivateKey(material, format as sshpk.PrivateKeyFormatType);
  if (key.type === 'rsa') return createPrivateKey(key.toString('pkcs1'));
  const part = (name: string) => key.parts.find((p) => String(p.name) === name)!.data.subarray(-32).toString('base64url');
  return createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: part('k'), x: part('A') }, format: 'jwk' });
}

const keyPart = (line: string) => line.split(' ').slice(0, 2).join(' ');

function assertSignsFor(privateKey: KeyObject, publicBlob: Buffer): void {
  const data = Buffer.from('ironbark signs this');
  const algorithm = privateKey.asymmetricKeyType === 'rsa' ? 'sha256' : null;
  const signature = sign(algorithm, data, privateKey);
  assert.ok(verify(algorithm, data, publicKeyObject(publicBlob), signature), 'signature verifies with the stored public key');
  assert.ok(!verify(algorithm, Buffer.from('something else'), publicKeyObject(publicBlob), signature));
}

function ec2Error(code: string, message?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof Ec2Error, `expected Ec2Error, got ${e}`);
    assert.equal(e.code, code);
    if (message) assert.match(e.message, message);
    return true;
  };
}

describe('created RSA key pairs', () => {
  it('are 2048-bit PKCS#1 PEM keys, fingerprinted by SHA-1 of the PKCS#8 DER, that really sign', async () => {
    const key = await createSshKey('rsa', 'pem', 'my-key');
    assert.match(key.privateKeyMaterial, /^-----BEGIN RSA PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+\n-----END RSA PRIVATE KEY-----$/);
    const privateKey = createPrivateKey(key.privateKeyMaterial);
    assert.equal(privateKey.asymmetricKeyDetails?.modulusLength, 2048);
    const sha1 = createHash('sha1').update(privateKey.export({ type: 'pkcs8', format: 'der' })).digest('hex');
    assert.equal(key.fingerprint, sha1.match(/../g)!.join(':'));
    assert.match(key.fingerprint, /^([0-9a-f]{2}:){19}[0-9a-f]{2}$/);
    assertSignsFor(privateKey, key.publicKeyBlob);
    const line = openSshPublicKey(key.publicKeyBlob, 'my-key');
    assert.match(line, /^ssh-rsa AAAAB3NzaC1yc2E[A-Za-z0-9+/=]+ my-key$/);
  });

  it('are read back by ssh-keygen as the same public key', { skip: skipUnlessPresent(!sshKeygen && 'ssh-keygen (Debian openssh-client)') }, async () => {
    const key = await createSshKey('rsa', 'pem', 'k');
    assert.equal(keyPart(sshKeygenPublic(key.privateKeyMaterial)), keyPart(openSshPublicKey(key.publicKeyBlob, '')));
  });
});

describe('created ED25519 key pairs', () => {
  it('are OpenSSH private keys, fingerprinted by base64 SHA-256 of the public blob, that really sign', async () => {
    const key = await createSshKey('ed25519', 'pem', 'edkey');
    assert.match(key.privateKeyMaterial, /^-----BEGIN OPENSSH PRIVATE KEY-----\n[\s\S]+\n-----END OPENSSH PRIVATE KEY-----\n$/);
    assert.equal(key.fingerprint, createHash('sha256').update(key.publicKeyBlob).digest('base64'));
    assert.match(key.fingerprint, /^[A-Za-z0-9+/]{43}=$/);
    assert.equal(sshpk.parsePrivateKey(key.privateKeyMaterial, 'ssh-private').comment, 'edkey');
    assertSignsFor(nodePrivateKey(key.privateKeyMaterial, 'ssh-private'), key.publicKeyBlob);
  });

  it('are read back by ssh-keygen, whose SHA256 fingerprint is EC2\'s without the padding', { skip: skipUnlessPresent(!sshKeygen && 'ssh-keygen (Debian openssh-client)') }, async () => {
    const key = await createSshKey('ed25519', 'pem', 'k');
    const line = openSshPublicKey(key.publicKeyBlob, 'k');
    assert.equal(keyPart(sshKeygenPublic(key.privateKeyMaterial)), keyPart(line));
    const listed = withTempDir((dir) => {
      writeFileSync(join(dir, 'k.pub'), line + '\n');
      return execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', join(dir, 'k.pub')], { encoding: 'utf8' });
    });
    assert.equal(listed.split(' ')[1], `SHA256:${key.fingerprint.replace(/=+$/, '')}`);
  });
});

describe('created PuTTY (ppk) key pairs', () => {
  for (const keyType of ['rsa', 'ed25519'] as const) {
    it(`${keyType}: a version 2 file whose private part matches its public part`, async () => {
      const key = await createSshKey(keyType, 'ppk', 'putty-key');
      const algorithm = keyType === 'rsa' ? 'ssh-rsa' : 'ssh-ed25519';
      assert.match(key.privateKeyMaterial, new RegExp(`^PuTTY-User-Key-File-2: ${algorithm}\nEncryption: none\nComment: putty-key\nPublic-Lines: \\d+\n`));
      assert.match(key.privateKeyMaterial, /\nPrivate-MAC: [0-9a-f]{40}\n$/);
      assertSignsFor(nodePrivateKey(key.privateKeyMaterial, 'putty'), key.publicKeyBlob);
    });

    it(`${keyType}: puttygen accepts the file (MAC and key) and converts it back`, { skip: skipUnlessPresent(!puttygen && 'puttygen (Debian putty-tools)') }, async () => {
      const key = await createSshKey(keyType, 'ppk', 'putty-key');
      withTempDir((dir) => {
        const ppk = join(dir, 'key.ppk');
        writeFileSync(ppk, key.privateKeyMaterial, { mode: 0o600 });
        const pub = join(dir, 'key.pub');
        execFileSync('puttygen', [ppk, '-O', 'public-openssh', '-o', pub], { stdio: 'pipe' });
        assert.equal(keyPart(readFileSync(pub, 'utf8').trim()), keyPart(openSshPublicKey(key.publicKeyBlob, '')));
        const openssh = join(dir, 'key.openssh');
        execFileSync('puttygen', [ppk, '-O', 'private-openssh', '-o', openssh], { stdio: 'pipe' });
        assertSignsFor(nodePrivateKey(readFileSync(openssh), 'auto'), key.publicKeyBlob);
      });
      // A tampered file must be refused: the MAC really covers the key.
      const tampered = key.privateKeyMaterial.replace('Comment: putty-key', 'Comment: putty-kez');
      withTempDir((dir) => {
        const ppk = join(dir, 'bad.ppk');
        writeFileSync(ppk, tampered, { mode: 0o600 });
        assert.throws(() => execFileSync('puttygen', [ppk, '-O', 'private-openssh', '-o', join(dir, 'bad.openssh')], { stdio: 'pipe' }), /MAC/i);
      });
    });
  }
});

describe('importing public keys', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const rsaSpkiDer = rsa.publicKey.export({ type: 'spki', format: 'der' });
  const rsaMd5 = createHash('md5').update(rsaSpkiDer).digest('hex').match(/../g)!.join(':');
  const rsaLine = sshpk.parseKey(rsa.publicKey.export({ type: 'spki', format: 'pem' }), 'pem').toString('ssh');

  it('reads an OpenSSH RSA key and fingerprints it by MD5 of the DER public key', () => {
    const imported = parsePublicKeyMaterial(Buffer.from(`${rsaLine} someone@host\n`));
    assert.equal(imported.keyType, 'rsa');
    assert.equal(imported.fingerprint, rsaMd5);
    assert.equal(openSshPublicKey(imported.publicKeyBlob, 'x'), `${keyPart(rsaLine)} x`);
  });

  it('reads the same RSA key from RFC 4716, PEM (SPKI and PKCS#1) and bare base64 DER', () => {
    const blob = Buffer.from(rsaLine.split(' ')[1]!, 'base64');
    const rfc4716 = [
      '---- BEGIN SSH2 PUBLIC KEY ----',
      'Comment: "2048-bit RSA, converted by someone from \\',
      'OpenSSH"',
      ...blob.toString('base64').match(/.{1,70}/g)!,
      '---- END SSH2 PUBLIC KEY ----',
      '',
    ].join('\n');
    const forms = [
      rfc4716,
      rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string,
      rsa.publicKey.export({ type: 'pkcs1', format: 'pem' }) as string,
      rsaSpkiDer.toString('base64'),
    ];
    for (const form of forms) {
      const imported = parsePublicKeyMaterial(Buffer.from(form));
      assert.equal(imported.fingerprint, rsaMd5, form.slice(0, 40));
      assert.deepEqual(imported.publicKeyBlob, blob);
    }
  });

  it('reads what ssh-keygen exports as RFC 4716 and PKCS#8', { skip: skipUnlessPresent(!sshKeygen && 'ssh-keygen (Debian openssh-client)') }, () => {
    withTempDir((dir) => {
      const pub = join(dir, 'k.pub');
      writeFileSync(pub, rsaLine + '\n');
      for (const format of ['RFC4716', 'PKCS8', 'PEM']) {
        const exported = execFileSync('ssh-keygen', ['-e', '-m', format, '-f', pub]);
        assert.equal(parsePublicKeyMaterial(exported).fingerprint, rsaMd5, format);
      }
    });
  });

  it('reads an OpenSSH ED25519 key and fingerprints it like a created one', () => {
    const ed = generateKeyPairSync('ed25519');
    const line = sshpk.parseKey(ed.publicKey.export({ type: 'spki', format: 'pem' }), 'pem').toString('ssh');
    const imported = parsePublicKeyMaterial(Buffer.from(line));
    assert.equal(imported.keyType, 'ed25519');
    assert.equal(imported.fingerprint, createHash('sha256').update(Buffer.from(line.split(' ')[1]!, 'base64')).digest('base64'));
  });

  it('accepts key material that a client base64-encoded once more', () => {
    const imported = parsePublicKeyMaterial(Buffer.from(Buffer.from(rsaLine).toString('base64')));
    assert.equal(imported.fingerprint, rsaMd5);
  });

  it('refuses what is not a supported public key with InvalidKey.Format', () => {
    const ed = generateKeyPairSync('ed25519');
    const ecdsa = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const ecdsaLine = sshpk.parseKey(ecdsa.publicKey.export({ type: 'spki', format: 'pem' }), 'pem').toString('ssh');
    const [, data] = rsaLine.split(' ');
    const blob = Buffer.from(data!, 'base64');
    const bad = [
      'not a key',
      ecdsaLine,
      `ssh-ed25519 ${data}`, // type word disagrees with the blob
      `ssh-rsa ${blob.subarray(0, blob.length - 7).toString('base64')}`, // truncated
      `ssh-rsa ${Buffer.concat([blob, Buffer.from([0])]).toString('base64')}`, // trailing bytes
      `${rsaLine}\n${rsaLine}`,
      'from="10.0.0.1" ' + rsaLine,
      ed.publicKey.export({ type: 'spki', format: 'pem' }) as string, // ED25519 only in OpenSSH form
      rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string, // a private key
    ];
    for (const material of bad) {
      assert.throws(() => parsePublicKeyMaterial(Buffer.from(material)), ec2Error('InvalidKey.Format', /^Key is not in valid OpenSSH public key format/), material.slice(0, 50));
    }
  });

  it('refuses RSA keys shorter than 2048 bits', () => {
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const line = sshpk.parseKey(small.publicKey.export({ type: 'spki', format: 'pem' }), 'pem').toString('ssh');
    assert.throws(() => parsePublicKeyMaterial(Buffer.from(line)), ec2Error('InvalidKey.Format', /1024/));
  });

  it('refuses non-ASCII material as EC2 does', () => {
    assert.throws(() => parsePublicKeyMaterial(Buffer.from(`${rsaLine} café`)), ec2Error('InvalidParameterValue', /beyond ASCII/));
  });

  it('gives a node public key for a stored blob', () => {
    const blob = Buffer.from(rsaLine.split(' ')[1]!, 'base64');
    assert.deepEqual(publicKeyObject(blob).export({ type: 'spki', format: 'der' }), rsaSpkiDer);
    assert.ok(rsa.publicKey.equals(publicKeyObject(blob)));
  });
});
