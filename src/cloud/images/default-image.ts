// The guest images the cloud builds itself, as the cloud sees them: built (or found in the cache)
// on this host from a recipe under images/ and registered as public aki-/ari-/ami- images every
// account can run. `default` is Ironbark's busybox guest; `debian-12` is Debian 12 with cloud-init.
import type { Store } from '../../store/store.ts';
import { ensureGuestImage, type GuestImage, type GuestImageProgress, type GuestImageRecipe } from '../../node/guest-image.ts';
import { registerImageFiles, type RegisteredImage } from './images.ts';

export const DEFAULT_IMAGE_NAME = 'ironbark-default';

/**
 * The name each recipe's image is registered under. A rebuild (new fingerprint) keeps the name,
 * so the older build is retired when the new one is registered.
 */
export const GUEST_IMAGE_NAMES: Record<GuestImageRecipe, string> = {
  default: DEFAULT_IMAGE_NAME,
  'debian-12': 'debian-12-amd64',
};

function describeImage(image: GuestImage): string {
  const os = image.manifest.os;
  if (image.recipe === 'default' || !os) {
    return `Ironbark default guest: Debian ${image.manifest.kernel.version} cloud kernel, busybox, dropbear`;
  }
  return `${os.name} ${os.version}${os.codename ? ` (${os.codename})` : ''} with cloud-init ${os.cloudInit ?? ''}, kernel ${image.manifest.kernel.version}`
    + `${os.defaultUser ? `; log in as ${os.defaultUser}` : ''}; build ${image.manifest.fingerprint.slice(0, 16)}`;
}

export async function ensureGuestImageRegistered(store: Store, recipe: GuestImageRecipe, opts: {
  ownerAccountId: string;
  cacheDir?: string;
  onProgress?: (p: GuestImageProgress) => void;
}): Promise<RegisteredImage & { name: string }> {
  const image = await ensureGuestImage(recipe, { cacheDir: opts.cacheDir, onProgress: opts.onProgress });
  const file = (path: string, name: string) => {
    const info = image.manifest.files[name];
    if (!info) throw new Error(`the ${recipe} image's manifest has no entry for ${name}`);
    return { path, sha256: info.sha256, sizeBytes: info.size };
  };
  const name = GUEST_IMAGE_NAMES[recipe];
  const registered = await registerImageFiles(store, {
    name,
    description: describeImage(image),
    kernel: file(image.kernel, 'vmlinuz'),
    ramdisk: image.initrd ? file(image.initrd, 'initrd.img') : undefined,
    rootfs: { ...file(image.rootfs, 'rootfs.img'), format: image.rootfsFormat },
    kernelCmdline: image.cmdline,
    public: true,
    ownerAccountId: opts.ownerAccountId,
  });
  return { ...registered, name };
}

export async function ensureDefaultImageRegistered(store: Store, opts: {
  ownerAccountId: string;
  cacheDir?: string;
  onProgress?: (p: GuestImageProgress) => void;
}): Promise<RegisteredImage> {
  const { name: _name, ...registered } = await ensureGuestImageRegistered(store, 'default', opts);
  return registered;
}

/** Where an image's file is, for the cluster's image relay (all on this host). */
export async function imageFileFor(store: Store, imageId: string): Promise<{ path: string; sha256: string; size: number } | undefined> {
  const row = await store.db.selectFrom('images').select(['location', 'sha256', 'size_bytes', 'state']).where('id', '=', imageId).executeTakeFirst();
  if (!row || row.state !== 'available') return undefined;
  return { path: row.location, sha256: row.sha256, size: Number(row.size_bytes) };
}
