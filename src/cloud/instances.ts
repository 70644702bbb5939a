// EC2 instance operations: RunInstances (see instance-launch.ts), DescribeInstances,
// DescribeInstanceStatus, Start/Stop/Reboot/TerminateInstances, GetConsoleOutput and the
// instance attributes. The store holds what the user asked for; a state change is recorded and
// answered at once (EC2's `stopping`, `shutting-down`, `pending`), and sent to the instance's zone
// cluster in the background: the nodes act (a guest's shutdown takes its time), and the
// reconciler moves rows to what the clusters report and sends again what a cluster did not get.
import type { OperationTable, RequestContext } from './context.ts';
import type { Db, Tx } from '../store/store.ts';
import type { InstancesTable } from '../store/schema.ts';
import type { ClusterApi } from '../cluster/cluster-api.ts';
import { Ec2Error } from '../protocol/errors.ts';
import { booleanFromText } from '../protocol/query-parser.ts';
import { applyFilters, type Filter } from '../protocol/filters.ts';
import { paginate } from '../protocol/pagination.ts';
import { tagsByResource, type Tag } from './tags.ts';
import { registerTaggable } from './resource-registry.ts';
import { registerSecurityGroupUsageCheck } from './security-groups.ts';
import { findVmType } from './vm-types.ts';
import { zoneIdsByName } from './regions.ts';
import { startUpdateFor } from './instance-update.ts';
import { acknowledgeReboot } from './instance-reconciler.ts';
import { ROOT_DEVICE_NAME } from './images/images.ts';
import { checkShutdownBehavior, createLauncher, viewContext, type LaunchDeps } from './instance-launch.ts';
import { assertWithinQuotas, STATES_HOLDING_RESOURCES, type QuotaDemand } from './quotas.ts';
import { replaceInstanceGroups } from './network/instance-groups.ts';
import { renewLaunchAddresses } from './network/public-addresses.ts';
import { instanceVolumeMappings } from './storage/instance-volumes.ts';
import { setDeleteOnTermination } from './storage/launch-volumes.ts';
import { EVENT_FILTERS, eventsOfInstances, eventView } from './compute/instance-events.ts';
import { REASONS, STATE_CODES, groupsOf, instanceFilters, reservationsOf, stateOf, type InstanceItem, type InstanceState } from './instance-view.ts';

const INSTANCE_ID = /^i-[0-9a-f]{8}([0-9a-f]{9})?$/;
const MAX_USER_DATA_BYTES = 16 * 1024;
/** How long a freshly running instance reports its status checks as initializing. */
const DEFAULT_STATUS_INITIALIZING_MS = 60_000;

export interface InstanceOperationDeps extends LaunchDeps {
  statusInitializingMs?: number;
}

// ---- lookups --------------------------------------------------------------------------------

function checkInstanceId(id: string): void {
  if (!INSTANCE_ID.test(id)) throw new Ec2Error('InvalidInstanceID.Malformed', `Invalid id: "${id}"`);
}

function instancesNotFound(ids: string[]): Ec2Error {
  return ids.length === 1
    ? new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${ids[0]}' does not exist`)
    : new Ec2Error('InvalidInstanceID.NotFound', `The instance IDs '${ids.join(', ')}' do not exist`);
}

/** The caller's instances by id, in the order asked (duplicates once); another account's are not found. */
async function instancesByIds(db: Db | Tx, accountId: string, ids: string[]): Promise<InstancesTable[]> {
  const unique = [...new Set(ids)];
  for (const id of unique) checkInstanceId(id);
  const found = new Map<string, InstancesTable>();
  for (let i = 0; i < unique.length; i += 500) {
    const rows = await db.selectFrom('instances').selectAll()
      .where('account_id', '=', accountId).where('id', 'in', unique.slice(i, i + 500)).execute();
    for (const r of rows) found.set(r.id, r);
  }
  const missing = unique.filter((id) => !found.has(id));
  if (missing.length > 0) throw instancesNotFound(missing);
  return unique.map((id) => found.get(id)!);
}

function requireIds(ids: string[] | undefined): string[] {
  if (!ids || ids.length === 0) throw new Ec2Error('MissingParameter', 'The request must contain the parameter InstanceId');
  return ids;
}

