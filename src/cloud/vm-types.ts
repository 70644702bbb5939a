// The operator-editable VM type table (Eucalyptus' classic types plus t2/t3 sizes) and
// DescribeInstanceTypes over it.
import type { Db, Tx } from '../store/store.ts';
import type { OperationTable, RequestContext } from './context.ts';
import type { VmTypeSpec } from '../node/node-api.ts';
import { applyFilters, type FilterAccessors } from '../protocol/filters.ts';
import { viewFilters } from './view-filters.ts';
import { paginate } from '../protocol/pagination.ts';
import { Ec2Error } from '../protocol/errors.ts';

/** cores / memory MiB / disk GiB, as Eucalyptus 4.x shipped them, then burstable sizes. */
export const DEFAULT_VM_TYPES: VmTypeSpec[] = [
  { name: 'm1.small', cores: 1, memoryMiB: 256, diskGiB: 5 },
  { name: 'c1.medium', cores: 2, memoryMiB: 512, diskGiB: 10 },
  { name: 'm1.large', cores: 2, memoryMiB: 512, diskGiB: 10 },
  { name: 'm1.xlarge', cores: 2, memoryMiB: 1024, diskGiB: 10 },
  { name: 'c1.xlarge', cores: 2, memoryMiB: 2048, diskGiB: 10 },
  { name: 't2.nano', cores: 1, memoryMiB: 512, diskGiB: 5 },
  { name: 't2.micro', cores: 1, memoryMiB: 1024, diskGiB: 10 },
  { name: 't2.small', cores: 1, memoryMiB: 2048, diskGiB: 10 },
  { name: 't2.medium', cores: 2, memoryMiB: 4096, diskGiB: 10 },
  { name: 't3.nano', cores: 2, memoryMiB: 512, diskGiB: 5 },
  { name: 't3.micro', cores: 2, memoryMiB: 1024, diskGiB: 10 },
  { name: 't3.small', cores: 2, memoryMiB: 2048, diskGiB: 10 },
  { name: 't3.medium', cores: 2, memoryMiB: 4096, diskGiB: 10 },
];

export const DEFAULT_INSTANCE_TYPE = 'm1.small';

/** Seeds the table on first start; never overwrites what an operator changed. */
export async function seedVmTypes(tx: Tx | Db): Promise<void> {
  const existing = await tx.selectFrom('vm_types').select('name').execute();
  if (existing.length > 0) return;
  let order = 0;
  for (const t of DEFAULT_VM_TYPES) {
    await tx.insertInto('vm_types').values({ name: t.name, cores: t.cores, memory_mib: t.memoryMiB, disk_gib: t.diskGiB, sort_order: order++ }).execute();
  }
}

export async function listVmTypes(db: Db | Tx): Promise<VmTypeSpec[]> {
  const rows = await db.selectFrom('vm_types').selectAll().orderBy('sort_order').orderBy('name').execute();
  return rows.map((r) => ({ name: r.name, cores: r.cores, memoryMiB: r.memory_mib, diskGiB: r.disk_gib }));
}

export async function findVmType(db: Db | Tx, name: string): Promise<VmTypeSpec | undefined> {
  const r = await db.selectFrom('vm_types').selectAll().where('name', '=', name).executeTakeFirst();
  return r && { name: r.name, cores: r.cores, memoryMiB: r.memory_mib, diskGiB: r.disk_gib };
}

/** Creates or changes a VM type (the operator's `ironbark admin vm-type set`). */
export async function setVmType(db: Db | Tx, t: VmTypeSpec): Promise<void> {
  if (!/^[a-z0-9][a-z0-9.-]{0,63}$/.test(t.name)) throw new Error(`"${t.name}" is not a valid VM type name (lower-case letters, digits, dots, dashes)`);
  for (const [k, v] of [['cores', t.cores], ['memory', t.memoryMiB], ['disk', t.diskGiB]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`the ${k} of a VM type must be a positive whole number, not ${v}`);
  }
  const order = (await db.selectFrom('vm_types').select((eb) => eb.fn.max<number>('sort_order').as('m')).executeTakeFirst())?.m ?? 0;
  await db.insertInto('vm_types').values({ name: t.name, cores: t.cores, memory_mib: t.memoryMiB, disk_gib: t.diskGiB, sort_order: Number(order) + 1 })
    .onConflict((oc) => oc.column('name').doUpdateSet({ cores: t.cores, memory_mib: t.memoryMiB, disk_gib: t.diskGiB }))
    .execute();
}

