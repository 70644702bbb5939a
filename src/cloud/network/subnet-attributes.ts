// ModifySubnetAttribute: MapPublicIpOnLaunch, the one subnet attribute that changes anything here
// (whether launches into the subnet get a public address, network/public-addresses.ts). The others
// describe IPv6, Outposts and resource-name DNS, which subnets here do not have: setting them to
// what they are (off, ip-name) is accepted, asking for more is refused with EC2's error. As on
// EC2, one call changes one attribute.
import type { OperationTable, RequestContext } from '../context.ts';
import { Ec2Error, excerpt } from '../../protocol/errors.ts';

const SUBNET_ID = /^subnet-[0-9a-f]{8}([0-9a-f]{9})?$/;

interface BooleanValue { Value?: boolean }

interface ModifySubnetAttributeInput {
  SubnetId?: string;
  MapPublicIpOnLaunch?: BooleanValue; AssignIpv6AddressOnCreation?: BooleanValue; MapCustomerOwnedIpOnLaunch?: BooleanValue;
  CustomerOwnedIpv4Pool?: string; EnableDns64?: BooleanValue; PrivateDnsHostnameTypeOnLaunch?: string;
  EnableResourceNameDnsARecordOnLaunch?: BooleanValue; EnableResourceNameDnsAAAARecordOnLaunch?: BooleanValue;
  EnableLniAtDeviceIndex?: number; DisableLniAtDeviceIndex?: BooleanValue;
}

const ATTRIBUTES = [
  'MapPublicIpOnLaunch', 'AssignIpv6AddressOnCreation', 'MapCustomerOwnedIpOnLaunch', 'CustomerOwnedIpv4Pool', 'EnableDns64',
  'PrivateDnsHostnameTypeOnLaunch', 'EnableResourceNameDnsARecordOnLaunch', 'EnableResourceNameDnsAAAARecordOnLaunch',
  'EnableLniAtDeviceIndex', 'DisableLniAtDeviceIndex',
] as const;

function booleanOf(input: ModifySubnetAttributeInput, name: (typeof ATTRIBUTES)[number]): boolean {
  const value = (input[name] as BooleanValue | undefined)?.Value;
  if (typeof value !== 'boolean') throw new Ec2Error('MissingParameter', `The request must contain the parameter ${name}.Value`);
  return value;
}

/** A boolean attribute these subnets have off and cannot turn on. */
function onlyOff(input: ModifySubnetAttributeInput, name: (typeof ATTRIBUTES)[number], why: string): void {
  if (booleanOf(input, name)) throw new Ec2Error('InvalidParameterValue', `Invalid value 'true' for ${name}: ${why}`);
}

async function ModifySubnetAttribute(ctx: RequestContext, input: ModifySubnetAttributeInput) {
  const subnetId = input.SubnetId ?? '';
  if (!subnetId) throw new Ec2Error('MissingParameter', 'The request must contain the parameter subnetId');
  if (!SUBNET_ID.test(subnetId)) throw new Ec2Error('InvalidSubnetID.Malformed', `Invalid id: "${excerpt(subnetId)}"`);
  const given = ATTRIBUTES.filter((name) => input[name] !== undefined);
  if (given.length === 0) throw new Ec2Error('MissingParameter', 'The request must contain one attribute to modify, such as MapPublicIpOnLaunch.');
  if (given.length > 1) throw new Ec2Error('InvalidParameterCombination', `Fields for multiple attribute types specified: ${given.join(', ')}`);
  const subnet = await ctx.store.db.selectFrom('subnets').select('id').where('id', '=', subnetId).where('account_id', '=', ctx.caller.accountId).executeTakeFirst();
  if (!subnet) throw new Ec2Error('InvalidSubnetID.NotFound', `The subnet ID '${subnetId}' does not exist`);
  const attribute = given[0]!;
  switch (attribute) {
    case 'MapPublicIpOnLaunch':
      await ctx.store.db.updateTable('subnets').set({ map_public_ip_on_launch: booleanOf(input, attribute) ? 1 : 0 }).where('id', '=', subnetId).execute();
      break;
    case 'AssignIpv6AddressOnCreation':
    case 'EnableDns64':
      onlyOff(input, attribute, 'the subnet has no IPv6 CIDR block.');
      break;
    case 'MapCustomerOwnedIpOnLaunch':
      onlyOff(input, attribute, 'the subnet is not in an Outpost.');
      break;
    case 'EnableResourceNameDnsARecordOnLaunch':
    case 'EnableResourceNameDnsAAAARecordOnLaunch':
      onlyOff(input, attribute, 'instances here are named by their IP address (ip-name) only.');
      break;
    case 'PrivateDnsHostnameTypeOnLaunch':
      if (input.PrivateDnsHostnameTypeOnLaunch !== 'ip-name') {
        throw new Ec2Error('InvalidParameterValue', `Invalid value '${excerpt(input.PrivateDnsHostnameTypeOnLaunch)}' for PrivateDnsHostnameTypeOnLaunch: instances here are named by their IP address (ip-name) only.`);
      }
      break;
    case 'CustomerOwnedIpv4Pool':
    case 'EnableLniAtDeviceIndex':
    case 'DisableLniAtDeviceIndex':
      throw new Ec2Error('InvalidParameterValue', `${attribute} applies to subnets in an Outpost; this subnet is not in one.`);
  }
  return {};
}

export const subnetAttributeOperations: OperationTable = { ModifySubnetAttribute };
