// Guest images (kernel, initramfs, ext4 root disk) are built on this host from Debian packages by
// a recipe, images/<recipe>/build.sh, and cached; this module runs a recipe with visible progress,
// installs the Debian tools it needs, and rebuilds only when the recipe or one of its inputs
// changed. Recipes: `default` (busybox and dropbear, images/default/) and `debian-12` (Debian 12
// with cloud-init, images/debian-12/). Every recipe answers the same three calls: `build.sh
// OUTDIR`, `build.sh --fingerprint` and `build.sh --required-packages`.
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeCommandFailure } from './command-failure.ts';

const IMAGES_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../images');

/** The guest image recipes this checkout has, each a directory under images/. */
export const GUEST_IMAGE_RECIPES = ['default', 'debian-12'] as const;
export type GuestImageRecipe = (typeof GUEST_IMAGE_RECIPES)[number];

export function isGuestImageRecipe(name: string): name is GuestImageRecipe {
  return (GUEST_IMAGE_RECIPES as readonly string[]).includes(name);
}

/** The build script of a recipe. */
export function recipeScriptFor(recipe: GuestImageRecipe): string {
  return join(IMAGES_DIR, recipe, 'build.sh');
}

export const DEFAULT_RECIPE_SCRIPT = recipeScriptFor('default');

export interface GuestImageFileInfo {
  sha256: string;
  size: number;
}

export interface GuestImageManifest {
  recipe: string;
  recipeVersion: number;
  fingerprint: string;
  kernel: { package: string; version: string; release: string };
  cmdline: string;
  rootfsFormat: 'raw' | 'qcow2';
  /** What the root disk holds, for recipes that make a distribution image. */
  os?: { name: string; version: string; codename?: string; cloudInit?: string; defaultUser?: string };
  files: Record<string, GuestImageFileInfo>;
}

export interface GuestImage {
  recipe: GuestImageRecipe;
  dir: string;
  kernel: string;
  initrd?: string;
  rootfs: string;
  rootfsFormat: 'raw' | 'qcow2';
  cmdline: string;
  manifest: GuestImageManifest;
}

/** One line of progress: `step` of `total` while building, 0 for host preparation. */
export interface GuestImageProgress {
  step: number;
  total: number;
  message: string;
}

export interface EnsureGuestImageOptions {
  /** Root of the image cache; a recipe's builds live in `<cacheDir>/<recipe>`. */
  cacheDir?: string;
  onProgress?: (progress: GuestImageProgress) => void;
  /** The recipe to run (tests may point at a copy). */
  recipeScript?: string;
}

export class GuestImageBuildError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GuestImageBuildError';
  }
}

export function defaultImageCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'ironbark', 'images');
}

interface RunResult {
  argv: string[];
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
  cause?: string;
}

/** Runs a helper to its end; a helper that cannot start at all is a failed result, not a throw. */
function run(command: string, args: string[], onLine?: (line: string) => void, env?: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolvePromise) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    let stdout = '';
    let stderr = '';
    let pending = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      stdout += chunk;
      if (!onLine) return;
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) if (line.trim()) onLine(line);
    });
    child.stderr.on('data', (chunk: string) => {
      stderr += chunk;
    });
    const argv = [command, ...args];
    child.on('error', (err) => resolvePromise({ argv, code: 127, signal: null, stdout, stderr, cause: err.message }));
    child.on('close', (code, signal) => {
      if (onLine && pending.trim()) onLine(pending);
      resolvePromise({ argv, code: code ?? 1, signal, stdout, stderr });
    });
  });
}

function failure(result: RunResult): string {
  return describeCommandFailure({ argv: result.argv, exitCode: result.signal ? null : result.code, signal: result.signal, stderr: result.stderr, stdout: result.stdout, cause: result.cause });
}

async function missingPackages(packages: string[]): Promise<string[]> {
  const result = await run('dpkg-query', ['-W', '-f=${Package} ${db:Status-Status}\n', ...packages]);
  const installed = new Set(
    result.stdout
      .split('\n')
      .map((line) => line.trim().split(' '))
      .filter(([, status]) => status === 'installed')
      .map(([name]) => name),
  );
  return packages.filter((name) => !installed.has(name));
}

/**
 * `apt-get update` that fails when an index cannot be fetched: plain `apt-get update` exits 0 on a
 * host without a route to its mirrors (a network namespace, say) and the next step would then fail
 * on the old lists with a reason that hides this one.
 */
