// The default guest image for `ironbark up` and `ironbark cloud`, with its build progress on stdout.
import type { Store } from '../store/store.ts';
import { ensureDefaultImageRegistered } from '../cloud/default-image.ts';
import type { RegisteredImage } from '../cloud/images.ts';

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
