// `ironbark image build`: builds the default guest image (or finds it cached) without starting a
// cloud, with its progress, so an operator or the test command can prepare it ahead of time.
import type { Command } from 'commander';
import { ensureDefaultGuestImage } from '../node/guest-image.ts';

export function registerImageCommands(program: Command): void {
  const image = program.command('image').description('the guest images this host builds from Debian packages');
  image.command('build')
    .description('build the default guest image (cached by the fingerprint of its inputs) and print its directory')
    .option('--image-cache <dir>', 'where built guest images are cached (default ~/.cache/ironbark/images)')
    .action(async (opts: { imageCache?: string }) => {
      const out = process.stderr;
      const built = await ensureDefaultGuestImage({
        cacheDir: opts.imageCache,
        onProgress: (p) => out.write(p.total ? `  [${p.step}/${p.total}] ${p.message}\n` : `  ${p.message}\n`),
      });
      out.write(`default guest image: kernel ${built.manifest.kernel.package} ${built.manifest.kernel.version}, fingerprint ${built.manifest.fingerprint.slice(0, 16)}\n`);
      process.stdout.write(`${built.dir}\n`);
    });
}