function instanceTypeInfo(t: VmTypeSpec) {
  return {
    InstanceType: t.name,
    CurrentGeneration: t.name.startsWith('t'),
    FreeTierEligible: t.name === 't2.micro',
    SupportedUsageClasses: ['on-demand'],
    SupportedRootDeviceTypes: ['instance-store'],
    SupportedVirtualizationTypes: ['paravirtual', 'hvm'],
    BareMetal: false,
    Hypervisor: 'kvm',
    ProcessorInfo: { SupportedArchitectures: ['x86_64'] },
    VCpuInfo: { DefaultVCpus: t.cores, DefaultCores: t.cores, DefaultThreadsPerCore: 1, ValidCores: [t.cores], ValidThreadsPerCore: [1] },
    MemoryInfo: { SizeInMiB: t.memoryMiB },
    InstanceStorageSupported: true,
    InstanceStorageInfo: { TotalSizeInGB: t.diskGiB, Disks: [{ SizeInGB: t.diskGiB, Count: 1, Type: 'ssd' }], NvmeSupport: 'unsupported' },
    EbsInfo: { EbsOptimizedSupport: 'unsupported', EncryptionSupport: 'unsupported', NvmeSupport: 'unsupported' },
    NetworkInfo: { NetworkPerformance: 'Low to Moderate', MaximumNetworkInterfaces: 1, MaximumNetworkCards: 1, DefaultNetworkCardIndex: 0,
      Ipv4AddressesPerInterface: 1, Ipv6AddressesPerInterface: 0, Ipv6Supported: false, EnaSupport: 'unsupported', EfaSupported: false,
      EncryptionInTransitSupported: false },
    PlacementGroupInfo: { SupportedStrategies: [] },
    HibernationSupported: false,
    BurstablePerformanceSupported: t.name.startsWith('t'),
    DedicatedHostsSupported: false,
    AutoRecoverySupported: false,
    SupportedBootModes: ['legacy-bios'],
  };
}

