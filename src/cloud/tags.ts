// Tag storage shared by every resource family: TagSpecifications on create calls, tag sets on
// Describe outputs, and the tag limits EC2 enforces.
import type { Db, Tx } from '../store/store.ts';
import { Ec2Error } from '../protocol/errors.ts';

export interface Tag { Key: string; Value: string }
export interface TagSpecification { ResourceType?: string; Tags?: Tag[] }

const MAX_TAGS_PER_RESOURCE = 50;

/** EC2 resource type named by an id's prefix (the `resource-type` of DescribeTags). */
const RESOURCE_TYPE_BY_PREFIX: Record<string, string> = {
  i: 'instance', ami: 'image', aki: 'image', ari: 'image', vol: 'volume', snap: 'snapshot',
  sg: 'security-group', sgr: 'security-group-rule', key: 'key-pair', vpc: 'vpc', subnet: 'subnet',
  eipalloc: 'elastic-ip', r: 'reservation', dopt: 'dhcp-options', igw: 'internet-gateway',
  rtb: 'route-table', acl: 'network-acl', eni: 'network-interface',
};

export function resourceTypeOf(resourceId: string): string | undefined {
  return RESOURCE_TYPE_BY_PREFIX[resourceId.slice(0, resourceId.indexOf('-'))];
}

export function validateTags(tags: Tag[]): void {
  for (const t of tags) {
    if (t.Key === undefined || t.Key === '') throw new Ec2Error('InvalidParameterValue', 'Tag keys must not be empty.');
    if (t.Key.length > 128) throw new Ec2Error('InvalidParameterValue', `Tag key exceeds the maximum length of 128 characters: ${t.Key.slice(0, 20)}...`);
    if ((t.Value ?? '').length > 256) throw new Ec2Error('InvalidParameterValue', `Tag value exceeds the maximum length of 256 characters for key ${t.Key}.`);
    if (t.Key.toLowerCase().startsWith('aws:')) throw new Ec2Error('InvalidParameterValue', `Tag keys starting with 'aws:' are reserved for internal use: ${t.Key}`);
  }
}

/** Set (create or overwrite) tags on one resource; keeps the 50-tag limit. */
export async function writeTags(tx: Tx | Db, accountId: string, resourceId: string, tags: Tag[]): Promise<void> {
  if (tags.length === 0) return;
  validateTags(tags);
  const resourceType = resourceTypeOf(resourceId) ?? 'unknown';
  const existing = await tx.selectFrom('tags').select('key').where('resource_id', '=', resourceId).execute();
  const keys = new Set(existing.map((r) => r.key));
  for (const t of tags) keys.add(t.Key);
  if (keys.size > MAX_TAGS_PER_RESOURCE) {
    throw new Ec2Error('TagLimitExceeded', `The maximum number of tags (${MAX_TAGS_PER_RESOURCE}) for resource ${resourceId} has been reached.`);
  }
  for (const t of tags) {
    await tx.insertInto('tags')
      .values({ account_id: accountId, resource_id: resourceId, resource_type: resourceType, key: t.Key, value: t.Value ?? '' })
      .onConflict((oc) => oc.columns(['resource_id', 'key']).doUpdateSet({ value: t.Value ?? '' }))
      .execute();
  }
}

/**
 * Checks every TagSpecification of a create call against the resource types that call can tag,
 * before anything is written; returns the tags for each resource type.
 */
export function tagsFromSpecifications(specs: TagSpecification[] | undefined, allowedTypes: string[]): Map<string, Tag[]> {
  const byType = new Map<string, Tag[]>();
  for (const spec of specs ?? []) {
    const type = spec.ResourceType;
    if (!type) throw new Ec2Error('InvalidParameterValue', 'A TagSpecification must name its ResourceType.');
    if (!allowedTypes.includes(type)) {
      throw new Ec2Error('InvalidParameterValue', `'${type}' is not a valid taggable resource type for this operation.`);
    }
    if (byType.has(type)) throw new Ec2Error('InvalidParameterValue', `The same resource type (${type}) may not be specified more than once in tag specifications.`);
    const tags = spec.Tags ?? [];
    validateTags(tags);
    if (tags.length > MAX_TAGS_PER_RESOURCE) throw new Ec2Error('TagLimitExceeded', `A resource can have at most ${MAX_TAGS_PER_RESOURCE} tags.`);
    byType.set(type, tags);
  }
  return byType;
}

/** Tag sets of many resources at once, as `{Key, Value}` lists ready for a Describe output. */
export async function tagsByResource(db: Db | Tx, accountId: string, resourceIds: string[]): Promise<Map<string, Tag[]>> {
  const out = new Map<string, Tag[]>();
  if (resourceIds.length === 0) return out;
  const rows = [];
  // Chunk the IN list so a large Describe stays inside SQLite's parameter limit.
  for (let i = 0; i < resourceIds.length; i += 500) {
    rows.push(...await db.selectFrom('tags').select(['resource_id', 'key', 'value'])
      .where('account_id', '=', accountId).where('resource_id', 'in', resourceIds.slice(i, i + 500)).execute());
  }
  for (const r of rows) {
    let list = out.get(r.resource_id);
    if (!list) out.set(r.resource_id, list = []);
    list.push({ Key: r.key, Value: r.value });
  }
  return out;
}

export async function deleteAllTags(tx: Tx, resourceId: string): Promise<void> {
  await tx.deleteFrom('tags').where('resource_id', '=', resourceId).execute();
}
