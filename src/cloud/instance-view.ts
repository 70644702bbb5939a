// How instance rows look through the EC2 API: the Instance and Reservation structures, the
// state names and codes, and the DescribeInstances / DescribeInstanceStatus filters.
import type { BlockDeviceMapping } from './storage/instance-volumes.ts';
import { createHash } from 'node:crypto';
import type { InstancesTable } from '../store/schema.ts';
import { GUEST_SHUTDOWN_REASON, type VmTypeSpec } from '../node/node-api.ts';
import type { FilterAccessors } from '../protocol/filters.ts';
import { noValueFilters, viewFilters } from './view-filters.ts';
import type { Tag } from './tags.ts';
import { ARCHITECTURE, HYPERVISOR, OWN_BOOT_LOADER_VIRTUALIZATION_TYPE, ROOT_DEVICE_NAME, VIRTUALIZATION_TYPE } from './images/images.ts';
import { privateDnsName } from './ip-allocation.ts';
import { publicDnsName } from './network/public-addresses.ts';
import { metadataOptionsOf, metadataOptionsView } from './instance-metadata-options.ts';

export type InstanceState = 'pending' | 'running' | 'shutting-down' | 'terminated' | 'stopping' | 'stopped';

export const STATE_CODES: Record<InstanceState, number> = {
  pending: 0, running: 16, 'shutting-down': 32, terminated: 48, stopping: 64, stopped: 80,
};

export function stateOf(row: Pick<InstancesTable, 'state'>): { Code: number; Name: string } {
  return { Code: STATE_CODES[row.state as InstanceState] ?? 0, Name: row.state };
}

export interface SecurityGroupRef { id: string; name: string }

export function groupsOf(row: Pick<InstancesTable, 'security_groups'>): SecurityGroupRef[] {
  return JSON.parse(row.security_groups) as SecurityGroupRef[];
}

/** Stored state reasons read "Code: Message", e.g. "Client.UserInitiatedShutdown: User initiated shutdown". */
export const REASONS = {
  userShutdown: 'Client.UserInitiatedShutdown: User initiated shutdown',
  instanceShutdown: GUEST_SHUTDOWN_REASON,
  launchLost: 'Server.InternalError: Internal error on launch',
  noCapacity: 'Server.InsufficientInstanceCapacity: Insufficient capacity to satisfy instance request',
  lost: 'Server.InternalError: The instance is no longer known to its availability zone',
  crashed: (why?: string) => `Server.InternalError: ${why ? `The instance stopped unexpectedly (${why})` : 'The instance stopped unexpectedly'}`,
} as const;

function stateReason(row: InstancesTable): { Code: string; Message: string } | undefined {
  if (row.state_reason) {
    const colon = row.state_reason.indexOf(':');
    return { Code: colon > 0 ? row.state_reason.slice(0, colon) : row.state_reason, Message: row.state_reason };
  }
  if (row.state === 'pending') return { Code: 'pending', Message: 'pending' };
  return undefined;
}

/** EC2's StateTransitionReason: "User initiated (2024-05-01 10:00:00 GMT)" after a user's stop or terminate. */
function stateTransitionReason(row: InstancesTable): string {
  if (!row.state_reason) return '';
  if (row.state_reason.startsWith('Client.UserInitiatedShutdown')) {
    return `User initiated (${row.state_changed_at.slice(0, 19).replace('T', ' ')} GMT)`;
  }
  return row.state_reason;
}

/** Derived ids remembered, so a Describe of many instances does not hash each one again per call. */
const derivedIds = new Map<string, string>();
const MAX_DERIVED_IDS = 200_000;

/** A stable id for the instance's one network interface, which has no row of its own. */
function derivedId(prefix: string, instanceId: string): string {
  const key = `${prefix}:${instanceId}`;
  let id = derivedIds.get(key);
  if (id === undefined) {
    id = `${prefix}-${createHash('sha256').update(key).digest('hex').slice(0, 17)}`;
    if (derivedIds.size >= MAX_DERIVED_IDS) derivedIds.clear();
    derivedIds.set(key, id);
  }
  return id;
}

/** The id of the instance's one network interface (AssociateAddress and DescribeAddresses name it). */
export function networkInterfaceIdOf(instanceId: string): string {
  return derivedId('eni', instanceId);
}

/**
 * The interface's public address as EC2 shows it: IpOwnerId is the account for an elastic IP and
 * "amazon" for an address given at launch. AllocationId and AssociationId are not in the model's
 * structure (the serializer leaves them out) but let the association filters find elastic IPs.
 */
