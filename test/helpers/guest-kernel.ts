// The kernel that QEMU tests boot is the one of the image recipe (images/default/build.sh), from
// the cached default guest image the test command builds, never whatever the host has in /boot.
import { ensureDefaultGuestImage, type GuestImage } from '../../src/node/guest-image.ts';

export interface RecipeGuest {
  image?: GuestImage;
  /** Why there is no image (to skip with by hand; a failure under CI). */
  missing?: string;
}

let cached: Promise<RecipeGuest> | undefined;

export function recipeGuest(): Promise<RecipeGuest> {
  cached ??= ensureDefaultGuestImage().then(
    (image) => ({ image }),
    (err: unknown) => ({ missing: `the default guest image of images/default (${err instanceof Error ? err.message : String(err)})` }),
  );
  return cached;
}