/** Every tag on the account's instances in one query, for listing all instances. */
async function allInstanceTags(db: Db, accountId: string): Promise<Map<string, Tag[]>> {
  const rows = await db.selectFrom('tags').select(['resource_id', 'key', 'value'])
    .where('account_id', '=', accountId).where('resource_type', '=', 'instance').execute();
  const out = new Map<string, Tag[]>();
  for (const r of rows) {
    let list = out.get(r.resource_id);
    if (!list) out.set(r.resource_id, list = []);
    list.push({ Key: r.key, Value: r.value });
  }
  return out;
}

/** The instances a Describe call looks at: the ids asked for, or all of the account's. */
async function describedItems(ctx: RequestContext, input: { InstanceIds?: string[]; MaxResults?: number }): Promise<InstanceItem[]> {
  const db = ctx.store.db;
  const accountId = ctx.caller.accountId;
  const ids = input.InstanceIds ?? [];
  if (ids.length > 0 && input.MaxResults !== undefined) {
    throw new Ec2Error('InvalidParameterCombination', 'The parameter instancesSet cannot be used with the parameter maxResults');
  }
  let rows: InstancesTable[];
  let tags: Map<string, Tag[]>;
  if (ids.length > 0) {
    rows = await instancesByIds(db, accountId, ids);
    tags = await tagsByResource(db, accountId, rows.map((r) => r.id));
  } else {
    rows = await db.selectFrom('instances').selectAll().where('account_id', '=', accountId)
      .orderBy('launch_time').orderBy('reservation_id').orderBy('launch_index').execute();
    tags = await allInstanceTags(db, accountId);
  }
  return rows.map((row) => ({ row, tags: tags.get(row.id) ?? [] }));
}

// ---- status checks --------------------------------------------------------------------------

type CheckStatus = 'ok' | 'impaired' | 'initializing' | 'insufficient-data' | 'not-applicable';

/**
 * EC2's two status checks of a running instance. The system check is about the host: it fails
 * when the instance's node or its zone's cluster stopped answering (status_impaired). The instance
 * check is about the guest, which nobody can observe then: insufficient data, as EC2 reports it
 * when it cannot reach an instance's host. Otherwise both pass once the initializing time is over.
 */
function checkStatus(row: InstancesTable, now: number, initializingMs: number): { system: CheckStatus; instance: CheckStatus } {
  if (row.state !== 'running') return { system: 'not-applicable', instance: 'not-applicable' };
  if (row.status_impaired === 1) return { system: 'impaired', instance: 'insufficient-data' };
  const status = now - Date.parse(row.state_changed_at) < initializingMs ? 'initializing' : 'ok';
  return { system: status, instance: status };
}

const REACHABILITY: Record<CheckStatus, string | undefined> = {
  ok: 'passed', impaired: 'failed', initializing: 'initializing', 'insufficient-data': 'insufficient-data', 'not-applicable': undefined,
};

function statusSummary(status: CheckStatus) {
  const reachability = REACHABILITY[status];
  return { Status: status, Details: reachability ? [{ Name: 'reachability', Status: reachability }] : [] };
}

// ---- state changes --------------------------------------------------------------------------

interface Change { to: InstanceState; reason?: string | null; forward: boolean }

interface Transition { row: InstancesTable; previous: string; current: string; forward: boolean }

function incorrectState(id: string, verb: string): Ec2Error {
  return new Ec2Error('IncorrectInstanceState', `The instance '${id}' is not in a state from which it can be ${verb}.`);
}

