// Everything Ironbark writes that holds a secret or a user's data is 0600 in a 0700 directory,
// under the usual umask 022 too, and what an earlier version left open is narrowed (issue 8,
// item 6): the SQLite store with its -wal and -shm, the folder made for a --store file, the data
// directory, credentials files, shared-secret files, node instance specs, the QEMU driver's
// vm.json and console log, and instance disks.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { openStore } from '../../src/store/store.ts';
import { KeyRing } from '../../src/store/key-ring.ts';
import { ensurePrivateDir, writePrivateFile } from '../../src/store/private-files.ts';
import { writeCredentialsFiles } from '../../src/auth/credentials-file.ts';
import { createAccount } from '../../src/auth/identities.ts';
import { startCloudController } from '../../src/cloud/cloud-controller.ts';
import { JoinedNodes } from '../../src/cluster/joined-nodes.ts';
import { NodeStateStore } from '../../src/node/node-state.ts';
import { QemuDriver } from '../../src/node/qemu-driver.ts';
import { createInstanceDisk } from '../../src/node/instance-disk.ts';
import { startNodeHost } from '../../src/node/node-host.ts';
import type { InstanceSpec } from '../../src/node/node-api.ts';

const modeOf = (path: string) => statSync(path).mode & 0o777;
const octal = (mode: number) => `0${mode.toString(8)}`;

function assertPrivateFile(path: string): void {
  assert.equal(octal(modeOf(path)), '0600', `${path} is ${octal(modeOf(path))}`);
}

function assertPrivateDir(path: string): void {
  assert.equal(octal(modeOf(path)), '0700', `${path} is ${octal(modeOf(path))}`);
}

