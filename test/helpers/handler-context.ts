// What the cloud handler unit tests share: an in-memory store holding the accounts and zones a
// test names, the RequestContext an account's admin request carries, and calling a handler by
// its action name, as the EC2 endpoint does once a request is parsed and authenticated.
import { openStore, type Store } from '../../src/store/store.ts';
import type { OperationTable, RequestContext } from '../../src/cloud/context.ts';
import { provisionAccount } from '../../src/cloud/account-setup.ts';

export { expectEc2Error, isEc2Error } from './ec2-errors.ts';

export const REGION = 'ironbark-1';
/** Where the test cloud says its EC2 endpoint is (only DescribeRegions shows it). */
export const ENDPOINT = 'http://127.0.0.1:8773/';

export interface TestZone {
  name: string;
  cidr: string;
  /** EC2's AZ id, e.g. ibk1-az1. */
  zoneId: string;
  region?: string;
  state?: 'available' | 'impaired' | 'unavailable';
}

export interface TestCloudStoreOptions {
  /** 12-digit account ids, each inserted as an active account named `acct-<id>` (nothing provisioned). */
  accounts?: string[];
  /** Zone rows as given (no default subnets are made for them). */
  zones?: TestZone[];
}

/** A migrated in-memory SQLite store holding just the accounts and zones asked for. */
export async function openTestCloudStore(opts: TestCloudStoreOptions = {}): Promise<Store> {
  const store = await openStore({ url: ':memory:' });
  const created_at = new Date().toISOString();
  const accounts = opts.accounts ?? [];
  const zones = opts.zones ?? [];
  if (accounts.length > 0) {
    await store.db.insertInto('accounts').values(accounts.map((id) => ({ id, name: `acct-${id}`, status: 'active', created_at }))).execute();
  }
  if (zones.length > 0) {
    await store.db.insertInto('zones').values(zones.map((z) => ({
      name: z.name, region: z.region ?? REGION, cidr: z.cidr, state: z.state ?? 'available', zone_id: z.zoneId, created_at,
    }))).execute();
  }
  return store;
}

/** Gives each account its default VPC, subnets and `default` group; returns the VPC ids in order. */
export async function provisionDefaultNetworks(store: Store, ...accountIds: string[]): Promise<string[]> {
  const vpcIds: string[] = [];
  for (const id of accountIds) vpcIds.push(await store.transaction((tx) => provisionAccount(tx, id)));
  return vpcIds;
}

/** The context of a request by `accountId`'s admin user (all actions allowed). */
export function contextFor(store: Store, accountId: string, opts: { action?: string; endpoint?: string } = {}): RequestContext {
  return {
    requestId: 'req-1', action: opts.action ?? 'Test', store,
    caller: { accountId, userId: `AIDA${accountId}`, userName: 'admin', accessKeyId: `AKIA${accountId}`, isAdmin: true },
    settings: { region: REGION, endpoint: opts.endpoint ?? ENDPOINT },
  };
}

/** Runs `table[action]` with `ctx` (its action set to `action`) on `input`. */
export function callOperation(ctx: RequestContext, table: OperationTable, action: string, input: object = {}): Promise<any> {
  const handler = table[action];
  if (!handler) throw new Error(`no handler for ${action} among ${Object.keys(table).join(', ')}`);
  return handler({ ...ctx, action }, input);
}