function publicAssociation(row: InstancesTable, region: string) {
  if (!row.public_ip) return undefined;
  return {
    IpOwnerId: row.public_ip_allocation_id ? row.account_id : 'amazon',
    PublicDnsName: publicDnsName(row.public_ip, region),
    PublicIp: row.public_ip,
    ...(row.public_ip_allocation_id ? { AllocationId: row.public_ip_allocation_id, AssociationId: row.public_ip_association_id ?? undefined } : {}),
  };
}

export function dnsNameOf(row: InstancesTable, region: string): string {
  return row.private_ip ? privateDnsName(row.private_ip, region) : '';
}

export interface ViewContext {
  region: string;
  vmTypes: Map<string, VmTypeSpec>;
  /** The EBS volumes attached to each instance (storage/instance-volumes.ts); none when absent. */
  volumesOf?: (instanceId: string) => BlockDeviceMapping[];
}

/** The EC2 Instance structure for one row. */
export function instanceView(row: InstancesTable, tags: Tag[], view: ViewContext) {
  const groups = groupsOf(row).map((g) => ({ GroupName: g.name, GroupId: g.id }));
  const dnsName = dnsNameOf(row, view.region);
  const live = row.private_ip !== null;
  const reason = stateReason(row);
  const vmType = view.vmTypes.get(row.instance_type);
  const association = live ? publicAssociation(row, view.region) : undefined;
  return {
    AmiLaunchIndex: row.launch_index,
    ImageId: row.image_id,
    InstanceId: row.id,
    InstanceType: row.instance_type,
    ...(row.kernel_id ? { KernelId: row.kernel_id } : {}),
    ...(row.ramdisk_id ? { RamdiskId: row.ramdisk_id } : {}),
    ...(row.key_name ? { KeyName: row.key_name } : {}),
    LaunchTime: new Date(row.launch_time),
    Monitoring: { State: 'disabled' },
    Placement: { AvailabilityZone: row.zone, GroupName: '', Tenancy: 'default' },
    PrivateDnsName: dnsName,
    ...(live ? { PrivateIpAddress: row.private_ip } : {}),
    ProductCodes: [],
    PublicDnsName: association?.PublicDnsName ?? '',
    ...(association ? { PublicIpAddress: association.PublicIp } : {}),
    State: stateOf(row),
    StateTransitionReason: stateTransitionReason(row),
    ...(live ? { SubnetId: row.subnet_id, VpcId: row.vpc_id } : {}),
    Architecture: ARCHITECTURE,
    BlockDeviceMappings: view.volumesOf?.(row.id) ?? [],
    ClientToken: row.client_token ?? '',
    EbsOptimized: false,
    EnaSupport: false,
    Hypervisor: HYPERVISOR,
    NetworkInterfaces: live ? [{
      ...(association ? { Association: association } : {}),
      Attachment: {
        AttachTime: new Date(row.launch_time), AttachmentId: derivedId('eni-attach', row.id), DeleteOnTermination: true,
        DeviceIndex: 0, Status: 'attached', NetworkCardIndex: 0,
      },
      Description: '',
      Groups: groups,
      Ipv6Addresses: [],
      MacAddress: row.mac,
      NetworkInterfaceId: networkInterfaceIdOf(row.id),
      OwnerId: row.account_id,
      PrivateDnsName: dnsName,
      PrivateIpAddress: row.private_ip,
      PrivateIpAddresses: [{ ...(association ? { Association: association } : {}), Primary: true, PrivateDnsName: dnsName, PrivateIpAddress: row.private_ip }],
      SourceDestCheck: true,
      Status: 'in-use',
      SubnetId: row.subnet_id,
      VpcId: row.vpc_id,
      InterfaceType: 'interface',
    }] : [],
    RootDeviceName: ROOT_DEVICE_NAME,
    RootDeviceType: row.root_volume_id ? 'ebs' : 'instance-store',
    SecurityGroups: groups,
    SourceDestCheck: true,
    ...(reason ? { StateReason: reason } : {}),
    Tags: tags,
    // An instance without a kernel of the cloud's boots its image's own boot loader: hvm.
    VirtualizationType: row.kernel_id ? VIRTUALIZATION_TYPE : OWN_BOOT_LOADER_VIRTUALIZATION_TYPE,
    CpuOptions: { CoreCount: vmType?.cores ?? 1, ThreadsPerCore: 1 },
    HibernationOptions: { Configured: false },
    MetadataOptions: metadataOptionsView(metadataOptionsOf(row)),
    EnclaveOptions: { Enabled: false },
    PlatformDetails: 'Linux/UNIX',
    UsageOperation: 'RunInstances',
    PrivateDnsNameOptions: { HostnameType: 'ip-name', EnableResourceNameDnsARecord: false, EnableResourceNameDnsAAAARecord: false },
    MaintenanceOptions: { AutoRecovery: 'disabled' },
  };
}

