// Creating the things every cloud and every account starts with: zones (one per cluster) and
// accounts with their default VPC, subnets and security group — each in one transaction.
import type { Store } from '../store/store.ts';
import { createAccount } from '../auth/identities.ts';
import { provisionAccount, provisionZone } from './account-setup.ts';
import { Ec2Error } from '../protocol/errors.ts';

export interface ZoneSpec { name: string; cidr: string; region: string }

/** Adds an availability zone (or confirms it) and gives every account a default subnet in it. */
export async function ensureZone(store: Store, zone: ZoneSpec): Promise<void> {
  await store.transaction(async (tx) => {
    const existing = await tx.selectFrom('zones').selectAll().where('name', '=', zone.name).executeTakeFirst();
    if (existing) {
      if (existing.cidr !== zone.cidr) {
        throw new Ec2Error('InvalidParameterValue', `Zone ${zone.name} already exists with network ${existing.cidr}, not ${zone.cidr}.`);
      }
      return;
    }
    const count = await tx.selectFrom('zones').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    await tx.insertInto('zones').values({
      name: zone.name, region: zone.region, cidr: zone.cidr, state: 'available',
      zone_id: `${zone.region.replace(/[^a-z0-9]/g, '').slice(0, 6)}-az${Number(count.n) + 1}`,
      created_at: new Date().toISOString(),
    }).execute();
    await provisionZone(tx, zone.name);
  });
}

/** A new account with its admin user and key, its default VPC, subnets and `default` group. */
export async function createAccountWithDefaults(store: Store, name: string) {
  return store.transaction(async (tx) => {
    const created = await createAccount(tx, name);
    await provisionAccount(tx, created.account.id);
    return created;
  });
}
