import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  KEY_ID_HEADER, NONCE_HEADER, PeerVerifier, SIGNATURE_HEADER, TIMESTAMP_HEADER,
  newPeerSecret, signPeerRequest, signPeerResponse, verifyPeerResponse,
} from '../../src/auth/peer-auth.ts';

const secret = newPeerSecret();
const creds = { keyId: 'ironbark-1a', secret };
const request = { method: 'POST', path: '/v1/runInstances', body: '{"specs":[]}' };

function verifier(now: () => number = Date.now) {
  return new PeerVerifier({ secretFor: (keyId) => (keyId === 'ironbark-1a' ? secret : undefined), now });
}

test('a signed request verifies and names its key id', async () => {
  const headers = signPeerRequest(creds, request);
  const verdict = await verifier().verify({ ...request, headers });
  assert.equal(verdict.ok, true);
  assert.equal(verdict.keyId, 'ironbark-1a');
});

test('secrets are long random strings', () => {
  const a = newPeerSecret();
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(a, newPeerSecret());
});

test('a tampered body, path, method or key id is refused as a bad signature', async () => {
  const v = verifier();
  const tampered = [
    { ...request, body: '{"specs":[1]}' },
    { ...request, path: '/v1/terminateInstance' },
    { ...request, method: 'PUT' },
  ];
  for (const t of tampered) {
    const verdict = await v.verify({ ...t, headers: signPeerRequest(creds, request) });
    assert.equal(verdict.ok, false);
    assert.equal(!verdict.ok && verdict.reason, 'bad-signature');
  }
  const headers = signPeerRequest(creds, request);
  headers[SIGNATURE_HEADER] = headers[SIGNATURE_HEADER]!.replace(/^./, (c) => (c === '0' ? '1' : '0'));
  const flipped = await v.verify({ ...request, headers });
  assert.equal(!flipped.ok && flipped.reason, 'bad-signature');
});

test('a signature made with another secret is refused', async () => {
  const headers = signPeerRequest({ keyId: 'ironbark-1a', secret: newPeerSecret() }, request);
  const verdict = await verifier().verify({ ...request, headers });
  assert.equal(!verdict.ok && verdict.reason, 'bad-signature');
});

test('a timestamp older or newer than five minutes is refused, even with a good signature', async () => {
  const now = Date.now();
  const v = verifier(() => now);
  const old = signPeerRequest(creds, request, now - 5 * 60_000 - 1000);
  const stale = await v.verify({ ...request, headers: old });
  assert.equal(!stale.ok && stale.reason, 'stale');
  const future = signPeerRequest(creds, request, now + 5 * 60_000 + 1000);
  const ahead = await v.verify({ ...request, headers: future });
  assert.equal(!ahead.ok && ahead.reason, 'stale');
  const withinSkew = signPeerRequest(creds, request, now - 4 * 60_000);
  assert.equal((await v.verify({ ...request, headers: withinSkew })).ok, true);
});

test('the same signed request is accepted once; a replay is refused', async () => {
  const v = verifier();
  const headers = signPeerRequest(creds, request);
  assert.equal((await v.verify({ ...request, headers })).ok, true);
  const replay = await v.verify({ ...request, headers });
  assert.equal(!replay.ok && replay.reason, 'replayed');
  // A fresh signature of the same content is a new message.
  assert.equal((await v.verify({ ...request, headers: signPeerRequest(creds, request) })).ok, true);
});

test('a replay after the window is refused as stale', async () => {
  let now = Date.now();
  const v = verifier(() => now);
  const headers = signPeerRequest(creds, request, now);
  assert.equal((await v.verify({ ...request, headers })).ok, true);
  now += 6 * 60_000;
  const later = await v.verify({ ...request, headers });
  assert.equal(!later.ok && later.reason, 'stale');
});

test('an unknown key id is refused before any signature check', async () => {
  const headers = signPeerRequest({ keyId: 'nd-unknown', secret }, request);
  const verdict = await verifier().verify({ ...request, headers });
  assert.equal(verdict.ok, false);
  assert.equal(!verdict.ok && verdict.reason, 'unknown-key');
  assert.equal(!verdict.ok && verdict.keyId, 'nd-unknown');
});

test('a request without the signing headers is refused', async () => {
  const headers = signPeerRequest(creds, request);
  for (const missing of [KEY_ID_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER]) {
    const partial: Record<string, string> = { ...headers };
    delete partial[missing];
    const verdict = await verifier().verify({ ...request, headers: partial });
    assert.equal(!verdict.ok && verdict.reason, 'missing-headers', missing);
  }
});

test('a malformed timestamp or signature is refused', async () => {
  const headers = signPeerRequest(creds, request);
  const badTime = await verifier().verify({ ...request, headers: { ...headers, [TIMESTAMP_HEADER]: 'yesterday' } });
  assert.equal(!badTime.ok && badTime.reason, 'stale');
  const badSig = await verifier().verify({ ...request, headers: { ...headers, [SIGNATURE_HEADER]: 'zz' } });
  assert.equal(!badSig.ok && badSig.reason, 'bad-signature');
});

test('a response is bound to its request, its status and its body', () => {
  const requestSignature = signPeerRequest(creds, request)[SIGNATURE_HEADER]!;
  const sig = signPeerResponse(secret, requestSignature, 200, '{"result":[]}');
  assert.equal(verifyPeerResponse(secret, requestSignature, 200, '{"result":[]}', sig), true);
  assert.equal(verifyPeerResponse(secret, requestSignature, 200, '{"result":[1]}', sig), false);
  assert.equal(verifyPeerResponse(secret, requestSignature, 500, '{"result":[]}', sig), false);
  const other = signPeerRequest(creds, request)[SIGNATURE_HEADER]!;
  assert.equal(verifyPeerResponse(secret, other, 200, '{"result":[]}', sig), false);
  assert.equal(verifyPeerResponse(newPeerSecret(), requestSignature, 200, '{"result":[]}', sig), false);
  assert.equal(verifyPeerResponse(secret, requestSignature, 200, '{"result":[]}', null), false);
});
