// The node's cache of base images. Each image is fetched once (HTTP(S) or a local file), written to
// a temp file while its SHA-256 is computed, and renamed into place only when the digest matches, so
// the cache never holds a partial or wrong image. Least-recently-used images are trimmed to a size limit.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';

export interface ImageSource {
  id: string;
  /** http(s) URL, file: URL, absolute path, or a location relative to the cache's baseUrl. */
  url: string;
  sha256: string;
  size?: number;
}

export interface CachedImage {
  id: string;
  path: string;
  sha256: string;
  size: number;
  url: string;
  fetchedAt: Date;
  lastUsedAt: Date;
}

export interface ImageFetchProgress {
  imageId: string;
  receivedBytes: number;
  totalBytes?: number;
}

export interface ImageCacheOptions {
  /** Trim least-recently-used images once the cache grows past this many bytes. */
  maxBytes?: number;
  /** Images backing instance disks must stay: trimming skips them and evict refuses them. */
  inUse?: (imageId: string) => boolean;
  /** Headers for an http(s) fetch, made per attempt (a cluster signs its fetches from the cloud). */
  requestHeaders?: (url: URL) => Record<string, string> | undefined;
  /**
   * What a relative location (`images/<id>?…`, from a cluster with no node-facing URL) is relative
   * to: the URL of the cluster this node joined. Without it a relative location is refused.
   */
  baseUrl?: string;
}

export class ImageFetchError extends Error {
  readonly imageId: string;
  constructor(imageId: string, message: string) {
    super(`cannot fetch image ${imageId}: ${message}`);
    this.name = 'ImageFetchError';
    this.imageId = imageId;
  }
}

export class ImageChecksumError extends ImageFetchError {
  readonly expected: string;
  readonly actual: string;
  constructor(imageId: string, expected: string, actual: string) {
    super(imageId, `SHA-256 mismatch (expected ${expected}, got ${actual})`);
    this.name = 'ImageChecksumError';
    this.expected = expected;
    this.actual = actual;
  }
}

export class ImageInUseError extends Error {
  constructor(imageId: string) {
    super(`image ${imageId} backs instance disks on this node and cannot be evicted`);
    this.name = 'ImageInUseError';
  }
}

interface Meta {
  id: string;
  sha256: string;
  size: number;
  url: string;
  fetchedAt: string;
  lastUsedAt: string;
}

interface InFlight {
  sha256: string;
  listeners: Set<(p: ImageFetchProgress) => void>;
  done: Promise<string>;
}

const TEMP_PREFIX = '.partial-';

export class ImageCache {
  readonly dir: string;
  private readonly opts: ImageCacheOptions;
  private readonly inFlight = new Map<string, InFlight>();
  private ready: Promise<void> | undefined;

  constructor(dir: string, opts: ImageCacheOptions = {}) {
    this.dir = dir;
    this.opts = opts;
  }

  /** Returns the path of the cached image, fetching and verifying it first if needed. */
  async ensure(source: ImageSource, onProgress?: (p: ImageFetchProgress) => void): Promise<string> {
    validateSource(source);
    const image = { ...source, url: resolveLocation(source, this.opts.baseUrl) };
    await this.init();
    const sha256 = image.sha256.toLowerCase();
    const running = this.inFlight.get(image.id);
    if (running && running.sha256 === sha256) {
      if (onProgress) running.listeners.add(onProgress);
      try {
        return await running.done;
      } finally {
        if (onProgress) running.listeners.delete(onProgress);
      }
    }
    if (running) await running.done.catch(() => undefined);

    // Registered before any await, so every concurrent ensure of this image joins this one.
    const listeners = new Set<(p: ImageFetchProgress) => void>();
    if (onProgress) listeners.add(onProgress);
    const done = this.load({ ...image, sha256 }, (p) => { for (const l of listeners) l(p); });
    const flight: InFlight = { sha256, listeners, done };
    this.inFlight.set(image.id, flight);
    try {
      const path = await done;
      await this.trim([image.id]);
      return path;
    } finally {
      if (this.inFlight.get(image.id) === flight) this.inFlight.delete(image.id);
    }
  }

  private async load(image: ImageSource, report: (p: ImageFetchProgress) => void): Promise<string> {
    const meta = await this.readMeta(image.id);
    if (meta && meta.sha256 === image.sha256 && (await exists(this.imagePath(image.id)))) {
      await this.writeMeta({ ...meta, lastUsedAt: new Date().toISOString() });
      return this.imagePath(image.id);
    }
    return this.fetchIntoCache(image, report);
  }

  async list(): Promise<CachedImage[]> {
    await this.init();
    const out: CachedImage[] = [];
    for (const name of await readdir(this.dir)) {
      if (!name.endsWith('.json') || name.startsWith(TEMP_PREFIX)) continue;
      const meta = await this.readMeta(name.slice(0, -'.json'.length));
      if (!meta || !(await exists(this.imagePath(meta.id)))) continue;
      out.push({
        id: meta.id, path: this.imagePath(meta.id), sha256: meta.sha256, size: meta.size, url: meta.url,
        fetchedAt: new Date(meta.fetchedAt), lastUsedAt: new Date(meta.lastUsedAt),
      });
    }
    return out;
  }

  /** Removes an image from the cache; false if it was not cached. */
  async evict(imageId: string): Promise<boolean> {
    await this.init();
    if (this.opts.inUse?.(imageId)) throw new ImageInUseError(imageId);
    const had = await exists(this.imagePath(imageId));
    // The metadata goes first: an image file without metadata is never served.
    await rm(this.metaPath(imageId), { force: true });
    await rm(this.imagePath(imageId), { force: true });
    return had;
  }

