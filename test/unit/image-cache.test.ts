import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { AddressInfo } from 'node:net';
import {
  ImageCache, ImageChecksumError, ImageFetchError, ImageInUseError, type ImageFetchProgress,
} from '../../src/node/image-cache.ts';
import { createInstanceDisk, deleteInstanceDisk, diskInfo, InstanceDiskError } from '../../src/node/instance-disk.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

function imageBytes(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i++) out[i] = (seed.charCodeAt(i % seed.length) + i) & 0xff;
  return out;
}

describe('ImageCache', () => {
  let root: string;
  let server: Server;
  let base: string;
  const images = new Map<string, Buffer>();
  const requests = new Map<string, number>();
  let counter = 0;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ironbark-imgcache-'));
    // Serves /<name> in 16 KiB chunks with a yield between them, so fetches overlap and report progress.
    server = createServer(async (req, res) => {
      const name = (req.url ?? '/').slice(1);
      requests.set(name, (requests.get(name) ?? 0) + 1);
      const body = images.get(name);
      if (!body) {
        res.writeHead(404).end('not found');
        return;
      }
      res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' });
      for (let off = 0; off < body.length; off += 16384) {
        res.write(body.subarray(off, off + 16384));
        await pause(2);
      }
      res.end();
    });
    server.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await rm(root, { recursive: true, force: true });
  });

  function serve(name: string, size = 64 * 1024): { url: string; bytes: Buffer; sha256: string } {
    const bytes = imageBytes(name, size);
    images.set(name, bytes);
    return { url: `${base}/${name}`, bytes, sha256: sha256(bytes) };
  }

  function freshCache(opts?: ConstructorParameters<typeof ImageCache>[1]) {
    return new ImageCache(join(root, `cache-${++counter}`), opts);
  }

  test('fetches over HTTP once, verifies and serves from the cache afterwards', async () => {
    const img = serve('emi-basic');
    const cache = freshCache();
    const progress: ImageFetchProgress[] = [];
    const path = await cache.ensure({ id: 'emi-basic', url: img.url, sha256: img.sha256 }, (p) => progress.push(p));
    assert.deepEqual(await readFile(path), img.bytes);
    assert.equal(progress.at(-1)?.receivedBytes, img.bytes.length);
    assert.equal(progress.at(-1)?.totalBytes, img.bytes.length);
    assert.equal(await cache.ensure({ id: 'emi-basic', url: img.url, sha256: img.sha256 }), path);
    assert.equal(requests.get('emi-basic'), 1);
    const listed = await cache.list();
    assert.deepEqual(listed.map((i) => [i.id, i.sha256, i.size]), [['emi-basic', img.sha256, img.bytes.length]]);
    // A new ImageCache over the same directory (a node restart) trusts what was verified before.
    assert.equal(await new ImageCache(cache.dir).ensure({ id: 'emi-basic', url: img.url, sha256: img.sha256 }), path);
    assert.equal(requests.get('emi-basic'), 1);
  });

  test('a checksum mismatch is an error and leaves nothing behind', async () => {
    const img = serve('emi-corrupt');
    const cache = freshCache();
    const wrong = sha256(Buffer.from('something else'));
    await assert.rejects(cache.ensure({ id: 'emi-corrupt', url: img.url, sha256: wrong }), (err: unknown) => {
      assert.ok(err instanceof ImageChecksumError);
      assert.equal(err.expected, wrong);
      assert.equal(err.actual, img.sha256);
      return true;
    });
    assert.deepEqual(await readdir(cache.dir), []);
    assert.deepEqual(await cache.list(), []);
    // The right digest then works.
    const path = await cache.ensure({ id: 'emi-corrupt', url: img.url, sha256: img.sha256 });
    assert.deepEqual(await readFile(path), img.bytes);
  });

  test('a size mismatch or an HTTP error fails the same way', async () => {
    const img = serve('emi-size');
    const cache = freshCache();
    await assert.rejects(cache.ensure({ id: 'emi-size', url: img.url, sha256: img.sha256, size: img.bytes.length + 1 }), /size mismatch/);
    await assert.rejects(cache.ensure({ id: 'emi-missing', url: `${base}/nope`, sha256: img.sha256 }), (err: unknown) => {
      assert.ok(err instanceof ImageFetchError);
      assert.match(err.message, /HTTP 404/);
      return true;
    });
    assert.deepEqual(await readdir(cache.dir), []);
  });

  test('concurrent ensures of one image share a single fetch', async () => {
    const img = serve('emi-shared', 256 * 1024);
    const cache = freshCache();
    const seenA: number[] = [];
    const seenB: number[] = [];
    const source = { id: 'emi-shared', url: img.url, sha256: img.sha256 };
    const paths = await Promise.all([
      cache.ensure(source, (p) => seenA.push(p.receivedBytes)),
      cache.ensure(source, (p) => seenB.push(p.receivedBytes)),
      cache.ensure(source),
    ]);
    assert.equal(new Set(paths).size, 1);
    assert.equal(requests.get('emi-shared'), 1);
    assert.equal(seenA.at(-1), img.bytes.length);
    assert.equal(seenB.at(-1), img.bytes.length);
    assert.deepEqual(await readFile(paths[0]), img.bytes);
  });

  test('concurrent ensures that fail all see the error', async () => {
    const img = serve('emi-shared-bad');
    const cache = freshCache();
    const source = { id: 'emi-shared-bad', url: img.url, sha256: sha256(Buffer.from('x')) };
    const results = await Promise.allSettled([cache.ensure(source), cache.ensure(source)]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
    assert.equal(requests.get('emi-shared-bad'), 1);
    assert.deepEqual(await readdir(cache.dir), []);
  });

  test('reads local files by path and by file: URL', async () => {
    const bytes = imageBytes('local', 10_000);
    const file = join(root, 'local.raw');
    await writeFile(file, bytes);
    const cache = freshCache();
    const byPath = await cache.ensure({ id: 'emi-path', url: file, sha256: sha256(bytes) });
    const byUrl = await cache.ensure({ id: 'emi-url', url: pathToFileURL(file).href, sha256: sha256(bytes) });
    assert.deepEqual(await readFile(byPath), bytes);
    assert.deepEqual(await readFile(byUrl), bytes);
    await assert.rejects(cache.ensure({ id: 'emi-rel', url: 'relative/path.img', sha256: sha256(bytes) }), /relative and this node has no cluster/);
  });

  test('fetches a relative location from the cluster URL it is given, keeping absolute ones as they are', async () => {
    // What a cluster with no node-facing URL hands out: its relay path and signed query, relative.
    const bytes = imageBytes('relative', 40_000);
    images.set('cluster-a/images/emi-relayed?src=%2Fimg&sig=abc', bytes);
    const absolute = serve('emi-absolute');
    const cache = freshCache({ baseUrl: `${base}/cluster-a` });
    const path = await cache.ensure({ id: 'emi-relayed', url: 'images/emi-relayed?src=%2Fimg&sig=abc', sha256: sha256(bytes) });
    assert.deepEqual(await readFile(path), bytes);
    assert.equal(requests.get('cluster-a/images/emi-relayed?src=%2Fimg&sig=abc'), 1);
    assert.equal((await cache.list()).find((i) => i.id === 'emi-relayed')?.url, `${base}/cluster-a/images/emi-relayed?src=%2Fimg&sig=abc`);
    // Absolute URLs and paths do not move.
    assert.deepEqual(await readFile(await cache.ensure({ id: 'emi-absolute', url: absolute.url, sha256: absolute.sha256 })), absolute.bytes);
    const file = join(root, 'beside-relative.raw');
    await writeFile(file, bytes);
    assert.deepEqual(await readFile(await cache.ensure({ id: 'emi-local', url: file, sha256: sha256(bytes) })), bytes);
    // A relative location that the base does not make http(s) is refused.
    const fileBased = freshCache({ baseUrl: pathToFileURL(root).href });
    await assert.rejects(fileBased.ensure({ id: 'emi-relayed', url: 'images/emi-relayed', sha256: sha256(bytes) }), /not an http\(s\) URL/);
  });

  test('evict removes an image; trimming drops the least recently used first', async () => {
    const size = 32 * 1024;
    const a = serve('emi-a', size), b = serve('emi-b', size), c = serve('emi-c', size);
    const cache = freshCache({ maxBytes: Math.floor(size * 2.5) });
    const src = (id: string, img: { url: string; sha256: string }) => ({ id, url: img.url, sha256: img.sha256 });
    await cache.ensure(src('emi-a', a));
    await pause(5); // distinct last-use times
    await cache.ensure(src('emi-b', b));
    await pause(5);
    await cache.ensure(src('emi-c', c)); // over the limit: a is the least recently used
    assert.deepEqual((await cache.list()).map((i) => i.id).sort(), ['emi-b', 'emi-c']);
    await pause(5);
    await cache.ensure(src('emi-b', b)); // touch b
    await pause(5);
    await cache.ensure(src('emi-a', a)); // refetch a: now c is the least recently used
    assert.deepEqual((await cache.list()).map((i) => i.id).sort(), ['emi-a', 'emi-b']);
    assert.equal(requests.get('emi-a'), 2);

    assert.equal(await cache.evict('emi-b'), true);
    assert.equal(await cache.evict('emi-b'), false);
    assert.deepEqual((await cache.list()).map((i) => i.id), ['emi-a']);
  });

  test('images in use are neither trimmed nor evicted', async () => {
    const size = 32 * 1024;
    const a = serve('emi-pinned', size), b = serve('emi-other', size);
    const cache = freshCache({ maxBytes: size, inUse: (id) => id === 'emi-pinned' });
    await cache.ensure({ id: 'emi-pinned', url: a.url, sha256: a.sha256 });
    await pause(5);
    await cache.ensure({ id: 'emi-other', url: b.url, sha256: b.sha256 });
    // Over the limit, but the only candidate is in use: both stay.
    assert.deepEqual((await cache.list()).map((i) => i.id).sort(), ['emi-other', 'emi-pinned']);
    await assert.rejects(cache.evict('emi-pinned'), ImageInUseError);
  });
});

