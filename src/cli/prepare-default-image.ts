// The guest images for `ironbark up` and `ironbark cloud`, with their build progress on stdout.
import type { Store } from '../store/store.ts';
import { ensureDefaultImageRegistered, ensureGuestImageRegistered } from '../cloud/images/default-image.ts';
import type { RegisteredImage } from '../cloud/images/images.ts';
import type { GuestImageRecipe } from '../node/guest-image.ts';

export async function prepareDefaultImage(store: Store, ownerAccountId: string, cacheDir?: string): Promise<RegisteredImage> {
  const out = process.stdout;
  out.write('Preparing the default guest image (built once from Debian packages, then cached)...\n');
  const image = await ensureDefaultImageRegistered(store, {
    ownerAccountId,
    cacheDir,
    onProgress: (p) => out.write(p.total ? `  [${p.step}/${p.total}] ${p.message}\n` : `  ${p.message}\n`),
  });
  out.write(`Default image: ${image.imageId} (kernel ${image.kernelId}${image.ramdiskId ? `, ramdisk ${image.ramdiskId}` : ''})\n`);
  return image;
}

/** Another guest image recipe (`--image debian-12`), built once and registered as a public image. */
export async function prepareGuestImage(store: Store, ownerAccountId: string, recipe: GuestImageRecipe, cacheDir?: string): Promise<RegisteredImage & { name: string }> {
  if (recipe === 'default') return { ...(await prepareDefaultImage(store, ownerAccountId, cacheDir)), name: 'ironbark-default' };
  const out = process.stdout;
  out.write(`Preparing the ${recipe} guest image (built once from Debian packages, then cached; the first build takes a few minutes)...\n`);
  const image = await ensureGuestImageRegistered(store, recipe, {
    ownerAccountId,
    cacheDir,
    onProgress: (p) => out.write(p.total ? `  [${p.step}/${p.total}] ${p.message}\n` : `  ${p.message}\n`),
  });
  out.write(`Image ${image.name}: ${image.imageId} (kernel ${image.kernelId}${image.ramdiskId ? `, ramdisk ${image.ramdiskId}` : ''})\n`);
  return image;
}
