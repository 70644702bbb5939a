// NodeAgent over the fake hypervisor: launch, stop/start, reboot, terminate, failures and restarts,
// with real image files fetched through the checksum-verifying cache.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { ImageCache } from '../../src/node/image-cache.ts';
import { NodeAgent } from '../../src/node/node-agent.ts';
import type { ImageRef, InstanceSpec, VmTypeSpec } from '../../src/node/node-api.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';

let root = '';
let kernel: ImageRef;
let rootImage: ImageRef;

async function imageFile(id: string, bytes: number, format: ImageRef['format']): Promise<ImageRef> {
  const data = randomBytes(bytes);
  const path = join(root, 'images-src', `${id}.img`);
  await writeFile(path, data);
  return { id, url: path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes, format };
}

const SMALL: VmTypeSpec = { name: 't.small', cores: 1, memoryMiB: 512, diskGiB: 5 };
let counter = 0;

function spec(overrides: Partial<InstanceSpec> = {}): InstanceSpec {
  counter++;
  const hex = counter.toString(16).padStart(17, '0');
  return {
    instanceId: `i-${hex}`,
    reservationId: 'r-0000000000000000a',
    accountId: '111122223333',
    imageId: rootImage.id,
    kernel,
    root: rootImage,
    kernelCmdline: 'console=ttyS0',
    vmType: SMALL,
    zone: 'test-1a',
    region: 'test-1',
    subnetCidr: '10.9.0.0/16',
    subnetId: 'subnet-0000000000000000a',
    vpcId: 'vpc-0000000000000000a',
    privateIp: `10.9.0.${10 + counter}`,
    privateDnsName: `ip-10-9-0-${10 + counter}.test-1.compute.internal`,
    mac: `d2:0d:00:00:00:${(counter % 256).toString(16).padStart(2, '0')}`,
    userData: Buffer.from('#!/bin/sh\necho hi\n').toString('base64'),
    publicKeys: [{ name: 'k', openssh: 'ssh-ed25519 AAAA test' }],
    securityGroups: [{ id: 'sg-0000000000000000a', name: 'default' }],
    launchIndex: 0,
    launchTime: new Date().toISOString(),
    ...overrides,
  };
}

async function makeAgent(opts: { stateDir?: string; driver?: FakeDriver; cores?: number; stopTimeoutMs?: number } = {}) {
  const stateDir = opts.stateDir ?? (await mkdtemp(join(root, 'node-')));
  const driver = opts.driver ?? new FakeDriver();
  const agent = new NodeAgent({
    nodeId: 'n1', stateDir, driver,
    imageCache: new ImageCache(join(stateDir, 'images')),
    capacity: { cores: opts.cores ?? 4, memoryMiB: 4096, diskGiB: 100 },
    stopTimeoutMs: opts.stopTimeoutMs,
  });
  return { agent, driver, stateDir };
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'ib-node-agent-'));
  await mkdir(join(root, 'images-src'));
  kernel = await imageFile('aki-00000001', 4096, 'raw');
  rootImage = await imageFile('ami-00000001', 65536, 'raw');
});