const haveQemuImg = (() => {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe('instance disks', { skip: skipUnlessPresent(!haveQemuImg && 'qemu-img (Debian qemu-utils)') }, () => {
  let root: string;
  before(async () => { root = await mkdtemp(join(tmpdir(), 'ironbark-disk-')); });
  after(async () => { await rm(root, { recursive: true, force: true }); });

  test('are copy-on-write overlays: a 10 GiB base costs no more than a 100 MiB one', async () => {
    for (const [name, bytes] of [['small.raw', 100 * 1024 ** 2], ['large.raw', 10 * 1024 ** 3]] as const) {
      const basePath = join(root, name);
      await writeFile(basePath, '');
      await truncate(basePath, bytes); // sparse
      const diskPath = join(root, 'instances', `${name}.qcow2`);
      await createInstanceDisk(basePath, diskPath, { baseFormat: 'raw' });
      const info = await diskInfo(diskPath);
      assert.equal(info.format, 'qcow2');
      assert.equal(info.virtualSize, bytes);
      assert.equal(info.backingFile, basePath);
      assert.equal(info.backingFormat, 'raw');
      assert.ok((await stat(diskPath)).size < 1024 * 1024, `${name}: overlay holds metadata only`);
    }
  });

  test('can be larger than the image but not smaller, and never overwrite a disk', async () => {
    const basePath = join(root, 'base2.raw');
    await writeFile(basePath, '');
    await truncate(basePath, 2 * 1024 ** 3);
    const bigger = join(root, 'bigger.qcow2');
    await createInstanceDisk(basePath, bigger, { baseFormat: 'raw', sizeGiB: 8 });
    assert.equal((await diskInfo(bigger)).virtualSize, 8 * 1024 ** 3);
    await assert.rejects(createInstanceDisk(basePath, join(root, 'smaller.qcow2'), { baseFormat: 'raw', sizeGiB: 1 }), InstanceDiskError);
    await assert.rejects(createInstanceDisk(basePath, bigger, { baseFormat: 'raw' }), /already exists/);
    await assert.rejects(createInstanceDisk(join(root, 'absent.raw'), join(root, 'x.qcow2'), { baseFormat: 'raw' }), /does not exist/);
    // A qcow2 base works too.
    const overlayOfOverlay = join(root, 'chain.qcow2');
    await createInstanceDisk(bigger, overlayOfOverlay, { baseFormat: 'qcow2' });
    assert.equal((await diskInfo(overlayOfOverlay)).backingFormat, 'qcow2');
    await deleteInstanceDisk(overlayOfOverlay);
    await deleteInstanceDisk(overlayOfOverlay);
    await assert.rejects(stat(overlayOfOverlay), { code: 'ENOENT' });
  });
});