  /** Evicts least-recently-used images until the cache fits maxBytes; returns the evicted ids. */
  async trim(keep: string[] = []): Promise<string[]> {
    const limit = this.opts.maxBytes;
    if (limit === undefined) return [];
    const images = (await this.list()).sort((a, b) => a.lastUsedAt.getTime() - b.lastUsedAt.getTime());
    let total = images.reduce((sum, i) => sum + i.size, 0);
    const evicted: string[] = [];
    for (const image of images) {
      if (total <= limit) break;
      if (keep.includes(image.id) || this.inFlight.has(image.id) || this.opts.inUse?.(image.id)) continue;
      await this.evict(image.id);
      total -= image.size;
      evicted.push(image.id);
    }
    return evicted;
  }

  imagePath(imageId: string): string {
    return join(this.dir, `${imageId}.img`);
  }

  private metaPath(imageId: string): string {
    return join(this.dir, `${imageId}.json`);
  }

  private init(): Promise<void> {
    this.ready ??= (async () => {
      await mkdir(this.dir, { recursive: true });
      // Leftovers of fetches cut short by a node restart.
      for (const name of await readdir(this.dir)) {
        if (name.startsWith(TEMP_PREFIX)) await rm(join(this.dir, name), { force: true });
      }
    })();
    return this.ready;
  }

  private async fetchIntoCache(image: ImageSource, report: (p: ImageFetchProgress) => void): Promise<string> {
    const temp = join(this.dir, `${TEMP_PREFIX}${image.id}-${randomBytes(6).toString('hex')}`);
    try {
      const { body, totalBytes } = await openSource(image, this.opts.requestHeaders);
      const hash = createHash('sha256');
      let receivedBytes = 0;
      const meter = new Transform({
        transform(chunk: Buffer, _enc, callback) {
          hash.update(chunk);
          receivedBytes += chunk.length;
          report({ imageId: image.id, receivedBytes, totalBytes });
          callback(null, chunk);
        },
      });
      await pipeline(body, meter, createWriteStream(temp, { flags: 'wx' }));
      if (image.size !== undefined && receivedBytes !== image.size) {
        throw new ImageFetchError(image.id, `size mismatch (expected ${image.size} bytes, got ${receivedBytes})`);
      }
      const actual = hash.digest('hex');
      if (actual !== image.sha256) throw new ImageChecksumError(image.id, image.sha256, actual);
      await rm(this.metaPath(image.id), { force: true });
      await rename(temp, this.imagePath(image.id));
      const now = new Date().toISOString();
      await this.writeMeta({ id: image.id, sha256: actual, size: receivedBytes, url: image.url, fetchedAt: now, lastUsedAt: now });
      return this.imagePath(image.id);
    } catch (err) {
      await rm(temp, { force: true });
      if (err instanceof ImageFetchError) throw err;
      throw new ImageFetchError(image.id, (err as Error).message);
    }
  }

  private async readMeta(imageId: string): Promise<Meta | undefined> {
    try {
      return JSON.parse(await readFile(this.metaPath(imageId), 'utf8')) as Meta;
    } catch {
      return undefined;
    }
  }

  private async writeMeta(meta: Meta): Promise<void> {
    const file = this.metaPath(meta.id);
    const temp = join(this.dir, `${TEMP_PREFIX}${meta.id}-${randomBytes(6).toString('hex')}.json`);
    await writeFile(temp, JSON.stringify(meta) + '\n');
    await rename(temp, file);
  }
}

function validateSource(image: ImageSource): void {
  // The id names files in the cache directory.
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(image.id)) throw new ImageFetchError(image.id, 'image id is not a plain name');
  if (!/^[0-9a-fA-F]{64}$/.test(image.sha256)) throw new ImageFetchError(image.id, 'sha256 must be 64 hex digits');
}

/** Absolute locations as they are; a relative one joined to `baseUrl` (a directory: its path ends in `/`). */
function resolveLocation(image: ImageSource, baseUrl: string | undefined): string {
  const location = image.url;
  if (/^[a-z][a-z0-9+.-]*:/i.test(location) || isAbsolute(location)) return location;
  if (!baseUrl) throw new ImageFetchError(image.id, `unsupported image location ${location}: it is relative and this node has no cluster to resolve it against`);
  const resolved = new URL(location, baseUrl.replace(/\/*$/, '/'));
  if (resolved.protocol !== 'http:' && resolved.protocol !== 'https:') {
    throw new ImageFetchError(image.id, `image location ${location} resolves to ${resolved.href}, which is not an http(s) URL`);
  }
  return resolved.href;
}

async function openSource(image: ImageSource, requestHeaders?: ImageCacheOptions['requestHeaders']): Promise<{ body: Readable; totalBytes?: number }> {
  if (/^https?:\/\//i.test(image.url)) {
    const headers = requestHeaders?.(new URL(image.url));
    // Signed headers are for that one URL: a redirect elsewhere must not carry them.
    const res = await fetch(image.url, headers ? { headers, redirect: 'error' } : {});
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      throw new ImageFetchError(image.id, `${image.url} answered HTTP ${res.status}`);
    }
    const length = Number(res.headers.get('content-length'));
    return {
      body: Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>),
      totalBytes: Number.isFinite(length) && length > 0 ? length : image.size,
    };
  }
  const path = image.url.startsWith('file:') ? fileURLToPath(image.url) : image.url;
  if (!isAbsolute(path)) throw new ImageFetchError(image.id, `unsupported image location ${image.url}`);
  const info = await stat(path).catch(() => undefined);
  if (!info?.isFile()) throw new ImageFetchError(image.id, `${path} is not a file`);
  return { body: createReadStream(path), totalBytes: info.size };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}
