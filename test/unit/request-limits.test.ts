// Request limits of the EC2 endpoint, without a server: the token bucket under a hand-driven clock,
// the fair scheduler, EC2's action families, the parameter count, client keys, and the limiter
// reading the operator's values from a store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenBucket } from '../../src/http/token-bucket.ts';
import { FairScheduler, QUEUE_FULL, type Release } from '../../src/http/fair-scheduler.ts';
import { clientKey } from '../../src/http/connection-limits.ts';
import { familyInfo, requestFamily, resourceCharge } from '../../src/cloud/limits/rate-families.ts';
import { countParams, RequestLimiter } from '../../src/cloud/limits/request-limiter.ts';
import {
  CLOUD_SCOPE, deleteRateLimits, effectiveLimits, parseStoredLimit, readRateLimits, setRateLimit, validateLimit,
} from '../../src/cloud/limits/rate-limit-settings.ts';
import { ADMIN_ACCOUNT_SETTING } from '../../src/cloud/admin-auth.ts';
import { openTestCloudStore } from '../helpers/handler-context.ts';
import { expectEc2ErrorSync as expectEc2Error } from '../helpers/ec2-errors.ts';

function manualClock(start = 0) {
  let now = start;
  return { now: () => now, advance: (ms: number) => { now += ms; } };
}

// ---- token bucket -----------------------------------------------------------------------------

test('a token bucket admits its capacity at once, then its refill rate', () => {
  const clock = manualClock();
  const bucket = new TokenBucket({ capacity: 100, refillPerSecond: 20 }, clock.now);
  let admitted = 0;
  for (let i = 0; i < 150; i++) if (bucket.tryTake()) admitted++;
  assert.equal(admitted, 100);
  assert.equal(bucket.tryTake(), false);
  clock.advance(1000);
  admitted = 0;
  for (let i = 0; i < 50; i++) if (bucket.tryTake()) admitted++;
  assert.equal(admitted, 20, 'one second refills 20 tokens');
  // Never above capacity, however long the quiet spell.
  clock.advance(3_600_000);
  assert.equal(bucket.available(), 100);
  // Fractional rates (EC2 documents 0.1 a second): one token per ten seconds.
  const slow = new TokenBucket({ capacity: 1, refillPerSecond: 0.1 }, clock.now);
  assert.equal(slow.tryTake(), true);
  clock.advance(9_999);
  assert.equal(slow.tryTake(), false);
  clock.advance(1);
  assert.equal(slow.tryTake(), true);
});

test('a bucket takes several tokens only when it holds them all, and a count above capacity needs a full bucket', () => {
  const clock = manualClock();
  const bucket = new TokenBucket({ capacity: 10, refillPerSecond: 2 }, clock.now);
  assert.equal(bucket.tryTake(7), true);
  assert.equal(bucket.tryTake(4), false, 'three left: four are refused and none taken');
  assert.equal(bucket.available(), 3);
  assert.equal(bucket.secondsUntil(4), 0.5);
  clock.advance(3500);
  assert.equal(bucket.tryTake(1000), true, 'full again: a count above the capacity empties it');
  assert.equal(bucket.available(), 0);
  assert.equal(bucket.tryTake(1000), false);
});

test('changing a bucket\'s limit: room added is usable at once, room taken away is dropped', () => {
  const clock = manualClock();
  const bucket = new TokenBucket({ capacity: 50, refillPerSecond: 10 }, clock.now);
  for (let i = 0; i < 50; i++) bucket.tryTake();
  bucket.setLimit({ capacity: 400, refillPerSecond: 10 });
  assert.equal(bucket.available(), 350);
  bucket.setLimit({ capacity: 20, refillPerSecond: 1 });
  assert.equal(bucket.available(), 20);
  clock.advance(-5000); // a clock that steps back gives nothing and takes nothing
  assert.equal(bucket.available(), 20);
});

// ---- fair scheduler ---------------------------------------------------------------------------

