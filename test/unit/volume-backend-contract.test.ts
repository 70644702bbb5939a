// The contract every zone storage back-end keeps (src/cluster/storage/volume-backend.ts), run
// against each implementation: the in-memory one of the fake driver and the qcow2 one, whose
// exports are also read and written over NBD with the zone's TLS pre-shared key, as a node does.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { NbdLocation, VolumeBackend } from '../../src/cluster/storage/volume-backend.ts';
import { VolumeNotFoundError, VolumeSizeError } from '../../src/cluster/storage/volume-backend.ts';
import { MemoryVolumeBackend } from '../../src/cluster/storage/memory-volume-backend.ts';
import { Qcow2VolumeBackend } from '../../src/cluster/storage/qcow2-volume-backend.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const run = promisify(execFile);

async function missingTools(): Promise<string | undefined> {
  for (const tool of ['qemu-img', 'qemu-io', 'qemu-storage-daemon']) {
    try {
      await run('sh', ['-c', `command -v ${tool}`]);
    } catch {
      return `${tool} (Debian package qemu-utils / qemu-system-common)`;
    }
  }
  return undefined;
}

interface Harness {
  backend: VolumeBackend;
  /** Reads `length` bytes at `offset` of the export as a node would (qcow2 only). */
  nbdRead?(loc: NbdLocation, offset: number, length: number, psk?: string): Promise<Buffer>;
  nbdWrite?(loc: NbdLocation, offset: number, data: Buffer): Promise<void>;
  reopen?(): VolumeBackend;
  close(): Promise<void>;
}

let dirCounter = 0;

async function clientCreds(root: string, loc: NbdLocation, pskHex = loc.tls!.pskHex): Promise<string> {
  const dir = join(root, `client-${++dirCounter}`);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'keys.psk'), `${loc.tls!.identity}:${pskHex}\n`, { mode: 0o600 });
  return dir;
}

function qemuIoArgs(credsDir: string, loc: NbdLocation, command: string): string[] {
  return [
    '--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${credsDir},username=${loc.tls!.identity}`,
    '--image-opts', `driver=nbd,server.type=inet,server.host=${loc.host},server.port=${loc.port},export=${loc.exportName},tls-creds=tls0`,
    '-c', command,
  ];
}

const implementations: [string, () => Promise<Harness>, () => Promise<string | undefined>][] = [
  ['memory', async () => ({ backend: new MemoryVolumeBackend(), close: async () => {} }), async () => undefined],
  ['qcow2', async () => {
    const root = await mkdtemp(join(tmpdir(), 'ironbark-volumes-'));
    const make = () => new Qcow2VolumeBackend({ dir: join(root, 'volumes'), host: '127.0.0.1', zone: 'test-1a' });
    const backend = make();
    return {
      backend,
      reopen: make,
      async nbdRead(loc, offset, length, psk) {
        const creds = await clientCreds(root, loc, psk);
        const { stdout } = await run('qemu-io', qemuIoArgs(creds, loc, `read -v ${offset} ${length}`));
        // qemu-io -v dumps "offset:  hex bytes  ascii" lines.
        const bytes: number[] = [];
        for (const line of stdout.split('\n')) {
          const m = /^[0-9a-f]{8}:\s+((?:[0-9a-f]{2}\s)+)/.exec(line);
          if (m) bytes.push(...m[1]!.trim().split(/\s+/).map((h) => parseInt(h, 16)));
        }
        return Buffer.from(bytes.slice(0, length));
      },
      async nbdWrite(loc, offset, data) {
        const creds = await clientCreds(root, loc);
        // One byte value per write: qemu-io writes a pattern.
        await run('qemu-io', qemuIoArgs(creds, loc, `write -P ${data[0]} ${offset} ${data.length}`));
      },
      async close() {
        await (backend as Qcow2VolumeBackend).shutdown();
        await rm(root, { recursive: true, force: true });
      },
    };
  }, missingTools],
];