after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('NodeAgent with the fake driver', () => {
  it('launches an instance: pending, then running, once, with its metadata and console', async () => {
    const { agent, driver } = await makeAgent();
    const s = spec();
    const first = await agent.runInstance(s);
    assert.equal(first.state, 'pending');
    assert.equal((await agent.settled(s.instanceId))?.state, 'running');
    const again = await agent.runInstance(s);
    assert.equal(again.state, 'running');
    assert.equal((await driver.list()).length, 1, 'a second runInstance makes no second VM');

    const [status] = await agent.describeInstances();
    assert.equal(status?.instanceId, s.instanceId);
    assert.equal(status?.state, 'running');
    assert.equal(status?.accelerator, 'none');
    assert.match(await agent.consoleOutput(s.instanceId), new RegExp(`ironbark-guest: instance-id=${s.instanceId}`));

    const md = agent.lookupMetadata(s.privateIp);
    assert.equal(md?.instanceId, s.instanceId);
    assert.equal(md?.userData?.toString(), '#!/bin/sh\necho hi\n');
    assert.deepEqual(md?.securityGroups, ['default']);
    assert.equal(md?.kernelId, kernel.id);

    const res = await agent.describeResources();
    assert.deepEqual(res.capacity, { cores: 4, memoryMiB: 4096, diskGiB: 100 });
    assert.deepEqual(res.free, { cores: 3, memoryMiB: 3584, diskGiB: 95 });
    assert.equal(res.instanceCount, 1);
    assert.equal(res.hypervisor, 'fake');
  });

  it('stops (keeping the disk, releasing cores and memory), starts again and reboots', async () => {
    const { agent, driver } = await makeAgent();
    const s = spec();
    await agent.runInstance(s);
    await agent.settled(s.instanceId);
    await assert.rejects(agent.startInstance('i-00000000000000fff'), (e: Ec2Error) => e.code === 'InvalidInstanceID.NotFound');

    assert.equal((await agent.stopInstance(s.instanceId)).state, 'stopping', 'answered once the stop is under way');
    assert.equal((await agent.settled(s.instanceId))?.state, 'stopped');
    assert.equal((await driver.info(s.instanceId))?.state, 'stopped');
    assert.deepEqual((await agent.describeResources()).free, { cores: 4, memoryMiB: 4096, diskGiB: 95 });
    await assert.rejects(agent.rebootInstance(s.instanceId), (e: Ec2Error) => e.code === 'IncorrectInstanceState');
    assert.equal((await agent.stopInstance(s.instanceId)).state, 'stopped', 'stopping a stopped instance is a no-op');

    assert.equal((await agent.startInstance(s.instanceId)).state, 'running');
    assert.equal((await driver.info(s.instanceId))?.state, 'running');
    await agent.rebootInstance(s.instanceId);
    assert.match(await agent.consoleOutput(s.instanceId), /boot 2 complete/);
  });

  it('applies a new VM type and user data given at start, as ModifyInstanceAttribute does while stopped', async () => {
    const { agent, driver } = await makeAgent();
    const s = spec();
    await agent.runInstance(s);
    await agent.settled(s.instanceId);
    await agent.stopInstance(s.instanceId);
    const bigger = { name: 'c1.medium', cores: 2, memoryMiB: 512, diskGiB: 5 };
    const userData = Buffer.from('#!/bin/sh\necho changed\n').toString('base64');
    assert.equal((await agent.startInstance(s.instanceId, { vmType: bigger, userData })).state, 'running');
    assert.equal(agent.lookupMetadata(s.privateIp)?.instanceType, 'c1.medium');
    assert.equal(agent.lookupMetadata(s.privateIp)?.userData?.toString(), '#!/bin/sh\necho changed\n');
    assert.equal((await agent.describeResources()).free.cores, 2, 'the new type holds two cores');
    assert.equal((await driver.info(s.instanceId))?.state, 'running');
    await agent.stopInstance(s.instanceId);
    await agent.startInstance(s.instanceId, { userData: null });
    assert.equal(agent.lookupMetadata(s.privateIp)?.userData, undefined);
  });

  it('terminates: VM, record and metadata gone; terminating again or an unknown id is fine', async () => {
    const { agent, driver, stateDir } = await makeAgent();
    const s = spec();
    await agent.runInstance(s);
    await agent.settled(s.instanceId);
    await agent.terminateInstance(s.instanceId);
    assert.deepEqual(await agent.describeInstances(), []);
    assert.deepEqual(await driver.list(), []);
    assert.equal(agent.lookupMetadata(s.privateIp), undefined);
    assert.deepEqual((await readdir(join(stateDir, 'instances'))).filter((f) => f.endsWith('.json')), []);
    await agent.terminateInstance(s.instanceId);
    await agent.terminateInstance('i-0000000000000dead');
    assert.deepEqual((await agent.describeResources()).free, { cores: 4, memoryMiB: 4096, diskGiB: 100 });
  });

  it('reports a launch whose image fails its checksum as terminated with the reason, holding nothing', async () => {
    const { agent, driver } = await makeAgent();
    const s = spec({ root: { ...rootImage, id: 'ami-0000000b', sha256: 'ab'.repeat(32) } });
    await agent.runInstance(s);
    const status = await agent.settled(s.instanceId);
    assert.equal(status?.state, 'terminated');
    assert.match(status?.reason ?? '', /launch failed: .*SHA-256 mismatch/);
    assert.deepEqual(await driver.list(), []);
    assert.equal(agent.lookupMetadata(s.privateIp), undefined);
    assert.deepEqual((await agent.describeResources()).free, { cores: 4, memoryMiB: 4096, diskGiB: 100 });
    await agent.terminateInstance(s.instanceId);
    assert.deepEqual(await agent.describeInstances(), []);
  });

  it('refuses a launch it has no room for, and a bad spec, with EC2 errors', async () => {
    const { agent } = await makeAgent({ cores: 2 });
    await agent.runInstance(spec());
    await agent.runInstance(spec());
    await assert.rejects(agent.runInstance(spec()), (e: Ec2Error) => e.code === 'InsufficientInstanceCapacity' && /needs 1 cores, 0 free/.test(e.message));
    await assert.rejects(agent.runInstance(spec({ instanceId: '../etc' })), (e: Ec2Error) => e.code === 'InvalidParameterValue');
    assert.equal((await agent.describeInstances()).length, 2);
  });

  it('notices a guest that powered itself off and a VM that crashed', async () => {
    const { agent, driver } = await makeAgent();
    const a = spec();
    const b = spec();
    await agent.runInstance(a);
    await agent.runInstance(b);
    await agent.settled(a.instanceId);
    await agent.settled(b.instanceId);
    driver.simulateGuestPowerOff(a.instanceId);
    driver.simulateCrash(b.instanceId);
    const byId = new Map((await agent.describeInstances()).map((s) => [s.instanceId, s]));
    assert.equal(byId.get(a.instanceId)?.state, 'stopped');
    assert.match(byId.get(a.instanceId)?.reason ?? '', /InstanceInitiatedShutdown/);
    assert.equal(byId.get(b.instanceId)?.state, 'crashed');
    assert.equal((await agent.startInstance(b.instanceId)).state, 'running');
  });

  it('re-adopts its VMs after a restart without duplicating them, and reports lost ones as crashed', async () => {
    const { agent, driver, stateDir } = await makeAgent();
    const kept = spec();
    const lost = spec();
    const stopped = spec();
    for (const s of [kept, lost, stopped]) {
      await agent.runInstance(s);
      await agent.settled(s.instanceId);
    }
    await agent.stopInstance(stopped.instanceId);
    await agent.settled(stopped.instanceId);
    // The agent goes away; meanwhile one VM dies.
    driver.simulateCrash(lost.instanceId);

    const { agent: restarted } = await makeAgent({ stateDir, driver });
    const byId = new Map((await restarted.describeInstances()).map((s) => [s.instanceId, s]));
    assert.equal(byId.size, 3);
    assert.equal(byId.get(kept.instanceId)?.state, 'running');
    assert.equal(byId.get(stopped.instanceId)?.state, 'stopped');
    assert.equal(byId.get(lost.instanceId)?.state, 'crashed');
    assert.match(byId.get(lost.instanceId)?.reason ?? '', /not running when the node controller restarted/);
    assert.equal((await driver.list()).filter((v) => v.state === 'running').length, 1, 'nothing restarted behind the operator');

    assert.equal((await restarted.runInstance(kept)).state, 'running');
    assert.equal((await driver.list()).length, 3, 'runInstance of an adopted instance makes no second VM');
    assert.equal(restarted.lookupMetadata(kept.privateIp)?.instanceId, kept.instanceId);
    assert.equal((await restarted.startInstance(lost.instanceId)).state, 'running');
  });

  it('finishes a terminate that a restart interrupted and destroys VMs no record claims', async () => {
    const { agent, driver, stateDir } = await makeAgent();
    const s = spec();
    await agent.runInstance(s);
    await agent.settled(s.instanceId);
    const record = JSON.parse(await readFile(join(stateDir, 'instances', `${s.instanceId}.json`), 'utf8'));
    await writeFile(join(stateDir, 'instances', `${s.instanceId}.json`), JSON.stringify({ ...record, state: 'shutting-down' }));
    await driver.create({ id: 'i-0000000000000beef', vcpus: 1, memoryMiB: 64, kernelPath: '/k', kernelCmdline: '', diskPath: '/d', macAddress: 'd2:0d:00:00:00:ff', network: { kind: 'none' }, workDir: '/w' });

    const { agent: restarted } = await makeAgent({ stateDir, driver });
    await restarted.recover();
    await restarted.settled(s.instanceId);
    assert.deepEqual(await restarted.describeInstances(), []);
    assert.deepEqual(await driver.list(), []);
    assert.equal(existsSync(join(stateDir, 'instances', `${s.instanceId}.json`)), false);
  });
});

