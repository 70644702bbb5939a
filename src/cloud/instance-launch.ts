// RunInstances: checks the request as EC2 does, writes the instances (pending) in one
// transaction, asks the zone's cluster to place and start them, and removes them again when the
// cluster cannot — so a failed launch leaves nothing behind. ClientToken makes it idempotent: a
// replay answers with the same reservation, and first places its instances again if the launch
// that wrote them was cut short before the cluster took them (instance-placement.ts).
import { createHash } from 'node:crypto';
import type { RequestContext } from './context.ts';
import type { Db, Tx } from '../store/store.ts';
import type { ImagesTable, InstancesTable, SubnetsTable } from '../store/schema.ts';
import type { InstanceSpec, VmTypeSpec } from '../node/node-api.ts';
import type { ClusterApi } from '../cluster/cluster-api.ts';
import type { ComputeDirectory } from './compute-directory.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { newId } from './ids.ts';
import { tagsByResource, tagsFromSpecifications, writeTags, type Tag, type TagSpecification } from './tags.ts';
import { DEFAULT_INSTANCE_TYPE, findVmType, listVmTypes } from './vm-types.ts';
import { bootModeOf, findVisibleImage, imageRefFor, ROOT_DEVICE_NAME } from './images/images.ts';
import { defaultVpcId } from './account-setup.ts';
import { resolveSecurityGroups, defaultSecurityGroup } from './security-groups.ts';
import { launchableCount } from './quotas.ts';
import { isUsableAddress, macForInstance, pickFreeAddresses, privateDnsName } from './ip-allocation.ts';
import { parseIpv4Address } from './cidr.ts';
import { reservationsOf, type SecurityGroupRef } from './instance-view.ts';
import { isUnplaced, placeStoredInstances, recordPlacements } from './instance-placement.ts';
import { interfaceAsInstanceLevel, type InterfaceSpecification } from './network/launch-interface.ts';
import { assignLaunchAddresses, releaseInstancesPublicAddresses } from './network/public-addresses.ts';
import {
  discardRootVolumes, launchVolumesForEbsImage, launchVolumesFrom, makeRootVolumes, removeLaunchVolumes, writeLaunchVolumes,
  type BlockDeviceMappingInput, type LaunchVolume,
} from './storage/launch-volumes.ts';
import { imageBlockDevices, isEbsImage, launchSnapshotLookup } from './images/ebs-images.ts';
import { metadataOptionsColumn, metadataOptionsFrom, metadataOptionsSpec, type MetadataOptionsInput, type StoredMetadataOptions } from './instance-metadata-options.ts';

const MAX_USER_DATA_BYTES = 16 * 1024;
const MAX_CLIENT_TOKEN_LENGTH = 64;
const MAX_GROUPS_PER_INSTANCE = 5;
/** After this many refused attempts, a MinCount < MaxCount launch tries MinCount directly. */
const MAX_CAPACITY_ATTEMPTS = 8;

