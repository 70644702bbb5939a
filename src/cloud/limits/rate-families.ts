// Which token buckets an EC2 request draws from, and their default sizes: EC2's own table
// ("Request throttling for the Amazon EC2 API", the request token and resource token bucket sizes
// and refill rates). Every action belongs to one request family: a category (Describe* and the
// like, mutating calls, resource-intensive calls, Describes of everything at once) or, for the
// actions EC2 gives a bucket of their own, the action itself. RunInstances, StartInstances,
// StopInstances and TerminateInstances also draw one token per instance from a resource bucket.
import type { BucketLimit } from '../../http/token-bucket.ts';

export interface FamilyInfo {
  name: string;
  /** What draws from it, in words for the operator. */
  covers: string;
  /** EC2's size for it. */
  ec2Default: BucketLimit;
}

const limit = (capacity: number, refillPerSecond: number): BucketLimit => ({ capacity, refillPerSecond });

/** Actions that take a lot of work on EC2's side, with a smaller share than other mutating ones. */
const RESOURCE_INTENSIVE = new Set([
  'AcceptVpcPeeringConnection', 'AuthorizeSecurityGroupIngress', 'CancelSpotInstanceRequests', 'CreateKeyPair',
  'CreateVpcPeeringConnection', 'DeleteVpcPeeringConnection', 'RejectVpcPeeringConnection', 'RevokeSecurityGroupIngress',
  'RequestSpotInstances',
]);

/** Describes that draw from a smaller bucket when they ask for everything (no filter, id or page). */
const UNFILTERED_DESCRIBES = new Set([
  'DescribeInstances', 'DescribeInstanceStatus', 'DescribeNetworkInterfaces', 'DescribeSecurityGroups',
  'DescribeSnapshots', 'DescribeSpotInstanceRequests', 'DescribeVolumes',
]);

/**
 * Actions with a bucket of their own in EC2's table ("uncategorized actions"): those this cloud
 * serves or is about to (instances, tags, volumes, snapshots, images, default VPCs).
 */
const OWN_BUCKET: Record<string, BucketLimit> = {
  RunInstances: limit(5, 2),
  StartInstances: limit(5, 2),
  TerminateInstances: limit(100, 5),
  CreateTags: limit(100, 10),
  DeleteTags: limit(100, 10),
  CreateVolume: limit(100, 5),
  DeleteVolume: limit(100, 5),
  CreateSnapshot: limit(100, 5),
  DeleteSnapshot: limit(100, 5),
  CopyImage: limit(100, 1),
  DeregisterImage: limit(100, 5),
  ModifyImageAttribute: limit(100, 5),
  ModifySnapshotAttribute: limit(100, 5),
  CreateDefaultVpc: limit(1, 1),
  CreateDefaultSubnet: limit(1, 1),
};

/** Resource buckets: one token per instance the call acts on. */
const RESOURCE_BUCKETS: Record<string, { family: string; ec2Default: BucketLimit }> = {
  RunInstances: { family: 'instances-launched', ec2Default: limit(1000, 2) },
  StartInstances: { family: 'instances-started', ec2Default: limit(1000, 2) },
  StopInstances: { family: 'instances-stopped', ec2Default: limit(1000, 20) },
  TerminateInstances: { family: 'instances-terminated', ec2Default: limit(1000, 20) },
};

export const FAMILIES: readonly FamilyInfo[] = [
  { name: 'non-mutating', covers: 'Describe*, Get*, List* and Search* calls not in another family', ec2Default: limit(100, 20) },
  { name: 'unfiltered-describe', covers: `${[...UNFILTERED_DESCRIBES].join(', ')} with no filter, id or page size`, ec2Default: limit(50, 10) },
  { name: 'mutating', covers: 'calls that create, change or delete, not in another family', ec2Default: limit(50, 5) },
  { name: 'resource-intensive', covers: [...RESOURCE_INTENSIVE].join(', '), ec2Default: limit(50, 5) },
  ...Object.entries(OWN_BUCKET).map(([action, ec2Default]) => ({ name: action, covers: `${action} calls`, ec2Default })),
  ...Object.entries(RESOURCE_BUCKETS).map(([action, r]) => ({ name: r.family, covers: `instances named or launched by ${action} (one token each)`, ec2Default: r.ec2Default })),
];

const BY_NAME = new Map(FAMILIES.map((f) => [f.name, f]));

export function familyInfo(name: string): FamilyInfo | undefined {
  return BY_NAME.get(name);
}

export function isFamily(name: string): boolean {
  return BY_NAME.has(name);
}

const NON_MUTATING = /^(Describe|Get|List|Search)[A-Z]/;

/** Parameters every request may carry that neither filter nor page a Describe. */
const NOT_NARROWING = new Set([
  'Action', 'Version', 'DryRun', 'AWSAccessKeyId', 'SignatureMethod', 'SignatureVersion', 'Signature', 'Timestamp', 'Expires',
  'SecurityToken', 'X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires', 'X-Amz-SignedHeaders',
  'X-Amz-Signature', 'X-Amz-Security-Token',
]);

function asksForEverything(params: Record<string, string>): boolean {
  for (const name in params) if (!NOT_NARROWING.has(name)) return false;
  return true;
}

/** The request family of a call of `action` with these (decoded) parameters. */
export function requestFamily(action: string, params: Record<string, string>): string {
  if (Object.hasOwn(OWN_BUCKET, action)) return action;
  if (RESOURCE_INTENSIVE.has(action)) return 'resource-intensive';
  if (UNFILTERED_DESCRIBES.has(action) && asksForEverything(params)) return 'unfiltered-describe';
  return NON_MUTATING.test(action) ? 'non-mutating' : 'mutating';
}

/** Parameters counted as the instances of a call: `InstanceId.N`. */
function countInstanceIds(params: Record<string, string>): number {
  let n = 0;
  for (const name in params) if (name.startsWith('InstanceId.')) n++;
  return n;
}

/**
 * The resource bucket of `action` and how many tokens the call takes from it, or undefined. A
 * launch counts the most instances it may start (MaxCount); a lifecycle call, the instances named.
 */
export function resourceCharge(action: string, params: Record<string, string>): { family: string; tokens: number } | undefined {
  const bucket = RESOURCE_BUCKETS[action];
  if (!bucket) return undefined;
  let tokens: number;
  if (action === 'RunInstances') {
    const max = Number(params.MaxCount);
    tokens = Number.isSafeInteger(max) && max > 0 ? max : 1;
  } else {
    tokens = Math.max(1, countInstanceIds(params));
  }
  return { family: bucket.family, tokens };
}