/** Groups instances (already in display order) into EC2 Reservations, keeping that order. */
export function reservationsOf(rows: InstancesTable[], tagsOf: (id: string) => Tag[], view: ViewContext) {
  const byId = new Map<string, { ReservationId: string; OwnerId: string; Groups: never[]; Instances: ReturnType<typeof instanceView>[] }>();
  for (const row of rows) {
    let reservation = byId.get(row.reservation_id);
    if (!reservation) {
      // Instances in a VPC carry their groups themselves; the reservation's group set stays empty.
      reservation = { ReservationId: row.reservation_id, OwnerId: row.account_id, Groups: [], Instances: [] };
      byId.set(row.reservation_id, reservation);
    }
    reservation.Instances.push(instanceView(row, tagsOf(row.id), view));
  }
  return [...byId.values()];
}

export interface InstanceItem { row: InstancesTable; tags: Tag[] }

/** Documented DescribeInstances filters read from the Instance structure, by member path. */
const SHOWN_INSTANCE_FILTERS: Record<string, string> = {
  'affinity': 'Placement.Affinity',
  'block-device-mapping.attach-time': 'BlockDeviceMappings.Ebs.AttachTime',
  'block-device-mapping.delete-on-termination': 'BlockDeviceMappings.Ebs.DeleteOnTermination',
  'block-device-mapping.device-name': 'BlockDeviceMappings.DeviceName',
  'block-device-mapping.status': 'BlockDeviceMappings.Ebs.Status',
  'block-device-mapping.volume-id': 'BlockDeviceMappings.Ebs.VolumeId',
  'boot-mode': 'BootMode',
  'capacity-reservation-id': 'CapacityReservationId',
  'capacity-reservation-specification.capacity-reservation-preference': 'CapacityReservationSpecification.CapacityReservationPreference',
  'capacity-reservation-specification.capacity-reservation-target.capacity-reservation-id':
    'CapacityReservationSpecification.CapacityReservationTarget.CapacityReservationId',
  'capacity-reservation-specification.capacity-reservation-target.capacity-reservation-resource-group-arn':
    'CapacityReservationSpecification.CapacityReservationTarget.CapacityReservationResourceGroupArn',
  'current-instance-boot-mode': 'CurrentInstanceBootMode',
  'ebs-optimized': 'EbsOptimized',
  'ena-support': 'EnaSupport',
  'enclave-options.enabled': 'EnclaveOptions.Enabled',
  'hibernation-options.configured': 'HibernationOptions.Configured',
  'host-id': 'Placement.HostId',
  'iam-instance-profile.arn': 'IamInstanceProfile.Arn',
  'iam-instance-profile.id': 'IamInstanceProfile.Id',
  'instance-lifecycle': 'InstanceLifecycle',
  'ipv6-address': 'NetworkInterfaces.Ipv6Addresses.Ipv6Address',
  'maintenance-options.auto-recovery': 'MaintenanceOptions.AutoRecovery',
  'metadata-options.http-endpoint': 'MetadataOptions.HttpEndpoint',
  'metadata-options.http-protocol-ipv4': 'MetadataOptions.HttpProtocolIpv4',
  'metadata-options.http-protocol-ipv6': 'MetadataOptions.HttpProtocolIpv6',
  'metadata-options.http-put-response-hop-limit': 'MetadataOptions.HttpPutResponseHopLimit',
  'metadata-options.http-tokens': 'MetadataOptions.HttpTokens',
  'metadata-options.instance-metadata-tags': 'MetadataOptions.InstanceMetadataTags',
  'metadata-options.state': 'MetadataOptions.State',
  'network-interface.addresses.association.allocation-id': 'NetworkInterfaces.PrivateIpAddresses.Association.AllocationId',
  'network-interface.addresses.association.association-id': 'NetworkInterfaces.PrivateIpAddresses.Association.AssociationId',
  'network-interface.addresses.association.carrier-ip': 'NetworkInterfaces.PrivateIpAddresses.Association.CarrierIp',
  'network-interface.addresses.association.customer-owned-ip': 'NetworkInterfaces.PrivateIpAddresses.Association.CustomerOwnedIp',
  'network-interface.addresses.association.ip-owner-id': 'NetworkInterfaces.PrivateIpAddresses.Association.IpOwnerId',
  'network-interface.addresses.association.public-dns-name': 'NetworkInterfaces.PrivateIpAddresses.Association.PublicDnsName',
  'network-interface.addresses.association.public-ip': 'NetworkInterfaces.PrivateIpAddresses.Association.PublicIp',
  'network-interface.addresses.primary': 'NetworkInterfaces.PrivateIpAddresses.Primary',
  'network-interface.addresses.private-dns-name': 'NetworkInterfaces.PrivateIpAddresses.PrivateDnsName',
  'network-interface.association.allocation-id': 'NetworkInterfaces.Association.AllocationId',
  'network-interface.association.association-id': 'NetworkInterfaces.Association.AssociationId',
  'network-interface.association.carrier-ip': 'NetworkInterfaces.Association.CarrierIp',
  'network-interface.association.customer-owned-ip': 'NetworkInterfaces.Association.CustomerOwnedIp',
  'network-interface.association.ip-owner-id': 'NetworkInterfaces.Association.IpOwnerId',
  'network-interface.association.public-dns-name': 'NetworkInterfaces.Association.PublicDnsName',
  'network-interface.association.public-ip': 'NetworkInterfaces.Association.PublicIp',
  'network-interface.attachment.attach-time': 'NetworkInterfaces.Attachment.AttachTime',
  'network-interface.attachment.attachment-id': 'NetworkInterfaces.Attachment.AttachmentId',
  'network-interface.attachment.delete-on-termination': 'NetworkInterfaces.Attachment.DeleteOnTermination',
  'network-interface.attachment.device-index': 'NetworkInterfaces.Attachment.DeviceIndex',
  'network-interface.attachment.network-card-index': 'NetworkInterfaces.Attachment.NetworkCardIndex',
  'network-interface.attachment.status': 'NetworkInterfaces.Attachment.Status',
  'network-interface.description': 'NetworkInterfaces.Description',
  'network-interface.group-id': 'NetworkInterfaces.Groups.GroupId',
  'network-interface.group-name': 'NetworkInterfaces.Groups.GroupName',
  'network-interface.ipv4-prefixes.ipv4-prefix': 'NetworkInterfaces.Ipv4Prefixes.Ipv4Prefix',
  'network-interface.ipv6-address': 'NetworkInterfaces.Ipv6Addresses.Ipv6Address',
  'network-interface.ipv6-addresses.ipv6-address': 'NetworkInterfaces.Ipv6Addresses.Ipv6Address',
  'network-interface.ipv6-addresses.is-primary-ipv6': 'NetworkInterfaces.Ipv6Addresses.IsPrimaryIpv6',
  'network-interface.ipv6-prefixes.ipv6-prefix': 'NetworkInterfaces.Ipv6Prefixes.Ipv6Prefix',
  'network-interface.network-interface-id': 'NetworkInterfaces.NetworkInterfaceId',
  'network-interface.outpost-arn': 'NetworkInterfaces.OutpostArn',
  'network-interface.owner-id': 'NetworkInterfaces.OwnerId',
  'network-interface.private-dns-name': 'NetworkInterfaces.PrivateDnsName',
  'network-interface.private-ip-address': 'NetworkInterfaces.PrivateIpAddress',
  'network-interface.public-dns-name': 'NetworkInterfaces.Association.PublicDnsName',
  'network-interface.requester-id': 'NetworkInterfaces.RequesterId',
  'network-interface.requester-managed': 'NetworkInterfaces.RequesterManaged',
  'network-interface.source-dest-check': 'NetworkInterfaces.SourceDestCheck',
  'network-interface.status': 'NetworkInterfaces.Status',
  'network-interface.subnet-id': 'NetworkInterfaces.SubnetId',
  'network-interface.vpc-id': 'NetworkInterfaces.VpcId',
  'outpost-arn': 'OutpostArn',
  'placement-group-name': 'Placement.GroupName',
  'placement-partition-number': 'Placement.PartitionNumber',
  'platform': 'Platform',
  'private-dns-name-options.enable-resource-name-dns-a-record': 'PrivateDnsNameOptions.EnableResourceNameDnsARecord',
  'private-dns-name-options.enable-resource-name-dns-aaaa-record': 'PrivateDnsNameOptions.EnableResourceNameDnsAAAARecord',
  'private-dns-name-options.hostname-type': 'PrivateDnsNameOptions.HostnameType',
  'product-code': 'ProductCodes.ProductCodeId',
  'product-code.type': 'ProductCodes.ProductCodeType',
  'source-dest-check': 'SourceDestCheck',
  'spot-instance-request-id': 'SpotInstanceRequestId',
  'tpm-support': 'TpmSupport',
  'usage-operation': 'UsageOperation',
  'usage-operation-update-time': 'UsageOperationUpdateTime',
};

