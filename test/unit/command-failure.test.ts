// Failures of the host tools Ironbark runs reach the user with the command, how it ended and what
// it said, never as an empty reason; and the image recipe copes with a host that lacks its kernel.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeCommandFailure, printableCommand } from '../../src/node/command-failure.ts';
import { DEFAULT_RECIPE_SCRIPT, ensureDefaultGuestImage, GuestImageBuildError } from '../../src/node/guest-image.ts';
import { runCommand } from '../../src/node/network-commands.ts';
import { createInstanceDisk } from '../../src/node/instance-disk.ts';

function executable(dir: string, name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

describe('describeCommandFailure', () => {
  it('names the command, its exit status and the last lines of stderr', () => {
    const stderr = Array.from({ length: 30 }, (_, i) => `line ${i + 1}`).join('\n');
    const text = describeCommandFailure({ argv: ['apt-get', 'install', '-y', 'x y'], exitCode: 100, stderr });
    assert.match(text, /^apt-get install -y 'x y' failed \(exit status 100\):\n/);
    assert.ok(text.includes('line 30') && text.includes('line 16') && !text.includes('line 15\n'), text);
  });

  it('falls back to stdout, then to the cause, and is never empty', () => {
    assert.match(describeCommandFailure({ argv: ['nft', '-f', '-'], exitCode: 1, stderr: '', stdout: 'only on stdout' }), /only on stdout$/);
    assert.match(describeCommandFailure({ argv: ['dnsmasq'], exitCode: null, cause: 'spawn dnsmasq ENOENT' }), /dnsmasq failed \(did not run\):\ndnsmasq is not installed or not on PATH/);
    assert.match(describeCommandFailure({ argv: ['qemu-img', 'info'], exitCode: null, signal: 'SIGKILL' }), /killed by SIGKILL\):\nit printed nothing$/);
    assert.match(describeCommandFailure({ argv: ['x'], exitCode: null, signal: 'SIGTERM', timedOut: true }), /timed out/);
  });

  it('quotes arguments as a shell would need them', () => {
    assert.equal(printableCommand(['sh', '-c', "echo 'hi'"]), `sh -c 'echo '\\''hi'\\'''`);
  });
});

describe('helpers that fail', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ironbark-failing-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

  it('the image recipe: its command, exit status and stderr reach the error', async () => {
    const recipe = executable(dir, 'recipe-fails.sh', 'echo "resolving inputs"; echo "E: no kernel for you" >&2; exit 7');
    await assert.rejects(ensureDefaultGuestImage({ cacheDir: join(dir, 'cache'), recipeScript: recipe }), (err: unknown) => {
      assert.ok(err instanceof GuestImageBuildError);
      assert.match(err.message, /recipe-fails\.sh --required-packages failed \(exit status 7\):\nE: no kernel for you/);
      return true;
    });
  });

  it('a recipe that fails silently still says how it ended', async () => {
    const recipe = executable(dir, 'recipe-silent.sh', 'case "$1" in --required-packages) echo gzip ;; *) exit 3 ;; esac');
    await assert.rejects(ensureDefaultGuestImage({ cacheDir: join(dir, 'cache2'), recipeScript: recipe }),
      /recipe-silent\.sh --fingerprint failed \(exit status 3\):\nit printed nothing/);
  });

  it('a recipe that cannot compute its fingerprint (apt knows nothing, no route to the mirrors) falls back to the newest whole build', async () => {
    const recipe = executable(dir, 'recipe-offline.sh',
      'case "$1" in --required-packages) echo gzip ;; *) echo "E: No packages found" >&2; exit 1 ;; esac');
    const cache = join(dir, 'cache3');
    const build = (name: string, files: Record<string, string>, listed: Record<string, number>) => {
      mkdirSync(join(cache, 'default', name), { recursive: true });
      for (const [file, body] of Object.entries(files)) writeFileSync(join(cache, 'default', name, file), body);
      writeFileSync(join(cache, 'default', name, 'manifest.json'), JSON.stringify({
        recipe: 'default', recipeVersion: 1, fingerprint: name, kernel: { package: 'k', version: '1', release: 'r' }, cmdline: 'console=ttyS0',
        rootfsFormat: 'raw', files: Object.fromEntries(Object.entries(listed).map(([f, size]) => [f, { size, sha256: '' }])),
      }));
    };
    build('older', { vmlinuz: 'k', 'rootfs.img': 'r' }, { vmlinuz: 1, 'rootfs.img': 1 });
    // The newest build was cut short: its rootfs is not the size its manifest says.
    build('newer-but-torn', { vmlinuz: 'k', 'rootfs.img': '' }, { vmlinuz: 1, 'rootfs.img': 1 });
    const said: string[] = [];
    const image = await ensureDefaultGuestImage({ cacheDir: cache, recipeScript: recipe, onProgress: (p) => said.push(p.message) });
    assert.equal(image.dir, join(cache, 'default', 'older'));
    assert.ok(said.some((m) => /cannot tell whether the cached default image is current.*E: No packages found/s.test(m)), said.join('\n'));
  });

  it('network commands and qemu-img', async () => {
    await assert.rejects(runCommand('sh', ['-c', 'echo "Error: Could not process rule" >&2; exit 1']),
      /Host command sh -c .* failed \(exit status 1\):\nError: Could not process rule/);
    await assert.rejects(runCommand('ironbark-no-such-tool', []), /ironbark-no-such-tool is not installed or not on PATH/);
    const fakeImg = executable(dir, 'qemu-img', 'echo "qemu-img: Could not open backing file" >&2; exit 1');
    writeFileSync(join(dir, 'base.raw'), Buffer.alloc(4096));
    await assert.rejects(createInstanceDisk(join(dir, 'base.raw'), join(dir, 'disk.qcow2'), { baseFormat: 'raw', qemuImg: fakeImg }),
      /qemu-img create .* failed \(exit status 1\):\nqemu-img: Could not open backing file/);
  });
});

describe('the image recipe on a host without its kernel package', () => {
  it('build.sh --fingerprint succeeds when dpkg does not know the kernel packages', () => {
    // dpkg knows nothing of linux-image-*, as on a fresh machine; apt knows the packages.
    const dir = mkdtempSync(join(tmpdir(), 'ironbark-recipe-'));
    try {
      executable(dir, 'dpkg-query', [
        'for a in "$@"; do case "$a" in linux-image-*) echo "dpkg-query: no packages found matching $a" >&2; exit 1 ;; esac; done',
        'exec /usr/bin/dpkg-query "$@"',
      ].join('\n'));
      executable(dir, 'apt-cache', [
        'pkg=""; for a in "$@"; do pkg=$a; done',
        'case "$pkg" in',
        '  linux-image-cloud-amd64) printf "Package: %s\\nVersion: 6.1.999\\nDepends: linux-image-6.1.0-99-cloud-amd64 (= 6.1.999-1)\\n" "$pkg" ;;',
        '  linux-image-6.1.0-99-cloud-amd64) printf "Package: %s\\nVersion: 6.1.999-1\\n" "$pkg" ;;',
        '  *) exit 100 ;;',
        'esac',
      ].join('\n'));
      const r = spawnSync('bash', [DEFAULT_RECIPE_SCRIPT, '--fingerprint'], { encoding: 'utf8', env: { ...process.env, PATH: `${dir}:${process.env.PATH}` } });
      assert.equal(r.status, 0, `build.sh --fingerprint failed:\n${r.stderr}`);
      assert.match(r.stdout.trim(), /^[0-9a-f]{64}$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
