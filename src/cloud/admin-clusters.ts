// Admin API for the cluster controllers of the zones and the nodes behind them (conventions in
// admin-api.ts). The cloud never reaches a node itself: node listings and revocations go through
// the zone's cluster controller, and node join tokens are minted here with the cluster's secret so
// the cluster can check them without asking back.
//
//   GET    /v1/clusters                       POST /v1/clusters {zone, url, cidr, secret?, publicRange?} -> cluster + secret (once)
//   DELETE /v1/clusters/:zone                 (refused while the zone has instances that are not terminated)
//   POST   /v1/clusters/:zone/node-tokens {ttlSeconds?} -> token
//   GET    /v1/clusters/:zone/nodes           joined nodes with their state and resources
//
// Under `ironbark up` the zone's cluster runs inside the cloud's process and has no row: it is
// listed (url "in-process") with its nodes, and cannot be removed or given joined nodes.
//   GET    /v1/clusters/:zone/nodes/:node/network  the node's host networking against its desired state
//   DELETE /v1/clusters/:zone/nodes/:node     revokes the node: the cluster forgets its secret
import type { Hono } from 'hono';
import type { Logger } from 'pino';
import type { Store } from '../store/store.ts';
import type { KeyResolver } from '../auth/authenticate.ts';
import type { ClustersTable } from '../store/schema.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { newAdminApp, readJsonObject, requiredString, type AdminEnv } from './admin-api.ts';
import { addCluster, findCluster, listClusters, removeCluster, type ClusterConnections } from './clusters.ts';
import { setPublicRange } from './network/public-ranges.ts';
import { DEFAULT_JOIN_TOKEN_TTL_SECONDS, MAX_JOIN_TOKEN_TTL_SECONDS, mintJoinToken } from '../cluster/join-tokens.ts';
import type { ClusterHttpClient } from '../cluster/cluster-http-client.ts';

export interface ClusterAdminDeps {
  store: Store;
  keys: KeyResolver;
  log: Pick<Logger, 'info' | 'warn' | 'error'>;
  region: string;
  connections: ClusterConnections;
}

async function zoneCidr(store: Store, zone: string): Promise<string | undefined> {
  return (await store.db.selectFrom('zones').select('cidr').where('name', '=', zone).executeTakeFirst())?.cidr;
}

function clusterView(row: ClustersTable, cidr: string | undefined) {
  return { zone: row.zone, url: row.url, cidr: cidr ?? null, createdAt: row.created_at };
}

