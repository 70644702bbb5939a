// The cluster controller serves base images to its nodes, which may not reach the cloud controller
// (Eucalyptus' network split). `GET /images/<id>` streams the image: from a local file when the
// cloud gave a path, or from a copy fetched once from the cloud's URL and kept in a
// checksum-verified cache. Nodes verify the SHA-256 again on their side.
import http from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { isAbsolute } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { ImageCache } from '../node/image-cache.ts';
import type { ImageRef } from '../node/node-api.ts';
import { applyServerTimeouts } from '../http/server-timeouts.ts';

export interface RelayedImage {
  /** A file on this host; or */
  path?: string;
  /** where the cloud serves it (fetched once into the relay's cache). */
  url?: string;
  sha256: string;
  size: number;
}

export interface ImageRelayOptions {
  /** The image's location and checksum; undefined when there is no such image. */
  resolveImage: (imageId: string) => Promise<RelayedImage | undefined>;
  /** Where images fetched from a URL are kept; required for the URL case. */
  cacheDir?: string;
  /** Headers that authenticate the relay's fetch of a URL (the cloud wants clusters' signatures). */
  fetchHeaders?: (url: URL) => Record<string, string> | undefined;
  log?: { warn(fields: object, msg: string): void };
}

export type ImageRelayHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

const PATH = /^\/images\/([A-Za-z0-9][A-Za-z0-9._-]{0,127})$/;

export function createImageRelay(opts: ImageRelayOptions): ImageRelayHandler {
  const cache = opts.cacheDir ? new ImageCache(opts.cacheDir, { requestHeaders: opts.fetchHeaders }) : undefined;

  async function localPath(id: string, image: RelayedImage): Promise<string> {
    if (image.path) {
      if (!isAbsolute(image.path)) throw new Error(`image ${id} has a relative path ${image.path}`);
      return image.path;
    }
    if (!image.url) throw new Error(`image ${id} has neither a path nor a URL`);
    if (!cache) throw new Error(`image ${id} is remote (${image.url}) and the relay has no cache directory`);
    return cache.ensure({ id, url: image.url, sha256: image.sha256, size: image.size });
  }

  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const match = PATH.exec(path);
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, 'method not allowed\n', { Allow: 'GET, HEAD' });
    if (!match) return reply(res, 404, 'not found\n');
    const id = match[1]!;
    (async () => {
      const image = await opts.resolveImage(id);
      if (!image) return reply(res, 404, `no image ${id}\n`);
      const file = await localPath(id, image);
      const info = await stat(file);
      if (!info.isFile()) throw new Error(`${file} is not a file`);
      res.writeHead(200, {
        'Content-Type': 'application/octet-stream',
        'Content-Length': String(info.size),
        ETag: `"${image.sha256}"`,
        'X-Ironbark-Sha256': image.sha256,
      });
      if (req.method === 'HEAD') return void res.end();
      await pipeline(createReadStream(file), res);
    })().catch((err: Error) => {
      opts.log?.warn({ imageId: id, err: err.message }, 'cannot serve image');
      if (!res.headersSent) reply(res, 502, `cannot serve image ${id}: ${err.message}\n`);
      else res.destroy(err);
    });
  };
}

function reply(res: http.ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': String(Buffer.byteLength(body)), ...headers });
  res.end(body);
}

export interface RunningImageRelay {
  /** e.g. http://127.0.0.1:41234 */
  baseUrl: string;
  /** The ImageRef a node uses to fetch `imageId` through this relay. */
  imageRef(imageId: string, image: { sha256: string; sizeBytes: number; format: ImageRef['format'] }): ImageRef;
  close(): Promise<void>;
}

/** Serves the relay on host:port (port 0 picks a free one). */
export async function startImageRelay(opts: ImageRelayOptions & { host: string; port: number }): Promise<RunningImageRelay> {
  const server = applyServerTimeouts(http.createServer(createImageRelay(opts)));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => { server.off('error', reject); resolve(); });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const baseUrl = `http://${host}:${address.port}`;
  return {
    baseUrl,
    imageRef: (imageId, image) => ({ id: imageId, url: `${baseUrl}/images/${imageId}`, ...image }),
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
