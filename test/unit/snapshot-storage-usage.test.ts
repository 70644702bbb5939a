// GiB-hours of volumes and snapshots for the usage report (src/cloud/storage/storage-usage.ts):
// each counts its size for the hours it existed within the period, deleted ones until their
// deletion, failed ones not at all.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { openStore } from '../../src/store/store.ts';
import { startOfMonth, storageGiBHours } from '../../src/cloud/storage/storage-usage.ts';
import type { SnapshotsTable, VolumesTable } from '../../src/store/schema.ts';

const H = 3_600_000;

describe('storage GiB-hours', () => {
  it('counts size times hours within the period, until deletion, and not failed ones', async () => {
    const store = await openStore({ url: ':memory:' });
    try {
      const since = new Date('2026-12-01T00:00:00Z');
      const now = new Date(since.getTime() + 10 * H);
      const at = (hours: number) => new Date(since.getTime() + hours * H).toISOString();
      const volume = (id: string, size: number, state: string, created: string, changed: string): VolumesTable => ({
        id, account_id: '111111111111', zone: 'z', size_gib: size, volume_type: 'gp2', iops: null, throughput: null, snapshot_id: null,
        state, created_at: created, state_changed_at: changed, auto_enable_io: 0, instance_id: null, device: null, attach_state: null,
        attach_time: null, delete_on_termination: 0, detach_force: 0,
      });
      await store.db.insertInto('volumes').values([
        volume('vol-00000000000000001', 2, 'available', at(-5), at(-5)),  // before the period: 10 h in it
        volume('vol-00000000000000002', 4, 'deleted', at(2), at(5)),      // 3 h
        volume('vol-00000000000000003', 8, 'error', at(1), at(1)),        // never held data
      ]).execute();
      const snapshot = (id: string, size: number, state: string, started: string, deleted: string | null): SnapshotsTable => ({
        id, account_id: '111111111111', volume_id: 'vol-00000000000000001', zone: 'z', volume_size_gib: size, description: '', state, progress: 100,
        state_message: null, source_snapshot_id: null, stored_bytes: null, started_at: started, completed_at: started, state_changed_at: started, deleted_at: deleted,
      });
      await store.db.insertInto('snapshots').values([
        snapshot('snap-00000000000000001', 2, 'completed', at(4), null),   // 6 h
        snapshot('snap-00000000000000002', 10, 'deleted', at(1), at(2)),   // 1 h
        snapshot('snap-00000000000000003', 10, 'error', at(1), null),
      ]).execute();
      const usage = await storageGiBHours(store.db, ['111111111111', '222222222222'], since, now);
      assert.deepEqual(usage.get('111111111111'), { since: since.toISOString(), volumes: 2 * 10 + 4 * 3, snapshots: 2 * 6 + 10 * 1 });
      assert.deepEqual(usage.get('222222222222'), { since: since.toISOString(), volumes: 0, snapshots: 0 });
      assert.equal(startOfMonth(new Date('2026-12-17T08:00:00Z')).toISOString(), '2026-12-01T00:00:00.000Z');
    } finally {
      await store.close();
    }
  });
});