export function instanceOperations(deps: InstanceOperationDeps): OperationTable {
  const initializingMs = deps.statusInitializingMs ?? DEFAULT_STATUS_INITIALIZING_MS;
  const runInstances = createLauncher(deps);

  /**
   * Decides every instance's next state first (so one refused instance changes none), lets
   * `admit` refuse the whole set (quotas), and writes the changes in one transaction; the caller
   * then hands them to the clusters (`forward`) and answers.
   */
  async function changeStates(ctx: RequestContext, ids: string[], decide: (row: InstancesTable) => Change,
    admit?: (tx: Tx, decided: { row: InstancesTable; change: Change }[]) => Promise<void>) {
    const transitions = await ctx.store.transaction(async (tx) => {
      const rows = await instancesByIds(tx, ctx.caller.accountId, ids);
      const decided = rows.map((row) => ({ row, change: decide(row) }));
      await admit?.(tx, decided);
      const now = new Date().toISOString();
      const out: Transition[] = [];
      for (const { row, change } of decided) {
        if (change.to !== row.state) {
          const update: Partial<InstancesTable> = { state: change.to, state_changed_at: now };
          if (change.reason !== undefined) update.state_reason = change.reason;
          await tx.updateTable('instances').set(update).where('id', '=', row.id).where('state', '=', row.state).execute();
        }
        out.push({ row, previous: row.state, current: change.to, forward: change.forward });
      }
      return out;
    });
    return transitions;
  }

  /**
   * Sends each change to its zone's cluster without waiting for the answer: the call has been
   * answered from the store, and a command the cluster does not take (unreachable, the cloud
   * restarted) is sent again by the reconciler, which sees the node disagree with the row.
   * `command` is called at once, so commands reach a cluster in the order they were asked.
   */
  function forward(transitions: Transition[], command: (cluster: ClusterApi, row: InstancesTable) => Promise<unknown>): void {
    for (const t of transitions) {
      if (!t.forward) continue;
      const cluster = deps.directory.forZone(t.row.zone);
      if (!cluster) {
        deps.log?.warn({ instanceId: t.row.id, zone: t.row.zone }, 'no cluster for the zone; the reconciler will retry');
        continue;
      }
      let sent: Promise<unknown>;
      try {
        sent = command(cluster, t.row);
      } catch (e) {
        sent = Promise.reject(e);
      }
      sent.catch((e: unknown) => {
        deps.log?.warn({ instanceId: t.row.id, zone: t.row.zone, err: (e as Error)?.message ?? String(e) }, 'cluster command failed; the reconciler will retry');
      });
    }
  }

  const stateChanges = (transitions: Transition[]) => transitions.map((t) => ({
    InstanceId: t.row.id,
    CurrentState: stateOf({ state: t.current }),
    PreviousState: stateOf({ state: t.previous }),
  }));

  async function StopInstances(ctx: RequestContext, input: { InstanceIds?: string[]; Force?: boolean; Hibernate?: boolean }) {
    if (input.Hibernate) throw new Ec2Error('UnsupportedHibernationConfiguration', 'Hibernation is not supported by the instances of this cloud.');
    const force = input.Force === true;
    const transitions = await changeStates(ctx, requireIds(input.InstanceIds), (row) => {
      switch (row.state) {
        case 'running': return { to: 'stopping', reason: REASONS.userShutdown, forward: true };
        case 'stopping': return { to: 'stopping', forward: force };
        case 'stopped': return { to: 'stopped', forward: false };
        default: throw incorrectState(row.id, 'stopped');
      }
    });
    forward(transitions, (cluster, row) => cluster.stopInstance(row.id, force));
    return { StoppingInstances: stateChanges(transitions) };
  }

  async function StartInstances(ctx: RequestContext, input: { InstanceIds?: string[] }) {
    const transitions = await changeStates(ctx, requireIds(input.InstanceIds), (row) => {
      switch (row.state) {
        case 'stopped': return { to: 'pending', reason: null, forward: true };
        case 'pending': case 'running': return { to: row.state, forward: false };
        default: throw incorrectState(row.id, 'started');
      }
    }, async (tx, decided) => {
      // A stopped instance already counts as an instance but holds no cores or memory: starting
      // it takes them again (with the instance type it has now), so they must fit the quotas.
      const adding: QuotaDemand = { instances: 0, cores: 0, memoryMiB: 0 };
      const vmTypes = new Map<string, Awaited<ReturnType<typeof findVmType>>>();
      for (const { row, change } of decided) {
        if (STATES_HOLDING_RESOURCES.has(row.state) || !STATES_HOLDING_RESOURCES.has(change.to)) continue;
        if (!vmTypes.has(row.instance_type)) vmTypes.set(row.instance_type, await findVmType(tx, row.instance_type));
        const vmType = vmTypes.get(row.instance_type);
        adding.cores += vmType?.cores ?? 0;
        adding.memoryMiB += vmType?.memoryMiB ?? 0;
      }
      await assertWithinQuotas(tx, ctx.caller.accountId, adding);
      // As EC2: a launch-time public address was given back at the stop; the start gets a new one.
      await renewLaunchAddresses(tx, decided.filter(({ row, change }) => row.state === 'stopped' && change.to === 'pending').map(({ row }) => row));
    });
    // What changed while stopped is read now, so every start is handed to its cluster before the answer.
    const updates = new Map<string, Awaited<ReturnType<typeof startUpdateFor>>>();
    for (const t of transitions) if (t.forward) updates.set(t.row.id, await startUpdateFor(ctx.store.db, t.row));
    forward(transitions, (cluster, row) => cluster.startInstance(row.id, updates.get(row.id)));
    return { StartingInstances: stateChanges(transitions) };
  }

  async function TerminateInstances(ctx: RequestContext, input: { InstanceIds?: string[] }) {
    const transitions = await changeStates(ctx, requireIds(input.InstanceIds), (row) => {
      if (row.state === 'terminated' || row.state === 'shutting-down') return { to: row.state, forward: false };
      if (row.disable_api_termination === 1) {
        throw new Ec2Error('OperationNotPermitted', `The instance '${row.id}' may not be terminated. Modify its 'disableApiTermination' instance attribute and try again.`);
      }
      return { to: 'shutting-down', reason: REASONS.userShutdown, forward: true };
    });
    forward(transitions, (cluster, row) => cluster.terminateInstance(row.id));
    return { TerminatingInstances: stateChanges(transitions) };
  }

  /**
   * A reboot has no state of its own to converge to, so the request is recorded on the row until a
   * cluster acknowledges it; the reconciler sends an unacknowledged one again.
   */
  async function RebootInstances(ctx: RequestContext, input: { InstanceIds?: string[] }) {
    const requestedAt = new Date().toISOString();
    const rows = await ctx.store.transaction(async (tx) => {
      const found = await instancesByIds(tx, ctx.caller.accountId, requireIds(input.InstanceIds));
      for (const row of found) if (row.state !== 'running') throw incorrectState(row.id, 'rebooted');
      for (let i = 0; i < found.length; i += 500) {
        await tx.updateTable('instances').set({ reboot_requested_at: requestedAt })
          .where('id', 'in', found.slice(i, i + 500).map((r) => r.id)).where('state', '=', 'running').execute();
      }
      return found;
    });
    forward(rows.map((row) => ({ row, previous: row.state, current: row.state, forward: true })),
      async (cluster, row) => {
        await cluster.rebootInstance(row.id);
        await acknowledgeReboot(ctx.store, row.id, requestedAt);
      });
    return {};
  }

  async function DescribeInstances(ctx: RequestContext, input: { InstanceIds?: string[]; Filters?: Filter[]; MaxResults?: number; NextToken?: string }) {
    const region = ctx.settings.region;
    const zoneIds = input.Filters?.some((f) => f.Name === 'availability-zone-id') ? await zoneIdsByName(ctx.store.db) : undefined;
    const volumesOf = await instanceVolumeMappings(ctx.store.db, ctx.caller.accountId);
    const items = applyFilters(await describedItems(ctx, input), input.Filters, instanceFilters(region, zoneIds, volumesOf), (i) => i.tags);
    const { page, nextToken } = paginate(items, input, JSON.stringify(['instances', input.Filters ?? []]), { min: 5, max: 1000 });
    const tags = new Map(page.map((i) => [i.row.id, i.tags]));
    const Reservations = reservationsOf(page.map((i) => i.row), (id) => tags.get(id) ?? [], { ...await viewContext(ctx.store.db, region), volumesOf });
    return { Reservations, NextToken: nextToken };
  }

  async function DescribeInstanceStatus(ctx: RequestContext, input: { InstanceIds?: string[]; Filters?: Filter[]; MaxResults?: number; NextToken?: string; IncludeAllInstances?: boolean }) {
    const now = Date.now();
    let items = await describedItems(ctx, input);
    // Terminated instances have no status; others only when IncludeAllInstances asks for them.
    items = items.filter((i) => i.row.state !== 'terminated' && (input.IncludeAllInstances === true || i.row.state === 'running'));
    const eventsOf = await eventsOfInstances(ctx.store.db, ctx.caller.accountId, items.map((i) => i.row.id), now);
    const withStatus = items.map((i) => ({ ...i, status: checkStatus(i.row, now, initializingMs), events: eventsOf.get(i.row.id) ?? [] }));
    type Item = (typeof withStatus)[number];
    const none = () => undefined;
    const zoneIds = input.Filters?.some((f) => f.Name === 'availability-zone-id') ? await zoneIdsByName(ctx.store.db) : undefined;
    const filtered = applyFilters(withStatus, input.Filters, {
      'availability-zone': (i: Item) => i.row.zone,
      'instance-state-name': (i: Item) => i.row.state,
      'instance-state-code': (i: Item) => String(STATE_CODES[i.row.state as InstanceState]),
      'instance-status.status': (i: Item) => i.status.instance,
      'instance-status.reachability': (i: Item) => REACHABILITY[i.status.instance],
      'system-status.status': (i: Item) => i.status.system,
      'system-status.reachability': (i: Item) => REACHABILITY[i.status.system],
      ...Object.fromEntries(Object.entries(EVENT_FILTERS).map(([name, values]) => [name, (i: Item) => values(i.events)])),
      'availability-zone-id': (i: Item) => zoneIds?.get(i.row.zone),
      // No EBS volumes are attached, and no instance is managed by a service operator.
      'attached-ebs-status.status': none, 'operator.managed': none, 'operator.principal': none,
    });
    const { page, nextToken } = paginate(filtered, input, JSON.stringify(['instance-status', input.IncludeAllInstances === true, input.Filters ?? []]), { min: 5, max: 1000 });
    return {
      InstanceStatuses: page.map((i) => ({
        AvailabilityZone: i.row.zone,
        InstanceId: i.row.id,
        InstanceState: stateOf(i.row),
        InstanceStatus: statusSummary(i.status.instance),
        SystemStatus: statusSummary(i.status.system),
        Events: i.events.map(eventView),
      })),
      NextToken: nextToken,
    };
  }

  async function GetConsoleOutput(ctx: RequestContext, input: { InstanceId?: string; Latest?: boolean }) {
    if (!input.InstanceId) throw new Ec2Error('MissingParameter', 'The request must contain the parameter InstanceId');
    const [row] = await instancesByIds(ctx.store.db, ctx.caller.accountId, [input.InstanceId]);
    const cluster = deps.directory.forZone(row!.zone);
    let text: string | undefined;
    if (cluster && row!.state !== 'terminated') {
      try {
        text = await cluster.consoleOutput(row!.id);
      } catch (e) {
        // Like EC2 before the first output arrives: an answer without Output.
        deps.log?.warn({ instanceId: row!.id, err: (e as Error)?.message ?? String(e) }, 'console output unavailable');
      }
    }
    return {
      InstanceId: row!.id,
      Timestamp: new Date(),
      ...(text ? { Output: Buffer.from(text, 'utf8').toString('base64') } : {}),
    };
  }

  async function DescribeInstanceAttribute(ctx: RequestContext, input: { InstanceId?: string; Attribute?: string }) {
    if (!input.InstanceId) throw new Ec2Error('MissingParameter', 'The request must contain the parameter InstanceId');
    if (!input.Attribute) throw new Ec2Error('MissingParameter', 'The request must contain the parameter Attribute');
    const [row] = await instancesByIds(ctx.store.db, ctx.caller.accountId, [input.InstanceId]);
    const read = ATTRIBUTE_READERS[input.Attribute];
    if (!read) throw new Ec2Error('InvalidParameterValue', `Value (${input.Attribute}) for parameter attribute is invalid. Unknown attribute.`);
    // The instance's EBS volumes live in their own table.
    if (input.Attribute === 'blockDeviceMapping') {
      return { InstanceId: row!.id, BlockDeviceMappings: (await instanceVolumeMappings(ctx.store.db, ctx.caller.accountId))(row!.id) };
    }
    return { InstanceId: row!.id, ...read(row!) };
  }

  async function ModifyInstanceAttribute(ctx: RequestContext, input: ModifyInput) {
    if (!input.InstanceId) throw new Ec2Error('MissingParameter', 'The request must contain the parameter InstanceId');
    const { attribute, value } = requestedModification(input);
    await ctx.store.transaction(async (tx) => {
      const [row] = await instancesByIds(tx, ctx.caller.accountId, [input.InstanceId!]);
      if (row!.state === 'terminated' || row!.state === 'shutting-down') throw incorrectState(row!.id, 'modified');
      const requireStopped = () => {
        if (row!.state !== 'stopped') throw new Ec2Error('IncorrectInstanceState', `The instance '${row!.id}' is not in the 'stopped' state.`);
      };
      switch (attribute) {
        case 'instanceType': {
          const name = String(value ?? '');
          if (!await findVmType(tx, name)) throw new Ec2Error('InvalidInstanceAttributeValue', `The instanceType '${name}' is invalid.`);
          requireStopped();
          await tx.updateTable('instances').set({ instance_type: name }).where('id', '=', row!.id).execute();
          return;
        }
        case 'userData': {
          const base64 = Buffer.isBuffer(value) || value instanceof Uint8Array ? Buffer.from(value).toString('base64') : String(value ?? '');
          if (Buffer.from(base64, 'base64').length > MAX_USER_DATA_BYTES) {
            throw new Ec2Error('InvalidParameterValue', `User data is limited to ${MAX_USER_DATA_BYTES} bytes`);
          }
          requireStopped();
          await tx.updateTable('instances').set({ user_data: base64 === '' ? null : base64 }).where('id', '=', row!.id).execute();
          return;
        }
        case 'disableApiTermination': {
          // `Value=False` (the Attribute/Value form) is a string: any case, as EC2 reads booleans.
          const flag = typeof value === 'string' ? booleanFromText(value) : typeof value === 'boolean' ? value : undefined;
          if (flag === undefined) throw new Ec2Error('InvalidParameterValue', `Value (${String(value)}) for parameter disableApiTermination is invalid. Expected a boolean.`);
          await tx.updateTable('instances').set({ disable_api_termination: flag ? 1 : 0 }).where('id', '=', row!.id).execute();
          return;
        }
        case 'instanceInitiatedShutdownBehavior': {
          const behavior = checkShutdownBehavior(value);
          await tx.updateTable('instances').set({ shutdown_behavior: behavior }).where('id', '=', row!.id).execute();
          return;
        }
        case 'blockDeviceMapping':
          // DeleteOnTermination of the attached volumes, in any state but terminated.
          await setDeleteOnTermination(tx, row!.id, value);
          return;
        case 'groupSet':
          // Running or stopped: the nodes apply the new groups to new connections within seconds.
          await replaceInstanceGroups(tx, ctx.caller.accountId, row!, value);
          return;
        default:
          throw new Ec2Error('UnsupportedOperation', `The instance attribute '${attribute}' cannot be modified in this cloud.`);
      }
    });
    return {};
  }

  return {
    RunInstances: runInstances,
    DescribeInstances,
    DescribeInstanceStatus,
    StartInstances,
    StopInstances,
    RebootInstances,
    TerminateInstances,
    GetConsoleOutput,
    DescribeInstanceAttribute,
    ModifyInstanceAttribute,
  };
}