test('the scheduler runs at most perKey requests of a key, queues the rest and refuses past the queue', async () => {
  const s = new FairScheduler({ perKey: 2, total: 10, queuePerKey: 3, perTurn: 100 });
  const a1 = s.acquire('a');
  const a2 = s.acquire('a');
  assert.equal(typeof a1, 'function');
  assert.equal(typeof a2, 'function');
  const waiting = [s.acquire('a'), s.acquire('a'), s.acquire('a')];
  assert.ok(waiting.every((w) => w instanceof Promise));
  assert.equal(s.acquire('a'), QUEUE_FULL);
  assert.deepEqual(s.stats('a'), { running: 2, waiting: 3 });
  // Another key is not held up by a's queue.
  assert.equal(typeof s.acquire('b'), 'function');
  (a1 as Release)();
  (a1 as Release)(); // twice is once
  const third = await waiting[0]!;
  assert.deepEqual(s.stats('a'), { running: 2, waiting: 2 });
  (a2 as Release)();
  (third as Release)();
  await waiting[1];
  await waiting[2];
  assert.deepEqual(s.stats('a'), { running: 2, waiting: 0 });
});

test('one request of a key starts per turn of the event loop: a key\'s ready requests cannot all run before another key\'s', async () => {
  const s = new FairScheduler({ perKey: 8, total: 64, queuePerKey: 100 });
  const started: string[] = [];
  // Handlers that finish at once (as store calls on SQLite do): concurrency alone would never queue them.
  const run = (key: string) => {
    const slot = s.acquire(key);
    if (typeof slot === 'function') { started.push(`${key} now`); slot(); return Promise.resolve(); }
    return (slot as Promise<Release>).then((release) => { started.push(key); release(); });
  };
  const all = [run('a'), run('a'), run('a'), run('b'), run('a'), run('b')];
  assert.deepEqual(started, ['a now', 'b now'], 'the first request of each key starts at once, the others wait for a turn');
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(started, ['a now', 'b now', 'a', 'b']);
  await Promise.all(all);
  assert.deepEqual(started, ['a now', 'b now', 'a', 'b', 'a', 'a']);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(s.stats(), { running: 0, waiting: 0 });
});

test('free slots go to the keys in turn: a long queue delays another key by one request at most', async () => {
  const s = new FairScheduler({ perKey: 4, total: 1, queuePerKey: 1000 });
  const order: string[] = [];
  const first = s.acquire('a') as Release;
  const all: Promise<void>[] = [];
  const enqueue = (key: string) => {
    const slot = s.acquire(key) as Promise<Release>;
    all.push(slot.then((release) => { order.push(key); release(); }));
  };
  for (let i = 0; i < 100; i++) enqueue('a');
  enqueue('b');
  enqueue('b');
  enqueue('c');
  first();
  await Promise.all(all);
  assert.deepEqual(order.slice(0, 6), ['a', 'b', 'c', 'a', 'b', 'a']);
  assert.equal(order.length, 103);
  assert.deepEqual(s.stats(), { running: 0, waiting: 0 });
});

// ---- families ---------------------------------------------------------------------------------

