// DescribeRegions and DescribeAvailabilityZones: the one region this cloud answers as, and the
// zones (one per cluster) recorded in the store.
import type { OperationTable, RequestContext } from './context.ts';
import type { ZonesTable } from '../store/schema.ts';
import type { Db, Tx } from '../store/store.ts';
import { applyFilters, type Filter } from '../protocol/filters.ts';
import { Ec2Error } from '../protocol/errors.ts';

// Every region and zone of this cloud is always enabled; none needs opting in.
const OPT_IN_STATUS = 'opt-in-not-required';

interface RegionView { RegionName: string; Endpoint: string; OptInStatus: string }

const REGION_FILTERS = {
  endpoint: (r: RegionView) => r.Endpoint,
  'region-name': (r: RegionView) => r.RegionName,
  'opt-in-status': (r: RegionView) => r.OptInStatus,
};

/** The host (and port) clients reach the EC2 endpoint at, as EC2's regionEndpoint shows it. */
function endpointHost(endpoint: string): string {
  try {
    return new URL(endpoint).host;
  } catch {
    return endpoint;
  }
}

async function DescribeRegions(ctx: RequestContext, input: { RegionNames?: string[]; Filters?: Filter[]; AllRegions?: boolean }) {
  // AllRegions adds regions the account has not opted in to; this cloud has none such.
  const regions: RegionView[] = [{
    RegionName: ctx.settings.region, Endpoint: endpointHost(ctx.settings.endpoint), OptInStatus: OPT_IN_STATUS,
  }];
  const names = input.RegionNames ?? [];
  const unknown = names.filter((n) => !regions.some((r) => r.RegionName === n)).sort();
  if (unknown.length) throw new Ec2Error('InvalidParameterValue', `Invalid region: [${unknown[0]}]`);
  const named = names.length ? regions.filter((r) => names.includes(r.RegionName)) : regions;
  return { Regions: applyFilters(named, input.Filters, REGION_FILTERS) };
}

interface ZoneView {
  State: string; OptInStatus: string; Messages: { Message: string }[]; RegionName: string; ZoneName: string;
  ZoneId: string; GroupName: string; NetworkBorderGroup: string; ZoneType: string;
}

const ZONE_FILTERS = {
  'zone-name': (z: ZoneView) => z.ZoneName,
  'zone-id': (z: ZoneView) => z.ZoneId,
  state: (z: ZoneView) => z.State,
  'region-name': (z: ZoneView) => z.RegionName,
  'zone-type': (z: ZoneView) => z.ZoneType,
  'group-name': (z: ZoneView) => z.GroupName,
  'opt-in-status': (z: ZoneView) => z.OptInStatus,
  message: (z: ZoneView) => z.Messages.map((m) => m.Message),
  // Parent zones belong to Local/Wavelength zones; an availability zone has none.
  'parent-zone-name': () => undefined,
  'parent-zone-id': () => undefined,
  // The spelling older EC2 documentation (and the botocore in Debian's aws CLI) gives.
  'parent-zoneName': () => undefined,
  'parent-zoneID': () => undefined,
  // Zones here carry no long group name (EC2's "US East (N. Virginia) 1").
  'group-long-name': () => undefined,
};

function zoneView(z: ZonesTable): ZoneView {
  return {
    State: z.state, OptInStatus: OPT_IN_STATUS, Messages: [], RegionName: z.region, ZoneName: z.name,
    ZoneId: z.zone_id, GroupName: z.region, NetworkBorderGroup: z.region, ZoneType: 'availability-zone',
  };
}

async function DescribeAvailabilityZones(ctx: RequestContext, input: {
  ZoneNames?: string[]; ZoneIds?: string[]; Filters?: Filter[]; AllAvailabilityZones?: boolean;
}) {
  const rows = await ctx.store.db.selectFrom('zones').selectAll().where('region', '=', ctx.settings.region).execute();
  let zones = rows.map(zoneView).sort((a, b) => (a.ZoneName < b.ZoneName ? -1 : a.ZoneName > b.ZoneName ? 1 : 0));
  const names = input.ZoneNames ?? [];
  const ids = input.ZoneIds ?? [];
  const unknownName = names.find((n) => !zones.some((z) => z.ZoneName === n));
  if (unknownName !== undefined) throw new Ec2Error('InvalidParameterValue', `Invalid availability zone: [${unknownName}]`);
  const unknownId = ids.find((id) => !zones.some((z) => z.ZoneId === id));
  if (unknownId !== undefined) throw new Ec2Error('InvalidParameterValue', `Invalid availability zone-id: [${unknownId}]`);
  if (names.length || ids.length) zones = zones.filter((z) => names.includes(z.ZoneName) || ids.includes(z.ZoneId));
  return { AvailabilityZones: applyFilters(zones, input.Filters, ZONE_FILTERS) };
}

export const regionOperations: OperationTable = { DescribeRegions, DescribeAvailabilityZones };

/** Zone ids by zone name, for the `availability-zone-id` filters of resources that name only their zone. */
export async function zoneIdsByName(db: Db | Tx): Promise<Map<string, string>> {
  const rows = await db.selectFrom('zones').select(['name', 'zone_id']).execute();
  return new Map(rows.map((z) => [z.name, z.zone_id]));
}
