// `npm run bench -- storage`: how long the zone's storage takes for EBS snapshots, measured on the
// qcow2 back-end itself (what the cloud's reconcilers wait for; the API answers at once):
// - createSnapshotSeconds: CreateSnapshot of a 1 GiB volume with 100 MiB written through its NBD
//   export (with the zone's TLS key, as a node writes), the export open throughout;
// - createVolumeFromSnapshotSeconds: a volume from a snapshot of 1, 10 and 100 GiB (copy-on-write:
//   it should stay flat);
// - attachToGuestSeconds: null here, since it needs a booted VM under TCG (minutes of set-up); the
//   real-VM tests (test/e2e/volumes-qemu, snapshots-qemu) cover attaching.
// Prints one JSON object as its last line. Everything lives in a temporary directory and the NBD
// server on 127.0.0.1 is stopped at the end.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Qcow2VolumeBackend } from '../src/cluster/storage/qcow2-volume-backend.ts';

const run = promisify(execFile);

const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export async function benchStorage(): Promise<Record<string, unknown>> {
  const root = await mkdtemp(join(tmpdir(), 'ironbark-bench-storage-'));
  const backend = new Qcow2VolumeBackend({ dir: join(root, 'volumes'), host: '127.0.0.1', zone: 'bench-1a' });
  const rounds = 3;
  try {
    // A 1 GiB volume with 100 MiB written over NBD, then snapshotted (each round writes 100 MiB anew).
    const volume = 'vol-0000000000000b001';
    await backend.create(volume, 1);
    const loc = await backend.export(volume);
    const creds = join(root, 'client');
    await mkdir(creds, { recursive: true });
    await writeFile(join(creds, 'keys.psk'), `${loc.tls!.identity}:${loc.tls!.pskHex}\n`, { mode: 0o600 });
    const write = (pattern: number) => run('qemu-io', [
      '--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${creds},username=${loc.tls!.identity}`,
      '--image-opts', `driver=nbd,server.type=inet,server.host=${loc.host},server.port=${loc.port},export=${loc.exportName},tls-creds=tls0`,
      '-c', `write -P ${pattern} 0 100M`,
    ], { maxBuffer: 16 * 1024 * 1024 });
    const snapshotTimes: number[] = [];
    for (let i = 0; i < rounds; i++) {
      await write(0x40 + i);
      const t0 = process.hrtime.bigint();
      await backend.snapshot(volume, `snap-0000000000000b0${i}${i}`);
      snapshotTimes.push(seconds(t0));
    }
    // Volumes from snapshots of 1, 10 and 100 GiB volumes.
    const fromSnapshot: Record<string, number> = {};
    for (const size of [1, 10, 100]) {
      const source = `vol-00000000000${String(size).padStart(3, '0')}c01`;
      const snap = `snap-00000000000${String(size).padStart(3, '0')}c01`;
      await backend.create(source, size);
      await backend.snapshot(source, snap);
      const times: number[] = [];
      for (let i = 0; i < rounds; i++) {
        const t0 = process.hrtime.bigint();
        await backend.createFromSnapshot(`vol-00000000000${String(size).padStart(3, '0')}d0${i}`, snap, size);
        times.push(seconds(t0));
      }
      fromSnapshot[`${size}GiB`] = Number(median(times).toFixed(3));
    }
    return {
      bench: 'storage',
      backend: 'qcow2',
      rounds,
      attachToGuestSeconds: null,
      attachToGuestNote: 'needs a booted VM under TCG; covered by test/e2e/volumes-qemu and snapshots-qemu, not timed here',
      createSnapshotSeconds: Number(median(snapshotTimes).toFixed(3)),
      createSnapshotNote: '1 GiB volume, 100 MiB written over NBD before each snapshot; median of rounds',
      createVolumeFromSnapshotSeconds: fromSnapshot,
    };
  } finally {
    await backend.shutdown();
    await rm(root, { recursive: true, force: true });
  }
}
