// A launch or start that does not fit answers the tenant in EC2's words (instance type and zone),
// never with the scheduler's insides (node names, free cores); the operator still finds why in the
// cluster's node list (each node's last placement reason) and log. Issue 8, item 7.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DescribeInstancesCommand, RunInstancesCommand, StartInstancesCommand, StopInstancesCommand, type EC2Client } from '@aws-sdk/client-ec2';
import { startInProcessCloud, ec2Client, type TestCloud } from '../helpers/cloud.ts';
import { registerImageFiles } from '../../src/cloud/images/images.ts';
import { ClusterController } from '../../src/cluster/cluster-controller.ts';
import { NodeAgent } from '../../src/node/node-agent.ts';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { ImageCache } from '../../src/node/image-cache.ts';

const ZONE = 'ironbark-1a';
const EC2_WORDS = /^We currently do not have sufficient (\S+ )?capacity in the Availability Zone you requested \(ironbark-1a\)\. Our system will be working on provisioning additional capacity\./;

async function failure(p: Promise<unknown>): Promise<{ name: string; message: string }> {
  try { await p; } catch (e) { return { name: (e as Error).name, message: (e as Error).message }; }
  return { name: 'no error', message: '' };
}

describe('capacity errors seen by tenants', () => {
  let cloud: TestCloud;
  let ec2: EC2Client;
  let cluster: ClusterController;
  let root: string;
  let imageId: string;
  const logged: string[] = [];
  const agents: NodeAgent[] = [];

  /** Waits (bounded) until the cloud shows the instance in `state`, as the reconciler moves it along. */
  async function untilState(id: string, state: string): Promise<void> {
    for (let i = 0; i < 500; i++) {
      await cluster.pollOnce();
      const out = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
      if (out.Reservations?.[0]?.Instances?.[0]?.State?.Name === state) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`${id} did not become ${state}`);
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ironbark-capacity-'));
    cloud = await startInProcessCloud();
    const record = (level: string) => (fields: object, msg?: string) => { logged.push(`${level} ${msg ?? ''} ${JSON.stringify(fields)}`); };
    const log = { info: record('info'), warn: record('warn'), error: record('error'), debug: () => {}, isLevelEnabled: () => true };
    cluster = new ClusterController({ zone: ZONE, cidr: '10.1.0.0/16', policy: 'round-robin', pollIntervalMs: 0, log: log as never });
    for (const name of ['alpha', 'beta']) {
      const agent = new NodeAgent({
        nodeId: `node-${name}`, stateDir: join(root, name), driver: new FakeDriver(), imageCache: new ImageCache(join(root, name, 'images')),
        capacity: { cores: 1, memoryMiB: 4096, diskGiB: 100 },
      });
      agents.push(agent);
      await cluster.addNode(`node-${name}`, { name: `host-${name}`, address: 'local', client: agent });
    }
    cloud.cloud!.directory.register(cluster);
    // Real (small) files: the nodes fetch them into their image caches before they run an instance.
    const file = async (name: string, bytes: number) => {
      const data = randomBytes(bytes);
      const path = join(root, name);
      await writeFile(path, data);
      return { path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes };
    };
    imageId = (await registerImageFiles(cloud.cloud!.store, {
      name: 'guest', ownerAccountId: cloud.accountId, public: true, kernelCmdline: 'console=ttyS0',
      kernel: await file('vmlinuz', 1024), rootfs: { ...await file('rootfs.img', 8192), format: 'raw' },
    })).imageId;
    ec2 = ec2Client(cloud, cloud);
  });
  after(async () => {
    // Nodes finish what they were doing (image fetches) before their directories go.
    for (const agent of agents) for (const s of await agent.describeInstances()) await agent.settled(s.instanceId);
    await cluster.close();
    await cloud.stop();
    await rm(root, { recursive: true, force: true });
  });

  it('RunInstances beyond the zone answers EC2\'s message; the node list keeps the reasons', async () => {
    const err = await failure(ec2.send(new RunInstancesCommand({
      ImageId: imageId, MinCount: 1, MaxCount: 1, InstanceType: 't2.medium', Placement: { AvailabilityZone: ZONE },
    })));
    assert.equal(err.name, 'InsufficientInstanceCapacity');
    assert.match(err.message, EC2_WORDS);
    assert.match(err.message, /t2\.medium capacity/);
    for (const inside of ['host-alpha', 'host-beta', 'node-alpha', 'node-beta', 'free', 'cores']) assert.ok(!err.message.includes(inside), `"${inside}" in: ${err.message}`);

    const nodes = await cluster.describeNodes();
    assert.deepEqual(nodes.map((n) => n.name).sort(), ['host-alpha', 'host-beta']);
    for (const n of nodes) assert.match(n.lastPlacementReason ?? '', /skipped it for i-[0-9a-f]+: needs 2 cores, 1 free/);
    assert.ok(logged.some((l) => l.startsWith('warn') && /cannot place i-[0-9a-f]+ \(t2\.medium\).*host-alpha: needs 2 cores, 1 free/.test(l)),
      `the operator's log has the reasons:\n${logged.join('\n')}`);
  });

  it('a stopped instance that no longer fits its node is refused a start in the same words', async () => {
    const out = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, InstanceType: 't2.micro', Placement: { AvailabilityZone: ZONE } }));
    const id = out.Instances![0]!.InstanceId!;
    const node = cluster.nodeOf(id)!;
    await untilState(id, 'running');
    await ec2.send(new StopInstancesCommand({ InstanceIds: [id] }));
    await untilState(id, 'stopped');
    // A stopped instance holds no cores: while it is stopped, other launches take both nodes' only core.
    await cluster.pollOnce();
    const other = await ec2.send(new RunInstancesCommand({ ImageId: imageId, MinCount: 2, MaxCount: 2, InstanceType: 't2.micro', Placement: { AvailabilityZone: ZONE } }))
      .then((o) => o.Instances!.map((x) => x.InstanceId!), () => [] as string[]);
    assert.equal(other.length, 2, 'both nodes took one more instance');
    // The cloud records the start and leaves the retries to its reconciler (which only logs a
    // refusal); what the cluster answers it is what any later path to the tenant would carry.
    const started = await ec2.send(new StartInstancesCommand({ InstanceIds: [id] }));
    assert.equal(started.StartingInstances?.[0]?.CurrentState?.Name, 'pending');
    const err = await failure(cluster.startInstance(id, { vmType: { name: 't2.micro', cores: 1, memoryMiB: 1024, diskGiB: 10 } }));
    assert.equal(err.name, 'Ec2Error');
    assert.equal((await cluster.startInstance(id).catch((e: { code: string }) => e))?.code, 'InsufficientInstanceCapacity');
    assert.match(err.message, EC2_WORDS);
    assert.ok(!err.message.includes(node) && !/host-|free|cores/.test(err.message), err.message);
    assert.ok(logged.some((l) => l.startsWith('warn') && l.includes('no room to start the instance on its node') && l.includes(id)));
  });
});
