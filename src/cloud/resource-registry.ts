// Which resource kinds can carry tags, how to tell that one exists in an account, and the error
// EC2 gives for one that does not. Each resource family registers its id prefix here (at module
// load), so CreateTags/DeleteTags work on it without tagging.ts knowing the family.
import type { Db, Tx } from '../store/store.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { ID_PATTERN } from './ids.ts';

export type ResourceExists = (db: Db | Tx, accountId: string, id: string) => Promise<boolean>;
export type NotFoundError = (id: string) => Ec2Error;

interface TaggableKind { prefix: string; exists: ResourceExists; notFound: NotFoundError }

const kinds = new Map<string, TaggableKind>();

/** EC2's answer for an id it cannot place at all: unknown prefix or malformed. */
export function invalidIdError(id: string): Ec2Error {
  return new Ec2Error('InvalidID', `The ID '${id}' is not valid`);
}

/**
 * Makes ids `prefix-…` taggable. `exists` must answer false for another account's resource, so
 * a foreign id gets exactly the error a missing one does. `notFound` is EC2's error for the kind
 * (e.g. InvalidInstanceID.NotFound); without one, the generic InvalidID. Registering a prefix
 * again replaces the earlier entry, so a family may refine the built-in ones below.
 */
export function registerTaggable(prefix: string, exists: ResourceExists, notFound: NotFoundError = invalidIdError): void {
  kinds.set(prefix, { prefix, exists, notFound });
}

export function isTaggablePrefix(prefix: string): boolean {
  return kinds.has(prefix);
}

/** Throws EC2's error unless `id` names an existing resource of the caller's account. */
export async function assertTaggableResource(db: Db | Tx, accountId: string, id: string): Promise<void> {
  const dash = id.indexOf('-');
  const kind = dash > 0 ? kinds.get(id.slice(0, dash)) : undefined;
  if (!kind || !ID_PATTERN.test(id)) throw invalidIdError(id);
  if (!(await kind.exists(db, accountId, id))) throw kind.notFound(id);
}

/** `exists` for a family whose table has `id` and `account_id` columns. */
function ownedRowExists(table: 'key_pairs' | 'vpcs' | 'subnets' | 'security_groups'): ResourceExists {
  return async (db, accountId, id) => {
    const row = await db.selectFrom(table).select('id').where('id', '=', id).where('account_id', '=', accountId).executeTakeFirst();
    return row !== undefined;
  };
}

registerTaggable('key', ownedRowExists('key_pairs'), (id) => new Ec2Error('InvalidKeyPair.NotFound', `The key pair '${id}' does not exist`));
registerTaggable('vpc', ownedRowExists('vpcs'), (id) => new Ec2Error('InvalidVpcID.NotFound', `The vpc ID '${id}' does not exist`));
registerTaggable('subnet', ownedRowExists('subnets'), (id) => new Ec2Error('InvalidSubnetID.NotFound', `The subnet ID '${id}' does not exist`));
registerTaggable('sg', ownedRowExists('security_groups'), (id) => new Ec2Error('InvalidGroup.NotFound', `The security group '${id}' does not exist`));
