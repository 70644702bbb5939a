// A node whose disk is full (issue 11, item 5): NodeAgent over the fake driver with its state
// directory on a tmpfs of its own (root: mount). Filled up, the node reports no free disk and a
// launch answers InsufficientInstanceCapacity with nothing left behind (no record, no VM); the VM
// it already runs keeps running; once space is freed it launches again.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { ImageCache } from '../../src/node/image-cache.ts';
import { NodeAgent } from '../../src/node/node-agent.ts';
import type { ImageRef, InstanceSpec } from '../../src/node/node-api.ts';
import { createHash, randomBytes } from 'node:crypto';
import { Ec2Error } from '../../src/protocol/errors.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const skip = skipUnlessPresent(process.getuid?.() !== 0 ? 'root (to mount a tmpfs)' : undefined);

let kernel: ImageRef;
let rootImage: ImageRef;

async function imageFile(dir: string, id: string, bytes: number): Promise<ImageRef> {
  const data = randomBytes(bytes);
  const path = join(dir, `${id}.img`);
  await writeFile(path, data);
  return { id, url: path, sha256: createHash('sha256').update(data).digest('hex'), sizeBytes: bytes, format: 'raw' };
}

function spec(n: number): InstanceSpec {
  const hex = n.toString(16).padStart(17, '0');
  return {
    instanceId: `i-${hex}`, reservationId: 'r-0000000000000000a', accountId: '111122223333', imageId: 'ami-00000001',
    kernel, root: rootImage,
    kernelCmdline: '', vmType: { name: 't.small', cores: 1, memoryMiB: 512, diskGiB: 1 }, zone: 'test-1a', region: 'test-1',
    subnetCidr: '10.9.0.0/16', subnetId: 'subnet-0000000000000000a', vpcId: 'vpc-0000000000000000a',
    privateIp: `10.9.0.${10 + n}`, privateDnsName: `ip-10-9-0-${10 + n}.test-1.compute.internal`, mac: `d2:0d:00:00:00:${n.toString(16).padStart(2, '0')}`,
    publicKeys: [], securityGroups: [{ id: 'sg-0000000000000000a', name: 'default' }], launchIndex: 0, launchTime: new Date().toISOString(),
  };
}

/** Waits (bounded generously) until the agent reports the instance running. */
async function runningOrTimeout(agent: NodeAgent, id: string): Promise<void> {
  for (let i = 0; i < 1200 && (await agent.describeInstances()).find((x) => x.instanceId === id)?.state !== 'running'; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal((await agent.describeInstances()).find((x) => x.instanceId === id)?.state, 'running');
}

describe('a node with a full disk', { skip }, () => {
  let work = '';
  let mounted = '';

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'ib-full-disk-'));
    kernel = await imageFile(work, 'aki-00000001', 4096);
    rootImage = await imageFile(work, 'ami-00000001', 65536);
    mounted = join(work, 'state');
    await mkdir(mounted);
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=24m,mode=0700', 'ib-full-disk', mounted], { encoding: 'utf8' });
    if (r.status !== 0) { mounted = ''; throw new Error(`mount tmpfs failed: ${r.stderr}`); }
  });

  after(async () => {
    if (mounted) spawnSync('umount', ['-l', mounted]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('reports no room, refuses a launch for capacity leaving nothing behind, keeps its VM, and launches again once space is freed', async () => {
    const driver = new FakeDriver();
    const agent = new NodeAgent({
      nodeId: 'n1', stateDir: mounted, driver, imageCache: new ImageCache(join(mounted, 'images')),
      capacity: { cores: 8, memoryMiB: 8192, diskGiB: 100 },
    });
    const first = spec(1);
    await agent.runInstance(first);
    await runningOrTimeout(agent, first.instanceId);
    assert.equal((await agent.describeResources()).free.diskGiB, 99);

    // Fill the file system to the last byte (writing until ENOSPC).
    const filler = join(mounted, 'filler');
    const chunk = Buffer.alloc(1024 * 1024);
    const { open } = await import('node:fs/promises');
    const handle = await open(filler, 'w');
    try {
      for (;;) await handle.write(chunk);
    } catch (e) {
      assert.equal((e as NodeJS.ErrnoException).code, 'ENOSPC');
    } finally {
      await handle.close();
    }
    for (let n = 0; ; n++) { // the last few KiB too
      try { await writeFile(join(mounted, `crumb-${n}`), Buffer.alloc(4096)); } catch { break; }
    }

    assert.equal((await agent.describeResources()).free.diskGiB, 0, 'no room reported while the disk is full');
    const second = spec(2);
    await assert.rejects(agent.runInstance(second), (e: unknown) => e instanceof Ec2Error && e.code === 'InsufficientInstanceCapacity');
    assert.equal((await agent.describeInstances()).some((i) => i.instanceId === second.instanceId), false, 'no half-made instance');
    assert.equal((await driver.list()).some((vm) => vm.id === second.instanceId), false, 'no VM for it');
    const firstSeen = (await agent.describeInstances()).find((i) => i.instanceId === first.instanceId);
    assert.ok(firstSeen && firstSeen.state !== 'terminated' && firstSeen.state !== 'crashed', `the instance it ran keeps running: ${JSON.stringify(firstSeen)}`);

    await rm(filler);
    for (const f of await readdir(mounted)) if (f.startsWith('crumb-')) await rm(join(mounted, f));
    assert.ok((await agent.describeResources()).free.diskGiB > 0);
    const third = spec(3);
    assert.equal((await agent.runInstance(third)).instanceId, third.instanceId);
    await runningOrTimeout(agent, third.instanceId);
  });
});
