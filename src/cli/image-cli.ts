// `ironbark admin image build [RECIPE]` (and its older spelling `ironbark image build`): builds a
// guest image (or finds it cached) without starting a cloud, with its progress, so an operator or
// the test command can prepare it ahead of time.
import { InvalidArgumentError, type Command } from 'commander';
import { ensureGuestImage, GUEST_IMAGE_RECIPES, isGuestImageRecipe, type GuestImageRecipe } from '../node/guest-image.ts';

export function parseRecipe(value: string): GuestImageRecipe {
  if (!isGuestImageRecipe(value)) throw new InvalidArgumentError(`no guest image recipe ${value} (recipes: ${GUEST_IMAGE_RECIPES.join(', ')})`);
  return value;
}

/** Adds `build [recipe]` to an `image` command (top-level or under `admin`). */
export function addImageBuildCommand(image: Command): void {
  image.command('build')
    .description(`build a guest image (cached by the fingerprint of its inputs) and print its directory; recipes: ${GUEST_IMAGE_RECIPES.join(', ')}`)
    .argument('[recipe]', 'which image: default (busybox guest) or debian-12 (Debian 12 with cloud-init)', parseRecipe, 'default')
    .option('--image-cache <dir>', 'where built guest images are cached (default ~/.cache/ironbark/images)')
    .action(async (recipe: GuestImageRecipe, opts: { imageCache?: string }) => {
      const out = process.stderr;
      const built = await ensureGuestImage(recipe, {
        cacheDir: opts.imageCache,
        onProgress: (p) => out.write(p.total ? `  [${p.step}/${p.total}] ${p.message}\n` : `  ${p.message}\n`),
      });
      const os = built.manifest.os ? `${built.manifest.os.name} ${built.manifest.os.version}, ` : '';
      out.write(`${recipe} guest image: ${os}kernel ${built.manifest.kernel.package} ${built.manifest.kernel.version}, fingerprint ${built.manifest.fingerprint.slice(0, 16)}\n`);
      process.stdout.write(`${built.dir}\n`);
    });
}

/** `ironbark image build`: kept as an alias of `ironbark admin image build`. */
export function registerImageCommands(program: Command): void {
  const image = program.command('image').description('the guest images this host builds from Debian packages (also: ironbark admin image)');
  addImageBuildCommand(image);
}