const SUBNET_ID = /^subnet-[0-9a-f]{8}([0-9a-f]{9})?$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export interface Log {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface LaunchDeps {
  directory: ComputeDirectory;
  /** Where clusters fetch an image; without it, the image file's path (clusters on this host). */
  imageUrl?: (imageId: string) => string;
  log?: Log;
}

export interface RunInstancesInput {
  ImageId?: string; MinCount?: number; MaxCount?: number; InstanceType?: string; KeyName?: string;
  SecurityGroups?: string[]; SecurityGroupIds?: string[]; UserData?: string;
  Placement?: { AvailabilityZone?: string };
  SubnetId?: string; PrivateIpAddress?: string; ClientToken?: string; TagSpecifications?: TagSpecification[];
  KernelId?: string; RamdiskId?: string; DisableApiTermination?: boolean; InstanceInitiatedShutdownBehavior?: string;
  MetadataOptions?: MetadataOptionsInput;
  NetworkInterfaces?: InterfaceSpecification[];
  BlockDeviceMappings?: BlockDeviceMappingInput[];
  [other: string]: unknown;
}

/** Everything about a launch that does not depend on the zone it lands in. */
interface LaunchPlan {
  accountId: string;
  region: string;
  min: number;
  max: number;
  image: ImagesTable;
  /** Absent for an image that boots from its own disk (images.boot_mode). */
  kernel?: ImagesTable;
  ramdisk?: ImagesTable;
  vmType: VmTypeSpec;
  key?: { name: string; openssh: string };
  userData?: string;
  groups: SecurityGroupRef[];
  vpcId: string;
  metadataOptions: StoredMetadataOptions;
  privateIp?: string;
  tags: Tag[];
  /** EBS volumes each instance gets (BlockDeviceMappings), and the tags they carry. */
  volumes: LaunchVolume[];
  volumeTags: Tag[];
  clientToken?: string;
  requestHash: string;
  disableApiTermination: boolean;
  shutdownBehavior: ShutdownBehavior;
  /** The interface's AssociatePublicIpAddress; undefined: the subnet's MapPublicIpOnLaunch decides. */
  associatePublicIp?: boolean;
}

/** What an instance does when its guest powers itself off (RunInstances' InstanceInitiatedShutdownBehavior). */
export type ShutdownBehavior = 'stop' | 'terminate';

export function checkShutdownBehavior(value: unknown): ShutdownBehavior {
  if (value === 'stop' || value === 'terminate') return value;
  throw new Ec2Error('InvalidParameterValue', `Value (${String(value)}) for parameter instanceInitiatedShutdownBehavior is invalid. Valid values are: stop, terminate.`);
}

// ---- the view the launch answers with -------------------------------------------------------

export async function viewContext(db: Db | Tx, region: string) {
  return { region, vmTypes: new Map((await listVmTypes(db)).map((t) => [t.name, t])) };
}

export type ReservationView = ReturnType<typeof reservationsOf>[number];

export async function reservationOutput(db: Db | Tx, accountId: string, rows: InstancesTable[], region: string): Promise<ReservationView> {
  const tags = await tagsByResource(db, accountId, rows.map((r) => r.id));
  const sorted = [...rows].sort((a, b) => a.launch_index - b.launch_index);
  return reservationsOf(sorted, (id) => tags.get(id) ?? [], await viewContext(db, region))[0]!;
}

// ---- request checks -------------------------------------------------------------------------

function counts(input: RunInstancesInput): { min: number; max: number } {
  const { MinCount: min, MaxCount: max } = input;
  if (min === undefined) throw new Ec2Error('MissingParameter', 'The request must contain the parameter MinCount');
  if (max === undefined) throw new Ec2Error('MissingParameter', 'The request must contain the parameter MaxCount');
  if (!Number.isInteger(min) || min < 1) throw new Ec2Error('InvalidParameterValue', `Value (${min}) for parameter minCount is invalid. Expected a positive integer.`);
  if (!Number.isInteger(max) || max < 1) throw new Ec2Error('InvalidParameterValue', `Value (${max}) for parameter maxCount is invalid. Expected a positive integer.`);
  if (max < min) throw new Ec2Error('InvalidParameterValue', `Value (${max}) for parameter maxCount is invalid. maxCount must be greater than or equal to minCount (${min}).`);
  return { min, max };
}

/** A digest of everything the caller asked for except the token itself, to recognise a replay. */
function requestHash(input: RunInstancesInput): string {
  const canonical = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canonical);
    if (v && typeof v === 'object' && !(v instanceof Date)) {
      return Object.fromEntries(Object.keys(v).sort().filter((k) => k !== 'ClientToken' && k !== 'DryRun')
        .map((k) => [k, canonical((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return createHash('sha256').update(JSON.stringify(canonical(input))).digest('hex');
}

function checkUserData(userData: string | undefined): string | undefined {
  if (userData === undefined || userData === '') return undefined;
  const compact = userData.replace(/\s+/g, '');
  if (compact.length % 4 === 1 || !BASE64.test(compact)) throw new Ec2Error('InvalidParameterValue', 'Invalid BASE64 encoding of user data.');
  if (Buffer.from(compact, 'base64').length > MAX_USER_DATA_BYTES) {
    throw new Ec2Error('InvalidParameterValue', `User data is limited to ${MAX_USER_DATA_BYTES} bytes`);
  }
  return userData;
}

async function requireVmType(db: Db, name: string): Promise<VmTypeSpec> {
  const vmType = await findVmType(db, name);
  if (!vmType) throw new Ec2Error('InvalidParameterValue', `Invalid value '${name}' for InstanceType.`);
  return vmType;
}

async function keyPair(db: Db, accountId: string, name: string | undefined) {
  if (name === undefined || name === '') return undefined;
  const row = await db.selectFrom('key_pairs').select(['name', 'public_key'])
    .where('account_id', '=', accountId).where('name', '=', name).executeTakeFirst();
  if (!row) throw new Ec2Error('InvalidKeyPair.NotFound', `The key pair '${name}' does not exist`);
  return { name: row.name, openssh: row.public_key };
}

async function subnetById(db: Db, accountId: string, subnetId: string): Promise<SubnetsTable> {
  if (!SUBNET_ID.test(subnetId)) throw new Ec2Error('InvalidSubnetID.Malformed', `Invalid id: "${subnetId}"`);
  const row = await db.selectFrom('subnets').selectAll().where('account_id', '=', accountId).where('id', '=', subnetId).executeTakeFirst();
  if (!row) throw new Ec2Error('InvalidSubnetID.NotFound', `The subnet ID '${subnetId}' does not exist`);
  return row;
}

async function defaultSubnet(db: Db, accountId: string, vpcId: string, zone: string): Promise<SubnetsTable> {
  const row = await db.selectFrom('subnets').selectAll()
    .where('account_id', '=', accountId).where('vpc_id', '=', vpcId).where('zone', '=', zone).where('default_for_az', '=', 1)
    .executeTakeFirst();
  if (!row) throw new Ec2Error('MissingInput', `No default subnet for availability zone: '${zone}'.`);
  return row;
}

async function zoneExists(db: Db, zone: string): Promise<boolean> {
  return (await db.selectFrom('zones').select('name').where('name', '=', zone).executeTakeFirst()) !== undefined;
}

function capacityError(vmType: string, zone: string): Ec2Error {
  return new Ec2Error('InsufficientInstanceCapacity',
    `We currently do not have sufficient ${vmType} capacity in the Availability Zone you requested (${zone}). ` +
    'Our system will be working on provisioning additional capacity. You can currently get capacity by not specifying an Availability Zone in your request or choosing another zone.');
}

function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: string };
  return err?.code === 'SQLITE_CONSTRAINT_UNIQUE' || err?.code === '23505';
}

/** How many more instances of `vmType` the cluster's nodes report room for, if it says. */
async function estimateFit(cluster: ClusterApi, vmType: VmTypeSpec): Promise<number | undefined> {
  try {
    const nodes = await cluster.describeNodes();
    return nodes.filter((n) => n.state === 'up').reduce((sum, n) => sum + Math.max(0, Math.floor(Math.min(
      n.free.cores / vmType.cores, n.free.memoryMiB / vmType.memoryMiB, n.free.diskGiB / vmType.diskGiB))), 0);
  } catch {
    return undefined;
  }
}

// ---- the launcher ---------------------------------------------------------------------------

export function createLauncher(deps: LaunchDeps) {
  let nextZone = 0;

  async function planLaunch(ctx: RequestContext, request: RunInstancesInput): Promise<{ plan: LaunchPlan; subnet?: SubnetsTable; zone?: string }> {
    const { input, associatePublicIp } = interfaceAsInstanceLevel(request);
    const accountId = ctx.caller.accountId;
    const db = ctx.store.db;
    const { min, max } = counts(input);
    const clientToken = input.ClientToken === '' ? undefined : input.ClientToken;
    if (clientToken !== undefined && clientToken.length > MAX_CLIENT_TOKEN_LENGTH) {
      throw new Ec2Error('InvalidParameterValue', `Value (${clientToken}) for parameter clientToken is invalid. Length exceeds maximum of ${MAX_CLIENT_TOKEN_LENGTH}.`);
    }
    if (!input.ImageId) throw new Ec2Error('MissingParameter', 'The request must contain the parameter ImageId');
    const image = await findVisibleImage(db, accountId, input.ImageId, 'machine');
    // An image with its own boot loader boots from its disk: no kernel or ramdisk of the cloud's.
    const ownBootLoader = image.boot_mode !== null;
    if (ownBootLoader && (input.KernelId || input.RamdiskId)) {
      throw new Ec2Error('InvalidParameterCombination', `The image '${image.id}' boots with its own boot loader (${image.boot_mode}); KernelId and RamdiskId cannot be given.`);
    }
    const kernelId = ownBootLoader ? undefined : input.KernelId || image.kernel_id;
    if (!ownBootLoader && !kernelId) throw new Ec2Error('InvalidParameterValue', `The image '${image.id}' names no kernel; give one with KernelId.`);
    const kernel = kernelId ? await findVisibleImage(db, accountId, kernelId, 'kernel') : undefined;
    const ramdiskId = ownBootLoader ? undefined : input.RamdiskId || image.ramdisk_id;
    const ramdisk = ramdiskId ? await findVisibleImage(db, accountId, ramdiskId, 'ramdisk') : undefined;
    const vmType = await requireVmType(db, input.InstanceType || DEFAULT_INSTANCE_TYPE);
    const key = await keyPair(db, accountId, input.KeyName);
    const userData = checkUserData(input.UserData);
    const metadataOptions = metadataOptionsFrom(input.MetadataOptions);
    // Network-interface tags are checked and left unused: the one interface has no row of its own.
    const tagsByType = tagsFromSpecifications(input.TagSpecifications, ['instance', 'volume', 'network-interface']);
    const tags = tagsByType.get('instance') ?? [];
    const snapshots = launchSnapshotLookup(db, accountId);
    const volumes = isEbsImage(image)
      ? await launchVolumesForEbsImage(imageBlockDevices(image), image.root_device_name ?? ROOT_DEVICE_NAME, input.BlockDeviceMappings, snapshots)
      : await launchVolumesFrom(input.BlockDeviceMappings, image.root_device_name ?? ROOT_DEVICE_NAME, snapshots);
    const shutdownBehavior = input.InstanceInitiatedShutdownBehavior === undefined ? 'stop' : checkShutdownBehavior(input.InstanceInitiatedShutdownBehavior);

    let subnet: SubnetsTable | undefined;
    let zone = input.Placement?.AvailabilityZone || undefined;
    if (zone !== undefined && !await zoneExists(db, zone)) {
      throw new Ec2Error('InvalidParameterValue', `Invalid availability zone: [${zone}]`);
    }
    const names = input.SecurityGroups ?? [];
    const ids = input.SecurityGroupIds ?? [];
    if (input.SubnetId) {
      if (names.length > 0) throw new Ec2Error('InvalidParameterCombination', 'The parameter groupName cannot be used with the parameter subnet');
      subnet = await subnetById(db, accountId, input.SubnetId);
      if (zone !== undefined && zone !== subnet.zone) {
        throw new Ec2Error('InvalidParameterValue', `Value (${zone}) for parameter availabilityZone is invalid. Subnet '${subnet.id}' is in the availability zone ${subnet.zone}`);
      }
      zone = subnet.zone;
    }
    const vpcId = subnet?.vpc_id ?? await defaultVpcId(db, accountId);
    if (!vpcId) throw new Ec2Error('VPCIdNotSpecified', 'No default VPC for this user');
    const groups = ids.length + names.length > 0
      ? await resolveSecurityGroups(db, accountId, { ids, names, vpcId: subnet ? vpcId : undefined })
      : [await defaultSecurityGroup(db, accountId, vpcId)];
    for (const g of groups) {
      if (g.vpc_id !== vpcId) {
        throw new Ec2Error('InvalidParameter', `Security group ${g.id} and subnet ${subnet?.id ?? 'of the default VPC'} belong to different networks.`);
      }
    }
    if (groups.length > MAX_GROUPS_PER_INSTANCE) {
      throw new Ec2Error('SecurityGroupsPerInstanceLimitExceeded', 'The maximum number of security groups per interface has been reached.');
    }

    let privateIp: string | undefined;
    if (input.PrivateIpAddress) {
      if (max > 1) throw new Ec2Error('InvalidParameterCombination', 'Network interfaces and an instance-level private IP address should not be specified on the same request');
      if (parseIpv4Address(input.PrivateIpAddress) === undefined) {
        throw new Ec2Error('InvalidParameterValue', `Value (${input.PrivateIpAddress}) for parameter privateIpAddress is invalid. Not a valid IPv4 address.`);
      }
      if (!subnet) {
        throw new Ec2Error('InvalidParameterCombination', 'A private IP address can only be given together with a SubnetId.');
      }
      if (!isUsableAddress(subnet.cidr, input.PrivateIpAddress)) {
        throw new Ec2Error('InvalidParameterValue', `Address ${input.PrivateIpAddress} does not fall within the subnet's address range`);
      }
      privateIp = input.PrivateIpAddress;
    }

    return {
      subnet, zone,
      plan: {
        accountId, region: ctx.settings.region, min, max, image, kernel, ramdisk, vmType, key, userData,
        groups: groups.map((g) => ({ id: g.id, name: g.name })), vpcId, privateIp, tags, clientToken,
        volumes, volumeTags: tagsByType.get('volume') ?? [],
        requestHash: requestHash(request), associatePublicIp, disableApiTermination: input.DisableApiTermination === true, shutdownBehavior,
        metadataOptions,
      },
    };
  }

  /** The rows of an earlier launch with this token, or throws IdempotentParameterMismatch. */
  async function replayed(db: Db | Tx, plan: LaunchPlan): Promise<InstancesTable[] | undefined> {
    if (plan.clientToken === undefined) return undefined;
    const rows = await db.selectFrom('instances').selectAll()
      .where('account_id', '=', plan.accountId).where('client_token', '=', plan.clientToken).execute();
    if (rows.length === 0) return undefined;
    if (rows[0]!.request_hash !== plan.requestHash) {
      throw new Ec2Error('IdempotentParameterMismatch', 'Arguments on this idempotent request are inconsistent with arguments used in previous request(s).');
    }
    const reservation = rows[0]!.reservation_id;
    return rows.filter((r) => r.reservation_id === reservation);
  }


  /**
   * Writes up to MaxCount pending instances in one transaction (or finds the token's earlier ones):
   * as many as the account's quotas leave room for, and none (an error) when MinCount does not fit.
   */
  async function writeInstances(ctx: RequestContext, plan: LaunchPlan, zone: string, subnet: SubnetsTable) {
    for (let attempt = 0; ; attempt++) {
      let release: (() => void) | undefined;
      try {
        return await ctx.store.transaction(async (tx) => {
          const earlier = await replayed(tx, plan);
          if (earlier) return { earlier };
          const count = await launchableCount(tx, plan.accountId, plan.vmType, plan.min, plan.max);
          const used = await tx.selectFrom('instances').select(['private_ip', 'mac'])
            .where('zone', '=', zone).where('private_ip', 'is not', null).execute();
          const usedIps = new Set(used.map((u) => u.private_ip!));
          const usedMacs = new Set(used.map((u) => u.mac));
          let addresses: string[];
          if (plan.privateIp) {
            if (usedIps.has(plan.privateIp)) throw new Ec2Error('InvalidIPAddress.InUse', `Address ${plan.privateIp} is in use.`);
            addresses = [plan.privateIp];
          } else {
            addresses = pickFreeAddresses(subnet.cidr, usedIps, count);
          }
          const now = new Date().toISOString();
          const reservationId = newId('r');
          const rows: InstancesTable[] = [];
          for (let i = 0; i < count; i++) {
            let id = newId('i');
            // MACs are derived from ids; a new id is cheaper than a clash on the zone's network.
            while (usedMacs.has(macForInstance(id))) id = newId('i');
            const mac = macForInstance(id);
            usedMacs.add(mac);
            rows.push({
              id, account_id: plan.accountId, reservation_id: reservationId,
              client_token: plan.clientToken ?? null, request_hash: plan.clientToken !== undefined ? plan.requestHash : null,
              image_id: plan.image.id, kernel_id: plan.kernel?.id ?? null, ramdisk_id: plan.ramdisk?.id ?? null,
              instance_type: plan.vmType.name, zone, vpc_id: subnet.vpc_id, subnet_id: subnet.id,
              private_ip: addresses[i]!, public_ip: null, mac, key_name: plan.key?.name ?? null, user_data: plan.userData ?? null,
              security_groups: JSON.stringify(plan.groups), launch_index: i, launch_time: now,
              state: 'pending', state_reason: null, state_changed_at: now, node_id: null,
              disable_api_termination: plan.disableApiTermination ? 1 : 0, status_impaired: 0, accelerator: null,
              shutdown_behavior: plan.shutdownBehavior, metadata_options: metadataOptionsColumn(plan.metadataOptions),
            });
          }
          for (let i = 0; i < rows.length; i += 200) await tx.insertInto('instances').values(rows.slice(i, i + 200)).execute();
          for (const row of rows) await writeTags(tx, plan.accountId, row.id, plan.tags);
          const volumes = await writeLaunchVolumes(tx, plan.accountId, zone, rows.map((r) => r.id), plan.volumes, plan.volumeTags);
          for (const v of volumes) if (v.snapshot_id && v.device === plan.volumes.find((p) => p.root)?.device) {
            const row = rows.find((r) => r.id === v.instance_id);
            if (row) row.root_volume_id = v.id;
          }
          if (plan.associatePublicIp ?? subnet.map_public_ip_on_launch === 1) {
            const given = await assignLaunchAddresses(tx, rows, plan.associatePublicIp === true);
            for (const row of rows) if (given.has(row.id)) Object.assign(row, { public_ip: given.get(row.id)!, auto_public_ip: 1 });
          }
          // Marked as being placed before anyone can read them: a replay waits for this launch,
          // and the reconciler leaves its rows to it.
          release = deps.directory.placing.claim(rows.map((r) => r.id));
          return { rows, release: release! };
        });
      } catch (e) {
        release?.();
        if (isUniqueViolation(e) && plan.clientToken !== undefined) {
          // Another request with this token committed first (instances_client_token is unique, so
          // on PostgreSQL a second controller cannot launch it too): the other request won, and
          // this one answers with its reservation, as idempotent EC2 does.
          const earlier = await replayed(ctx.store.db, plan);
          if (earlier) return { earlier };
        }
        // Another controller took one of these addresses first: pick again.
        if (isUniqueViolation(e) && attempt < 3 && !plan.privateIp) continue;
        if (isUniqueViolation(e) && plan.privateIp) throw new Ec2Error('InvalidIPAddress.InUse', `Address ${plan.privateIp} is in use.`);
        throw e;
      }
    }
  }

  async function removeInstances(ctx: RequestContext, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await ctx.store.transaction(async (tx) => {
      for (let i = 0; i < ids.length; i += 500) {
        const chunk = ids.slice(i, i + 500);
        await tx.deleteFrom('tags').where('resource_id', 'in', chunk).execute();
        await removeLaunchVolumes(tx, chunk);
        await releaseInstancesPublicAddresses(tx, chunk);
        await tx.deleteFrom('instances').where('id', 'in', chunk).execute();
      }
    });
  }

  function specFor(plan: LaunchPlan, row: InstancesTable, subnet: SubnetsTable): InstanceSpec {
    return {
      instanceId: row.id, reservationId: row.reservation_id, accountId: row.account_id, imageId: row.image_id,
      ...(plan.kernel ? { kernel: imageRefFor(plan.kernel, deps.imageUrl) } : { bootMode: bootModeOf(plan.image) }),
      ...(plan.ramdisk ? { ramdisk: imageRefFor(plan.ramdisk, deps.imageUrl) } : {}),
      root: imageRefFor(plan.image, deps.imageUrl),
      ...(row.root_volume_id ? { rootVolume: { volumeId: row.root_volume_id } } : {}),
      kernelCmdline: plan.image.kernel_cmdline ?? '',
      vmType: plan.vmType, zone: row.zone, region: plan.region, subnetCidr: subnet.cidr, subnetId: subnet.id, vpcId: subnet.vpc_id,
      privateIp: row.private_ip!, privateDnsName: privateDnsName(row.private_ip!, plan.region), mac: row.mac,
      ...(row.user_data ? { userData: row.user_data } : {}),
      ...(row.public_ip ? { publicIp: row.public_ip } : {}),
      publicKeys: plan.key ? [plan.key] : [],
      securityGroups: plan.groups, launchIndex: row.launch_index, launchTime: row.launch_time,
      ...metadataOptionsSpec(row),
    };
  }

  /** Launches in one zone; on any failure the rows it wrote are gone again. */
  async function launchInZone(ctx: RequestContext, plan: LaunchPlan, zone: string, subnet: SubnetsTable): Promise<ReservationView> {
    const cluster = deps.directory.forZone(zone);
    if (!cluster || deps.directory.unreachable.has(zone)) throw capacityError(plan.vmType.name, zone);
    const written = await writeInstances(ctx, plan, zone, subnet);
    if ('earlier' in written) {
      // A request with the same token wrote first (and may have failed and removed its rows since).
      return await resume(ctx, plan, written.earlier!) ?? launchInZone(ctx, plan, zone, subnet);
    }
    let rows = written.rows;
    const specs = rows.map((r) => specFor(plan, r, subnet));
    // An EBS-backed image's root volumes are removed from the storage with the rows of a failed launch.
    const discard = (ids: string[]) => discardRootVolumes(ctx.store, cluster, ids).catch((err) => {
      deps.log?.warn({ zone, err: (err as Error)?.message ?? String(err) }, 'could not remove the root volumes of a failed launch');
    });
    try {
      // An EBS-backed image boots from a volume made of its snapshot: made before the node boots it.
      if (plan.volumes.some((v) => v.root)) await makeRootVolumes(ctx.store, cluster, rows.map((r) => r.id));
      for (let attempt = 1; ; attempt++) {
        try {
          const placements = await cluster.runInstances(specs.slice(0, rows.length));
          await recordPlacements(ctx.store, placements);
          break;
        } catch (e) {
          const capacity = e instanceof Ec2Error && e.code === 'InsufficientInstanceCapacity';
          if (!capacity || rows.length <= plan.min) throw e;
          // Fewer may fit: ask the cluster how many, then try that many (never below MinCount).
          const fit = await estimateFit(cluster, plan.vmType);
          let next = Math.min(rows.length - 1, fit ?? rows.length - 1);
          if (attempt >= MAX_CAPACITY_ATTEMPTS) next = plan.min;
          next = Math.max(plan.min, next);
          await discard(rows.slice(next).map((r) => r.id));
          await removeInstances(ctx, rows.slice(next).map((r) => r.id));
          rows = rows.slice(0, next);
        }
      }
    } catch (e) {
      await discard(rows.map((r) => r.id));
      await removeInstances(ctx, rows.map((r) => r.id));
      if (e instanceof Ec2Error) throw e;
      deps.log?.warn({ zone, err: (e as Error)?.message ?? String(e) }, 'cluster could not run instances');
      throw capacityError(plan.vmType.name, zone);
    } finally {
      written.release();
    }
    const fresh = await ctx.store.db.selectFrom('instances').selectAll().where('id', 'in', rows.map((r) => r.id)).execute();
    return reservationOutput(ctx.store.db, plan.accountId, fresh, plan.region);
  }

  /**
   * The answer to a ClientToken replay: the earlier launch's reservation, once its instances are
   * placed. A launch of them still under way in this process is waited for; one that was cut short
   * (pending rows no node took: the cloud stopped mid-launch) is placed now, and when the cluster
   * refuses, its rows go and the replay fails as that launch would have. Undefined when the earlier
   * launch failed meanwhile and left nothing: the replay is then a launch of its own.
   */
  async function resume(ctx: RequestContext, plan: LaunchPlan, earlier: InstancesTable[]): Promise<ReservationView | undefined> {
    let rows: InstancesTable[] | undefined = earlier;
    for (;;) {
      if (await deps.directory.placing.settled(rows.map((r) => r.id))) {
        rows = await replayed(ctx.store.db, plan);
        if (!rows) return undefined;
      }
      const unplaced = rows.filter(isUnplaced);
      const cluster = unplaced.length > 0 ? deps.directory.forZone(unplaced[0]!.zone) : undefined;
      // Without its zone's cluster now, the reconciler places them once the zone is back.
      if (!cluster) return reservationOutput(ctx.store.db, plan.accountId, rows, plan.region);
      const release = deps.directory.placing.claim(unplaced.map((r) => r.id));
      if (!release) continue; // someone began placing them just now: wait for that instead
      try {
        deps.log?.info({ instanceIds: unplaced.map((r) => r.id), zone: cluster.zone }, 'ClientToken replay of a launch that was cut short: placing its instances');
        await placeStoredInstances(ctx.store, cluster, unplaced, deps.imageUrl);
      } catch (e) {
        await removeInstances(ctx, unplaced.map((r) => r.id));
        if (e instanceof Ec2Error) throw e;
        deps.log?.warn({ zone: cluster.zone, err: (e as Error)?.message ?? String(e) }, 'cluster could not run instances');
        throw capacityError(plan.vmType.name, cluster.zone);
      } finally {
        release();
      }
      const fresh = await ctx.store.db.selectFrom('instances').selectAll().where('id', 'in', rows.map((r) => r.id)).execute();
      return reservationOutput(ctx.store.db, plan.accountId, fresh, plan.region);
    }
  }

  /** Errors after which an automatically chosen zone is given up for the next one. */
  function zoneSpecific(e: unknown): boolean {
    return e instanceof Ec2Error && (e.code === 'InsufficientInstanceCapacity' || e.code === 'InsufficientFreeAddressesInSubnet'
      || e.code === 'InsufficientAddressCapacity');
  }

  return async function runInstances(ctx: RequestContext, input: RunInstancesInput) {
    const { plan, subnet, zone } = await planLaunch(ctx, input);
    const earlier = await replayed(ctx.store.db, plan);
    const resumed = earlier && await resume(ctx, plan, earlier);
    if (resumed) return resumed;
    if (zone !== undefined) {
      return launchInZone(ctx, plan, zone, subnet ?? await defaultSubnet(ctx.store.db, plan.accountId, plan.vpcId, zone));
    }
    // No zone asked for: connected zones in turn, starting one further each launch, so launches
    // spread over zones and a full zone hands over to the next.
    const known = new Set((await ctx.store.db.selectFrom('zones').select('name').execute()).map((z) => z.name));
    const zones = deps.directory.zones().filter((z) => known.has(z));
    if (zones.length === 0) {
      throw new Ec2Error('InsufficientInstanceCapacity', `We currently do not have sufficient ${plan.vmType.name} capacity: no availability zone is connected.`);
    }
    const start = nextZone++ % zones.length;
    let lastError: unknown;
    for (let i = 0; i < zones.length; i++) {
      const candidate = zones[(start + i) % zones.length]!;
      try {
        return await launchInZone(ctx, plan, candidate, await defaultSubnet(ctx.store.db, plan.accountId, plan.vpcId, candidate));
      } catch (e) {
        if (!zoneSpecific(e)) throw e;
        lastError = e;
      }
    }
    throw lastError;
  };
}
