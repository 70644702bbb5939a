// Instance metadata options: RunInstances' MetadataOptions, ModifyInstanceMetadataOptions, and how
// DescribeInstances shows them. Kept per instance as JSON in `instances.metadata_options` (NULL:
// EC2's defaults), sent to the node in the instance spec, and changed on a placed instance at once
// through its cluster (the node's metadata service honours the change from the next request).
import type { OperationTable, RequestContext } from './context.ts';
import type { InstancesTable } from '../store/schema.ts';
import type { InstanceMetadataOptions } from '../node/node-api.ts';
import type { ComputeDirectory } from './compute-directory.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { DEFAULT_METADATA_OPTIONS, MAX_HOP_LIMIT } from '../node/metadata-options.ts';

const INSTANCE_ID = /^i-[0-9a-f]{8}([0-9a-f]{9})?$/;

/** What EC2 records: the options a node enforces, and two it shows but this cloud does not offer. */
export interface StoredMetadataOptions extends InstanceMetadataOptions {
  httpProtocolIpv6: 'enabled' | 'disabled';
  instanceMetadataTags: 'enabled' | 'disabled';
}

const DEFAULTS: StoredMetadataOptions = { ...DEFAULT_METADATA_OPTIONS, httpProtocolIpv6: 'disabled', instanceMetadataTags: 'disabled' };

/** The request structure (InstanceMetadataOptionsRequest, and ModifyInstanceMetadataOptions' members). */
export interface MetadataOptionsInput {
  HttpTokens?: string;
  HttpPutResponseHopLimit?: number;
  HttpEndpoint?: string;
  HttpProtocolIpv6?: string;
  InstanceMetadataTags?: string;
}

function oneOf<T extends string>(name: string, value: string | undefined, allowed: readonly T[], current: T): T {
  if (value === undefined || value === '') return current;
  if (!(allowed as readonly string[]).includes(value)) {
    throw new Ec2Error('InvalidParameterValue', `Value (${value}) for parameter ${name} is invalid. Valid values: ${allowed.join(', ')}`);
  }
  return value as T;
}

/** `base` with the given members changed; EC2's error for a bad value. */
export function metadataOptionsFrom(input: MetadataOptionsInput | undefined, base: StoredMetadataOptions = DEFAULTS): StoredMetadataOptions {
  if (!input) return { ...base };
  const hops = input.HttpPutResponseHopLimit;
  if (hops !== undefined && (!Number.isInteger(hops) || hops < 1 || hops > MAX_HOP_LIMIT)) {
    throw new Ec2Error('InvalidParameterValue', `The HttpPutResponseHopLimit value (${hops}) is out of range. It must be between 1 and ${MAX_HOP_LIMIT}.`);
  }
  const options: StoredMetadataOptions = {
    httpTokens: oneOf('HttpTokens', input.HttpTokens, ['optional', 'required'], base.httpTokens),
    httpPutResponseHopLimit: hops ?? base.httpPutResponseHopLimit,
    httpEndpoint: oneOf('HttpEndpoint', input.HttpEndpoint, ['enabled', 'disabled'], base.httpEndpoint),
    httpProtocolIpv6: oneOf('HttpProtocolIpv6', input.HttpProtocolIpv6, ['enabled', 'disabled'], base.httpProtocolIpv6),
    instanceMetadataTags: oneOf('InstanceMetadataTags', input.InstanceMetadataTags, ['enabled', 'disabled'], base.instanceMetadataTags),
  };
  // The instance network has no IPv6 and the service serves no tags: say so rather than pretend.
  if (options.httpProtocolIpv6 === 'enabled') {
    throw new Ec2Error('UnsupportedOperation', 'The instance metadata service has no IPv6 endpoint in this cloud (HttpProtocolIpv6).');
  }
  if (options.instanceMetadataTags === 'enabled') {
    throw new Ec2Error('UnsupportedOperation', 'Instance tags in the instance metadata are not offered by this cloud (InstanceMetadataTags).');
  }
  return options;
}

