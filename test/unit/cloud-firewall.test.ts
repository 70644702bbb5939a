// The cloud's side of security groups on the wire: the zone's firewall document computed from the
// store (instances, their current groups, the groups' IPv4 rules), ModifyInstanceAttribute GroupId
// on a running instance, FirewallSync pushing on change, every refresh period and again after a
// failure, and a cluster controller passing the document to its nodes.
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { openStore, type Store } from '../../src/store/store.ts';
import { createAccountWithDefaults, ensureZone } from '../../src/cloud/provision.ts';
import { seedVmTypes } from '../../src/cloud/vm-types.ts';
import { registerImageFiles, type RegisteredImage } from '../../src/cloud/images/images.ts';
import { instanceOperations } from '../../src/cloud/instances.ts';
import { securityGroupOperations } from '../../src/cloud/security-groups.ts';
import { ComputeDirectory } from '../../src/cloud/compute-directory.ts';
import { buildFirewallDocument, firewallRuleFromRow } from '../../src/cloud/network/firewall-document.ts';
import { FirewallSync } from '../../src/cloud/network/firewall-sync.ts';
import type { FirewallDocument, FirewallPushResult } from '../../src/node/network/firewall-document.ts';
import { ClusterController } from '../../src/cluster/cluster-controller.ts';
import { NodeAgent } from '../../src/node/node-agent.ts';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { ImageCache } from '../../src/node/image-cache.ts';
import type { NodeApi } from '../../src/node/node-api.ts';
import { FakeCluster } from '../helpers/fake-cluster.ts';
import { REGION, callOperation, contextFor, expectEc2Error } from '../helpers/handler-context.ts';

const ZONE = 'ironbark-1a';
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const quiet = { info() {}, warn() {}, error() {} };

/** A FakeCluster that also takes firewall documents (and can be told to fail them). */
class FirewallCluster extends FakeCluster {
  readonly documents: FirewallDocument[] = [];
  failNext = 0;
  async applyFirewall(doc: FirewallDocument): Promise<FirewallPushResult> {
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('cluster unreachable');
    }
    this.documents.push(doc);
    return { version: doc.version, applied: 1, failed: [], skipped: 0 };
  }
}