// Issue 8, item 3: StopInstances waited for the guest's shutdown (31.6 s for a guest still booting).
describe('NodeAgent stops in the background', () => {
  /** A guest that takes an hour to power off: one still booting ignores the ACPI request. */
  const slowGuest = () => new FakeDriver({ delays: { stopMs: 3_600_000 } });

  it('answers a stop at once, and ends a guest that ignores the power-down after the stop timeout', { timeout: 60_000 }, async () => {
    const { agent, driver } = await makeAgent({ driver: slowGuest(), stopTimeoutMs: 50 });
    const s = spec();
    await agent.runInstance(s);
    await agent.settled(s.instanceId);
    assert.equal((await agent.stopInstance(s.instanceId)).state, 'stopping');
    assert.equal((await driver.info(s.instanceId))?.state, 'stopping', 'answered while the guest has not powered off');
    assert.equal((await agent.stopInstance(s.instanceId)).state, 'stopping', 'a second stop joins the first');
    assert.equal((await agent.settled(s.instanceId))?.state, 'stopped', 'ended once the stop timeout passed');
    assert.equal((await driver.info(s.instanceId))?.state, 'stopped');
    assert.deepEqual((await agent.describeResources()).free, { cores: 4, memoryMiB: 4096, diskGiB: 95 });
  });

  it('a stop under way holds up neither a forced stop, a terminate nor a refused reboot', { timeout: 60_000 }, async () => {
    const { agent, driver } = await makeAgent({ driver: slowGuest() });
    const [a, b] = [spec(), spec()];
    for (const s of [a, b]) {
      await agent.runInstance(s);
      await agent.settled(s.instanceId);
    }
    assert.equal((await agent.stopInstance(a.instanceId)).state, 'stopping');
    await agent.stopInstance(a.instanceId, true);
    assert.equal((await agent.settled(a.instanceId))?.state, 'stopped', 'the forced stop ended the VM');

    assert.equal((await agent.stopInstance(b.instanceId)).state, 'stopping');
    await assert.rejects(agent.rebootInstance(b.instanceId), (e: Ec2Error) => e.code === 'IncorrectInstanceState');
    await agent.terminateInstance(b.instanceId);
    assert.deepEqual((await agent.describeInstances()).map((i) => i.instanceId), [a.instanceId]);
    assert.equal((await driver.info(b.instanceId))?.state, 'destroyed');
  });

  it('a stop asked while the instance is still booting answers with its state and follows the boot', { timeout: 60_000 }, async () => {
    const { agent, driver } = await makeAgent({ driver: new FakeDriver({ delays: { startMs: 50 } }) });
    const s = spec();
    await agent.runInstance(s);
    assert.equal((await agent.stopInstance(s.instanceId)).state, 'pending', 'queued behind the launch');
    assert.equal((await agent.settled(s.instanceId))?.state, 'stopped');
    assert.equal((await driver.info(s.instanceId))?.state, 'stopped');
  });
});
