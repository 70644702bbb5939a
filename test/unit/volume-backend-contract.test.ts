// The contract every zone storage back-end keeps (src/cluster/storage/volume-backend.ts), run
// against each implementation: the in-memory one of the fake driver and the qcow2 one, whose
// exports are also read and written over NBD with the zone's TLS pre-shared key, as a node does.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { link, mkdtemp, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { NbdLocation, VolumeBackend } from '../../src/cluster/storage/volume-backend.ts';
import { SnapshotNotFoundError, VolumeNotFoundError, VolumeSizeError } from '../../src/cluster/storage/volume-backend.ts';
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
  /** Starts a client that writes `first` at 0, waits `pauseMs`, then writes `second` at 1 MiB (qcow2 only). */
  nbdSlowWriter?(loc: NbdLocation, first: number, second: number, pauseMs: number): Promise<void>;
  /** Names of the files the back-end keeps (qcow2 only). */
  files?(): Promise<string[]>;
  /** Where the qcow2 back-end keeps them. */
  dir?: string;
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
      dir: join(root, 'volumes'),
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
      async nbdSlowWriter(loc, first, second, pauseMs) {
        const creds = await clientCreds(root, loc);
        const args = qemuIoArgs(creds, loc, `write -P ${first} 0 64k`);
        args.push('-c', `sleep ${pauseMs}`, '-c', `write -P ${second} 1M 64k`);
        await run('qemu-io', args);
      },
      async files() {
        return (await readdir(join(root, 'volumes'))).filter((n) => n.endsWith('.qcow2')).sort();
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

    const s1 = 'snap-0123456789abcdef0';
    const s2 = 'snap-00000000000000002';
    const copy = 'snap-00000000000000003';
    const fromS1 = 'vol-00000000000000011';
    const fromS2 = 'vol-00000000000000012';
    const MiB = 1024 ** 2;
    const byte = async (volumeId: string, offset: number) => (await h.nbdRead!(await h.backend.export(volumeId), offset, 1))[0];

    test('snapshot records the volume at its size, is idempotent, and needs the volume', { skip }, async () => {
      const snap = await h.backend.snapshot!(a, s1);
      assert.equal(snap.snapshotId, s1);
      assert.equal(snap.sizeGiB, 2);
      assert.equal((await h.backend.snapshot!(a, s1)).sizeGiB, 2);
      assert.deepEqual((await h.backend.listSnapshots!()).map((x) => x.snapshotId), [s1]);
      assert.equal((await h.backend.snapshotInfo!(s1))?.sizeGiB, 2);
      assert.equal(await h.backend.snapshotInfo!(s2), undefined);
      await assert.rejects(h.backend.snapshot!('vol-0000000000000000f', s2), VolumeNotFoundError);
      await assert.rejects(h.backend.snapshot!(a, 'snap-../../x'), /not a snapshot id/);
      assert.equal(await h.backend.snapshotInfo!(s2), undefined, 'a failed snapshot leaves nothing');
      assert.equal((await h.backend.info(a))?.sizeGiB, 2, 'the volume is as it was');
    });

    test('a snapshot taken while a client writes holds the writes before it, not those after; the volume keeps both', { skip: skip || name !== 'qcow2' }, async () => {
      const loc = await h.backend.export(a);
      // A client connected throughout: one write, a pause, another write.
      const writer = h.nbdSlowWriter!(loc, 0x22, 0x33, 8000);
      for (let i = 0; i < 600 && (await byte(a, 0)) !== 0x22; i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(await byte(a, 0), 0x22);
      const snap = await h.backend.snapshot!(a, s2);
      assert.equal(snap.sizeGiB, 2);
      await writer;
      assert.equal(await byte(a, 0), 0x22);
      assert.equal(await byte(a, MiB), 0x33, 'the write after the snapshot went to the volume');
      assert.equal(await byte(a, 2 * 1024 ** 3 - 512), 0x5a, 'data from before every snapshot is still there');
      assert.ok((await h.backend.snapshotInfo!(s1))!.allocatedBytes < 4 * MiB + (await h.backend.snapshotInfo!(s2))!.allocatedBytes,
        'snapshots are layers, not copies');
    });

    test('a volume from a snapshot has its data (copy-on-write), at least its size; missing snapshots and smaller sizes are refused', { skip }, async () => {
      if (name !== 'qcow2') await h.backend.snapshot!(a, s2);
      await assert.rejects(h.backend.createFromSnapshot!(fromS1, s1, 1), VolumeSizeError);
      await assert.rejects(h.backend.createFromSnapshot!(fromS1, 'snap-0000000000000000f', 2), SnapshotNotFoundError);
      assert.equal(await h.backend.info(fromS1), undefined);
      assert.equal((await h.backend.createFromSnapshot!(fromS1, s1, 2)).sizeGiB, 2);
      assert.equal((await h.backend.createFromSnapshot!(fromS1, s1, 2)).sizeGiB, 2, 'again is a no-op');
      assert.equal((await h.backend.createFromSnapshot!(fromS2, s2, 5)).sizeGiB, 5, 'larger than the snapshot');
      if (name !== 'qcow2') return;
      assert.equal(await byte(fromS1, 0), 0, 's1 was taken before the first write');
      assert.equal(await byte(fromS1, 2 * 1024 ** 3 - 512), 0x5a);
      assert.equal(await byte(fromS2, 0), 0x22);
      assert.equal(await byte(fromS2, MiB), 0, 's2 was taken before the second write');
      // Writes to the new volume stay there: the snapshot and the other volumes do not see them.
      await h.nbdWrite!(await h.backend.export(fromS2), 2 * MiB, Buffer.alloc(512, 0x44));
      assert.equal(await byte(fromS2, 2 * MiB), 0x44);
      assert.equal(await byte(a, 2 * MiB), 0);
      assert.ok((await h.backend.info(fromS2))!.allocatedBytes < 64 * MiB, 'nothing was copied');
    });

    test('copySnapshot makes a snapshot with the same data', { skip }, async () => {
      assert.equal((await h.backend.copySnapshot!(s2, copy)).sizeGiB, 2);
      await assert.rejects(h.backend.copySnapshot!('snap-0000000000000000f', 'snap-0000000000000000e'), SnapshotNotFoundError);
      assert.deepEqual((await h.backend.listSnapshots!()).map((x) => x.snapshotId).sort(), [copy, s2, s1].sort());
      const fromCopy = 'vol-00000000000000013';
      await h.backend.createFromSnapshot!(fromCopy, copy, 2);
      if (name === 'qcow2') assert.equal(await byte(fromCopy, 0), 0x22);
      await h.backend.delete(fromCopy);
      await h.backend.deleteSnapshot!(copy);
    });

    test('a deleted snapshot is gone at once but kept while a volume depends on it, and removed with the last one', { skip }, async () => {
      await h.backend.deleteSnapshot!(s1);
      await h.backend.deleteSnapshot!(s1);
      assert.equal(await h.backend.snapshotInfo!(s1), undefined);
      assert.deepEqual((await h.backend.listSnapshots!()).map((x) => x.snapshotId), [s2]);
      await assert.rejects(h.backend.createFromSnapshot!('vol-00000000000000014', s1, 2), SnapshotNotFoundError);
      if (name === 'qcow2') assert.equal(await byte(fromS1, 2 * 1024 ** 3 - 512), 0x5a, 'the volume made from it still reads its data');
      await h.backend.delete(fromS1);
      await h.backend.delete(fromS2);
      await h.backend.deleteSnapshot!(s2);
      if (name === 'qcow2') {
        // s1 and s2 are layers under volume a's own data: kept until a goes (next test).
        assert.ok((await h.files!()).includes(`${s1}.qcow2`));
        assert.equal(await byte(a, 0), 0x22);
      }
      assert.deepEqual(await h.backend.listSnapshots!(), []);
    });

    test('a volume with snapshots under it still grows, keeping its data', { skip }, async () => {
      await h.backend.snapshot!(a, 'snap-00000000000000004');
      assert.equal((await h.backend.resize(a, 3)).sizeGiB, 3);
      if (name === 'qcow2') {
        assert.equal(await byte(a, 0), 0x22);
        assert.equal(await byte(a, 3 * 1024 ** 3 - 512), 0, 'the new space reads as zeros');
      }
      await h.backend.deleteSnapshot!('snap-00000000000000004');
    });

    test('a snapshot a crash left half-taken is undone, or finished once the swap had happened', { skip: skip || name !== 'qcow2' }, async () => {
      const c = 'vol-0000000000000000c';
      const [c1, c2] = ['snap-000000000000000c1', 'snap-000000000000000c2'];
      const q = h.backend as Qcow2VolumeBackend;
      const file = (id: string) => join(h.dir!, `${id}.qcow2`);
      const next = (snap: string) => `${file(c)}.${snap}.next`;
      const halfTake = async (snap: string) => {
        await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', `${snap}.qcow2`, '-F', 'qcow2', next(snap), String(1024 ** 3)]);
        await link(file(c), file(snap));
      };
      await h.backend.create(c, 1);
      await h.nbdWrite!(await h.backend.export(c), 0, Buffer.alloc(512, 0x61));
      // Crashed after the link, before the swap: the snapshot is not there, and taking it again works.
      await halfTake(c1);
      assert.equal(await h.backend.snapshotInfo!(c1), undefined);
      await h.backend.snapshot!(c, c1);
      assert.ok(!(await h.files!()).some((n) => n.endsWith('.next')));
      // Crashed after the swap, before the rename: writes went to the new top; taking it again finishes it.
      await halfTake(c2);
      await q.nbd.swapTop(c, next(c2));
      await h.nbdWrite!(await h.backend.export(c), 0, Buffer.alloc(512, 0x62));
      await h.backend.snapshot!(c, c2);
      assert.ok(!(await h.files!()).some((n) => n.endsWith('.next')));
      assert.equal(await byte(c, 0), 0x62, 'no write was lost');
      const [r1, r2] = ['vol-000000000000000c1', 'vol-000000000000000c2'];
      await h.backend.createFromSnapshot!(r1, c1, 1);
      await h.backend.createFromSnapshot!(r2, c2, 1);
      assert.equal(await byte(r1, 0), 0x61);
      assert.equal(await byte(r2, 0), 0x61, 'c2 holds what was written before its swap');
      for (const v of [r1, r2, c]) await h.backend.delete(v);
      for (const x of [c1, c2]) await h.backend.deleteSnapshot!(x);
    });

    test('delete removes the volume and is idempotent', { skip }, async () => {
      await h.backend.delete(a);
      await h.backend.delete(a);
      assert.equal(await h.backend.info(a), undefined);
      assert.deepEqual((await h.backend.list()).map((v) => v.volumeId), [b]);
      await assert.rejects(h.backend.export(a), VolumeNotFoundError);
      if (name === 'qcow2') assert.deepEqual(await h.files!(), [`${b}.qcow2`], 'the deleted snapshots went with the last volume that needed them');
      if (name === 'memory') assert.equal((h.backend as MemoryVolumeBackend).holdsSnapshot(s1), false);
    });
  });
}