// ---- attributes -----------------------------------------------------------------------------

const ATTRIBUTE_READERS: Record<string, (row: InstancesTable) => object> = {
  instanceType: (r) => ({ InstanceType: { Value: r.instance_type } }),
  kernel: (r) => ({ KernelId: r.kernel_id ? { Value: r.kernel_id } : {} }),
  ramdisk: (r) => ({ RamdiskId: r.ramdisk_id ? { Value: r.ramdisk_id } : {} }),
  userData: (r) => ({ UserData: r.user_data ? { Value: r.user_data } : {} }),
  disableApiTermination: (r) => ({ DisableApiTermination: { Value: r.disable_api_termination === 1 } }),
  instanceInitiatedShutdownBehavior: (r) => ({ InstanceInitiatedShutdownBehavior: { Value: r.shutdown_behavior } }),
  rootDeviceName: () => ({ RootDeviceName: { Value: ROOT_DEVICE_NAME } }),
  blockDeviceMapping: () => ({ BlockDeviceMappings: [] }),
  productCodes: () => ({ ProductCodes: [] }),
  groupSet: (r) => ({ Groups: groupsOf(r).map((g) => ({ GroupId: g.id, GroupName: g.name })) }),
  sourceDestCheck: () => ({ SourceDestCheck: { Value: true } }),
  ebsOptimized: () => ({ EbsOptimized: { Value: false } }),
  sriovNetSupport: () => ({ SriovNetSupport: {} }),
  enaSupport: () => ({ EnaSupport: { Value: false } }),
  enclaveOptions: () => ({ EnclaveOptions: { Enabled: false } }),
  disableApiStop: () => ({ DisableApiStop: { Value: false } }),
};

