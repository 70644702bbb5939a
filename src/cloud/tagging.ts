// CreateTags, DeleteTags and DescribeTags over every registered taggable resource kind.
import type { OperationTable, RequestContext } from './context.ts';
import type { Tag } from './tags.ts';
import { validateTags, writeTags } from './tags.ts';
import { assertTaggableResource } from './resource-registry.ts';
import { applyFilters, type Filter } from '../protocol/filters.ts';
import { paginate } from '../protocol/pagination.ts';
import { Ec2Error } from '../protocol/errors.ts';

interface TagsInput { Resources?: string[]; Tags?: { Key?: string; Value?: string }[] }

function requireResources(input: TagsInput): string[] {
  const resources = input.Resources ?? [];
  if (resources.length === 0) throw new Ec2Error('MissingParameter', 'The request must contain the parameter resourceIdSet');
  return [...new Set(resources)];
}

async function CreateTags(ctx: RequestContext, input: TagsInput): Promise<Record<string, never>> {
  const resources = requireResources(input);
  const tags: Tag[] = (input.Tags ?? []).map((t) => ({ Key: t.Key ?? '', Value: t.Value ?? '' }));
  if (tags.length === 0) throw new Ec2Error('MissingParameter', 'The request must contain the parameter tagSet');
  validateTags(tags);
  const accountId = ctx.caller.accountId;
  await ctx.store.transaction(async (tx) => {
    // Every resource is checked before the first tag is written: all or nothing.
    for (const id of resources) await assertTaggableResource(tx, accountId, id);
    for (const id of resources) await writeTags(tx, accountId, id, tags);
  });
  return {};
}

async function DeleteTags(ctx: RequestContext, input: TagsInput): Promise<Record<string, never>> {
  const resources = requireResources(input);
  const tags = input.Tags ?? [];
  for (const t of tags) {
    if (!t.Key) throw new Ec2Error('InvalidParameterValue', 'Tag keys must not be empty.');
    if (t.Key.toLowerCase().startsWith('aws:')) {
      throw new Ec2Error('InvalidParameterValue', `Tag keys starting with 'aws:' are reserved for internal use: ${t.Key}`);
    }
  }
  const accountId = ctx.caller.accountId;
  await ctx.store.transaction(async (tx) => {
    for (const id of resources) await assertTaggableResource(tx, accountId, id);
    for (const id of resources) {
      const base = tx.deleteFrom('tags').where('account_id', '=', accountId).where('resource_id', '=', id);
      if (tags.length === 0) {
        await base.execute();
        continue;
      }
      for (const t of tags) {
        // A tag given with a value (even an empty one) is deleted only if its value matches.
        let del = base.where('key', '=', t.Key!);
        if (t.Value !== undefined && t.Value !== null) del = del.where('value', '=', t.Value);
        await del.execute();
      }
    }
  });
  return {};
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

interface TagRow { resource_id: string; resource_type: string; key: string; value: string }

const TAG_FILTERS = {
  key: (t: TagRow) => t.key,
  value: (t: TagRow) => t.value,
  'resource-id': (t: TagRow) => t.resource_id,
  'resource-type': (t: TagRow) => t.resource_type,
};

async function DescribeTags(ctx: RequestContext, input: { Filters?: Filter[]; MaxResults?: number; NextToken?: string }) {
  const rows: TagRow[] = await ctx.store.db.selectFrom('tags')
    .select(['resource_id', 'resource_type', 'key', 'value'])
    .where('account_id', '=', ctx.caller.accountId)
    .execute();
  // Sorted here, not in SQL, so SQLite and PostgreSQL (locale collation) page identically.
  rows.sort((a, b) => compare(a.resource_id, b.resource_id) || compare(a.key, b.key));
  // `tag:KEY` on DescribeTags selects the rows of that key whose value matches.
  const filtered = applyFilters(rows, input.Filters, TAG_FILTERS, (t) => [{ Key: t.key, Value: t.value }]);
  const { page, nextToken } = paginate(filtered, input, JSON.stringify(input.Filters ?? []), { min: 5, max: 1000 });
  return {
    Tags: page.map((t) => ({ ResourceId: t.resource_id, ResourceType: t.resource_type, Key: t.key, Value: t.value })),
    ...(nextToken ? { NextToken: nextToken } : {}),
  };
}

export const taggingOperations: OperationTable = { CreateTags, DeleteTags, DescribeTags };
