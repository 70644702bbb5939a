// RunInstances' NetworkInterfaces, as tools send it to ask for a public address at launch
// (Terraform's associate_public_ip_address, the console, `aws ec2 run-instances
// --network-interfaces`): one interface at DeviceIndex 0 that names the subnet, groups, private
// address and AssociatePublicIpAddress. Instances here have exactly one interface, created with
// the instance, so the specification is read as the instance-level SubnetId, SecurityGroupIds and
// PrivateIpAddress it stands for; what it cannot mean here is refused with EC2's error.
import { Ec2Error, excerpt } from '../../protocol/errors.ts';

export interface InterfaceSpecification {
  AssociatePublicIpAddress?: boolean; DeleteOnTermination?: boolean; Description?: string; DeviceIndex?: number;
  Groups?: string[]; NetworkInterfaceId?: string; PrivateIpAddress?: string; SubnetId?: string;
  PrivateIpAddresses?: { Primary?: boolean; PrivateIpAddress?: string }[]; SecondaryPrivateIpAddressCount?: number;
  Ipv6AddressCount?: number; Ipv6Addresses?: unknown[]; NetworkCardIndex?: number; InterfaceType?: string;
  AssociateCarrierIpAddress?: boolean; Ipv4Prefixes?: unknown[]; Ipv4PrefixCount?: number; Ipv6Prefixes?: unknown[]; Ipv6PrefixCount?: number;
}

export interface InstanceLevelNetwork {
  SubnetId?: string;
  SecurityGroupIds?: string[];
  SecurityGroups?: string[];
  PrivateIpAddress?: string;
  NetworkInterfaces?: InterfaceSpecification[];
}

function notOffered(what: string): Ec2Error {
  return new Ec2Error('InvalidParameterValue', `${what} is not offered: instances here have one network interface with one private IPv4 address.`);
}

/**
 * The instance-level network parameters a request's NetworkInterfaces stand for, and whether the
 * interface asked for a public address (undefined: not said, the subnet's MapPublicIpOnLaunch decides).
 */
export function interfaceAsInstanceLevel<T extends InstanceLevelNetwork>(input: T): { input: T; associatePublicIp?: boolean } {
  const specs = input.NetworkInterfaces ?? [];
  if (specs.length === 0) return { input };
  if (specs.length > 1) throw new Ec2Error('InvalidParameterValue', 'Only one network interface (DeviceIndex 0) can be given: instances here have one.');
  const nic = specs[0]!;
  if (nic.DeviceIndex !== undefined && nic.DeviceIndex !== 0) {
    throw new Ec2Error('InvalidParameterValue', `Value (${nic.DeviceIndex}) for parameter deviceIndex is invalid. The primary interface has DeviceIndex 0.`);
  }
  if (nic.NetworkInterfaceId !== undefined) {
    throw new Ec2Error('InvalidNetworkInterfaceID.NotFound', `The networkInterface ID '${excerpt(nic.NetworkInterfaceId)}' does not exist`);
  }
  if (input.SubnetId) throw new Ec2Error('InvalidParameterCombination', 'Network interfaces and an instance-level subnet ID may not be specified on the same request');
  if ((input.SecurityGroupIds?.length ?? 0) + (input.SecurityGroups?.length ?? 0) > 0) {
    throw new Ec2Error('InvalidParameterCombination', 'Network interfaces and an instance-level security groups may not be specified on the same request');
  }
  if (input.PrivateIpAddress) {
    throw new Ec2Error('InvalidParameterCombination', 'Network interfaces and an instance-level private IP address should not be specified on the same request');
  }
  if (nic.SecondaryPrivateIpAddressCount) throw notOffered('SecondaryPrivateIpAddressCount');
  if (nic.Ipv6AddressCount || nic.Ipv6Addresses?.length || nic.Ipv6PrefixCount || nic.Ipv6Prefixes?.length) throw notOffered('IPv6 on the interface');
  if (nic.Ipv4PrefixCount || nic.Ipv4Prefixes?.length) throw notOffered('An IPv4 prefix on the interface');
  if (nic.NetworkCardIndex !== undefined && nic.NetworkCardIndex !== 0) throw notOffered(`Network card ${nic.NetworkCardIndex}`);
  if (nic.InterfaceType !== undefined && nic.InterfaceType !== 'interface') throw notOffered(`Interface type ${excerpt(nic.InterfaceType)}`);
  if (nic.AssociateCarrierIpAddress) throw notOffered('A carrier IP address (Wavelength)');
  let privateIp = nic.PrivateIpAddress;
  for (const p of nic.PrivateIpAddresses ?? []) {
    if (p.Primary === false) throw notOffered('A secondary private IP address');
    if (p.PrivateIpAddress && privateIp && p.PrivateIpAddress !== privateIp) {
      throw new Ec2Error('InvalidParameterCombination', 'The primary private IP address is given twice with different values.');
    }
    privateIp ??= p.PrivateIpAddress;
  }
  const { NetworkInterfaces: _dropped, ...rest } = input;
  return {
    input: {
      ...rest,
      ...(nic.SubnetId ? { SubnetId: nic.SubnetId } : {}),
      ...(nic.Groups?.length ? { SecurityGroupIds: nic.Groups } : {}),
      ...(privateIp ? { PrivateIpAddress: privateIp } : {}),
    } as T,
    associatePublicIp: nic.AssociatePublicIpAddress,
  };
}
