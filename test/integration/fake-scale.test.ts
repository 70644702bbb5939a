// `ironbark up --driver fake --nodes 50` as a process: fifty simulated nodes of two cores each
// behind one cluster controller, driven through the AWS SDK. Where each instance landed is read
// from the nodes' own state directories (one record file per instance a node holds).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { DescribeImagesCommand, DescribeInstancesCommand, RunInstancesCommand, type EC2Client, type Instance } from '@aws-sdk/client-ec2';
import { ec2Client, startCloudProcess } from '../helpers/cloud.ts';
import { AdminClient, resolveAdminConfig } from '../../src/cli/admin-client.ts';

const NODES = 50;
const CORES_PER_NODE = 2;

describe('many simulated nodes in one ironbark up', { timeout: 180_000 }, () => {
  let cloud: Awaited<ReturnType<typeof startCloudProcess>>;
  let ec2: EC2Client;
  let imageId: string;

  before(async () => {
    cloud = await startCloudProcess(['--driver', 'fake', '--nodes', String(NODES), '--node-cores', String(CORES_PER_NODE)]);
    ec2 = ec2Client(cloud, cloud);
    // The default quota (20) is far below what fifty nodes hold.
    await new AdminClient(resolveAdminConfig({ dataDir: cloud.dataDir })).request('PUT', '/accounts/admin/quotas', { body: { 'max-instances': 1000 } });
    const images = await ec2.send(new DescribeImagesCommand({ Filters: [{ Name: 'image-type', Values: ['machine'] }] }));
    imageId = images.Images![0]!.ImageId!;
  });
  after(async () => { await cloud?.stop(); });

  /** Instance ids each node holds, by node state directory. */
  function instancesByNode(): Map<string, string[]> {
    const nodeDir = join(cloud.dataDir, 'node');
    const dirs = [['node-local', nodeDir], ...readdirSync(join(nodeDir, 'sim')).map((id) => [id, join(nodeDir, 'sim', id)])];
    const out = new Map<string, string[]>();
    for (const [id, dir] of dirs) {
      const records = join(dir!, 'instances');
      out.set(id!, existsSync(records) ? readdirSync(records).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)) : []);
    }
    return out;
  }

  async function allInstances(): Promise<Instance[]> {
    const out = await ec2.send(new DescribeInstancesCommand({}));
    return (out.Reservations ?? []).flatMap((r) => r.Instances ?? []);
  }

  async function waitUntilRunning(ids: string[]): Promise<Instance[]> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const wanted = new Set(ids);
      const seen = (await allInstances()).filter((i) => wanted.has(i.InstanceId!));
      if (seen.length === ids.length && seen.every((i) => i.State?.Name === 'running')) return seen;
      if (Date.now() > deadline) {
        throw new Error(`not all running: ${JSON.stringify(seen.map((i) => [i.InstanceId, i.State?.Name]))}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  it('starts every simulated node with its own state directory', () => {
    const nodes = instancesByNode();
    assert.equal(nodes.size, NODES);
    assert.ok(nodes.has('node-local'));
    assert.ok(nodes.has('node-sim-0050'));
  });

  it('places 60 m1.small across the nodes, never more than a node holds, and runs them', async () => {
    const run = await ec2.send(new RunInstancesCommand({ ImageId: imageId, InstanceType: 'm1.small', MinCount: 60, MaxCount: 60 }));
    const ids = run.Instances!.map((i) => i.InstanceId!);
    assert.equal(ids.length, 60);
    assert.equal(new Set(run.Instances!.map((i) => i.PrivateIpAddress)).size, 60);

    const running = await waitUntilRunning(ids);
    assert.equal(running.length, 60);

    const byNode = instancesByNode();
    const placed = [...byNode.values()].flat();
    assert.deepEqual([...placed].sort(), [...ids].sort(), 'every instance is held by exactly one node');
    const used = [...byNode.values()].filter((l) => l.length > 0);
    assert.ok(used.length >= 30, `60 one-core instances on two-core nodes need at least 30 nodes, used ${used.length}`);
    for (const [node, list] of byNode) assert.ok(list.length <= CORES_PER_NODE, `${node} holds ${list.length} one-core instances`);
  });

  it('refuses a launch beyond the zone\'s capacity with InsufficientInstanceCapacity and leaves nothing behind', async () => {
    const before = (await allInstances()).map((i) => i.InstanceId!).sort();
    const free = NODES * CORES_PER_NODE - before.length; // 40 cores left
    await assert.rejects(
      ec2.send(new RunInstancesCommand({ ImageId: imageId, InstanceType: 'm1.small', MinCount: free + 1, MaxCount: free + 1 })),
      (e: Error) => e.name === 'InsufficientInstanceCapacity',
    );
    assert.deepEqual((await allInstances()).map((i) => i.InstanceId!).sort(), before, 'no instance row is left of the refused launch');
    assert.deepEqual([...instancesByNode().values()].flat().sort(), before, 'no node holds an instance of the refused launch');

    // The capacity that was tried is still all there: exactly what is left fits.
    const rest = await ec2.send(new RunInstancesCommand({ ImageId: imageId, InstanceType: 'm1.small', MinCount: free, MaxCount: free }));
    assert.equal(rest.Instances!.length, free);
    await waitUntilRunning(rest.Instances!.map((i) => i.InstanceId!));
    for (const [node, list] of instancesByNode()) assert.equal(list.length, CORES_PER_NODE, `${node} is full`);
  });

  it('shows the in-process cluster and every simulated node, full, through the admin API', async () => {
    const admin = new AdminClient(resolveAdminConfig({ dataDir: cloud.dataDir }));
    const { clusters } = await admin.request<{ clusters: { zone: string; url: string; cidr: string | null }[] }>('GET', '/clusters');
    assert.equal(clusters.length, 1);
    assert.equal(clusters[0]!.url, 'in-process');
    assert.ok(clusters[0]!.cidr, 'the zone\'s network is shown');
    const { nodes } = await admin.request<{ nodes: { id: string; state: string; instanceCount: number; free: { cores: number } | null; policy: string | null }[] }>(
      'GET', `/clusters/${encodeURIComponent(clusters[0]!.zone)}/nodes`);
    assert.equal(nodes.length, NODES);
    const held = instancesByNode();
    for (const node of nodes) {
      assert.equal(node.state, 'up');
      assert.equal(node.instanceCount, held.get(node.id)?.length, `${node.id} as its state directory says`);
      assert.equal(node.free?.cores, 0);
      assert.equal(node.policy, 'round-robin', 'the default policy of up, as Eucalyptus\' ROUNDROBIN');
    }
  });
});
