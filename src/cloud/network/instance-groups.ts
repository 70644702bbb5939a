// ModifyInstanceAttribute GroupId: a running (or stopped) instance's security groups replaced, as
// EC2 does for a VPC instance's primary interface. The new set is stored at once; the nodes follow
// within seconds through the zone's firewall document (firewall-sync.ts), for new connections.
import type { Tx } from '../../store/store.ts';
import type { InstancesTable } from '../../store/schema.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { resolveSecurityGroups } from '../security-groups.ts';

const MAX_GROUPS_PER_INSTANCE = 5;

/** The group ids a request names: `GroupId.N` (a list), or the one id of the Attribute=groupSet&Value= form. */
function requestedGroupIds(value: unknown): string[] {
  if (Array.isArray(value)) return value.map(String).filter((id) => id !== '');
  if (typeof value === 'string' && value !== '') return [value];
  return [];
}

/** Replaces the instance's groups; every group must be the caller's and in the instance's VPC. */
export async function replaceInstanceGroups(tx: Tx, accountId: string, row: Pick<InstancesTable, 'id' | 'vpc_id'>, value: unknown): Promise<void> {
  const ids = [...new Set(requestedGroupIds(value))];
  if (ids.length === 0) throw new Ec2Error('MissingParameter', 'The request must contain the parameter groupId');
  if (ids.length > MAX_GROUPS_PER_INSTANCE) {
    throw new Ec2Error('SecurityGroupsPerInstanceLimitExceeded', 'The maximum number of security groups per interface has been reached.');
  }
  const groups = await resolveSecurityGroups(tx, accountId, { ids, vpcId: row.vpc_id });
  const byId = new Map(groups.map((g) => [g.id, g]));
  // In the order given, as DescribeInstances shows them.
  const refs = ids.map((id) => ({ id, name: byId.get(id)!.name }));
  await tx.updateTable('instances').set({ security_groups: JSON.stringify(refs) }).where('id', '=', row.id).execute();
}