export function createClusterAdminApi(deps: ClusterAdminDeps): Hono<AdminEnv> {
  const { store, connections, log } = deps;
  const db = store.db;
  const app = newAdminApp(deps);

  const clientOf = async (zone: string): Promise<ClusterHttpClient> => {
    const row = await findCluster(db, zone);
    return connections.client(zone) ?? connections.connect(row);
  };

  app.get('/v1/clusters', async (c) => {
    const rows = await listClusters(db);
    const cidrs = new Map((await db.selectFrom('zones').select(['name', 'cidr']).execute()).map((z) => [z.name, z.cidr]));
    const inProcess = connections.inProcessZones().filter((zone) => !rows.some((r) => r.zone === zone))
      .map((zone) => ({ zone, url: 'in-process', cidr: cidrs.get(zone) ?? null, createdAt: null }));
    return c.json({ clusters: [...rows.map((r) => clusterView(r, cidrs.get(r.zone))), ...inProcess] });
  });

  app.post('/v1/clusters', async (c) => {
    const body = await readJsonObject(c);
    const secret = body.secret === undefined || body.secret === null ? undefined : requiredString(body, 'secret');
    const publicRange = body.publicRange === undefined || body.publicRange === null ? undefined : requiredString(body, 'publicRange');
    const row = await addCluster(store, {
      zone: requiredString(body, 'zone'), url: requiredString(body, 'url'), cidr: requiredString(body, 'cidr'), region: deps.region, secret,
    });
    if (publicRange !== undefined) {
      // The zone's public range (network/public-ranges.ts); a refused range leaves no cluster behind.
      try {
        await store.transaction((tx) => setPublicRange(tx, row.zone, publicRange));
      } catch (e) {
        await removeCluster(db, row.zone);
        throw e;
      }
    }
    connections.connect(row);
    log.info({ zone: row.zone, url: row.url }, 'cluster added');
    return c.json({ cluster: clusterView(row, await zoneCidr(store, row.zone)), secret: row.secret }, 201);
  });

  app.delete('/v1/clusters/:zone', async (c) => {
    const zone = c.req.param('zone');
    await findCluster(db, zone);
    const live = await db.selectFrom('instances').select((eb) => eb.fn.countAll<number>().as('n'))
      .where('zone', '=', zone).where('state', '!=', 'terminated').executeTakeFirstOrThrow();
    if (Number(live.n) > 0) {
      throw new Ec2Error('DependencyViolation', `Zone ${zone} has ${live.n} instance(s) that are not terminated; terminate them before removing its cluster.`, 409);
    }
    await removeCluster(db, zone);
    connections.disconnect(zone);
    log.info({ zone }, 'cluster removed');
    return c.json({ deleted: zone });
  });

  app.post('/v1/clusters/:zone/node-tokens', async (c) => {
    const body = await readJsonObject(c);
    const row = await findCluster(db, c.req.param('zone'));
    const ttl = body.ttlSeconds ?? DEFAULT_JOIN_TOKEN_TTL_SECONDS;
    if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1 || ttl > MAX_JOIN_TOKEN_TTL_SECONDS) {
      throw new Ec2Error('InvalidParameterValue', `ttlSeconds must be a whole number of seconds from 1 to ${MAX_JOIN_TOKEN_TTL_SECONDS}.`);
    }
    const { token, claims } = mintJoinToken(row.secret, row.zone, ttl);
    log.info({ zone: row.zone, expiresAt: new Date(claims.expiresAt).toISOString() }, 'node join token created');
    return c.json({ token, zone: row.zone, clusterUrl: row.url, expiresAt: new Date(claims.expiresAt).toISOString() }, 201);
  });

  app.get('/v1/clusters/:zone/nodes', async (c) => {
    const local = connections.inProcess(c.req.param('zone'));
    if (local) {
      // In-process nodes never joined: what the cluster reports is all there is to show.
      return c.json({
        nodes: (await local.describeNodes()).map((s) => ({
          id: s.nodeId, name: s.name, url: s.address, mac: s.mac ?? null, joinedAt: null,
          state: s.state, lastSeen: s.lastSeen ?? null, hypervisor: s.hypervisor, accelerator: s.accelerator,
          capacity: s.capacity, free: s.free, instanceCount: s.instanceCount,
          policy: s.policy ?? null, lastPlacement: s.lastPlacementReason ?? null, stateReason: s.stateReason ?? null,
          quarantinedRecords: s.quarantined ?? [],
        })),
      });
    }
    const client = await clientOf(c.req.param('zone'));
    const [joined, statuses] = await Promise.all([client.listJoinedNodes(), client.describeNodes()]);
    const byId = new Map(statuses.map((s) => [s.nodeId, s]));
    return c.json({
      nodes: joined.map((n) => {
        const s = byId.get(n.id);
        return {
          id: n.id, name: n.name, url: n.url, mac: n.mac ?? s?.mac ?? null, joinedAt: n.joinedAt,
          state: s?.state ?? 'down', lastSeen: s?.lastSeen ?? null,
          hypervisor: s?.hypervisor ?? null, accelerator: s?.accelerator ?? null,
          capacity: s?.capacity ?? null, free: s?.free ?? null, instanceCount: s?.instanceCount ?? 0,
          policy: s?.policy ?? null, lastPlacement: s?.lastPlacementReason ?? null, stateReason: s?.stateReason ?? null,
          quarantinedRecords: s?.quarantined ?? [],
        };
      }),
    });
  });

  // The node's host networking (bridges, tunnel, taps, tables, DHCP) against what it should be.
  app.get('/v1/clusters/:zone/nodes/:node/network', async (c) => {
    const zone = c.req.param('zone');
    const cluster: { diagnoseNode?(nodeId: string): Promise<unknown> } = connections.inProcess(zone) ?? (await clientOf(zone));
    if (!cluster.diagnoseNode) throw new Ec2Error('UnsupportedOperation', `The cluster of ${zone} cannot diagnose nodes.`);
    return c.json({ zone, ...((await cluster.diagnoseNode(c.req.param('node'))) as object) });
  });

  app.delete('/v1/clusters/:zone/nodes/:node', async (c) => {
    const zone = c.req.param('zone');
    const nodeId = c.req.param('node');
    await (await clientOf(zone)).revokeNode(nodeId);
    log.warn({ zone, nodeId }, 'node revoked');
    return c.json({ deleted: nodeId });
  });

  return app;
}