function updatePackageLists(): Promise<RunResult> {
  return run('apt-get', ['update', '--error-on=any'], undefined, { ...process.env, DEBIAN_FRONTEND: 'noninteractive' });
}

/** apt-get install only what is missing; apt needs one `apt-get update` on a fresh machine. */
async function ensureHostPackages(packages: string[], progress: (message: string) => void): Promise<void> {
  const missing = await missingPackages(packages);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    throw new GuestImageBuildError(`the guest image needs these Debian packages: ${missing.join(' ')} (run: apt-get install -y ${missing.join(' ')})`);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => run('apt-get', ['install', '-y', '--no-install-recommends', ...missing], (line) => progress(line), env);
  progress(`installing Debian packages: ${missing.join(' ')}`);
  let result = await install();
  if (result.code !== 0) {
    progress('updating the apt package lists');
    const update = await updatePackageLists();
    if (update.code !== 0) throw new GuestImageBuildError(`${failure(result)}\nThe apt package lists could not be updated either: ${failure(update)}`);
    result = await install();
  }
  if (result.code !== 0) throw new GuestImageBuildError(failure(result));
}

async function readManifest(dir: string): Promise<GuestImageManifest | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as GuestImageManifest;
  } catch {
    return undefined;
  }
}

/** The cached build is usable when it was made from the same inputs and its files are whole. */
async function isCurrent(dir: string, manifest: GuestImageManifest | undefined, fingerprint: string): Promise<boolean> {
  if (!manifest || manifest.fingerprint !== fingerprint) return false;
  return isWhole(dir, manifest);
}

/**
 * The newest finished build of a recipe in the cache, whatever its fingerprint: what a host uses
 * when it cannot compute the fingerprint (apt cannot tell the kernel's version: no package lists
 * and no route to the mirrors), rather than refusing to start with an image already on disk.
 */
async function newestWholeBuild(root: string): Promise<{ dir: string; manifest: GuestImageManifest; builtAt: Date } | undefined> {
  let newest: { dir: string; manifest: GuestImageManifest; builtAt: Date } | undefined;
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const dir = join(root, name);
    const manifest = await readManifest(dir);
    if (!manifest || !(await isWhole(dir, manifest))) continue;
    const builtAt = (await stat(join(dir, 'manifest.json'))).mtime;
    if (!newest || builtAt > newest.builtAt) newest = { dir, manifest, builtAt };
  }
  return newest;
}

async function isWhole(dir: string, manifest: GuestImageManifest): Promise<boolean> {
  for (const [name, info] of Object.entries(manifest.files)) {
    try {
      if ((await stat(join(dir, name))).size !== info.size) return false;
    } catch {
      return false;
    }
  }
  return true;
}