interface ModifyInput {
  InstanceId?: string; Attribute?: string; Value?: string;
  InstanceType?: { Value?: string }; UserData?: { Value?: Buffer | string }; DisableApiTermination?: { Value?: boolean };
  InstanceInitiatedShutdownBehavior?: { Value?: string }; Kernel?: { Value?: string }; Ramdisk?: { Value?: string };
  Groups?: string[]; SourceDestCheck?: { Value?: boolean }; EbsOptimized?: { Value?: boolean }; EnaSupport?: { Value?: boolean };
  SriovNetSupport?: { Value?: string }; BlockDeviceMappings?: unknown[]; DisableApiStop?: { Value?: boolean };
}

/** The one attribute a ModifyInstanceAttribute call changes, from either of its two forms. */
function requestedModification(input: ModifyInput): { attribute: string; value: unknown } {
  const named: [string, unknown][] = [];
  const structured: [string, { Value?: unknown } | undefined][] = [
    ['instanceType', input.InstanceType], ['userData', input.UserData], ['disableApiTermination', input.DisableApiTermination],
    ['instanceInitiatedShutdownBehavior', input.InstanceInitiatedShutdownBehavior], ['kernel', input.Kernel], ['ramdisk', input.Ramdisk],
    ['sourceDestCheck', input.SourceDestCheck], ['ebsOptimized', input.EbsOptimized], ['enaSupport', input.EnaSupport],
    ['sriovNetSupport', input.SriovNetSupport], ['disableApiStop', input.DisableApiStop],
  ];
  for (const [name, v] of structured) if (v !== undefined) named.push([name, v.Value]);
  if (input.Groups && input.Groups.length > 0) named.push(['groupSet', input.Groups]);
  if (input.BlockDeviceMappings && input.BlockDeviceMappings.length > 0) named.push(['blockDeviceMapping', input.BlockDeviceMappings]);
  if (input.Attribute !== undefined && input.Attribute !== '') {
    if (!ATTRIBUTE_READERS[input.Attribute]) {
      throw new Ec2Error('InvalidParameterValue', `Value (${input.Attribute}) for parameter attribute is invalid. Unknown attribute.`);
    }
    if (named.some(([n]) => n !== input.Attribute)) {
      throw new Ec2Error('InvalidParameterCombination', `Fields for multiple attribute types specified: ${[input.Attribute, ...named.map(([n]) => n)].join(', ')}`);
    }
    return { attribute: input.Attribute, value: named.length > 0 ? named[0]![1] : input.Value };
  }
  if (named.length === 0) throw new Ec2Error('MissingParameter', 'The request must contain the parameter attribute');
  if (named.length > 1) {
    throw new Ec2Error('InvalidParameterCombination', `Fields for multiple attribute types specified: ${named.map(([n]) => n).join(', ')}`);
  }
  return { attribute: named[0]![0], value: named[0]![1] };
}

// ---- registrations --------------------------------------------------------------------------

registerTaggable('i', async (db, accountId, id) => {
  const row = await db.selectFrom('instances').select('id').where('id', '=', id).where('account_id', '=', accountId).executeTakeFirst();
  return row !== undefined;
}, (id) => instancesNotFound([id]));

// A group stays in use while any instance that is not terminated names it.
registerSecurityGroupUsageCheck(async (db, accountId, groupId) => {
  const row = await db.selectFrom('instances').select('id')
    .where('account_id', '=', accountId).where('state', '!=', 'terminated')
    .where('security_groups', 'like', `%"${groupId}"%`).executeTakeFirst();
  return row !== undefined;
});
