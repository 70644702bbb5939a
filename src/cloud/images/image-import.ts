// Bringing your own image: a raw or qcow2 disk that carries its own boot loader becomes an ami-
// of an account (private) or of everyone (public). The file is checked where it lies (so a bad
// one is refused before anything is made), copied into the cloud's image directory with its
// SHA-256 computed on the way, checked again as copied (that copy is what guests will read), and
// only then registered. A failure at any step removes the copy: no row, no file.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Store } from '../../store/store.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { newId } from '../ids.ts';
import { ARCHITECTURE, BOOT_MODES, ROOT_DEVICE_NAME, type BootMode } from './images.ts';
import { checkDiskImage, DiskImageRefused, type DiskImageFacts } from './disk-image-check.ts';

export interface ImageImportRequest {
  /** The file on the cloud controller's host. */
  path: string;
  name: string;
  description?: string;
  architecture?: string;
  bootMode?: string;
  ownerAccountId: string;
  public: boolean;
  /** Largest virtual disk (and file) size taken, in bytes. */
  maxBytes: number;
}

export interface ImageImportProgress {
  phase: 'checking' | 'copying' | 'verifying' | 'done' | 'failed';
  copiedBytes: number;
  totalBytes: number;
}

export interface CheckedImport {
  request: ImageImportRequest & { bootMode: BootMode; architecture: string };
  facts: DiskImageFacts;
}

const NAME = /^[A-Za-z0-9()[\]. /'@_-]{3,128}$/;

/**
 * Everything that can be refused before a byte is copied: the names, the boot mode (a GPT disk
 * is UEFI's, an MBR one either), the owner, and the file itself. Throws Ec2Error (400) with the
 * reason, which the CLI shows as it is.
 */
export async function checkImport(store: Store, req: ImageImportRequest): Promise<CheckedImport> {
  if (!NAME.test(req.name)) {
    throw new Ec2Error('InvalidParameterValue', `The image name ${JSON.stringify(req.name)} must have 3 to 128 letters, digits, spaces or ( ) [ ] . / ' @ _ -.`);
  }
  if (req.description !== undefined && req.description.length > 255) {
    throw new Ec2Error('InvalidParameterValue', 'The description must be at most 255 characters long.');
  }
  const architecture = req.architecture ?? ARCHITECTURE;
  if (architecture !== ARCHITECTURE) {
    throw new Ec2Error('InvalidParameterValue', `This cloud runs ${ARCHITECTURE} guests only, not ${architecture}.`);
  }
  const bootMode = (req.bootMode ?? 'legacy-bios') as BootMode;
  if (!(BOOT_MODES as readonly string[]).includes(bootMode)) {
    throw new Ec2Error('InvalidParameterValue', `The boot mode must be ${BOOT_MODES.join(' or ')}, not ${req.bootMode}.`);
  }
  const owner = await store.db.selectFrom('accounts').select(['id', 'status']).where('id', '=', req.ownerAccountId).executeTakeFirst();
  if (!owner) throw new Ec2Error('InvalidAccount.NotFound', `There is no account ${req.ownerAccountId}.`, 404);
  const taken = await store.db.selectFrom('images').select('id').where('account_id', '=', req.ownerAccountId)
    .where('name', '=', req.name).where('state', '!=', 'deregistered').executeTakeFirst();
  if (taken) throw new Ec2Error('InvalidAMIName.Duplicate', `AMI name ${req.name} is already in use by AMI ${taken.id}`);
  const facts = await checkFile(req.path, req.maxBytes);
  return { request: { ...req, bootMode, architecture }, facts };
}

async function checkFile(path: string, maxBytes: number): Promise<DiskImageFacts> {
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
    throw new Ec2Error('InvalidParameterValue', `The cloud controller cannot read ${path}: ${err.code === 'ENOENT' ? 'no such file' : err.message}.`);
  });
  if (!info.isFile()) throw new Ec2Error('InvalidParameterValue', `${path} is not a regular file.`);
  try {
    return await checkDiskImage(path, { maxBytes });
  } catch (err) {
    if (err instanceof DiskImageRefused) throw new Ec2Error('InvalidParameterValue', `${err.message}.`);
    throw err;
  }
}

/** Copies `from` to `to`, reporting bytes as they go; answers the copy's SHA-256. */
async function copyWithDigest(from: string, to: string, onBytes: (n: number) => void): Promise<string> {
  const hash = createHash('sha256');
  let copied = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      copied += chunk.length;
      onBytes(copied);
      done(null, chunk);
    },
  });
  await pipeline(createReadStream(from, { highWaterMark: 1024 * 1024 }), tap, createWriteStream(to, { mode: 0o600 }));
  return hash.digest('hex');
}

/**
 * Copies a checked file into `imagesDir` and registers it; answers the new ami- id. The image is
 * registered only once the copy passed the same checks, so a failure leaves nothing behind.
 */
export async function importImage(store: Store, checked: CheckedImport, opts: {
  imagesDir: string;
  onProgress?: (p: ImageImportProgress) => void;
}): Promise<string> {
  const { request: req, facts } = checked;
  const progress = opts.onProgress ?? (() => {});
  const imageId = newId('ami');
  await mkdir(opts.imagesDir, { recursive: true, mode: 0o700 });
  const final = join(opts.imagesDir, `${imageId}.${facts.format === 'qcow2' ? 'qcow2' : 'img'}`);
  const partial = `${final}.partial`;
  try {
    progress({ phase: 'copying', copiedBytes: 0, totalBytes: facts.fileSizeBytes });
    const sha256 = await copyWithDigest(req.path, partial, (n) => progress({ phase: 'copying', copiedBytes: n, totalBytes: facts.fileSizeBytes }));
    progress({ phase: 'verifying', copiedBytes: facts.fileSizeBytes, totalBytes: facts.fileSizeBytes });
    // The file may have changed since it was checked: the copy is what guests read, so it decides.
    const copied = await checkFile(partial, req.maxBytes);
    if (copied.format !== facts.format) {
      throw new Ec2Error('InvalidParameterValue', `${req.path} changed while it was imported (it was ${facts.format}, the copy is ${copied.format}).`);
    }
    const size = (await stat(partial)).size;
    await rename(partial, final);
    await store.transaction(async (tx) => {
      const taken = await tx.selectFrom('images').select('id').where('account_id', '=', req.ownerAccountId)
        .where('name', '=', req.name).where('state', '!=', 'deregistered').executeTakeFirst();
      if (taken) throw new Ec2Error('InvalidAMIName.Duplicate', `AMI name ${req.name} is already in use by AMI ${taken.id}`);
      await tx.insertInto('images').values({
        id: imageId, account_id: req.ownerAccountId, name: req.name, description: req.description ?? null,
        kind: 'machine', architecture: req.architecture, state: 'available', is_public: req.public ? 1 : 0,
        kernel_id: null, ramdisk_id: null, root_device_name: ROOT_DEVICE_NAME, kernel_cmdline: null,
        location: final, sha256, size_bytes: size, format: copied.format, created_at: new Date().toISOString(),
        boot_mode: req.bootMode,
      }).execute();
    });
    progress({ phase: 'done', copiedBytes: size, totalBytes: size });
    return imageId;
  } catch (err) {
    await rm(partial, { force: true });
    await rm(final, { force: true });
    progress({ phase: 'failed', copiedBytes: 0, totalBytes: facts.fileSizeBytes });
    throw err;
  }
}
