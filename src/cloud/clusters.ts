// The cloud's table of cluster controllers: for each zone served by a cluster on another host, the
// URL the cloud reaches it at and the secret both sign their messages with. ClusterConnections
// keeps one HTTP ClusterApi client per row registered in the ComputeDirectory.
import type { Db, Store, Tx } from '../store/store.ts';
import type { ClustersTable } from '../store/schema.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { newPeerSecret } from '../auth/peer-auth.ts';
import { ClusterHttpClient } from '../cluster/cluster-http-client.ts';
import type { ClusterApi } from '../cluster/cluster-api.ts';
import type { ComputeDirectory } from './compute-directory.ts';
import { ensureZone } from './provision.ts';
import { canonicalIpv4Cidr } from './cidr.ts';

const ZONE_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const MIN_SECRET_LENGTH = 32;

export interface NewCluster {
  zone: string;
  url: string;
  /** The zone's private network; zones may share a range. */
  cidr: string;
  region: string;
  /** Given by the operator, or generated. */
  secret?: string;
}

export function checkClusterUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Ec2Error('InvalidParameterValue', `The cluster URL ${JSON.stringify(url)} is not a URL such as http://192.168.250.2:8774.`);
  }
  if ((parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || parsed.search || parsed.hash || parsed.username) {
    throw new Ec2Error('InvalidParameterValue', `The cluster URL ${JSON.stringify(url)} must be http(s)://HOST:PORT with no query, fragment or user.`);
  }
  return url.replace(/\/+$/, '');
}

export async function listClusters(db: Db | Tx): Promise<ClustersTable[]> {
  return db.selectFrom('clusters').selectAll().orderBy('zone').execute();
}

export async function findCluster(db: Db | Tx, zone: string): Promise<ClustersTable> {
  const row = await db.selectFrom('clusters').selectAll().where('zone', '=', zone).executeTakeFirst();
  if (!row) throw new Ec2Error('InvalidCluster.NotFound', `No cluster controller serves zone ${zone}.`, 404);
  return row;
}

/** Records the cluster of a zone (creating the zone with its network if it is new). */
export async function addCluster(store: Store, spec: NewCluster): Promise<ClustersTable> {
  if (!ZONE_NAME.test(spec.zone)) {
    throw new Ec2Error('InvalidParameterValue', `"${spec.zone}" is not a valid zone name: use lower-case letters, digits and dashes.`);
  }
  const url = checkClusterUrl(spec.url);
  const cidr = canonicalIpv4Cidr(spec.cidr);
  if (cidr === undefined) {
    throw new Ec2Error('InvalidParameterValue', `"${spec.cidr}" is not an IPv4 network such as 10.1.0.0/16.`);
  }
  const secret = spec.secret ?? newPeerSecret();
  if (secret.length < MIN_SECRET_LENGTH || /\s/.test(secret)) {
    throw new Ec2Error('InvalidParameterValue', `A cluster secret must have at least ${MIN_SECRET_LENGTH} characters and no spaces.`);
  }
  const existing = await store.db.selectFrom('clusters').select('url').where('zone', '=', spec.zone).executeTakeFirst();
  if (existing) {
    throw new Ec2Error('InvalidCluster.Duplicate', `Zone ${spec.zone} already has a cluster controller (${existing.url}); remove it first.`, 409);
  }
  await ensureZone(store, { name: spec.zone, cidr, region: spec.region });
  const row: ClustersTable = { zone: spec.zone, url, secret, created_at: new Date().toISOString() };
  await store.db.insertInto('clusters').values(row).execute();
  return row;
}

export async function removeCluster(db: Db | Tx, zone: string): Promise<void> {
  await findCluster(db, zone);
  await db.deleteFrom('clusters').where('zone', '=', zone).execute();
}

/** One HTTP client per cluster, registered in the directory the EC2 services look zones up in. */
export class ClusterConnections {
  readonly #directory: ComputeDirectory;
  readonly #clients = new Map<string, ClusterHttpClient>();

  constructor(directory: ComputeDirectory) {
    this.#directory = directory;
  }

  /** Connects every cluster in the table (at the cloud's start). */
  async load(db: Db): Promise<string[]> {
    const rows = await listClusters(db);
    for (const row of rows) this.connect(row);
    return rows.map((r) => r.zone);
  }

  connect(row: Pick<ClustersTable, 'zone' | 'url' | 'secret'>): ClusterHttpClient {
    const client = new ClusterHttpClient({ zone: row.zone, url: row.url, secret: row.secret });
    this.#clients.set(row.zone, client);
    this.#directory.register(client);
    return client;
  }

  disconnect(zone: string): void {
    if (this.#clients.delete(zone)) this.#directory.unregister(zone);
  }

  client(zone: string): ClusterHttpClient | undefined {
    return this.#clients.get(zone);
  }

  /** The cluster of `zone` when it runs inside this process (`ironbark up`), not over HTTP. */
  inProcess(zone: string): ClusterApi | undefined {
    return this.#clients.has(zone) ? undefined : this.#directory.forZone(zone);
  }

  /** Zones whose cluster runs inside this process, sorted. */
  inProcessZones(): string[] {
    return this.#directory.zones().filter((zone) => !this.#clients.has(zone));
  }
}