test('actions fall into EC2\'s families, with EC2\'s bucket sizes', () => {
  assert.equal(requestFamily('DescribeImages', {}), 'non-mutating');
  assert.equal(requestFamily('GetConsoleOutput', { InstanceId: 'i-1' }), 'non-mutating');
  assert.equal(requestFamily('DescribeInstances', { Action: 'DescribeInstances', Version: '2016-11-15' }), 'unfiltered-describe');
  assert.equal(requestFamily('DescribeInstances', { Action: 'DescribeInstances', 'Filter.1.Name': 'x' }), 'non-mutating');
  assert.equal(requestFamily('DescribeInstances', { Action: 'DescribeInstances', MaxResults: '5' }), 'non-mutating');
  assert.equal(requestFamily('DescribeInstances', { Action: 'DescribeInstances', 'InstanceId.1': 'i-1' }), 'non-mutating');
  assert.equal(requestFamily('DescribeSecurityGroups', { 'X-Amz-Signature': 's', 'X-Amz-Date': 'd' }), 'unfiltered-describe');
  assert.equal(requestFamily('CreateSecurityGroup', {}), 'mutating');
  assert.equal(requestFamily('StopInstances', {}), 'mutating');
  assert.equal(requestFamily('RebootInstances', {}), 'mutating');
  assert.equal(requestFamily('AuthorizeSecurityGroupIngress', {}), 'resource-intensive');
  assert.equal(requestFamily('CreateKeyPair', {}), 'resource-intensive');
  assert.equal(requestFamily('RunInstances', {}), 'RunInstances');
  assert.equal(requestFamily('TerminateInstances', {}), 'TerminateInstances');
  assert.equal(requestFamily('CreateTags', {}), 'CreateTags');
  assert.deepEqual(familyInfo('non-mutating')!.ec2Default, { capacity: 100, refillPerSecond: 20 });
  assert.deepEqual(familyInfo('unfiltered-describe')!.ec2Default, { capacity: 50, refillPerSecond: 10 });
  assert.deepEqual(familyInfo('mutating')!.ec2Default, { capacity: 50, refillPerSecond: 5 });
  assert.deepEqual(familyInfo('RunInstances')!.ec2Default, { capacity: 5, refillPerSecond: 2 });
  assert.deepEqual(familyInfo('instances-launched')!.ec2Default, { capacity: 1000, refillPerSecond: 2 });
  assert.deepEqual(familyInfo('instances-terminated')!.ec2Default, { capacity: 1000, refillPerSecond: 20 });

  assert.deepEqual(resourceCharge('RunInstances', { MinCount: '1', MaxCount: '25' }), { family: 'instances-launched', tokens: 25 });
  assert.deepEqual(resourceCharge('RunInstances', {}), { family: 'instances-launched', tokens: 1 });
  assert.deepEqual(resourceCharge('StopInstances', { 'InstanceId.1': 'a', 'InstanceId.2': 'b', Force: 'true' }), { family: 'instances-stopped', tokens: 2 });
  assert.equal(resourceCharge('DescribeInstances', {}), undefined);
});