describe('files holding secrets or user data are private, under umask 022', () => {
  let root: string;
  let umask: number;

  before(() => {
    umask = process.umask(0o022);
    root = mkdtempSync(join(tmpdir(), 'ironbark-private-'));
  });
  after(() => {
    process.umask(umask);
    rmSync(root, { recursive: true, force: true });
  });

  it('the SQLite store, its -wal and -shm, and a folder made for a --store file', async () => {
    const path = join(root, 'made', 'for', 'store', 'x.sqlite');
    const store = await openStore({ url: path, keyRing: KeyRing.ephemeral() });
    try {
      await store.transaction((tx) => createAccount(tx, 'secretive'));
      assert.ok(existsSync(`${path}-wal`), 'the store is in WAL mode');
      for (const f of [path, `${path}-wal`, `${path}-shm`]) assertPrivateFile(f);
      for (const d of ['made', 'made/for', 'made/for/store']) assertPrivateDir(join(root, d));
    } finally {
      await store.close();
    }
  });

  it('store files an earlier version left open are narrowed; a shared folder that exists is left alone', async () => {
    const shared = join(root, 'shared');
    mkdirSync(shared, { mode: 0o755 });
    chmodSync(shared, 0o755);
    const path = join(shared, 'old.sqlite');
    const keyRing = KeyRing.ephemeral();
    const first = await openStore({ url: path, keyRing });
    await first.transaction((tx) => createAccount(tx, 'first'));
    for (const f of [path, `${path}-wal`, `${path}-shm`]) if (existsSync(f)) chmodSync(f, 0o644);
    const again = await openStore({ url: path, keyRing });
    try {
      await again.transaction((tx) => createAccount(tx, 'second'));
      for (const f of [path, `${path}-wal`, `${path}-shm`]) assertPrivateFile(f);
      assert.equal(octal(modeOf(shared)), '0755');
    } finally {
      await again.close();
      await first.close();
    }
  });

  it('credentials files, and the data directory they are written to is tightened', () => {
    const dataDir = join(root, 'creds');
    mkdirSync(dataDir, { mode: 0o755 });
    chmodSync(dataDir, 0o755);
    const { envFile, awsConfigFile } = writeCredentialsFiles(dataDir, {
      accessKeyId: 'AKIAEXAMPLE', secretAccessKey: 'secret', region: 'ironbark-1', endpoint: 'http://127.0.0.1:1', accountId: '123456789012',
    });
    assertPrivateDir(dataDir);
    assertPrivateFile(envFile);
    assertPrivateFile(awsConfigFile);
  });

  it('the cloud controller: an existing open data directory is tightened, and all it writes there is private', async () => {
    const dataDir = join(root, 'cloud');
    mkdirSync(dataDir, { mode: 0o755 });
    chmodSync(dataDir, 0o755);
    const cloud = await startCloudController({ dataDir, host: '127.0.0.1', port: 0, region: 'ironbark-1', log: pino({ level: 'silent' }) });
    try {
      assertPrivateDir(dataDir);
      const db = join(dataDir, 'ironbark.sqlite');
      for (const f of [db, `${db}-wal`, `${db}-shm`, join(dataDir, 'credentials.env'), join(dataDir, 'aws-config'), join(dataDir, 'master.key')]) {
        if (f.endsWith('.sqlite') || f.endsWith('.key') || existsSync(f)) assertPrivateFile(f);
      }
      assert.ok(existsSync(`${db}-wal`));
    } finally {
      await cloud.close();
    }
  });

  it('shared secrets (a cluster\'s joined nodes, a node\'s membership) and private-directory helpers', async () => {
    const dir = join(root, 'cluster');
    const joined = await JoinedNodes.open(join(dir, 'nodes.json'));
    await joined.join({ nonce: 'n-1', expiresAt: Date.now() + 60_000 }, { name: 'a', url: 'http://127.0.0.1:1' });
    await writePrivateFile(join(dir, 'membership.json'), '{"secret":"s"}\n');
    assertPrivateDir(dir);
    assertPrivateFile(join(dir, 'nodes.json'));
    assertPrivateFile(join(dir, 'membership.json'));
    const open = join(root, 'open');
    mkdirSync(open, { mode: 0o775 });
    chmodSync(open, 0o775);
    await ensurePrivateDir(open);
    assertPrivateDir(open);
    // A file written into folders that do not exist yet makes them, private.
    const nested = join(root, 'made', 'on', 'demand');
    await writePrivateFile(join(nested, 'record.json'), '{}\n', { sync: false });
    assertPrivateDir(join(root, 'made'));
    assertPrivateDir(nested);
    assertPrivateFile(join(nested, 'record.json'));
    // A folder that is there is checked (and, open, tightened) without being made again; a file in its place is an error.
    chmodSync(nested, 0o755);
    await ensurePrivateDir(nested);
    assertPrivateDir(nested);
    await assert.rejects(ensurePrivateDir(join(nested, 'record.json')), { code: 'EEXIST' });
  });

  it('node instance specs (they carry user data), also ones an earlier version left open', async () => {
    const stateDir = join(root, 'node-state');
    const states = new NodeStateStore(stateDir);
    await states.load();
    const spec = {
      instanceId: 'i-0123456789abcdef0', userData: Buffer.from('#!/bin/sh\necho secret\n').toString('base64'),
      vmType: { name: 't.small', cores: 1, memoryMiB: 512, diskGiB: 1 }, privateIp: '10.0.0.5', // what a record must hold to be trusted
    } as unknown as InstanceSpec;
    await states.save({ spec, state: 'pending', since: new Date().toISOString() });
    const file = join(stateDir, 'instances', 'i-0123456789abcdef0.json');
    assertPrivateDir(join(stateDir, 'instances'));
    assertPrivateFile(file);
    chmodSync(file, 0o644);
    chmodSync(join(stateDir, 'instances'), 0o755);
    assert.equal((await new NodeStateStore(stateDir).load()).records.length, 1);
    assertPrivateDir(join(stateDir, 'instances'));
    assertPrivateFile(file);
  });

  it('the node\'s directories under an existing open data directory (fake driver)', async () => {
    const dataDir = join(root, 'node-host');
    mkdirSync(dataDir, { mode: 0o755 });
    chmodSync(dataDir, 0o755);
    const host = await startNodeHost({
      dataDir, nodeId: 'node-t', zone: 'ironbark-1a', cidr: '10.9.0.0/16', driver: 'fake', log: pino({ level: 'silent' }),
      capacity: { cores: 1, memoryMiB: 1024, diskGiB: 10 },
    });
    try {
      assertPrivateDir(dataDir);
      assertPrivateDir(join(dataDir, 'node'));
    } finally {
      await host.close();
    }
  });

  it('the QEMU driver: work directory, vm.json and the console log QEMU writes into', async () => {
    const runDir = join(root, 'qemu', 'run');
    // A QEMU that cannot start: the console log is made before QEMU is asked to open it.
    const driver = await QemuDriver.open({ runDir, accelerator: 'tcg', qemuBinary: '/bin/false' });
    try {
      assertPrivateDir(runDir);
      const workDir = join(root, 'qemu', 'vm', 'i-0123456789abcdef1');
      await driver.create({
        id: 'i-0123456789abcdef1', vcpus: 1, memoryMiB: 64, kernelPath: '/nonexistent/vmlinuz', kernelCmdline: 'console=ttyS0',
        diskPath: join(root, 'qemu', 'disk.qcow2'), macAddress: '52:54:00:12:34:56', network: { kind: 'none' }, workDir,
      });
      assertPrivateDir(workDir);
      assertPrivateFile(join(workDir, 'vm.json'));
      await assert.rejects(driver.start('i-0123456789abcdef1'));
      assertPrivateFile(join(workDir, 'console.log'));
    } finally {
      await driver.close();
    }
  });

  it('instance disks (copy-on-write overlays the guest writes into)', { skip: !hasQemuImg() && 'qemu-img is not installed' }, async () => {
    const base = join(root, 'base.raw');
    writeFileSync(base, Buffer.alloc(1024 * 1024));
    const disk = join(root, 'disks', 'i-0123456789abcdef2.qcow2');
    await createInstanceDisk(base, disk, { baseFormat: 'raw' });
    assertPrivateDir(join(root, 'disks'));
    assertPrivateFile(disk);
  });
});

function hasQemuImg(): boolean {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
