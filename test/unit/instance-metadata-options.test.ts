// MetadataOptions at RunInstances and ModifyInstanceMetadataOptions, through a real cluster
// controller and node agent (fake driver): DescribeInstances reports them, the node's metadata
// service sees them at once (also for a stopped instance, and after its start), and bad values are
// refused with EC2's errors leaving the instance as it was.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '../../src/store/store.ts';
import { createAccountWithDefaults, ensureZone } from '../../src/cloud/provision.ts';
import { seedVmTypes } from '../../src/cloud/vm-types.ts';
import { registerImageFiles } from '../../src/cloud/images/images.ts';
import { allOperations } from '../../src/cloud/operations.ts';
import { ComputeDirectory } from '../../src/cloud/compute-directory.ts';
import { InstanceReconciler } from '../../src/cloud/instance-reconciler.ts';
import { ClusterController } from '../../src/cluster/cluster-controller.ts';
import { NodeAgent } from '../../src/node/node-agent.ts';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { ImageCache } from '../../src/node/image-cache.ts';
import { REGION, callOperation, contextFor, expectEc2Error } from '../helpers/handler-context.ts';

const ZONE = 'ironbark-1a';
const quiet = { info() {}, warn() {}, error() {} };

describe('instance metadata options', () => {
  let root = '';
  let store: Store;
  let agent: NodeAgent;
  let account = '';
  let imageId = '';
  const directory = new ComputeDirectory();
  const cluster = new ClusterController({ zone: ZONE, cidr: '10.1.0.0/16', policy: 'round-robin', pollIntervalMs: 0 });
  const call = (action: string, input: object = {}) => callOperation(contextFor(store, account), allOperations({ directory, log: quiet }), action, input);

  async function waitFor<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const v = await probe();
      if (v !== undefined) return v;
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const describeOne = async (id: string) => (await call('DescribeInstances', { InstanceIds: [id] })).Reservations[0].Instances[0];
  const ipOf = async (id: string) => (await describeOne(id)).PrivateIpAddress as string;
  // The reconciler moves rows to what the cluster reports (pending -> running, stopping -> stopped).
  const state = async (id: string) => {
    await cluster.pollOnce();
    await new InstanceReconciler({ store, directory, log: quiet }).reconcileOnce();
    return (await describeOne(id)).State.Name as string;
  };

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ib-mdopts-'));
    store = await openStore({ url: ':memory:' });
    await ensureZone(store, { name: ZONE, cidr: '10.1.0.0/16', region: REGION });
    await seedVmTypes(store.db);
    account = (await createAccountWithDefaults(store, 'alpha')).account.id;
    const file = async (name: string, bytes: number) => {
      const data = randomBytes(bytes);
      const path = join(root, name);
      await writeFile(path, data);
      return { path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes };
    };
    imageId = (await registerImageFiles(store, {
      name: 'guest', ownerAccountId: account, public: false, kernelCmdline: 'console=ttyS0',
      kernel: await file('vmlinuz', 1024), rootfs: { ...await file('rootfs.img', 8192), format: 'raw' },
    })).imageId;
    agent = new NodeAgent({
      nodeId: 'node-a', stateDir: join(root, 'node'), driver: new FakeDriver(), imageCache: new ImageCache(join(root, 'node', 'images')),
      capacity: { cores: 8, memoryMiB: 8192, diskGiB: 100 },
    });
    await cluster.addNode('node-a', { name: 'a', address: 'local', client: agent });
    directory.register(cluster);
  });
  after(async () => {
    // Launches finish in the background: let the node settle before its directory goes.
    for (const { instanceId } of await agent.describeInstances()) await agent.settled(instanceId);
    await cluster.close();
    await store.close();
    await rm(root, { recursive: true, force: true, maxRetries: 5 });
  });

  it('EC2 defaults when RunInstances gives none', async () => {
    const run = await call('RunInstances', { ImageId: imageId, MinCount: 1, MaxCount: 1 });
    const id = run.Instances[0].InstanceId as string;
    assert.deepEqual(run.Instances[0].MetadataOptions, {
      State: 'applied', HttpTokens: 'optional', HttpPutResponseHopLimit: 1, HttpEndpoint: 'enabled', HttpProtocolIpv6: 'disabled', InstanceMetadataTags: 'disabled',
    });
    const ip = await ipOf(id);
    const seen = await waitFor('the node to hold the instance', async () => agent.lookupMetadata(ip));
    assert.deepEqual([seen.httpTokens, seen.httpPutResponseHopLimit, seen.httpEndpoint], ['optional', 1, 'enabled']);
  });

  it('RunInstances MetadataOptions reach the node and DescribeInstances; the filters find them', async () => {
    const run = await call('RunInstances', {
      ImageId: imageId, MinCount: 1, MaxCount: 1, MetadataOptions: { HttpTokens: 'required', HttpPutResponseHopLimit: 2 },
    });
    const id = run.Instances[0].InstanceId as string;
    const shown = (await describeOne(id)).MetadataOptions;
    assert.equal(shown.HttpTokens, 'required');
    assert.equal(shown.HttpPutResponseHopLimit, 2);
    assert.equal(shown.HttpEndpoint, 'enabled');
    const ip = await ipOf(id);
    const seen = await waitFor('the node to hold the instance', async () => agent.lookupMetadata(ip));
    assert.deepEqual([seen.httpTokens, seen.httpPutResponseHopLimit], ['required', 2]);
    const found = await call('DescribeInstances', { Filters: [{ Name: 'metadata-options.http-tokens', Values: ['required'] }] });
    assert.deepEqual(found.Reservations.flatMap((r: any) => r.Instances.map((i: any) => i.InstanceId)), [id]);
  });

  it('ModifyInstanceMetadataOptions changes a running instance at once, keeping what it does not name', async () => {
    const run = await call('RunInstances', { ImageId: imageId, MinCount: 1, MaxCount: 1, MetadataOptions: { HttpPutResponseHopLimit: 3 } });
    const id = run.Instances[0].InstanceId as string;
    await waitFor('running', async () => ((await state(id)) === 'running' ? true : undefined));
    const ip = await ipOf(id);
    const answer = await call('ModifyInstanceMetadataOptions', { InstanceId: id, HttpTokens: 'required' });
    assert.equal(answer.InstanceId, id);
    assert.equal(answer.InstanceMetadataOptions.HttpTokens, 'required');
    assert.equal(answer.InstanceMetadataOptions.HttpPutResponseHopLimit, 3, 'the hop limit it did not name is kept');
    assert.equal(agent.lookupMetadata(ip)?.httpTokens, 'required', 'the metadata service sees it without a restart');
    assert.equal((await describeOne(id)).MetadataOptions.HttpTokens, 'required');

    await call('ModifyInstanceMetadataOptions', { InstanceId: id, HttpEndpoint: 'disabled', HttpTokens: 'optional' });
    assert.equal(agent.lookupMetadata(ip)?.httpEndpoint, 'disabled');
    assert.equal(agent.lookupMetadata(ip)?.httpTokens, 'optional');

    // Stopped: kept with the instance on its node, and in force again after the start.
    await call('StopInstances', { InstanceIds: [id] });
    await waitFor('stopped', async () => ((await state(id)) === 'stopped' ? true : undefined));
    await call('ModifyInstanceMetadataOptions', { InstanceId: id, HttpEndpoint: 'enabled', HttpPutResponseHopLimit: 5 });
    await call('StartInstances', { InstanceIds: [id] });
    await waitFor('running again', async () => ((await state(id)) === 'running' ? true : undefined));
    const after = await waitFor('metadata after start', async () => agent.lookupMetadata(ip));
    assert.deepEqual([after.httpEndpoint, after.httpPutResponseHopLimit, after.httpTokens], ['enabled', 5, 'optional']);
  });

  it('refuses bad values with EC2 errors and changes nothing', async () => {
    const run = await call('RunInstances', { ImageId: imageId, MinCount: 1, MaxCount: 1 });
    const id = run.Instances[0].InstanceId as string;
    await expectEc2Error(call('ModifyInstanceMetadataOptions', { InstanceId: id, HttpPutResponseHopLimit: 65 }), 'InvalidParameterValue');
    await expectEc2Error(call('ModifyInstanceMetadataOptions', { InstanceId: id, HttpTokens: 'always' }), 'InvalidParameterValue');
    await expectEc2Error(call('ModifyInstanceMetadataOptions', { InstanceId: id, HttpEndpoint: 'off' }), 'InvalidParameterValue');
    await expectEc2Error(call('ModifyInstanceMetadataOptions', { InstanceId: 'i-0123456789abcdef0', HttpTokens: 'required' }), 'InvalidInstanceID.NotFound');
    await expectEc2Error(call('ModifyInstanceMetadataOptions', { InstanceId: 'i-nope', HttpTokens: 'required' }), 'InvalidInstanceID.Malformed');
    await expectEc2Error(call('RunInstances', { ImageId: imageId, MinCount: 1, MaxCount: 1, MetadataOptions: { HttpPutResponseHopLimit: 0 } }), 'InvalidParameterValue');
    assert.equal((await describeOne(id)).MetadataOptions.HttpTokens, 'optional');
    assert.equal((await describeOne(id)).MetadataOptions.HttpPutResponseHopLimit, 1);
  });
});
