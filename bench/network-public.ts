// `npm run bench -- network` (public-address part): seconds from AssociateAddress answering to the
// elastic IP answering from outside, from DisassociateAddress to it no longer answering, and from
// RevokeSecurityGroupIngress / AuthorizeSecurityGroupIngress answering to the rule's effect on a
// new connection from outside (as seen from the API, not only the node). The
// cloud's side is real (the store, the address handlers, FirewallSync computing and pushing the
// zone's document on its 2 s interval); the zone's cluster is the in-process kind, which hands the
// document to its node as is; the node is a real NodeNetwork in a network namespace made here, with
// a guest namespace on its bridge (a veth for its tap, a TCP service on port 22) and an outside
// namespace routed to the node's public range, as in test/e2e/public-addresses-netns.test.ts. The
// time is what the check interval, one document build, one push and one nftables load add up to.
// Needs root, nft and busybox; reports why it skipped otherwise.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openStore } from '../src/store/store.ts';
import { createAccountWithDefaults, ensureZone } from '../src/cloud/provision.ts';
import { setPublicRange } from '../src/cloud/network/public-ranges.ts';
import { addressOperations } from '../src/cloud/network/addresses.ts';
import { securityGroupOperations } from '../src/cloud/security-groups.ts';
import { FirewallSync } from '../src/cloud/network/firewall-sync.ts';
import { ComputeDirectory } from '../src/cloud/compute-directory.ts';
import type { ClusterApi } from '../src/cluster/cluster-api.ts';
import type { RequestContext } from '../src/cloud/context.ts';
import { NodeNetwork, allocateMac } from '../src/node/network.ts';
import { tapNameForInstance } from '../src/node/network-addressing.ts';

const ZONE = 'bench-1a';
const CIDR = '10.77.0.0/24';
const GUEST_IP = '10.77.0.10';
const INSTANCE = 'i-0b0000000000000e1';

