// The default guest image as the cloud sees it: built (or found in the cache) on this host and
// registered as public aki-/ari-/ami- images every account can run.
import type { Store } from '../store/store.ts';
import { ensureDefaultGuestImage, type GuestImageProgress } from '../node/guest-image.ts';
import { registerImageFiles, type RegisteredImage } from './images.ts';

export const DEFAULT_IMAGE_NAME = 'ironbark-default';

export async function ensureDefaultImageRegistered(store: Store, opts: {
  ownerAccountId: string;
  cacheDir?: string;
  onProgress?: (p: GuestImageProgress) => void;
}): Promise<RegisteredImage> {
  const image = await ensureDefaultGuestImage({ cacheDir: opts.cacheDir, onProgress: opts.onProgress });
  const file = (path: string, name: string) => {
    const info = image.manifest.files[name];
    if (!info) throw new Error(`the default image's manifest has no entry for ${name}`);
    return { path, sha256: info.sha256, sizeBytes: info.size };
  };
  return registerImageFiles(store, {
    name: DEFAULT_IMAGE_NAME,
    description: `Ironbark default guest: Debian ${image.manifest.kernel.version} cloud kernel, busybox, dropbear`,
    kernel: file(image.kernel, 'vmlinuz'),
    ramdisk: image.initrd ? file(image.initrd, 'initrd.img') : undefined,
    rootfs: { ...file(image.rootfs, 'rootfs.img'), format: 'raw' },
    kernelCmdline: image.cmdline,
    public: true,
    ownerAccountId: opts.ownerAccountId,
  });
}

/** Where an image's file is, for the cluster's image relay (all on this host). */
export async function imageFileFor(store: Store, imageId: string): Promise<{ path: string; sha256: string; size: number } | undefined> {
  const row = await store.db.selectFrom('images').select(['location', 'sha256', 'size_bytes', 'state']).where('id', '=', imageId).executeTakeFirst();
  if (!row || row.state !== 'available') return undefined;
  return { path: row.location, sha256: row.sha256, size: Number(row.size_bytes) };
}
