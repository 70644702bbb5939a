// Image files for cluster controllers on other hosts: `GET /cluster-images/<id>` streams the file
// of an available image (kernel, ramdisk or machine image) from the cloud's data directory.
//
// Only clusters of the clusters table may fetch: each request is signed like every other cluster
// message (peer-auth.ts) with the zone as key id and that cluster's shared secret, over the method,
// the path and an empty body. So removing a cluster from the table also takes its image access away,
// and no URL handed to a cluster works for anyone else. Refusals answer 403 before anything about
// the image is looked up; an unknown, pending or deregistered image answers 404. The cluster checks
// the SHA-256 it got in the signed launch request, so the file needs no signature of its own.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { Context, Hono } from 'hono';
import type { Store } from '../../store/store.ts';
import { PeerVerifier } from '../../auth/peer-auth.ts';

export const CLUSTER_IMAGES_PATH = '/cluster-images';

export interface ClusterImagesOptions {
  store: Store;
  log: { warn(fields: object, msg: string): void; error(fields: object, msg: string): void };
  now?: () => number;
}

/** The URL a cluster fetches `imageId` from, given the base URL clusters reach this cloud at. */
export function clusterImageUrl(baseUrl: string, imageId: string): string {
  return `${baseUrl.replace(/\/+$/, '')}${CLUSTER_IMAGES_PATH}/${encodeURIComponent(imageId)}`;
}

function plainError(c: Context, status: 403 | 404 | 500, code: string, message: string): Response {
  return c.json({ code, message }, status);
}

/** Mounts `GET|HEAD /cluster-images/:id` on the cloud's Hono app. */
export function mountClusterImages(app: Hono, opts: ClusterImagesOptions): void {
  const { store, log } = opts;
  const verifier = new PeerVerifier({
    secretFor: async (zone) => (await store.db.selectFrom('clusters').select('secret').where('zone', '=', zone).executeTakeFirst())?.secret,
    now: opts.now,
  });

  app.get(`${CLUSTER_IMAGES_PATH}/:id`, async (c) => {
    const headers: Record<string, string> = {};
    c.req.raw.headers.forEach((value, key) => { headers[key] = value; });
    const path = new URL(c.req.url).pathname;
    const verdict = await verifier.verify({ method: c.req.method, path, body: '', headers });
    if (!verdict.ok) {
      log.warn({ peer: verdict.keyId ?? null, reason: verdict.reason, path }, `refused image request: ${verdict.message}`);
      return plainError(c, 403, 'AuthFailure', `image request refused: ${verdict.message}`);
    }
    const id = c.req.param('id');
    const row = await store.db.selectFrom('images').select(['location', 'sha256', 'size_bytes', 'state'])
      .where('id', '=', id).executeTakeFirst();
    if (!row || row.state !== 'available') {
      return plainError(c, 404, 'InvalidAMIID.NotFound', `The image id '[${id}]' does not exist`);
    }
    const file = row.location.startsWith('file:') ? fileURLToPath(row.location) : row.location;
    if (!isAbsolute(file)) {
      return plainError(c, 404, 'InvalidAMIID.NotFound', `The image ${id} has no file on this cloud controller.`);
    }
    const info = await stat(file).catch(() => undefined);
    if (!info?.isFile() || info.size !== Number(row.size_bytes)) {
      const why = info?.isFile() ? `is ${info.size} bytes, not the ${row.size_bytes} it was registered with` : 'is missing';
      log.error({ imageId: id, file, cluster: verdict.keyId }, `image file ${why}`);
      return plainError(c, 500, 'InternalError', `The file of image ${id} ${why} on the cloud controller.`);
    }
    const responseHeaders = {
      'content-type': 'application/octet-stream',
      'content-length': String(info.size),
      etag: `"${row.sha256}"`,
      'x-ironbark-sha256': row.sha256,
    };
    if (c.req.method === 'HEAD') return new Response(null, { status: 200, headers: responseHeaders });
    const body = Readable.toWeb(createReadStream(file)) as unknown as ReadableStream<Uint8Array>;
    return new Response(body, { status: 200, headers: responseHeaders });
  });
}
