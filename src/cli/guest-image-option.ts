// `--image RECIPE` for `ironbark up`: another guest image to build (once, then cached) and register
// as a public image beside the default one, e.g. `--image debian-12`.
import type { Command } from 'commander';
import { GUEST_IMAGE_RECIPES, type GuestImageRecipe } from '../node/guest-image.ts';
import { parseRecipe } from './image-cli.ts';

export interface GuestImageFlags {
  /** Recipes to build and register besides the default image. */
  image?: GuestImageRecipe[];
}

export function addGuestImageOption<C extends Command>(cmd: C): C {
  cmd.option(
    '--image <recipe>',
    `also build and register this guest image (repeatable; recipes: ${GUEST_IMAGE_RECIPES.join(', ')}), e.g. debian-12: Debian 12 with cloud-init, named debian-12-amd64`,
    (value: string, previous: GuestImageRecipe[] | undefined) => [...(previous ?? []), parseRecipe(value)],
  );
  return cmd;
}