function describe(recipe: GuestImageRecipe, dir: string, manifest: GuestImageManifest): GuestImage {
  return {
    recipe,
    dir,
    kernel: join(dir, 'vmlinuz'),
    initrd: manifest.files['initrd.img'] ? join(dir, 'initrd.img') : undefined,
    rootfs: join(dir, 'rootfs.img'),
    rootfsFormat: manifest.rootfsFormat === 'qcow2' ? 'qcow2' : 'raw',
    cmdline: manifest.cmdline,
    manifest,
  };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A lock directory next to the image so two processes never build into it at once. */
async function withBuildLock<T>(dir: string, progress: (message: string) => void, body: () => Promise<T>): Promise<T> {
  const lock = `${dir}.lock`;
  await mkdir(dirname(lock), { recursive: true });
  let waiting = false;
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number((await readFile(join(lock, 'pid'), 'utf8').catch(() => '')).trim());
      if (owner && !processAlive(owner)) {
        await rm(lock, { recursive: true, force: true });
        continue;
      }
      if (!waiting) progress('waiting for another build of this image to finish');
      waiting = true;
      await sleep(500);
    }
  }
  await writeFile(join(lock, 'pid'), String(process.pid));
  try {
    return await body();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

const inFlight = new Map<string, Promise<GuestImage>>();

/**
 * Returns the guest image a recipe makes, building it first when the cache is missing or stale.
 * Each build lives in its own directory, `<cacheDir>/<recipe>/<fingerprint prefix>/`, and is
 * never modified afterwards, so copy-on-write disks that name its rootfs.img as their backing
 * file stay valid when a newer recipe or kernel produces a new build beside it.
 * Building needs root (device nodes and root-owned files inside the images).
 */
export function ensureGuestImage(recipe: GuestImageRecipe, options: EnsureGuestImageOptions = {}): Promise<GuestImage> {
  if (!isGuestImageRecipe(recipe)) {
    return Promise.reject(new GuestImageBuildError(`no guest image recipe ${JSON.stringify(recipe)} (recipes: ${GUEST_IMAGE_RECIPES.join(', ')})`));
  }
  const root = join(resolve(options.cacheDir ?? defaultImageCacheDir()), recipe);
  const existing = inFlight.get(root);
  if (existing) return existing;
  const promise = ensureImage(recipe, root, options).finally(() => inFlight.delete(root));
  inFlight.set(root, promise);
  return promise;
}

/** The default guest image (busybox, dropbear), as ensureGuestImage('default') makes it. */
export function ensureDefaultGuestImage(options: EnsureGuestImageOptions = {}): Promise<GuestImage> {
  return ensureGuestImage('default', options);
}

async function ensureImage(recipe: GuestImageRecipe, root: string, options: EnsureGuestImageOptions): Promise<GuestImage> {
  const script = options.recipeScript ?? recipeScriptFor(recipe);
  const onProgress = options.onProgress ?? (() => {});
  let total = 0;
  let step = 0;
  const prepare = (message: string) => onProgress({ step: 0, total, message });

  const required = await run('bash', [script, '--required-packages']);
  if (required.code !== 0) throw new GuestImageBuildError(failure(required));
  await ensureHostPackages(required.stdout.trim().split(/\s+/).filter(Boolean), prepare);

  let fingerprintRun = await run('bash', [script, '--fingerprint']);
  let updateFailure: string | undefined;
  if (fingerprintRun.code !== 0 && process.getuid?.() === 0) {
    // Without the kernel installed on the host the recipe asks apt, which knows nothing
    // until its package lists were fetched once.
    prepare('updating the apt package lists');
    const update = await updatePackageLists();
    if (update.code === 0) fingerprintRun = await run('bash', [script, '--fingerprint']);
    else updateFailure = failure(update);
  }
  if (fingerprintRun.code !== 0) {
    const reason = failure(fingerprintRun) + (updateFailure ? `\nThe apt package lists could not be updated either: ${updateFailure}` : '');
    const fallback = await newestWholeBuild(root);
    if (!fallback) throw new GuestImageBuildError(reason);
    prepare(`cannot tell whether the cached ${recipe} image is current, using the one built ${fallback.builtAt.toISOString()}: ${reason}`);
    return describe(recipe, fallback.dir, fallback.manifest);
  }
  const fingerprint = fingerprintRun.stdout.trim();
  const dir = join(root, fingerprint.slice(0, 16));

  const cached = await readManifest(dir);
  if (cached && (await isCurrent(dir, cached, fingerprint))) return describe(recipe, dir, cached);

  return withBuildLock(dir, prepare, async () => {
    // Another process may have finished the same build while this one waited for the lock.
    const built = await readManifest(dir);
    if (built && (await isCurrent(dir, built, fingerprint))) return describe(recipe, dir, built);

    // Build beside the final place and rename, so `dir` only ever holds a whole image.
    const partial = `${dir}.partial`;
    await rm(partial, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
    prepare(`building the ${recipe} guest image in ${dir}`);
    const result = await run('bash', [script, partial], (line) => {
      const match = /^step (\d+)\/(\d+) (.*)$/.exec(line);
      if (match) {
        step = Number(match[1]);
        total = Number(match[2]);
        onProgress({ step, total, message: match[3] });
      } else {
        onProgress({ step, total, message: line.trim() });
      }
    });
    if (result.code !== 0) {
      await rm(partial, { recursive: true, force: true });
      throw new GuestImageBuildError(`building the ${recipe} guest image failed: ${failure(result)}`);
    }
    const manifest = await readManifest(partial);
    if (!manifest || !(await isCurrent(partial, manifest, fingerprint))) {
      throw new GuestImageBuildError(`the guest image build in ${partial} left no complete manifest (its inputs changed during the build?)`);
    }
    await rename(partial, dir);
    return describe(recipe, dir, manifest);
  });
}