test('parameters are counted without parsing, and client addresses keyed per host', () => {
  assert.equal(countParams(''), 0);
  assert.equal(countParams('Action=X'), 1);
  assert.equal(countParams('a=1&b=2&&c'), 3);
  assert.equal(countParams('&'.repeat(1000)), 0);
  assert.equal(clientKey('127.0.0.1'), '127.0.0.1');
  assert.equal(clientKey('::ffff:10.0.0.7'), '10.0.0.7');
  assert.equal(clientKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  assert.equal(clientKey('2001:db8:1:2:bbbb:cccc:dddd:eeee'), '2001:db8:1:2::/64');
  assert.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(clientKey('::1'), '0:0:0:0::/64');
  assert.equal(clientKey(undefined), 'unknown');
});

// ---- stored values ----------------------------------------------------------------------------

test('stored limits: set, read, resolved in order account, admin exemption, cloud, EC2; bad values refused', async () => {
  const store = await openTestCloudStore({ accounts: ['111111111111', '222222222222'] });
  try {
    await setRateLimit(store.db, CLOUD_SCOPE, 'mutating', { capacity: 200, refillPerSecond: 10 });
    await setRateLimit(store.db, '111111111111', 'mutating', 'unlimited');
    await setRateLimit(store.db, '111111111111', 'RunInstances', { capacity: 9, refillPerSecond: 0.5 });
    const cloud = await readRateLimits(store.db, CLOUD_SCOPE);
    const own = await readRateLimits(store.db, '111111111111');
    const byFamily = (rows: ReturnType<typeof effectiveLimits>) => Object.fromEntries(rows.map((r) => [r.family, [r.capacity, r.refillPerSecond, r.source]]));
    const one = byFamily(effectiveLimits(own, cloud, false));
    assert.deepEqual(one.mutating, [null, null, 'account']);
    assert.deepEqual(one.RunInstances, [9, 0.5, 'account']);
    assert.deepEqual(one['non-mutating'], [100, 20, 'ec2']);
    const two = byFamily(effectiveLimits(await readRateLimits(store.db, '222222222222'), cloud, false));
    assert.deepEqual(two.mutating, [200, 10, 'cloud']);
    const admin = byFamily(effectiveLimits(new Map(), cloud, true));
    assert.deepEqual(admin.mutating, [null, null, 'cloud-admin']);

    await setRateLimit(store.db, '111111111111', 'RunInstances', null);
    assert.equal((await readRateLimits(store.db, '111111111111')).has('RunInstances'), false);
    await deleteRateLimits(store.db, '111111111111');
    assert.equal((await readRateLimits(store.db, '111111111111')).size, 0);
    assert.equal((await readRateLimits(store.db, CLOUD_SCOPE)).size, 1, 'the cloud\'s values stay');

    expectEc2Error(() => validateLimit('Describe', { capacity: 1, refillPerSecond: 1 }), 'InvalidParameterValue');
    expectEc2Error(() => validateLimit('mutating', { capacity: 0, refillPerSecond: 1 }), 'InvalidParameterValue');
    expectEc2Error(() => validateLimit('mutating', { capacity: 1.5, refillPerSecond: 1 }), 'InvalidParameterValue');
    expectEc2Error(() => validateLimit('mutating', { capacity: 5, refillPerSecond: 0 }), 'InvalidParameterValue');
    expectEc2Error(() => validateLimit('mutating', 'off'), 'InvalidParameterValue');
    assert.equal(parseStoredLimit('garbage'), undefined);
    assert.deepEqual(parseStoredLimit('5/0.25'), { capacity: 5, refillPerSecond: 0.25 });
  } finally {
    await store.close();
  }
});

// ---- the limiter ------------------------------------------------------------------------------

test('the limiter throttles each account on its own buckets, follows the operator\'s values, exempts the admin account', async () => {
  const store = await openTestCloudStore({ accounts: ['111111111111', '222222222222', '999999999999'] });
  await store.db.insertInto('settings').values({ key: ADMIN_ACCOUNT_SETTING, value: '999999999999' }).execute();
  const clock = manualClock();
  const limiter = new RequestLimiter({ store, clock: clock.now });
  try {
    const call = async (account: string, action: string, params: Record<string, string> = {}) => {
      try {
        (await limiter.admit(account, action, { Action: action, ...params }))();
        return 'ok';
      } catch (e) {
        return (e as { code?: string }).code ?? 'error';
      }
    };
    const count = async (n: number, fn: () => Promise<string>) => {
      const out: Record<string, number> = {};
      for (let i = 0; i < n; i++) { const r = await fn(); out[r] = (out[r] ?? 0) + 1; }
      return out;
    };
    // EC2's unfiltered DescribeInstances bucket: 50, then 10 a second.
    assert.deepEqual(await count(60, () => call('111111111111', 'DescribeInstances')), { ok: 50, RequestLimitExceeded: 10 });
    // A filtered Describe draws from the larger non-mutating bucket, still full.
    assert.deepEqual(await count(100, () => call('111111111111', 'DescribeInstances', { 'Filter.1.Name': 'x' })), { ok: 100 });
    // The other account is untouched.
    assert.deepEqual(await count(50, () => call('222222222222', 'DescribeInstances')), { ok: 50 });
    clock.advance(1000);
    assert.deepEqual(await count(20, () => call('111111111111', 'DescribeInstances')), { ok: 10, RequestLimitExceeded: 10 });
    assert.equal(limiter.throttledCount('111111111111'), 20);

    // RunInstances: 5 calls, and no more than 1000 instances at once.
    assert.deepEqual(await count(7, () => call('222222222222', 'RunInstances', { MaxCount: '1' })), { ok: 5, RequestLimitExceeded: 2 });
    clock.advance(10_000);
    assert.equal(await call('222222222222', 'RunInstances', { MaxCount: '990' }), 'ok');
    assert.equal(await call('222222222222', 'RunInstances', { MaxCount: '100' }), 'RequestLimitExceeded', 'the resource bucket holds 10 instances');
    assert.equal(await call('222222222222', 'RunInstances', { MaxCount: '10' }), 'ok', 'a refusal by one bucket took nothing from the other');

    // The admin account is not throttled until the operator says so.
    assert.deepEqual(await count(300, () => call('999999999999', 'DescribeInstances')), { ok: 300 });
    await setRateLimit(store.db, '999999999999', 'unfiltered-describe', { capacity: 3, refillPerSecond: 1 });
    limiter.invalidate('999999999999');
    assert.deepEqual(await count(5, () => call('999999999999', 'DescribeInstances')), { ok: 3, RequestLimitExceeded: 2 });

    // The operator raises an account's limit: the new room is there at once (the bucket had
    // refilled to its 50 since; 350 more come with the change).
    await setRateLimit(store.db, '111111111111', 'unfiltered-describe', { capacity: 400, refillPerSecond: 10 });
    limiter.invalidate('111111111111');
    assert.deepEqual(await count(410, () => call('111111111111', 'DescribeInstances')), { ok: 400, RequestLimitExceeded: 10 });
    // Unlimited: no bucket at all.
    await setRateLimit(store.db, CLOUD_SCOPE, 'mutating', 'unlimited');
    limiter.invalidate();
    assert.deepEqual(await count(500, () => call('222222222222', 'CreateSecurityGroup')), { ok: 500 });
  } finally {
    await store.close();
  }
});

test('the limiter refuses an address that spent its failed authentications, too many parameters, and a full queue', async () => {
  const store = await openTestCloudStore({ accounts: ['111111111111'] });
  const clock = manualClock();
  const limiter = new RequestLimiter({
    store, clock: clock.now, maxRequestParams: 10, authFailuresPerAddress: { capacity: 3, refillPerSecond: 1 },
    inFlightPerAccount: 1, queuedPerAccount: 2,
  });
  try {
    limiter.checkParameterCount('a=1&b=2', 'c=3&d=4&e=5&f=6&g=7&h=8&i=9&j=10');
    expectEc2Error(() => limiter.checkParameterCount('a=1&b=2', 'c=3&d=4&e=5&f=6&g=7&h=8&i=9&j=10&k=11'), 'InvalidQueryParameter');

    for (let i = 0; i < 3; i++) {
      limiter.checkAddress('192.0.2.1');
      limiter.authenticationFailed('192.0.2.1');
    }
    expectEc2Error(() => limiter.checkAddress('192.0.2.1'), 'RequestLimitExceeded');
    limiter.checkAddress('192.0.2.2');
    limiter.checkAddress('::ffff:192.0.2.2');
    clock.advance(1000);
    limiter.checkAddress('192.0.2.1');

    const first = await limiter.admit('111111111111', 'DescribeRegions', {});
    const queued = [limiter.admit('111111111111', 'DescribeRegions', {}), limiter.admit('111111111111', 'DescribeRegions', {})];
    await assert.rejects(limiter.admit('111111111111', 'DescribeRegions', {}), (e: { code?: string }) => e.code === 'RequestLimitExceeded');
    first();
    (await queued[0]!)();
    (await queued[1]!)();
    const s = limiter.stats();
    assert.equal(s.queueFull, 1);
    assert.equal(s.admitted, 3);
    assert.equal(s.tooManyParams, 1);
    assert.equal(s.addressThrottled, 1);
    assert.equal(s.running, 0);
  } finally {
    await store.close();
  }
});