/**
 * Documented DescribeInstances filters on what the EC2 model this cloud serves has no member for
 * (operators, the interface's own tags, IPv6-only subnets, bandwidth weighting, requesters): no
 * instance here has such a value, so they match nothing.
 */
const UNMODELLED_INSTANCE_FILTERS = [
  'network-interface.deny-all-igw-traffic', 'network-interface.ipv6-native', 'network-interface.operator.managed',
  'network-interface.operator.principal', 'network-interface.tag-key', 'network-interface.tag-value',
  'network-performance-options.bandwidth-weighting', 'operator.managed', 'operator.principal', 'requester-id',
];

/**
 * DescribeInstances filters: the common ones read straight from rows so 10,000 instances filter
 * quickly, the rest of those EC2 documents from the Instance structure DescribeInstances shows.
 * `zoneIds` maps zone names to their ids (availability-zone-id).
 */
export function instanceFilters(region: string, zoneIds: ReadonlyMap<string, string> = new Map(),
  volumesOf?: (instanceId: string) => BlockDeviceMapping[]): FilterAccessors<InstanceItem> {
  const groups = (i: InstanceItem) => groupsOf(i.row);
  const live = (i: InstanceItem) => i.row.private_ip !== null;
  return {
    ...viewFilters((i: InstanceItem) => instanceView(i.row, i.tags, { region, vmTypes: new Map(), volumesOf }), SHOWN_INSTANCE_FILTERS),
    ...noValueFilters(UNMODELLED_INSTANCE_FILTERS),
    'availability-zone-id': (i) => zoneIds.get(i.row.zone),
    // The interface's own attachment and zone: the instance's, while it has its interface.
    'network-interface.attachment.instance-id': (i) => (live(i) ? i.row.id : undefined),
    'network-interface.attachment.instance-owner-id': (i) => (live(i) ? i.row.account_id : undefined),
    'network-interface.availability-zone': (i) => (live(i) ? i.row.zone : undefined),
    'instance-id': (i) => i.row.id,
    'instance-state-name': (i) => i.row.state,
    'instance-state-code': (i) => String(STATE_CODES[i.row.state as InstanceState]),
    'instance-type': (i) => i.row.instance_type,
    'image-id': (i) => i.row.image_id,
    'kernel-id': (i) => i.row.kernel_id ?? undefined,
    'ramdisk-id': (i) => i.row.ramdisk_id ?? undefined,
    'availability-zone': (i) => i.row.zone,
    'private-ip-address': (i) => i.row.private_ip ?? undefined,
    'network-interface.addresses.private-ip-address': (i) => i.row.private_ip ?? undefined,
    'ip-address': (i) => (live(i) ? i.row.public_ip ?? undefined : undefined),
    'private-dns-name': (i) => dnsNameOf(i.row, region) || undefined,
    'dns-name': (i) => (live(i) && i.row.public_ip ? publicDnsName(i.row.public_ip, region) : undefined),
    'key-name': (i) => i.row.key_name ?? undefined,
    'reservation-id': (i) => i.row.reservation_id,
    'subnet-id': (i) => i.row.subnet_id,
    'vpc-id': (i) => i.row.vpc_id,
    'network-interface.mac-address': (i) => i.row.mac,
    'instance.group-id': (i) => groups(i).map((g) => g.id),
    'instance.group-name': (i) => groups(i).map((g) => g.name),
    'group-id': (i) => groups(i).map((g) => g.id),
    'group-name': (i) => groups(i).map((g) => g.name),
    'owner-id': (i) => i.row.account_id,
    'launch-time': (i) => new Date(i.row.launch_time).toISOString(),
    'launch-index': (i) => String(i.row.launch_index),
    'client-token': (i) => i.row.client_token ?? undefined,
    'architecture': () => ARCHITECTURE,
    'hypervisor': () => HYPERVISOR,
    'root-device-type': () => 'instance-store',
    'root-device-name': () => ROOT_DEVICE_NAME,
    'virtualization-type': (i) => (i.row.kernel_id ? VIRTUALIZATION_TYPE : OWN_BOOT_LOADER_VIRTUALIZATION_TYPE),
    'monitoring-state': () => 'disabled',
    'tenancy': () => 'default',
    'platform-details': () => 'Linux/UNIX',
    'state-reason-code': (i) => stateReason(i.row)?.Code,
    'state-reason-message': (i) => stateReason(i.row)?.Message,
    'reason': (i) => stateTransitionReason(i.row) || undefined,
  };
}