const typeFilters: FilterAccessors<VmTypeSpec> = {
  'instance-type': (t) => t.name,
  'vcpu-info.default-vcpus': (t) => String(t.cores),
  'vcpu-info.default-cores': (t) => String(t.cores),
  'memory-info.size-in-mib': (t) => String(t.memoryMiB),
  'instance-storage-info.total-size-in-gb': (t) => String(t.diskGiB),
  'instance-storage-supported': () => 'true',
  'current-generation': (t) => String(t.name.startsWith('t')),
  'free-tier-eligible': (t) => String(t.name === 't2.micro'),
  'burstable-performance-supported': (t) => String(t.name.startsWith('t')),
  'processor-info.supported-architecture': () => 'x86_64',
  'supported-root-device-type': () => 'instance-store',
  'supported-virtualization-type': () => ['paravirtual', 'hvm'],
  hypervisor: () => 'kvm',
  'bare-metal': () => 'false',
  // The rest EC2 documents, as the InstanceTypeInfo DescribeInstanceTypes shows them (absent ones match nothing).
  ...viewFilters(instanceTypeInfo, {
    'auto-recovery-supported': 'AutoRecoverySupported',
    'dedicated-hosts-supported': 'DedicatedHostsSupported',
    'ebs-info.attachment-limit-type': 'EbsInfo.AttachmentLimitType',
    'ebs-info.ebs-optimized-info.baseline-bandwidth-in-mbps': 'EbsInfo.EbsOptimizedInfo.BaselineBandwidthInMbps',
    'ebs-info.ebs-optimized-info.baseline-iops': 'EbsInfo.EbsOptimizedInfo.BaselineIops',
    'ebs-info.ebs-optimized-info.baseline-throughput-in-mbps': 'EbsInfo.EbsOptimizedInfo.BaselineThroughputInMBps',
    'ebs-info.ebs-optimized-info.maximum-bandwidth-in-mbps': 'EbsInfo.EbsOptimizedInfo.MaximumBandwidthInMbps',
    'ebs-info.ebs-optimized-info.maximum-iops': 'EbsInfo.EbsOptimizedInfo.MaximumIops',
    'ebs-info.ebs-optimized-info.maximum-throughput-in-mbps': 'EbsInfo.EbsOptimizedInfo.MaximumThroughputInMBps',
    'ebs-info.ebs-optimized-support': 'EbsInfo.EbsOptimizedSupport',
    'ebs-info.encryption-support': 'EbsInfo.EncryptionSupport',
    'ebs-info.maximum-ebs-attachments': 'EbsInfo.MaximumEbsAttachments',
    'ebs-info.nvme-support': 'EbsInfo.NvmeSupport',
    'hibernation-supported': 'HibernationSupported',
    'instance-storage-info.disk.count': 'InstanceStorageInfo.Disks.Count',
    'instance-storage-info.disk.size-in-gb': 'InstanceStorageInfo.Disks.SizeInGB',
    'instance-storage-info.disk.type': 'InstanceStorageInfo.Disks.Type',
    'instance-storage-info.encryption-support': 'InstanceStorageInfo.EncryptionSupport',
    'instance-storage-info.nvme-support': 'InstanceStorageInfo.NvmeSupport',
    'network-info.bandwidth-weightings': 'NetworkInfo.BandwidthWeightings',
    'network-info.efa-info.maximum-efa-interfaces': 'NetworkInfo.EfaInfo.MaximumEfaInterfaces',
    'network-info.efa-supported': 'NetworkInfo.EfaSupported',
    'network-info.ena-support': 'NetworkInfo.EnaSupport',
    'network-info.encryption-in-transit-supported': 'NetworkInfo.EncryptionInTransitSupported',
    'network-info.flexible-ena-queues-support': 'NetworkInfo.FlexibleEnaQueuesSupport',
    'network-info.ipv4-addresses-per-interface': 'NetworkInfo.Ipv4AddressesPerInterface',
    'network-info.ipv6-addresses-per-interface': 'NetworkInfo.Ipv6AddressesPerInterface',
    'network-info.ipv6-supported': 'NetworkInfo.Ipv6Supported',
    'network-info.maximum-network-cards': 'NetworkInfo.MaximumNetworkCards',
    'network-info.maximum-network-interfaces': 'NetworkInfo.MaximumNetworkInterfaces',
    'network-info.network-performance': 'NetworkInfo.NetworkPerformance',
    'nitro-enclaves-support': 'NitroEnclavesSupport',
    'nitro-tpm-info.supported-versions': 'NitroTpmInfo.SupportedVersions',
    'nitro-tpm-support': 'NitroTpmSupport',
    'processor-info.supported-features': 'ProcessorInfo.SupportedFeatures',
    'processor-info.sustained-clock-speed-in-ghz': 'ProcessorInfo.SustainedClockSpeedInGhz',
    'reboot-migration-support': 'RebootMigrationSupport',
    'supported-boot-mode': 'SupportedBootModes',
    'supported-usage-class': 'SupportedUsageClasses',
    'vcpu-info.default-threads-per-core': 'VCpuInfo.DefaultThreadsPerCore',
    'vcpu-info.valid-cores': 'VCpuInfo.ValidCores',
    'vcpu-info.valid-threads-per-core': 'VCpuInfo.ValidThreadsPerCore',
  }),
};

async function DescribeInstanceTypes(ctx: RequestContext, input: { InstanceTypes?: string[]; Filters?: any[]; MaxResults?: number; NextToken?: string }) {
  let types = await listVmTypes(ctx.store.db);
  if (input.InstanceTypes?.length) {
    const known = new Set(types.map((t) => t.name));
    const unknown = input.InstanceTypes.filter((n) => !known.has(n));
    if (unknown.length) throw new Ec2Error('InvalidInstanceType', `The following supplied instance types do not exist: [${unknown.join(', ')}]`);
    types = types.filter((t) => input.InstanceTypes!.includes(t.name));
  }
  types = applyFilters(types, input.Filters, typeFilters);
  const { page, nextToken } = paginate(types, input, JSON.stringify([input.InstanceTypes, input.Filters]), { min: 5, max: 100 });
  return { InstanceTypes: page.map(instanceTypeInfo), NextToken: nextToken };
}

export const vmTypeOperations: OperationTable = { DescribeInstanceTypes };
