// ClientToken under concurrency (issue 11, item 4): the (account, ClientToken) index is unique, so
// two identical RunInstances that race, also through two cloud controllers sharing PostgreSQL
// (two stores, two launchers, each with its own in-process bookkeeping), launch once: the loser of
// the race answers the winner's reservation, as idempotent EC2 does. Also: a store an earlier
// version let a race through into is migrated (the earliest launch keeps the token).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { ComputeDirectory } from '../../src/cloud/compute-directory.ts';
import { registerImageFiles } from '../../src/cloud/images/images.ts';
import { instanceOperations } from '../../src/cloud/instances.ts';
import { createAccountWithDefaults, ensureZone } from '../../src/cloud/provision.ts';
import { quotaSettingKey } from '../../src/cloud/quotas.ts';
import { seedVmTypes } from '../../src/cloud/vm-types.ts';
import type { OperationTable } from '../../src/cloud/context.ts';
import { migrations } from '../../src/store/migrations.ts';
import { KeyRing } from '../../src/store/key-ring.ts';
import { openStore, type Store } from '../../src/store/store.ts';
import { FakeCluster } from '../helpers/fake-cluster.ts';
import { REGION, callOperation, contextFor } from '../helpers/handler-context.ts';
import { freshPostgresDatabase } from '../helpers/stores.ts';
import { testPostgresUrl } from '../helpers/prerequisites.ts';

const ZONE = 'ironbark-1a';
const quiet = { info() {}, warn() {}, error() {} };
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

interface Controller { store: Store; ops: OperationTable }

/** Two cloud controllers over one store (PostgreSQL: two connection pools), one cluster. */
async function twoControllers(backend: 'sqlite' | 'postgres') {
  let stores: Store[];
  let drop = async () => {};
  if (backend === 'postgres') {
    const database = await freshPostgresDatabase(testPostgresUrl()!);
    const keyRing = KeyRing.ephemeral();
    stores = [await openStore({ url: database.url, keyRing }), await openStore({ url: database.url, keyRing })];
    drop = database.drop;
  } else {
    // The embedded store serves one controller process; two launchers in it race all the same.
    const store = await openStore({ url: ':memory:' });
    stores = [store, store];
  }
  const store = stores[0]!;
  await ensureZone(store, { name: ZONE, cidr: '10.1.0.0/16', region: REGION });
  await seedVmTypes(store.db);
  const account = (await createAccountWithDefaults(store, 'alpha')).account.id;
  const image = await registerImageFiles(store, {
    name: 'ironbark-default', description: 'default guest', ownerAccountId: account, public: true, kernelCmdline: 'console=ttyS0',
    kernel: { path: '/img/vmlinuz', sha256: sha('k'), sizeBytes: 10 },
    rootfs: { path: '/img/rootfs.qcow2', sha256: sha('root'), sizeBytes: 30, format: 'qcow2' },
  });
  await store.db.insertInto('settings').values({ key: quotaSettingKey(account, 'max-instances'), value: '1000' }).execute();
  const cluster = new FakeCluster(ZONE);
  const controllers: Controller[] = stores.map((s) => {
    const directory = new ComputeDirectory();
    directory.register(cluster);
    return { store: s, ops: instanceOperations({ directory, imageUrl: (id) => `http://cluster/images/${id}`, statusInitializingMs: 0, log: quiet }) };
  });
  const launch = (c: Controller, input: object) => callOperation(contextFor(c.store, account), c.ops, 'RunInstances',
    { ImageId: image.imageId, MinCount: 1, MaxCount: 1, Placement: { AvailabilityZone: ZONE }, ...input });
  return {
    account, cluster, controllers, launch, store,
    async close() { for (const s of new Set(stores)) await s.close(); await drop(); },
  };
}

const idsOf = (r: any): string[] => r.Instances.map((i: any) => i.InstanceId).sort();