function netns(prefix: string): { name: string; exec(cmd: string, args: string[]): void; dispose(): void } {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  spawnSync('ip', ['netns', 'add', name]);
  const exec = (cmd: string, args: string[]) => {
    const r = spawnSync('ip', ['netns', 'exec', name, cmd, ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} in ${name}: ${r.stderr}`);
  };
  exec('ip', ['link', 'set', 'lo', 'up']);
  return {
    name, exec,
    dispose() {
      for (const pid of spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean)) {
        try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
      }
      spawnSync('ip', ['netns', 'delete', name]);
    },
  };
}

export async function benchPublicAddresses(): Promise<Record<string, unknown>> {
  if (process.getuid?.() !== 0 || spawnSync('nft', ['--version']).status !== 0 || spawnSync('busybox', ['true']).status !== 0) {
    return { publicAddress: 'skipped: needs root, nft and busybox' };
  }
  const store = await openStore({ url: ':memory:' });
  const stateDir = mkdtempSync(join(tmpdir(), 'ibbench-pub-'));
  chmodSync(stateDir, 0o711);
  const host = netns('ibbench-pubh');
  const guest = netns('ibbench-pubg');
  const outside = netns('ibbench-pubo');
  let network: NodeNetwork | undefined;
  let sync: FirewallSync | undefined;
  try {
    // The cloud: a zone with a public range, an account, one running instance whose group admits tcp/22.
    await ensureZone(store, { name: ZONE, cidr: CIDR, region: 'bench-1' });
    await store.transaction((tx) => setPublicRange(tx, ZONE, '198.51.100.0/28'));
    const { account } = await createAccountWithDefaults(store, 'bench');
    const group = await store.db.selectFrom('security_groups').select(['id', 'vpc_id']).where('account_id', '=', account.id).executeTakeFirstOrThrow();
    const subnet = await store.db.selectFrom('subnets').select('id').where('account_id', '=', account.id).executeTakeFirstOrThrow();
    const now = new Date().toISOString();
    await store.db.insertInto('security_group_rules').values({
      id: 'sgr-0b0000000000000e1', group_id: group.id, account_id: account.id, is_egress: 0, ip_protocol: 'tcp', from_port: 22, to_port: 22,
      cidr_ipv4: '0.0.0.0/0', cidr_ipv6: null, prefix_list_id: null, referenced_group_id: null, referenced_account_id: null, description: null, created_at: now,
    }).execute();
    await store.db.insertInto('instances').values({
      id: INSTANCE, account_id: account.id, reservation_id: 'r-0b0000000000000e1', client_token: null, request_hash: null,
      image_id: 'ami-0123456789abcdef0', kernel_id: null, ramdisk_id: null, instance_type: 'm1.small', zone: ZONE, vpc_id: group.vpc_id,
      subnet_id: subnet.id, private_ip: GUEST_IP, public_ip: null, mac: allocateMac(INSTANCE), key_name: null, user_data: null,
      security_groups: JSON.stringify([{ id: group.id, name: 'default' }]), launch_index: 0, launch_time: now, state: 'running',
      state_reason: null, state_changed_at: now, node_id: null, disable_api_termination: 0, status_impaired: 0, accelerator: null, shutdown_behavior: 'stop',
    }).execute();

    // The node and its guest, and the outside routed to the node's public range.
    network = new NodeNetwork({ zone: ZONE, cidr: CIDR, stateDir, netns: host.name });
    await network.setUp();
    const linkName = `ibbp${randomBytes(3).toString('hex')}`;
    spawnSync('ip', ['link', 'add', linkName, 'type', 'veth', 'peer', 'name', `${linkName}o`]);
    spawnSync('ip', ['link', 'set', linkName, 'netns', host.name]);
    spawnSync('ip', ['link', 'set', `${linkName}o`, 'netns', outside.name]);
    host.exec('ip', ['addr', 'add', '192.0.2.1/24', 'dev', linkName]);
    host.exec('ip', ['link', 'set', linkName, 'up']);
    outside.exec('ip', ['addr', 'add', '192.0.2.2/24', 'dev', `${linkName}o`]);
    outside.exec('ip', ['link', 'set', `${linkName}o`, 'up']);
    outside.exec('ip', ['route', 'add', '198.51.100.0/28', 'via', '192.0.2.1']);
    host.exec('ip', ['link', 'add', tapNameForInstance(INSTANCE), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', guest.name]);
    guest.exec('ip', ['link', 'set', 'eth0', 'address', allocateMac(INSTANCE)]);
    guest.exec('ip', ['link', 'set', 'eth0', 'up']);
    guest.exec('ip', ['addr', 'add', `${GUEST_IP}/24`, 'dev', 'eth0']);
    guest.exec('ip', ['route', 'add', 'default', 'via', '10.77.0.1']);
    await network.addInstance({ instanceId: INSTANCE, mac: allocateMac(INSTANCE), ip: GUEST_IP, firewall: { vpcId: group.vpc_id, groups: [group.id] } });
    spawn('ip', ['netns', 'exec', guest.name, process.execPath, '-e', "require('net').createServer((s) => s.end('banner\\n')).listen(22)"],
      { stdio: 'ignore', detached: true }).unref();

    // The zone's cluster, in process: it hands each document to its one node.
    const node = network;
    const cluster = {
      zone: ZONE,
      applyFirewall: async (doc: Parameters<NonNullable<ClusterApi['applyFirewall']>>[0]) => {
        await node.setFirewallDocument(doc);
        return { version: doc.version, applied: 1, failed: [], skipped: 0 };
      },
    } as unknown as ClusterApi;
    const directory = new ComputeDirectory();
    directory.register(cluster);
    sync = new FirewallSync({ store, directory, log: { info() {}, warn() {} } });
    sync.start();

    const answers = (ip: string) => spawnSync('ip', ['netns', 'exec', outside.name, 'busybox', 'nc', '-w', '1', ip, '22'],
      { encoding: 'utf8', input: '', timeout: 5000 }).stdout.includes('banner');
    const until = async (ok: () => boolean, what: string) => {
      const deadline = Date.now() + 60_000;
      while (!ok()) {
        if (Date.now() > deadline) throw new Error(`${what} did not happen within 60 s`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const ctx: RequestContext = {
      requestId: 'bench', action: 'AssociateAddress', store, settings: { region: 'bench-1', endpoint: 'http://127.0.0.1/' },
      caller: { accountId: account.id, userId: 'AIDABENCH', userName: 'admin', accessKeyId: 'AKIABENCH', isAdmin: true },
    };
    const eip = await addressOperations.AllocateAddress!(ctx, { Domain: 'vpc' });
    await new Promise((r) => setTimeout(r, 2500)); // the instance's first document is on the node

    const associated = performance.now();
    const { AssociationId } = await addressOperations.AssociateAddress!(ctx, { AllocationId: eip.AllocationId, InstanceId: INSTANCE });
    await until(() => answers(eip.PublicIp), 'the elastic IP answering');
    const associateToAnswerSeconds = (performance.now() - associated) / 1000;

    // Security groups as seen from the API: a revoked rule stops new connections, an authorized one lets them in.
    const permission = { IpPermissions: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }], GroupId: group.id };
    const revoked = performance.now();
    await securityGroupOperations.RevokeSecurityGroupIngress!({ ...ctx, action: 'RevokeSecurityGroupIngress' }, permission);
    await until(() => !answers(eip.PublicIp), 'the revoked rule taking effect');
    const revokeToEffectSeconds = (performance.now() - revoked) / 1000;
    const authorized = performance.now();
    await securityGroupOperations.AuthorizeSecurityGroupIngress!({ ...ctx, action: 'AuthorizeSecurityGroupIngress' }, permission);
    await until(() => answers(eip.PublicIp), 'the authorized rule taking effect');
    const authorizeToEffectSeconds = (performance.now() - authorized) / 1000;

    const disassociated = performance.now();
    await addressOperations.DisassociateAddress!(ctx, { AssociationId });
    await until(() => !answers(eip.PublicIp), 'the elastic IP going quiet');
    const disassociateToSilenceSeconds = (performance.now() - disassociated) / 1000;
    return {
      associateToAnswerSeconds: Math.round(associateToAnswerSeconds * 100) / 100,
      disassociateToSilenceSeconds: Math.round(disassociateToSilenceSeconds * 100) / 100,
      authorizeToEffectSeconds: Math.round(authorizeToEffectSeconds * 100) / 100,
      revokeToEffectSeconds: Math.round(revokeToEffectSeconds * 100) / 100,
      firewallSyncIntervalSeconds: 2,
    };
  } finally {
    await sync?.stop();
    await network?.tearDown().catch(() => undefined);
    for (const ns of [guest, outside, host]) ns.dispose();
    rmSync(stateDir, { recursive: true, force: true });
    await store.close();
  }
}