describe('security groups on the wire: the cloud', () => {
  let store: Store;
  let A: string;
  let B: string;
  let image: RegisteredImage;
  let cluster: FirewallCluster;
  let directory: ComputeDirectory;
  let call: (account: string, action: string, input?: object) => Promise<any>;
  const launch = async (account: string, input: object = {}) => (await call(account, 'RunInstances', {
    ImageId: image.imageId, MinCount: 1, MaxCount: 1, Placement: { AvailabilityZone: ZONE }, ...input,
  })).Instances[0] as { InstanceId: string; PrivateIpAddress: string };
  const groupId = async (account: string, name: string) => (await call(account, 'DescribeSecurityGroups', { GroupNames: [name] })).SecurityGroups[0].GroupId as string;
  const vpcOf = async (account: string) => (await store.db.selectFrom('vpcs').select('id').where('account_id', '=', account).executeTakeFirstOrThrow()).id;

  beforeEach(async () => {
    store = await openStore({ url: ':memory:' });
    await ensureZone(store, { name: ZONE, cidr: '10.1.0.0/16', region: REGION });
    await seedVmTypes(store.db);
    A = (await createAccountWithDefaults(store, 'alpha')).account.id;
    B = (await createAccountWithDefaults(store, 'beta')).account.id;
    image = await registerImageFiles(store, {
      name: 'ironbark-default', description: 'default guest', ownerAccountId: A, public: true, kernelCmdline: 'console=ttyS0',
      kernel: { path: '/img/vmlinuz', sha256: sha('k'), sizeBytes: 10 },
      rootfs: { path: '/img/rootfs.img', sha256: sha('root'), sizeBytes: 30, format: 'raw' },
    });
    cluster = new FirewallCluster(ZONE, { autoProgress: true });
    directory = new ComputeDirectory();
    directory.register(cluster);
    const ops = { ...instanceOperations({ directory, imageUrl: (id) => `http://cluster/images/${id}`, statusInitializingMs: 0, log: quiet }), ...securityGroupOperations };
    call = (account, action, input = {}) => callOperation(contextFor(store, account), ops, action, input);
  });
  afterEach(async () => store.close());

  it('computes the zone\'s document: every instance with its address, VPC and groups, and the IPv4 rules of those groups', async () => {
    const web = (await call(A, 'CreateSecurityGroup', { GroupName: 'web', Description: 'web' })).GroupId as string;
    const admin = (await call(A, 'CreateSecurityGroup', { GroupName: 'admin', Description: 'admin' })).GroupId as string;
    await call(A, 'AuthorizeSecurityGroupIngress', { GroupId: web, IpPermissions: [
      { IpProtocol: 'tcp', FromPort: 22, ToPort: 22, UserIdGroupPairs: [{ GroupId: admin }] },
      { IpProtocol: 'icmp', FromPort: 8, ToPort: -1, IpRanges: [{ CidrIp: '10.0.0.0/8' }] },
      { IpProtocol: 'tcp', FromPort: 443, ToPort: 443, Ipv6Ranges: [{ CidrIpv6: '::/0' }] },
    ] });
    await call(A, 'RevokeSecurityGroupEgress', { GroupId: admin, IpPermissions: [{ IpProtocol: '-1', IpRanges: [{ CidrIp: '0.0.0.0/0' }] }] });
    const w = await launch(A, { SecurityGroupIds: [web] });
    const a = await launch(A, { SecurityGroupIds: [admin, web] });
    const b = await launch(B);
    const defaultA = await groupId(A, 'default');
    const defaultB = await groupId(B, 'default');

    const doc = await buildFirewallDocument(store.db, ZONE);
    assert.equal(doc.zone, ZONE);
    assert.deepEqual(doc.instances, [
      { id: w.InstanceId, ip: w.PrivateIpAddress, vpcId: await vpcOf(A), groups: [web] },
      { id: a.InstanceId, ip: a.PrivateIpAddress, vpcId: await vpcOf(A), groups: [admin, web].sort() },
      { id: b.InstanceId, ip: b.PrivateIpAddress, vpcId: await vpcOf(B), groups: [defaultB] },
    ].sort((x, y) => (x.id < y.id ? -1 : 1)));
    assert.notEqual(a.PrivateIpAddress, b.PrivateIpAddress, 'one zone range, unique addresses across accounts');
    const byId = new Map(doc.groups.map((g) => [g.id, g]));
    assert.deepEqual([...byId.keys()].sort(), [web, admin, defaultB].sort(), 'only groups the instances name');
    assert.deepEqual(byId.get(web), {
      id: web, vpcId: await vpcOf(A),
      ingress: [
        { protocol: 'icmp', fromPort: 8, toPort: -1, cidr: '10.0.0.0/8' },
        { protocol: 'tcp', fromPort: 22, toPort: 22, group: admin },
      ], // the IPv6 rule has nothing to match on an IPv4 network
      egress: [{ protocol: '-1', cidr: '0.0.0.0/0' }],
    });
    assert.deepEqual(byId.get(admin)!.egress, [], 'egress revoked');
    assert.deepEqual(byId.get(defaultB)!.ingress, [{ protocol: '-1', group: defaultB }], 'the default group lets its own members in');
    assert.equal(defaultA.startsWith('sg-'), true);

    assert.equal((await buildFirewallDocument(store.db, ZONE)).version, doc.version, 'same store, same version');
    await call(A, 'TerminateInstances', { InstanceIds: [w.InstanceId] });
    await store.db.updateTable('instances').set({ state: 'terminated', private_ip: null }).where('id', '=', w.InstanceId).execute();
    const after = await buildFirewallDocument(store.db, ZONE);
    assert.notEqual(after.version, doc.version);
    assert.deepEqual(after.instances.map((i) => i.id).sort(), [a.InstanceId, b.InstanceId].sort(), 'a terminated instance is nobody\'s member');
  });

  it('maps stored rules to what nodes match', () => {
    const row = { group_id: 'sg-1', is_egress: 0, from_port: null, to_port: null, cidr_ipv4: null, referenced_group_id: null };
    assert.deepEqual(firewallRuleFromRow({ ...row, ip_protocol: '-1', cidr_ipv4: '0.0.0.0/0' }), { protocol: '-1', cidr: '0.0.0.0/0' });
    assert.deepEqual(firewallRuleFromRow({ ...row, ip_protocol: 'udp', from_port: 53, to_port: 53, referenced_group_id: 'sg-2' }), { protocol: 'udp', fromPort: 53, toPort: 53, group: 'sg-2' });
    assert.deepEqual(firewallRuleFromRow({ ...row, ip_protocol: '47', cidr_ipv4: '10.0.0.0/8' }), { protocol: '47', cidr: '10.0.0.0/8' });
    assert.equal(firewallRuleFromRow({ ...row, ip_protocol: 'icmpv6', cidr_ipv4: '10.0.0.0/8' }), undefined);
    assert.equal(firewallRuleFromRow({ ...row, ip_protocol: 'tcp', from_port: 1, to_port: 2 }), undefined, 'an IPv6 or prefix-list peer');
  });

  it('ModifyInstanceAttribute GroupId replaces a running instance\'s groups, checked as EC2 does', async () => {
    const web = (await call(A, 'CreateSecurityGroup', { GroupName: 'web', Description: 'web' })).GroupId as string;
    const i = await launch(A);
    await store.db.updateTable('instances').set({ state: 'running' }).where('id', '=', i.InstanceId).execute();
    const defaultA = await groupId(A, 'default');

    await call(A, 'ModifyInstanceAttribute', { InstanceId: i.InstanceId, Groups: [web, defaultA] });
    const attr = await call(A, 'DescribeInstanceAttribute', { InstanceId: i.InstanceId, Attribute: 'groupSet' });
    assert.deepEqual(attr.Groups, [{ GroupId: web, GroupName: 'web' }, { GroupId: defaultA, GroupName: 'default' }]);
    const doc = await buildFirewallDocument(store.db, ZONE);
    assert.deepEqual(doc.instances[0]!.groups, [web, defaultA].sort());

    // The Attribute=groupSet&Value= form names one group.
    await call(A, 'ModifyInstanceAttribute', { InstanceId: i.InstanceId, Attribute: 'groupSet', Value: web });
    assert.deepEqual((await call(A, 'DescribeInstanceAttribute', { InstanceId: i.InstanceId, Attribute: 'groupSet' })).Groups, [{ GroupId: web, GroupName: 'web' }]);

    await expectEc2Error(call(A, 'ModifyInstanceAttribute', { InstanceId: i.InstanceId, Groups: ['sg-0123456789abcdef0'] }), 'InvalidGroup.NotFound');
    await expectEc2Error(call(A, 'ModifyInstanceAttribute', { InstanceId: i.InstanceId, Groups: [await groupId(B, 'default')] }), 'InvalidGroup.NotFound');
    await expectEc2Error(call(A, 'ModifyInstanceAttribute', { InstanceId: i.InstanceId, Groups: ['sg-123'] }), 'InvalidGroupId.Malformed');
    const six = [];
    for (let n = 0; n < 6; n++) six.push((await call(A, 'CreateSecurityGroup', { GroupName: `g${n}`, Description: 'g' })).GroupId);
    await expectEc2Error(call(A, 'ModifyInstanceAttribute', { InstanceId: i.InstanceId, Groups: six }), 'SecurityGroupsPerInstanceLimitExceeded');
    assert.deepEqual((await call(A, 'DescribeInstanceAttribute', { InstanceId: i.InstanceId, Attribute: 'groupSet' })).Groups, [{ GroupId: web, GroupName: 'web' }], 'unchanged by refused calls');
    await expectEc2Error(call(B, 'ModifyInstanceAttribute', { InstanceId: i.InstanceId, Groups: [await groupId(B, 'default')] }), 'InvalidInstanceID.NotFound');
    // A group in use by an instance cannot be deleted; after the change the old one can.
    await call(A, 'ModifyInstanceAttribute', { InstanceId: i.InstanceId, Groups: [defaultA] });
    await call(A, 'DeleteSecurityGroup', { GroupId: web });
  });

  it('pushes the document on change, again every refresh period, and again soon after a failure', async () => {
    let now = 1_000_000;
    const log = { infos: 0, warns: 0, info() { this.infos++; }, warn() { this.warns++; } };
    const sync = new FirewallSync({ store, directory, log, refreshMs: 30_000, retryMs: 5000, now: () => now });
    await sync.syncOnce();
    assert.equal(cluster.documents.length, 1, 'the first pass pushes');
    assert.deepEqual(cluster.documents[0]!.instances, []);

    await sync.syncOnce();
    assert.equal(cluster.documents.length, 1, 'nothing changed: nothing sent');

    const web = (await call(A, 'CreateSecurityGroup', { GroupName: 'web', Description: 'web' })).GroupId as string;
    const i = await launch(A, { SecurityGroupIds: [web] });
    await sync.syncOnce();
    assert.equal(cluster.documents.length, 2, 'a launch changes membership');
    assert.deepEqual(cluster.documents[1]!.instances.map((x) => x.id), [i.InstanceId]);

    await call(A, 'AuthorizeSecurityGroupIngress', { GroupId: web, IpPermissions: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }] });
    await sync.syncOnce();
    assert.equal(cluster.documents.length, 3, 'a rule change');
    assert.deepEqual(cluster.documents[2]!.groups[0]!.ingress, [{ protocol: 'tcp', fromPort: 22, toPort: 22, cidr: '0.0.0.0/0' }]);
    assert.equal(sync.deliveredVersion(ZONE), cluster.documents[2]!.version);

    now += 31_000;
    await sync.syncOnce();
    assert.equal(cluster.documents.length, 4, 'the refresh sends the same document again');
    assert.equal(cluster.documents[3]!.version, cluster.documents[2]!.version);

    await call(A, 'RevokeSecurityGroupIngress', { GroupId: web, IpPermissions: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }] });
    cluster.failNext = 1;
    await sync.syncOnce();
    assert.equal(cluster.documents.length, 4);
    assert.equal(log.warns, 1, 'the failure is logged');
    await sync.syncOnce();
    assert.equal(cluster.documents.length, 4, 'not asked again at once');
    now += 5000;
    await sync.syncOnce();
    assert.equal(cluster.documents.length, 5, 'tried again after the retry delay');
    assert.deepEqual(cluster.documents[4]!.groups[0]!.ingress, []);
  });

  it('a running FirewallSync delivers a change within a few passes, and poke() runs one at once', async () => {
    const sync = new FirewallSync({ store, directory, log: quiet, intervalMs: 50 });
    sync.start();
    try {
      const waitForDocuments = async (n: number) => {
        const deadline = Date.now() + 30_000;
        while (cluster.documents.length < n) {
          if (Date.now() > deadline) assert.fail(`only ${cluster.documents.length} documents were pushed, not ${n}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      await waitForDocuments(1);
      await launch(A);
      sync.poke();
      await waitForDocuments(2);
      assert.equal(cluster.documents[1]!.instances.length, 1);
    } finally {
      await sync.stop();
    }
  });
});

describe('security groups on the wire: the cluster', () => {
  it('passes the document to every node that is up, and skips those that are down', async () => {
    const nodes: NodeAgent[] = [];
    const seen: string[] = [];
    const cluster = new ClusterController({ zone: ZONE, cidr: '10.1.0.0/16', policy: 'round-robin', pollIntervalMs: 0 });
    try {
      for (const name of ['n1', 'n2']) {
        const agent = new NodeAgent({ nodeId: name, stateDir: `/nonexistent/${name}`, driver: new FakeDriver(), imageCache: new ImageCache('/nonexistent/images'),
          capacity: { cores: 4, memoryMiB: 4096, diskGiB: 100 } });
        nodes.push(agent);
        const client: NodeApi = Object.assign(Object.create(agent), {
          applyFirewall: async (doc: FirewallDocument) => { seen.push(`${name}:${doc.version}`); return agent.applyFirewall(doc); },
        });
        await cluster.addNode(name, { name, address: 'local', client });
      }
      cluster.registry.markDown('n2', 'test');
      const doc: FirewallDocument = { zone: ZONE, version: 'abc123', groups: [], instances: [] };
      const result = await cluster.applyFirewall(doc);
      assert.deepEqual(result, { version: 'abc123', applied: 1, failed: [], skipped: 1 });
      assert.deepEqual(seen, ['n1:abc123']);
    } finally {
      await cluster.close();
    }
  });
});