/** The column value: NULL for EC2's defaults, so rows written before this existed read the same. */
export function metadataOptionsColumn(options: StoredMetadataOptions): string | null {
  const same = (Object.keys(DEFAULTS) as (keyof StoredMetadataOptions)[]).every((k) => options[k] === DEFAULTS[k]);
  return same ? null : JSON.stringify(options);
}

export function metadataOptionsOf(row: Pick<InstancesTable, 'metadata_options'> | Partial<Pick<InstancesTable, 'metadata_options'>>): StoredMetadataOptions {
  if (!row.metadata_options) return { ...DEFAULTS };
  try {
    return { ...DEFAULTS, ...(JSON.parse(row.metadata_options) as Partial<StoredMetadataOptions>) };
  } catch {
    return { ...DEFAULTS };
  }
}

/** What the node enforces. */
export function nodeMetadataOptions(options: StoredMetadataOptions): InstanceMetadataOptions {
  return { httpTokens: options.httpTokens, httpPutResponseHopLimit: options.httpPutResponseHopLimit, httpEndpoint: options.httpEndpoint };
}

/** The spec member for a row (spread into an InstanceSpec; nothing for the defaults). */
export function metadataOptionsSpec(row: Partial<Pick<InstancesTable, 'metadata_options'>>): { metadataOptions?: InstanceMetadataOptions } {
  return row.metadata_options ? { metadataOptions: nodeMetadataOptions(metadataOptionsOf(row)) } : {};
}

/** EC2's InstanceMetadataOptionsResponse. */
export function metadataOptionsView(options: StoredMetadataOptions, state: 'pending' | 'applied' = 'applied') {
  return {
    State: state,
    HttpTokens: options.httpTokens,
    HttpPutResponseHopLimit: options.httpPutResponseHopLimit,
    HttpEndpoint: options.httpEndpoint,
    HttpProtocolIpv6: options.httpProtocolIpv6,
    InstanceMetadataTags: options.instanceMetadataTags,
  };
}

/** States in which an instance has a node that holds it (and its metadata options). */
const ON_A_NODE = new Set(['pending', 'running', 'stopping', 'stopped']);

export function instanceMetadataOptionOperations(deps: { directory: ComputeDirectory }): OperationTable {
  async function ModifyInstanceMetadataOptions(ctx: RequestContext, input: MetadataOptionsInput & { InstanceId?: string }) {
    if (!input.InstanceId) throw new Ec2Error('MissingParameter', 'The request must contain the parameter InstanceId');
    const id = input.InstanceId;
    if (!INSTANCE_ID.test(id)) throw new Ec2Error('InvalidInstanceID.Malformed', `Invalid id: "${id}"`);
    const row = await ctx.store.db.selectFrom('instances').selectAll()
      .where('id', '=', id).where('account_id', '=', ctx.caller.accountId).executeTakeFirst();
    if (!row) throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${id}' does not exist`);
    if (row.state === 'terminated' || row.state === 'shutting-down') {
      throw new Ec2Error('IncorrectInstanceState', `The instance '${id}' is not in a state from which it can be modified.`);
    }
    const options = metadataOptionsFrom(input, metadataOptionsOf(row));
    // The node first: if it cannot take the change, nothing is recorded and the caller hears why.
    // A stopped instance whose node cannot be reached gets the options with its next start.
    if (row.node_id && ON_A_NODE.has(row.state)) {
      const cluster = deps.directory.forZone(row.zone);
      try {
        if (!cluster?.setMetadataOptions) throw new Error(`no cluster for zone ${row.zone} takes metadata options`);
        await cluster.setMetadataOptions(id, nodeMetadataOptions(options));
      } catch (err) {
        if (row.state !== 'stopped') {
          if (err instanceof Ec2Error && err.code !== 'InternalError') throw err;
          throw new Ec2Error('InternalError', `The metadata options of ${id} could not be changed on its node: ${(err as Error).message}`);
        }
      }
    }
    await ctx.store.db.updateTable('instances').set({ metadata_options: metadataOptionsColumn(options) }).where('id', '=', id).execute();
    return { InstanceId: id, InstanceMetadataOptions: metadataOptionsView(options) };
  }

  return { ModifyInstanceMetadataOptions };
}
