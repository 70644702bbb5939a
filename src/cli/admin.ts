// `ironbark admin …`: the operator's commands over the admin API — accounts, users, access keys,
// VM types, quotas and usage. Tables for people by default, the API's JSON with --json.
// Other admin command families add themselves to the `admin` command this returns and use
// `adminClientFor`, `printResult` and `formatTable` so every admin command behaves alike.
import { Command, InvalidArgumentError } from 'commander';
import { AdminClient, resolveAdminConfig } from './admin-client.ts';
import { credentialsEnvText } from '../auth/credentials-file.ts';

interface AdminGlobals { endpoint?: string; dataDir?: string; json?: boolean }

/** The client for a (sub)command of `admin`, from its --endpoint / --data-dir. */
export function adminClientFor(cmd: Command): AdminClient {
  const o = cmd.optsWithGlobals<AdminGlobals>();
  return new AdminClient(resolveAdminConfig({ dataDir: o.dataDir, endpoint: o.endpoint }));
}

/** Prints `data` as JSON with --json, otherwise what `human` renders from it. */
export function printResult<T>(cmd: Command, data: T, human: (data: T) => string): void {
  const text = cmd.optsWithGlobals<AdminGlobals>().json ? JSON.stringify(data, null, 2) : human(data);
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** Left-aligned columns separated by two spaces; an empty table says so. */
export function formatTable(headers: string[], rows: Array<Array<string | number | null | undefined>>, empty = '(none)'): string {
  if (rows.length === 0) return `${empty}\n`;
  const cells = [headers, ...rows.map((r) => r.map((v) => (v === null || v === undefined ? '-' : String(v))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((v, i) => (i === r.length - 1 ? v : v.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

function positiveInteger(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError('It must be a positive whole number.');
  }
  return Number(value);
}

/** A quota value: a whole number, or "default" to remove the operator's value. */
function quotaValue(value: string): number | 'default' {
  if (value === 'default') return value;
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError('It must be a whole number, or "default".');
  }
  return Number(value);
}

function exportLines(c: { accessKeyId: string; secretAccessKey: string; region: string; endpoint: string; accountId: string }): string {
  return credentialsEnvText(c).split('\n').filter((l) => l.startsWith('export ')).join('\n') + '\n';
}

interface QuotaJson { name: string; value: number | null; isDefault: boolean }
interface UsageJson {
  accountId: string; accountName: string; status: string;
  instances: { live: number; byState: Record<string, number>; byType: Record<string, number> };
  coresInUse: number; memoryMiBInUse: number; keyPairs: number; securityGroups: number; quotas: QuotaJson[];
  /** Absent from a cloud older than EBS volumes. */
  volumes?: { count: number; gib: number };
  /** Absent from a cloud older than EBS snapshots. */
  snapshots?: { count: number; gib: number };
  storageGiBHours?: { since: string; volumes: number; snapshots: number };
}

function quotaText(q: QuotaJson): string {
  return `${q.value === null ? 'unlimited' : q.value}${q.isDefault ? ' (default)' : ''}`;
}

function countsText(counts: Record<string, number>): string {
  const entries = Object.entries(counts);
  return entries.length === 0 ? '-' : entries.sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `${k} ${n}`).join(', ');
}

function usageTable(usage: UsageJson[]): string {
  return formatTable(['ACCOUNT', 'NAME', 'STATUS', 'INSTANCES', 'CORES', 'MEMORY MiB', 'KEY PAIRS', 'SECURITY GROUPS'],
    usage.map((u) => [u.accountId, u.accountName, u.status, u.instances.live, u.coresInUse, u.memoryMiBInUse, u.keyPairs, u.securityGroups]),
    '(no accounts)');
}

function usageDetail(u: UsageJson): string {
  const limit = (name: string) => u.quotas.find((q) => q.name === name);
  const of = (name: string) => {
    const q = limit(name);
    return q && q.value !== null ? ` of ${q.value}` : '';
  };
  return [
    `Live instances:   ${u.instances.live}${of('max-instances')}`,
    `  by state:       ${countsText(u.instances.byState)}`,
    `  by type:        ${countsText(u.instances.byType)}`,
    `Cores in use:     ${u.coresInUse}${of('max-cores')}`,
    `Memory in use:    ${u.memoryMiBInUse} MiB${of('max-memory-mib')}`,
    `Key pairs:        ${u.keyPairs}`,
    `Security groups:  ${u.securityGroups}`,
    ...(u.volumes ? [`Volumes:          ${u.volumes.count}${of('max-volumes')}, ${u.volumes.gib} GiB${of('max-volume-gib')}`] : []),
    ...(u.snapshots ? [`Snapshots:        ${u.snapshots.count}${of('max-snapshots')}, ${u.snapshots.gib} GiB${of('max-snapshot-gib')}`] : []),
    ...(u.storageGiBHours ? [`Storage GiB-hours since ${u.storageGiBHours.since.slice(0, 10)}: volumes ${u.storageGiBHours.volumes}, snapshots ${u.storageGiBHours.snapshots}`] : []),
    `Quotas:           ${u.quotas.map((q) => `${q.name} ${quotaText(q)}`).join(', ')}`,
  ].join('\n') + '\n';
}

function policyText(policy: unknown): string {
  return Array.isArray(policy) ? policy.join(' ') : String(policy);
}

function accountCommands(admin: Command): void {
  const account = admin.command('account').description('list, create, show, disable, enable and delete accounts');

  account.command('list').description('list every account').action(async (_o, cmd: Command) => {
    const data = await adminClientFor(cmd).request('GET', '/accounts');
    printResult(cmd, data, (d) => formatTable(['ID', 'NAME', 'STATUS', 'CREATED'],
      d.accounts.map((a: any) => [a.id, a.isCloudAdmin ? `${a.name} (cloud admin)` : a.name, a.status, a.createdAt])));
  });

  account.command('create').argument('<name>', 'account name (letters, digits, . _ @ -)')
    .description('create an account with its default VPC, security group and admin user; prints its credentials once')
    .action(async (name: string, _o, cmd: Command) => {
      const data = await adminClientFor(cmd).request('POST', '/accounts', { body: { name } });
      printResult(cmd, data, (d) =>
        `Created account ${d.account.name} (${d.account.id}) with its default VPC and security group.\n` +
        `Credentials of its ${d.accessKey.userName} user, shown only now (keep them private):\n` +
        exportLines({ ...d.accessKey, region: d.region, endpoint: d.endpoint, accountId: d.account.id }));
    });

  account.command('show').argument('<account>', 'account id or name').description('show an account, its users, keys, quotas and usage')
    .action(async (ref: string, _o, cmd: Command) => {
      const data = await adminClientFor(cmd).request('GET', `/accounts/${encodeURIComponent(ref)}`);
      printResult(cmd, data, (d) =>
        `Account:          ${d.account.name} (${d.account.id})${d.account.isCloudAdmin ? ', the cloud admin account' : ''}\n` +
        `Status:           ${d.account.status}\n` +
        `Created:          ${d.account.createdAt}\n` +
        usageDetail(d.usage) +
        `\nUsers:\n` + formatTable(['NAME', 'ID', 'ADMIN', 'POLICY'],
          d.users.map((u: any) => [u.name, u.id, u.isAdmin ? 'yes' : 'no', policyText(u.policy)])) +
        `\nAccess keys:\n` + formatTable(['ACCESS KEY ID', 'USER', 'STATUS', 'CREATED'],
          d.accessKeys.map((k: any) => [k.accessKeyId, k.userName, k.status, k.createdAt])));
    });

  for (const [verb, done] of [['disable', 'disabled: its access keys no longer work'], ['enable', 'enabled']] as const) {
    account.command(verb).argument('<account>', 'account id or name').description(`${verb} an account`)
      .action(async (ref: string, _o, cmd: Command) => {
        const data = await adminClientFor(cmd).request('POST', `/accounts/${encodeURIComponent(ref)}/${verb}`);
        printResult(cmd, data, (d) => `Account ${d.account.name} (${d.account.id}) ${done}.`);
      });
  }

  account.command('delete').argument('<account>', 'account id or name')
    .description('delete an account and everything it owns (refused while it has instances that are not terminated)')
    .action(async (ref: string, _o, cmd: Command) => {
      const data = await adminClientFor(cmd).request('DELETE', `/accounts/${encodeURIComponent(ref)}`);
      printResult(cmd, data, (d) => `Account ${d.deleted} deleted.`);
    });
}

function userCommands(admin: Command): void {
  const user = admin.command('user').description('list, create and delete the users of an account');

  user.command('list').requiredOption('--account <account>', 'account id or name').description("list an account's users")
    .action(async (o: { account: string }, cmd: Command) => {
      const data = await adminClientFor(cmd).request('GET', `/accounts/${encodeURIComponent(o.account)}/users`);
      printResult(cmd, data, (d) => formatTable(['NAME', 'ID', 'ADMIN', 'POLICY', 'CREATED'],
        d.users.map((u: any) => [u.name, u.id, u.isAdmin ? 'yes' : 'no', policyText(u.policy), u.createdAt])));
    });

  user.command('create').argument('<name>', 'user name').requiredOption('--account <account>', 'account id or name')
    .option('--policy <json>', 'allowed actions as a JSON list, e.g. \'["ec2:Describe*"]\' (default: all of EC2)')
    .description('create a user in an account (then give it a key with `ironbark admin key create`)')
    .action(async (name: string, o: { account: string; policy?: string }, cmd: Command) => {
      let policy: unknown;
      if (o.policy !== undefined) {
        try {
          policy = JSON.parse(o.policy);
        } catch {
          throw new Error(`--policy must be a JSON list of action patterns such as '["ec2:Describe*"]', not ${o.policy}.`);
        }
      }
      const data = await adminClientFor(cmd).request('POST', `/accounts/${encodeURIComponent(o.account)}/users`, { body: { name, policy } });
      printResult(cmd, data, (d) => `Created user ${d.user.name} (${d.user.id}) in account ${d.user.accountId}, allowed: ${policyText(d.user.policy)}.`);
    });

  user.command('delete').argument('<name>', 'user name').requiredOption('--account <account>', 'account id or name')
    .description('delete a user and its access keys')
    .action(async (name: string, o: { account: string }, cmd: Command) => {
      const data = await adminClientFor(cmd).request('DELETE', `/accounts/${encodeURIComponent(o.account)}/users/${encodeURIComponent(name)}`);
      printResult(cmd, data, (d) => `User ${d.deleted} deleted from account ${o.account}.`);
    });
}

function keyCommands(admin: Command): void {
  const key = admin.command('key').description('list, create, deactivate, activate and delete access keys');

  key.command('list').option('--account <account>', 'only this account (id or name)').option('--user <name>', 'only this user (needs --account)')
    .description('list access keys (never their secrets)')
    .action(async (o: { account?: string; user?: string }, cmd: Command) => {
      const data = await adminClientFor(cmd).request('GET', '/access-keys', { query: { account: o.account, user: o.user } });
      printResult(cmd, data, (d) => formatTable(['ACCESS KEY ID', 'ACCOUNT', 'USER', 'STATUS', 'CREATED'],
        d.accessKeys.map((k: any) => [k.accessKeyId, k.accountId, k.userName, k.status, k.createdAt])));
    });

  key.command('create').requiredOption('--account <account>', 'account id or name').requiredOption('--user <name>', 'user name')
    .description('create an access key for a user; prints its secret once')
    .action(async (o: { account: string; user: string }, cmd: Command) => {
      const data = await adminClientFor(cmd).request('POST', '/access-keys', { body: { account: o.account, user: o.user } });
      printResult(cmd, data, (d) =>
        `Created access key ${d.accessKey.accessKeyId} for user ${d.accessKey.userName} of account ${d.accessKey.accountId}.\n` +
        'Its secret is shown only now (keep it private):\n' +
        exportLines({ ...d.accessKey, region: d.region, endpoint: d.endpoint }));
    });

  for (const [verb, method, path, done] of [
    ['deactivate', 'POST', '/deactivate', 'deactivated'],
    ['activate', 'POST', '/activate', 'activated'],
    ['delete', 'DELETE', '', 'deleted'],
  ] as const) {
    key.command(verb).argument('<access-key-id>').description(`${verb} an access key`)
      .action(async (id: string, _o, cmd: Command) => {
        const data = await adminClientFor(cmd).request(method, `/access-keys/${encodeURIComponent(id)}${path}`);
        printResult(cmd, data, () => `Access key ${id} ${done}.`);
      });
  }
}

function vmTypeCommands(admin: Command): void {
  const vmType = admin.command('vm-type').description('list, set and delete the VM types instances launch with');

  vmType.command('list').description('list VM types').action(async (_o, cmd: Command) => {
    const data = await adminClientFor(cmd).request('GET', '/vm-types');
    printResult(cmd, data, (d) => formatTable(['NAME', 'CORES', 'MEMORY MiB', 'DISK GiB'],
      d.vmTypes.map((t: any) => [t.name, t.cores, t.memoryMiB, t.diskGiB])));
  });

  vmType.command('set').argument('<name>', 'type name, e.g. m1.small')
    .requiredOption('--cores <n>', 'virtual CPUs', positiveInteger)
    .requiredOption('--memory <mib>', 'memory in MiB', positiveInteger)
    .requiredOption('--disk <gib>', 'root disk in GiB', positiveInteger)
    .description('create or change a VM type (running instances keep their size)')
    .action(async (name: string, o: { cores: number; memory: number; disk: number }, cmd: Command) => {
      const data = await adminClientFor(cmd).request('PUT', `/vm-types/${encodeURIComponent(name)}`,
        { body: { cores: o.cores, memoryMiB: o.memory, diskGiB: o.disk } });
      printResult(cmd, data, (d) => `VM type ${d.vmType.name}: ${d.vmType.cores} cores, ${d.vmType.memoryMiB} MiB memory, ${d.vmType.diskGiB} GiB disk.`);
    });

  vmType.command('delete').argument('<name>').description('delete a VM type (refused while instances use it)')
    .action(async (name: string, _o, cmd: Command) => {
      const data = await adminClientFor(cmd).request('DELETE', `/vm-types/${encodeURIComponent(name)}`);
      printResult(cmd, data, (d) => `VM type ${d.deleted} deleted.`);
    });
}

function quotaCommands(admin: Command): void {
  const quota = admin.command('quota').description("show and set an account's quotas");
  const table = (d: { accountId: string; quotas: QuotaJson[] }) =>
    `Quotas of account ${d.accountId}:\n` + formatTable(['QUOTA', 'VALUE'], d.quotas.map((q) => [q.name, quotaText(q)]));

  quota.command('get').requiredOption('--account <account>', 'account id or name').description("show an account's quotas")
    .action(async (o: { account: string }, cmd: Command) => {
      printResult(cmd, await adminClientFor(cmd).request('GET', `/accounts/${encodeURIComponent(o.account)}/quotas`), table);
    });

  quota.command('set').requiredOption('--account <account>', 'account id or name')
    .option('--max-instances <n>', 'instances that are not terminated (default 20)', quotaValue)
    .option('--max-cores <n>', 'cores of the account\'s instances that are not stopped or terminated (default unlimited)', quotaValue)
    .option('--max-memory-mib <mib>', 'memory in MiB of the account\'s instances that are not stopped or terminated (default unlimited)', quotaValue)
    .option('--max-elastic-ips <n>', 'elastic IPs the account may hold (default 5)', quotaValue)
    .option('--max-volumes <n>', 'EBS volumes that are not deleted (default 5000)', quotaValue)
    .option('--max-volume-gib <gib>', 'GiB of those volumes together (default 51200)', quotaValue)
    .option('--max-snapshots <n>', 'EBS snapshots that are not deleted (default 100000)', quotaValue)
    .option('--max-snapshot-gib <gib>', 'GiB of the volumes those snapshots were taken of (default unlimited)', quotaValue)
    .description('set quotas; "default" as a value restores the default')
    .action(async (o: { account: string; maxInstances?: number | 'default'; maxCores?: number | 'default'; maxMemoryMib?: number | 'default'; maxElasticIps?: number | 'default';
      maxVolumes?: number | 'default'; maxVolumeGib?: number | 'default'; maxSnapshots?: number | 'default'; maxSnapshotGib?: number | 'default' }, cmd: Command) => {
      const body: Record<string, number | null> = {};
      for (const [name, value] of [['max-instances', o.maxInstances], ['max-cores', o.maxCores], ['max-memory-mib', o.maxMemoryMib], ['max-elastic-ips', o.maxElasticIps],
        ['max-volumes', o.maxVolumes], ['max-volume-gib', o.maxVolumeGib], ['max-snapshots', o.maxSnapshots], ['max-snapshot-gib', o.maxSnapshotGib]] as const) {
        // null asks the API to forget the operator's value.
        if (value !== undefined) body[name] = value === 'default' ? null : value;
      }
      if (Object.keys(body).length === 0) throw new Error('Name at least one quota to set: --max-instances, --max-cores, --max-memory-mib, --max-elastic-ips, --max-volumes, --max-volume-gib, --max-snapshots or --max-snapshot-gib.');
      printResult(cmd, await adminClientFor(cmd).request('PUT', `/accounts/${encodeURIComponent(o.account)}/quotas`, { body }), table);
    });
}

function usageCommand(admin: Command): void {
  admin.command('usage').option('--account <account>', 'only this account (id or name), in detail')
    .description('instances, cores, memory, key pairs and security groups in use, per account')
    .action(async (o: { account?: string }, cmd: Command) => {
      const data = await adminClientFor(cmd).request('GET', '/usage', { query: { account: o.account } });
      printResult(cmd, data, (d: { usage: UsageJson[] }) =>
        o.account !== undefined && d.usage.length === 1
          ? `Account ${d.usage[0]!.accountName} (${d.usage[0]!.accountId}), ${d.usage[0]!.status}\n${usageDetail(d.usage[0]!)}`
          : usageTable(d.usage));
    });
}

export function registerAdminCommands(program: Command): Command {
  const admin = program.command('admin')
    .description("operate the cloud through its admin API (with the cloud admin's credentials)")
    .option('--endpoint <url>', 'the cloud endpoint (default: AWS_ENDPOINT_URL_EC2 or the one in the credentials file)')
    .option('--data-dir <dir>', "the cloud's data directory, whose credentials.env holds the admin key (default: AWS_* variables, then $IRONBARK_DATA_DIR or /var/lib/ironbark)")
    .option('--json', "print the admin API's JSON answers instead of tables");
  accountCommands(admin);
  userCommands(admin);
  keyCommands(admin);
  vmTypeCommands(admin);
  quotaCommands(admin);
  usageCommand(admin);
  return admin;
}