for (const backend of ['sqlite', 'postgres'] as const) {
  const skip = backend === 'postgres' && !testPostgresUrl();
  describe(`ClientToken races (${backend})`, { skip }, () => {
    let world: Awaited<ReturnType<typeof twoControllers>>;
    before(async () => { world = await twoControllers(backend); });
    after(async () => world?.close());

    it('two identical RunInstances through two controllers at once launch once, and both answer that reservation', async () => {
      const [one, two] = world.controllers as [Controller, Controller];
      const tokens = Array.from({ length: 12 }, (_, i) => `race-${backend}-${i}`);
      const answers = await Promise.all(tokens.map(async (token, i) => {
        const input = { ClientToken: token, MaxCount: 1 + (i % 3) };
        // Alternate who starts first; several launches of other tokens are in flight meanwhile.
        const pair = i % 2 === 0 ? [world.launch(one, input), world.launch(two, input)] : [world.launch(two, input), world.launch(one, input)];
        return { token, count: 1 + (i % 3), results: await Promise.all(pair) };
      }));
      for (const { token, count, results } of answers) {
        const [a, b] = results;
        assert.equal(a.ReservationId, b.ReservationId, `${token}: one reservation`);
        assert.deepEqual(idsOf(a), idsOf(b));
        assert.equal(idsOf(a).length, count);
        const rows = await world.store.db.selectFrom('instances').select(['id', 'reservation_id'])
          .where('account_id', '=', world.account).where('client_token', '=', token).execute();
        assert.deepEqual(rows.map((r) => r.id).sort(), idsOf(a), `${token}: the store holds that launch only`);
      }
      const launched = answers.reduce((sum, a) => sum + a.count, 0);
      assert.equal(world.cluster.instances.size, launched, 'the cluster ran each launched instance once, and no other');
    });

    it('the store itself refuses a second launch of one token (launch index 0 twice)', async () => {
      const first = await world.launch(world.controllers[0]!, { ClientToken: 'direct-1' });
      const row = await world.store.db.selectFrom('instances').selectAll().where('id', '=', first.Instances[0].InstanceId).executeTakeFirstOrThrow();
      await assert.rejects(
        world.store.db.insertInto('instances').values({ ...row, id: 'i-0000000000000dup0', reservation_id: 'r-0000000000000dup0', private_ip: '10.1.200.200', mac: 'd2:0d:00:00:de:ad' }).execute(),
        (err: any) => err?.code === 'SQLITE_CONSTRAINT_UNIQUE' || err?.code === '23505');
      // Without a token any number of launches may share everything else.
      await world.store.db.updateTable('instances').set({ client_token: null, request_hash: null }).where('id', '=', row.id).execute();
      await world.store.db.insertInto('instances').values({ ...row, client_token: null, request_hash: null, id: 'i-0000000000000dup1', reservation_id: 'r-0000000000000dup1', private_ip: '10.1.200.201', mac: 'd2:0d:00:00:de:ae' }).execute();
    });

    it('migrating a store an earlier version let a race through: the earliest launch keeps the token', async () => {
      const db = world.store.db;
      const early = await world.launch(world.controllers[0]!, { ClientToken: 'old-race', MaxCount: 2 });
      const rows = await db.selectFrom('instances').selectAll().where('reservation_id', '=', early.ReservationId).execute();
      // As an earlier version's store could hold it: the plain index, and a later duplicate launch.
      await db.schema.dropIndex('instances_client_token').execute();
      await db.schema.createIndex('instances_client_token').on('instances').columns(['account_id', 'client_token']).execute();
      const later = new Date(Date.parse(rows[0]!.launch_time) + 1000).toISOString();
      await db.insertInto('instances').values(rows.map((r, i) => ({
        ...r, id: `i-00000000000old${i}0`, reservation_id: 'r-000000000000old10', launch_time: later, private_ip: `10.1.201.${10 + i}`, mac: `d2:0d:00:00:df:${10 + i}`,
      }))).execute();
      await migrations['0010-client-token-unique']!.up(db);
      const after = await db.selectFrom('instances').select(['id', 'reservation_id', 'client_token', 'request_hash'])
        .where('reservation_id', 'in', [early.ReservationId, 'r-000000000000old10']).execute();
      for (const r of after) {
        if (r.reservation_id === early.ReservationId) assert.equal(r.client_token, 'old-race');
        else assert.deepEqual([r.client_token, r.request_hash], [null, null]);
      }
      const replay = await world.launch(world.controllers[1]!, { ClientToken: 'old-race', MaxCount: 2 });
      assert.equal(replay.ReservationId, early.ReservationId);
    });
  });
}
