// DescribeAccountAttributes: the limits and defaults EC2 clients (the console, Terraform, boto)
// read before launching — the platform, the default VPC and the account's quotas.
import type { OperationTable, RequestContext } from './context.ts';
import { Ec2Error, excerpt } from '../protocol/errors.ts';
import { getQuota, maxInstances } from './quotas.ts';

const SECURITY_GROUPS_PER_INTERFACE = 5;

type Attribute = (ctx: RequestContext) => Promise<string[]>;

// In the order EC2 lists them.
const ATTRIBUTES: Record<string, Attribute> = {
  'vpc-max-security-groups-per-interface': async () => [String(SECURITY_GROUPS_PER_INTERFACE)],
  'max-instances': async (ctx) => [String(await maxInstances(ctx.store.db, ctx.caller.accountId))],
  'supported-platforms': async () => ['VPC'],
  'default-vpc': async (ctx) => {
    const vpc = await ctx.store.db.selectFrom('vpcs').select('id')
      .where('account_id', '=', ctx.caller.accountId).where('is_default', '=', 1).executeTakeFirst();
    return [vpc?.id ?? 'none'];
  },
  // The operator's quota, which AllocateAddress enforces (network/addresses.ts); EC2 reports both names.
  'max-elastic-ips': async (ctx) => [String(await getQuota(ctx.store.db, ctx.caller.accountId, 'max-elastic-ips'))],
  'vpc-max-elastic-ips': async (ctx) => [String(await getQuota(ctx.store.db, ctx.caller.accountId, 'max-elastic-ips'))],
};

async function DescribeAccountAttributes(ctx: RequestContext, input: { AttributeNames?: string[] }) {
  const wanted = input.AttributeNames?.length ? [...new Set(input.AttributeNames)] : Object.keys(ATTRIBUTES);
  for (const name of wanted) {
    // Own entries only: `constructor` and the like are unknown attributes, not inherited functions.
    if (!Object.hasOwn(ATTRIBUTES, name)) {
      throw new Ec2Error('InvalidParameterValue', `Value (${excerpt(name)}) for parameter attributeName is invalid. Unknown attribute.`);
    }
  }
  const AccountAttributes = [];
  for (const name of wanted) {
    const values = await ATTRIBUTES[name]!(ctx);
    AccountAttributes.push({ AttributeName: name, AttributeValues: values.map((AttributeValue) => ({ AttributeValue })) });
  }
  return { AccountAttributes };
}

export const accountAttributeOperations: OperationTable = { DescribeAccountAttributes };
