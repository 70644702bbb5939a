// CreateKeyPair, ImportKeyPair, DescribeKeyPairs and DeleteKeyPair, called as handlers on an
// in-memory store with two accounts that must never see each other's keys.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import sshpk from 'sshpk';
import type { Store } from '../../src/store/store.ts';
import type { RequestContext } from '../../src/cloud/context.ts';
import { keyPairOperations } from '../../src/cloud/key-pairs.ts';
import { ID_PATTERN } from '../../src/cloud/ids.ts';
import { contextFor, isEc2Error, openTestCloudStore } from '../helpers/handler-context.ts';

const ALICE = '111111111111';
const BOB = '222222222222';

const filter = (Name: string, ...Values: string[]) => [{ Name, Values }];
const { CreateKeyPair, ImportKeyPair, DescribeKeyPairs, DeleteKeyPair } = keyPairOperations;

/** `ssh-rsa AAAA...` (no comment) for a PEM public or private key. */
function openSshLine(pem: string): string {
  return sshpk.parseKey(pem, 'pem').toString('ssh').split(' ').slice(0, 2).join(' ');
}

describe('key pairs', () => {
  let store: Store;
  let alice: RequestContext;
  let bob: RequestContext;

  before(async () => {
    store = await openTestCloudStore({ accounts: [ALICE, BOB] });
    alice = contextFor(store, ALICE);
    bob = contextFor(store, BOB);
  });
  after(async () => store.close());

  const names = async (ctx: RequestContext, input: object = {}) =>
    (await DescribeKeyPairs(ctx, input)).KeyPairs.map((k: { KeyName: string }) => k.KeyName);

  describe('CreateKeyPair', () => {
    it('returns a working RSA private key and stores its public half', async () => {
      const out = await CreateKeyPair(alice, { KeyName: 'deploy' });
      assert.equal(out.KeyName, 'deploy');
      assert.match(out.KeyPairId, /^key-[0-9a-f]{17}$/);
      assert.ok(ID_PATTERN.test(out.KeyPairId));
      assert.match(out.KeyMaterial, /^-----BEGIN RSA PRIVATE KEY-----/);
      const privateKey = createPrivateKey(out.KeyMaterial);
      const pkcs8Sha1 = createHash('sha1').update(privateKey.export({ type: 'pkcs8', format: 'der' })).digest('hex');
      assert.equal(out.KeyFingerprint, pkcs8Sha1.match(/../g)!.join(':'));
      assert.equal(out.Tags, undefined);

      const [described] = (await DescribeKeyPairs(alice, { KeyNames: ['deploy'], IncludePublicKey: true })).KeyPairs;
      assert.equal(described.KeyPairId, out.KeyPairId);
      assert.equal(described.KeyFingerprint, out.KeyFingerprint);
      assert.equal(described.KeyType, 'rsa');
      assert.deepEqual(described.Tags, []);
      assert.ok(described.CreateTime instanceof Date && !Number.isNaN(described.CreateTime.getTime()));
      // The stored public key is the one that belongs to the returned private key.
      const derived = openSshLine(createPrivateKey(out.KeyMaterial).export({ type: 'pkcs1', format: 'pem' }) as string);
      assert.equal(described.PublicKey, `${derived} deploy`);
      const withoutKey = (await DescribeKeyPairs(alice, { KeyNames: ['deploy'] })).KeyPairs[0];
      assert.equal('PublicKey' in withoutKey, false);
    });

    it('creates ED25519 keys and PuTTY files when asked', async () => {
      const ed = await CreateKeyPair(alice, { KeyName: 'ed', KeyType: 'ed25519' });
      assert.match(ed.KeyMaterial, /^-----BEGIN OPENSSH PRIVATE KEY-----/);
      assert.match(ed.KeyFingerprint, /^[A-Za-z0-9+/]{43}=$/);
      const ppk = await CreateKeyPair(alice, { KeyName: 'putty', KeyFormat: 'ppk' });
      assert.match(ppk.KeyMaterial, /^PuTTY-User-Key-File-2: ssh-rsa\n/);
      const types = (await DescribeKeyPairs(alice, { KeyNames: ['ed', 'putty'] })).KeyPairs.map((k: { KeyType: string }) => k.KeyType);
      assert.deepEqual(types, ['ed25519', 'rsa']);
    });

    it('refuses a name already taken in the account, but not in another account', async () => {
      await assert.rejects(CreateKeyPair(alice, { KeyName: 'deploy', KeyType: 'ed25519' }), isEc2Error('InvalidKeyPair.Duplicate', "The keypair 'deploy' already exists."));
      const bobs = await CreateKeyPair(bob, { KeyName: 'deploy', KeyType: 'ed25519' });
      assert.notEqual(bobs.KeyPairId, (await DescribeKeyPairs(alice, { KeyNames: ['deploy'] })).KeyPairs[0].KeyPairId);
    });

    it('validates the name, key type and format', async () => {
      await CreateKeyPair(alice, { KeyName: 'n'.repeat(255), KeyType: 'ed25519' });
      await assert.rejects(CreateKeyPair(alice, { KeyName: 'n'.repeat(256) }), isEc2Error('InvalidParameterValue', /Length exceeds maximum of 255/));
      await assert.rejects(CreateKeyPair(alice, { KeyName: 'clé' }), isEc2Error('InvalidParameterValue', /beyond ASCII/));
      await assert.rejects(CreateKeyPair(alice, { KeyName: '' }), isEc2Error('MissingParameter'));
      await assert.rejects(CreateKeyPair(alice, { KeyName: 'x', KeyType: 'dsa' }), isEc2Error('InvalidParameterValue', /KeyType/));
      await assert.rejects(CreateKeyPair(alice, { KeyName: 'x', KeyFormat: 'der' }), isEc2Error('InvalidParameterValue', /KeyFormat/));
      assert.deepEqual(await names(alice, { Filters: filter('key-name', 'x') }), []);
    });

    it('tags the key pair in the same step, and writes nothing for a wrong resource type', async () => {
      const out = await CreateKeyPair(alice, {
        KeyName: 'tagged', KeyType: 'ed25519',
        TagSpecifications: [{ ResourceType: 'key-pair', Tags: [{ Key: 'team', Value: 'blue' }, { Key: 'env', Value: 'prod' }] }],
      });
      assert.deepEqual(out.Tags, [{ Key: 'team', Value: 'blue' }, { Key: 'env', Value: 'prod' }]);
      const described = (await DescribeKeyPairs(alice, { KeyPairIds: [out.KeyPairId] })).KeyPairs[0];
      assert.deepEqual([...described.Tags].sort((a: { Key: string }, b: { Key: string }) => a.Key.localeCompare(b.Key)),
        [{ Key: 'env', Value: 'prod' }, { Key: 'team', Value: 'blue' }]);
      await assert.rejects(CreateKeyPair(alice, {
        KeyName: 'wrongly-tagged', TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'a', Value: 'b' }] }],
      }), isEc2Error('InvalidParameterValue'));
      await assert.rejects(CreateKeyPair(alice, {
        KeyName: 'reserved-tag', KeyType: 'ed25519', TagSpecifications: [{ ResourceType: 'key-pair', Tags: [{ Key: 'aws:x', Value: 'b' }] }],
      }), isEc2Error('InvalidParameterValue'));
      assert.deepEqual(await names(alice, { Filters: filter('key-name', 'wrongly-tagged', 'reserved-tag') }), []);
    });
  });

  describe('ImportKeyPair', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const rsaLine = openSshLine(rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string);

    it('stores an OpenSSH public key with EC2\'s MD5 fingerprint', async () => {
      const out = await ImportKeyPair(alice, { KeyName: 'laptop', PublicKeyMaterial: Buffer.from(`${rsaLine} me@laptop\n`) });
      const md5 = createHash('md5').update(rsa.publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
      assert.equal(out.KeyFingerprint, md5.match(/../g)!.join(':'));
      assert.match(out.KeyPairId, /^key-/);
      assert.equal('KeyMaterial' in out, false);
      const described = (await DescribeKeyPairs(alice, { KeyNames: ['laptop'], IncludePublicKey: true })).KeyPairs[0];
      assert.equal(described.PublicKey, `${rsaLine} laptop`);
      assert.equal(described.KeyType, 'rsa');
    });

    it('accepts ED25519 keys and PEM-armoured RSA keys', async () => {
      const ed = generateKeyPairSync('ed25519');
      const edLine = openSshLine(ed.publicKey.export({ type: 'spki', format: 'pem' }) as string);
      const out = await ImportKeyPair(alice, { KeyName: 'ed-import', PublicKeyMaterial: Buffer.from(edLine) });
      assert.equal(out.KeyFingerprint, createHash('sha256').update(Buffer.from(edLine.split(' ')[1]!, 'base64')).digest('base64'));
      const pem = await ImportKeyPair(bob, { KeyName: 'pem', PublicKeyMaterial: Buffer.from(rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string) });
      assert.equal(pem.KeyFingerprint, (await DescribeKeyPairs(alice, { KeyNames: ['laptop'] })).KeyPairs[0].KeyFingerprint);
    });

    it('refuses bad material, short RSA keys and duplicates, storing nothing', async () => {
      await assert.rejects(ImportKeyPair(alice, { KeyName: 'bad', PublicKeyMaterial: Buffer.from('ssh-rsa AAAAnot-a-key') }),
        isEc2Error('InvalidKey.Format', 'Key is not in valid OpenSSH public key format'));
      const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
      await assert.rejects(ImportKeyPair(alice, { KeyName: 'bad', PublicKeyMaterial: Buffer.from(openSshLine(small.publicKey.export({ type: 'spki', format: 'pem' }) as string)) }),
        isEc2Error('InvalidKey.Format'));
      await assert.rejects(ImportKeyPair(alice, { KeyName: 'bad', PublicKeyMaterial: Buffer.alloc(0) }), isEc2Error('MissingParameter'));
      await assert.rejects(ImportKeyPair(alice, { KeyName: 'laptop', PublicKeyMaterial: Buffer.from(rsaLine) }),
        isEc2Error('InvalidKeyPair.Duplicate', "The keypair 'laptop' already exists."));
      assert.deepEqual(await names(alice, { Filters: filter('key-name', 'bad') }), []);
    });
  });

  describe('DescribeKeyPairs', () => {
    it('shows only the caller\'s keys, sorted by name', async () => {
      const mine = await names(alice);
      assert.deepEqual(mine, [...mine].sort());
      assert.ok(mine.includes('laptop') && !mine.includes('pem'));
      assert.deepEqual(await names(bob), ['deploy', 'pem']);
    });

    it('answers a foreign id exactly like a missing one', async () => {
      const bobsId = (await DescribeKeyPairs(bob, { KeyNames: ['pem'] })).KeyPairs[0].KeyPairId;
      await assert.rejects(DescribeKeyPairs(alice, { KeyPairIds: [bobsId] }), isEc2Error('InvalidKeyPair.NotFound', `The key pair '${bobsId}' does not exist`));
      await assert.rejects(DescribeKeyPairs(alice, { KeyPairIds: ['key-00000000000000000'] }), isEc2Error('InvalidKeyPair.NotFound', "The key pair 'key-00000000000000000' does not exist"));
      await assert.rejects(DescribeKeyPairs(alice, { KeyNames: ['laptop', 'pem'] }), isEc2Error('InvalidKeyPair.NotFound', "The key pair 'pem' does not exist"));
    });

    it('filters by key-pair-id, key-name, fingerprint, key-type and tags', async () => {
      const laptop = (await DescribeKeyPairs(alice, { KeyNames: ['laptop'] })).KeyPairs[0];
      assert.deepEqual(await names(alice, { Filters: filter('key-pair-id', laptop.KeyPairId) }), ['laptop']);
      assert.deepEqual(await names(alice, { Filters: filter('fingerprint', laptop.KeyFingerprint) }), ['laptop']);
      assert.deepEqual(await names(alice, { Filters: filter('key-name', 'e*') }), ['ed', 'ed-import']);
      assert.deepEqual(await names(alice, { Filters: [...filter('key-type', 'ed25519'), ...filter('key-name', 'ed', 'tagged')] }), ['ed', 'tagged']);
      assert.deepEqual(await names(alice, { Filters: filter('tag:team', 'blue') }), ['tagged']);
      assert.deepEqual(await names(alice, { Filters: filter('tag-key', 'env') }), ['tagged']);
      assert.deepEqual(await names(alice, { Filters: filter('tag-value', 'bl*') }), ['tagged']);
      assert.deepEqual(await names(alice, { KeyNames: ['ed', 'laptop'], Filters: filter('key-type', 'rsa') }), ['laptop']);
      await assert.rejects(names(alice, { Filters: filter('key-colour', 'x') }), isEc2Error('InvalidParameterValue', "The filter 'key-colour' is invalid"));
    });
  });

  describe('DeleteKeyPair', () => {
    it('deletes by name or id, with its tags, and only in the caller\'s account', async () => {
      const tagged = (await DescribeKeyPairs(alice, { KeyNames: ['tagged'] })).KeyPairs[0];
      assert.deepEqual(await DeleteKeyPair(alice, { KeyPairId: tagged.KeyPairId }), { Return: true, KeyPairId: tagged.KeyPairId });
      assert.equal((await store.db.selectFrom('tags').selectAll().where('resource_id', '=', tagged.KeyPairId).execute()).length, 0);
      const deploy = (await DescribeKeyPairs(alice, { KeyNames: ['deploy'] })).KeyPairs[0];
      assert.deepEqual(await DeleteKeyPair(alice, { KeyName: 'deploy' }), { Return: true, KeyPairId: deploy.KeyPairId });
      assert.ok(!(await names(alice)).includes('deploy'));
      assert.ok((await names(bob)).includes('deploy'), 'bob\'s key of the same name stays');
    });

    it('treats a missing name as done but a missing or foreign id as not found', async () => {
      assert.deepEqual(await DeleteKeyPair(alice, { KeyName: 'never-existed' }), { Return: true });
      const bobsId = (await DescribeKeyPairs(bob, { KeyNames: ['pem'] })).KeyPairs[0].KeyPairId;
      await assert.rejects(DeleteKeyPair(alice, { KeyPairId: bobsId }), isEc2Error('InvalidKeyPair.NotFound', `The key pair '${bobsId}' does not exist`));
      await assert.rejects(DeleteKeyPair(alice, { KeyPairId: 'key-00000000000000000' }), isEc2Error('InvalidKeyPair.NotFound', "The key pair 'key-00000000000000000' does not exist"));
      assert.deepEqual(await names(bob, { KeyPairIds: [bobsId] }), ['pem']);
      await assert.rejects(DeleteKeyPair(alice, {}), isEc2Error('MissingParameter'));
    });
  });
});