for (const [name, makeHarness, missing] of implementations) {
  describe(`volume back-end contract: ${name}`, async () => {
    const skip = skipUnlessPresent(await missing());
    let h: Harness;
    before(async () => { if (!skip) h = await makeHarness(); });
    after(async () => { await h?.close(); });
    const a = 'vol-0123456789abcdef0';
    const b = 'vol-00000000000000001';

    test('create makes an empty volume of the size asked, and again is a no-op', { skip }, async () => {
      const made = await h.backend.create(a, 1);
      assert.equal(made.volumeId, a);
      assert.equal(made.sizeGiB, 1);
      const again = await h.backend.create(a, 1);
      assert.equal(again.sizeGiB, 1);
      assert.equal((await h.backend.info(a))?.sizeGiB, 1);
      assert.equal(await h.backend.info(b), undefined);
    });

    test('sizes outside 1..65536 GiB and malformed ids are refused', { skip }, async () => {
      await assert.rejects(h.backend.create(b, 0), VolumeSizeError);
      await assert.rejects(h.backend.create(b, 1.5), VolumeSizeError);
      await assert.rejects(h.backend.create('vol-../../etc', 1), /not a volume id/);
      assert.equal(await h.backend.info(b), undefined);
    });

    test('resize grows, refuses to shrink, and a missing volume is VolumeNotFoundError', { skip }, async () => {
      assert.equal((await h.backend.resize(a, 2)).sizeGiB, 2);
      await assert.rejects(h.backend.resize(a, 1), VolumeSizeError);
      assert.equal((await h.backend.info(a))?.sizeGiB, 2);
      await assert.rejects(h.backend.resize(b, 3), VolumeNotFoundError);
    });

    test('list shows every volume', { skip }, async () => {
      await h.backend.create(b, 1);
      assert.deepEqual((await h.backend.list()).map((v) => [v.volumeId, v.sizeGiB]), [[b, 1], [a, 2]]);
    });

    test('export says where a node attaches it; a missing volume is VolumeNotFoundError', { skip }, async () => {
      const loc = await h.backend.export(a);
      assert.equal(loc.exportName, a);
      assert.ok(loc.port > 0);
      await assert.rejects(h.backend.export('vol-0000000000000000f'), VolumeNotFoundError);
    });

    test('data written over NBD with the key is read back, at the grown size; a wrong key is refused', { skip: skip || name !== 'qcow2' }, async () => {
      const loc = await h.backend.export(a);
      assert.ok(loc.tls && /^[0-9a-f]{64}$/.test(loc.tls.pskHex), 'the export is protected by a TLS pre-shared key');
      const last = 2 * 1024 ** 3 - 512;
      await h.nbdWrite!(loc, last, Buffer.alloc(512, 0x5a));
      assert.deepEqual(await h.nbdRead!(loc, last, 4), Buffer.from([0x5a, 0x5a, 0x5a, 0x5a]));
      await assert.rejects(h.nbdRead!(loc, 0, 4, 'ab'.repeat(32)), 'a client with another key gets nothing');
    });

    test('a back-end opened again on the same storage keeps the volumes and their exports', { skip: skip || name !== 'qcow2' }, async () => {
      await h.backend.close();
      const again = h.reopen!();
      assert.equal((await again.info(a))?.sizeGiB, 2);
      const loc = await again.export(a);
      assert.deepEqual(await h.nbdRead!(loc, 2 * 1024 ** 3 - 512, 2), Buffer.from([0x5a, 0x5a]));
      await again.close();
    });

    test('a forced unexport cuts clients off; export again serves the same data', { skip: skip || name !== 'qcow2' }, async () => {
      await h.backend.unexport(a, { force: true });
      const loc = await h.backend.export(a);
      assert.deepEqual(await h.nbdRead!(loc, 2 * 1024 ** 3 - 512, 1), Buffer.from([0x5a]));
    });

    test('delete removes the volume and is idempotent', { skip }, async () => {
      await h.backend.delete(a);
      await h.backend.delete(a);
      assert.equal(await h.backend.info(a), undefined);
      assert.deepEqual((await h.backend.list()).map((v) => v.volumeId), [b]);
      await assert.rejects(h.backend.export(a), VolumeNotFoundError);
    });
  });
}
