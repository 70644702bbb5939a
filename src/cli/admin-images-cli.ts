// `ironbark admin image …`: the operator's images. `import FILE` brings a raw or qcow2 disk with
// its own boot loader into the cloud (checked by the cloud with qemu-img, copied with progress,
// then registered as a private or public ami-); `list` shows every image; `build [recipe]` makes
// one of the cloud's own guest images on this host.
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidArgumentError, type Command } from 'commander';
import { adminClientFor, formatTable, printResult } from './admin.ts';
import { addImageBuildCommand } from './image-cli.ts';

function positiveNumber(value: string): number {
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value) || !(n > 0)) throw new InvalidArgumentError('It must be a positive number.');
  return n;
}

function bootMode(value: string): string {
  if (value !== 'legacy-bios' && value !== 'uefi') throw new InvalidArgumentError('It must be legacy-bios or uefi.');
  return value;
}

const MiB = 1024 * 1024;

interface ImportView {
  id: string; phase: string; copiedBytes: number; totalBytes: number; imageId?: string; error?: { code: string; message: string };
}

export function registerImageAdminCommands(admin: Command): void {
  const image = admin.command('image').description('import, list and build images');

  image.command('import').argument('<file>', 'raw or qcow2 disk image with its own boot loader, readable on the cloud controller\'s host')
    .description('import a disk image as an ami- (private to an account, or public); refuses corrupt files, qcow2 backing files and disks over the size limit')
    .option('--name <name>', 'image name (default: the file name without its extension)')
    .option('--description <text>', 'image description')
    .option('--account <account>', 'owner account id or name (default: the cloud admin account)')
    .option('--public', 'every account may launch it (default: only its owner)', false)
    .option('--architecture <arch>', 'guest architecture', 'x86_64')
    .option('--boot-mode <mode>', 'how the disk boots: legacy-bios (SeaBIOS) or uefi (OVMF)', bootMode, 'legacy-bios')
    .option('--max-size <GiB>', 'refuse disks larger than this many GiB', positiveNumber, 64)
    .action(async (file: string, o: { name?: string; description?: string; account?: string; public: boolean; architecture: string; bootMode: string; maxSize: number }, cmd: Command) => {
      const client = adminClientFor(cmd);
      const path = resolve(file);
      const name = o.name ?? path.split('/').pop()!.replace(/\.(img|raw|qcow2|disk)$/i, '');
      const err = process.stderr;
      err.write(`checking ${path} on the cloud controller\n`);
      const started = await client.request<{ import: ImportView }>('POST', '/image-imports', {
        body: { path, name, description: o.description, account: o.account, public: o.public, architecture: o.architecture, bootMode: o.bootMode, maxSizeGiB: o.maxSize },
      });
      let job = started.import;
      let lastShown = -1;
      const copyLine = (copied: number, total: number) =>
        `copying ${total > 0 ? Math.floor((copied / total) * 100) : 100}% (${(copied / MiB).toFixed(0)} of ${(total / MiB).toFixed(0)} MiB)\n`;
      for (;;) {
        // A small disk is copied between two polls: the copy is still shown, whole, before what follows it.
        if (lastShown < 0 && (job.phase === 'verifying' || job.phase === 'done')) {
          err.write(copyLine(job.totalBytes, job.totalBytes));
          lastShown = 10;
        }
        if (job.phase === 'copying' || job.phase === 'verifying') {
          const percent = job.totalBytes > 0 ? Math.floor((job.copiedBytes / job.totalBytes) * 100) : 100;
          const step = job.phase === 'verifying' ? 101 : Math.floor(percent / 10);
          if (step !== lastShown) {
            err.write(job.phase === 'verifying' ? 'checking the copy\n' : copyLine(job.copiedBytes, job.totalBytes));
            lastShown = step;
          }
        }
        if (job.phase === 'done' || job.phase === 'failed') break;
        await sleep(300);
        job = (await client.request<{ import: ImportView }>('GET', `/image-imports/${encodeURIComponent(job.id)}`)).import;
      }
      if (job.phase === 'failed') throw new Error(`import of ${path} failed: ${job.error?.message ?? 'no reason given'}`);
      printResult(cmd, job, (j) => `${j.imageId}\n`);
    });

  image.command('list').description('list every image of the cloud, any owner')
    .option('--account <account>', 'only the images of this account (id or name)')
    .action(async (o: { account?: string }, cmd: Command) => {
      const data = await adminClientFor(cmd).request('GET', '/images', { query: { account: o.account } });
      printResult(cmd, data, (d: any) => formatTable(['ID', 'NAME', 'OWNER', 'KIND', 'STATE', 'PUBLIC', 'FORMAT', 'BOOT', 'SIZE MiB'],
        d.images.map((i: any) => [i.id, i.name, i.accountId, i.kind, i.state, i.public ? 'yes' : 'no', i.format, i.bootMode ?? (i.kind === 'machine' ? 'kernel' : '-'), (i.sizeBytes / MiB).toFixed(0)]),
        '(no images)'));
    });

  addImageBuildCommand(image);
}
