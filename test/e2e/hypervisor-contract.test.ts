// One contract for every hypervisor driver: the same steps run against the fake driver and against
// the qemu driver booting a real kernel (TCG) with a tiny busybox initramfs built here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  attachVolume, HypervisorStateError, UnsupportedOperationError, VmNotFoundError,
  type HypervisorDriver, type VmInfo, type VmSpec, type VmState,
} from '../../src/node/hypervisor.ts';
import { FakeDriver } from '../../src/node/fake-driver.ts';
import { QemuDriver, processAlive } from '../../src/node/qemu-driver.ts';
import { createInstanceDisk } from '../../src/node/instance-disk.ts';
import { buildNewcArchive, bootProbeVm, probeAccelerator, type NewcEntry } from '../../src/node/accel-probe.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';
import { recipeGuest } from '../helpers/guest-kernel.ts';

const BOOT_DEADLINE_MS = 90_000;

function hasCommand(cmd: string, args = ['--version']): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

// The guest boots the image recipe's kernel with the recipe's initramfs, whose /init is replaced.
const guest = await recipeGuest();
const kernelPath = guest.image?.kernel;
const qemuMissing =
  guest.missing
  ?? (!hasCommand('qemu-system-x86_64') ? 'qemu-system-x86_64 (Debian qemu-system-x86)'
  : !hasCommand('qemu-img') ? 'qemu-img (Debian qemu-utils)'
  : !guest.image?.initrd ? 'an initramfs in the default guest image'
  : undefined);
const qemuSkipReason = skipUnlessPresent(qemuMissing) || undefined;

/**
 * The guest: the recipe's initramfs (static busybox and the virtio, ACPI button and evdev modules
 * it lists in /lib/modules/load-order) with a second archive appended that replaces /init, which
 * the kernel unpacks over the first. The new init prints the same "ironbark-guest: instance-id="
 * line as real images (the id comes from the kernel command line) and runs acpid, so a graceful
 * stop (system_powerdown) really powers it off.
 */
function buildTestInitramfs(): Buffer {
  const init = [
    '#!/bin/sh',
    '/bin/busybox --install -s /bin',
    'export PATH=/bin',
    'mount -t proc proc /proc',
    'mount -t sysfs sysfs /sys',
    'mount -t devtmpfs devtmpfs /dev',
    'while read -r m; do insmod "/lib/modules/$m"; done < /lib/modules/load-order',
    // Foreground (backgrounded by the shell): busybox acpid as a daemon does not survive in this bare guest.
    'acpid -f -c /etc/acpi -l /dev/null &',
    'id=$(sed -n "s/.*ironbark.instance-id=\\([^ ]*\\).*/\\1/p" /proc/cmdline)',
    'echo "ironbark-guest: instance-id=$id" > /dev/console',
    'grep -q ironbark.test=poweroff /proc/cmdline && poweroff -f',
    'while true; do sleep 3600; done',
  ].join('\n') + '\n';
  const powerButton = '#!/bin/sh\necho "ironbark-guest: power button, powering off" > /dev/console\npoweroff -f\n';
  const overlay: NewcEntry[] = [
    ...['etc', 'etc/acpi', 'etc/acpi/PWRF'].map((path) => ({ path, kind: 'dir' as const, mode: 0o755 })),
    { path: 'init', kind: 'file', mode: 0o755, data: Buffer.from(init) },
    { path: 'etc/acpi/PWRF/00000080', kind: 'file', mode: 0o755, data: Buffer.from(powerButton) },
  ];
  const recipeInitrd = readFileSync(guest.image!.initrd!);
  // The kernel looks for the next archive only at a 4-byte boundary, skipping NUL padding.
  const padding = Buffer.alloc((4 - (recipeInitrd.length % 4)) % 4);
  return Buffer.concat([recipeInitrd, padding, buildNewcArchive(overlay)]);
}

interface Harness {
  driver: HypervisorDriver;
  spec(id: string): Promise<VmSpec>;
  /** Makes the VM's hypervisor process die as if it crashed. */
  crash(id: string): Promise<void>;
  /** A second driver instance over the same node state (a node controller restart), if the driver has state to adopt. */
  reopen?(): Promise<HypervisorDriver>;
  /** Checks, from the console, that a graceful stop went through the guest rather than a timeout. */
  checkGracefulStop?(consoleText: string): void;
  /** Checks that nothing of the VM but the caller's disk is left on the node. */
  leftovers?(id: string): Promise<string[]>;
  cleanup(): Promise<void>;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, deadlineMs = BOOT_DEADLINE_MS): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function isStateError(state: VmState, operation: string) {
  return (err: unknown) => {
    assert.ok(err instanceof HypervisorStateError, `expected HypervisorStateError, got ${String(err)}`);
    assert.equal(err.state, state);
    assert.equal(err.operation, operation);
    assert.match(err.message, new RegExp(`${operation}.*${state}`));
    return true;
  };
}

const marker = (id: string) => `ironbark-guest: instance-id=${id}`;
const count = (text: string, needle: string) => text.split(needle).length - 1;

function contractSuite(name: string, skip: string | undefined, makeHarness: () => Promise<Harness>) {
  describe(`hypervisor contract: ${name}`, { skip: skip ?? false }, () => {
    let h: Harness;
    const id = 'i-0c0ffee0c0ffee001';
    before(async () => { h = await makeHarness(); });
    after(async () => { await h?.cleanup(); });

    const state = async (vmId = id) => (await h.driver.info(vmId))?.state;

    test('create defines the VM; a second create and operations needing a running VM are refused', async () => {
      await h.driver.create(await h.spec(id));
      assert.equal(await state(), 'defined');
      assert.deepEqual((await h.driver.list()).map((i) => [i.id, i.state]), [[id, 'defined']]);
      await assert.rejects(h.driver.create(await h.spec(id)), isStateError('defined', 'create'));
      await assert.rejects(h.driver.stop(id), isStateError('defined', 'stop'));
      await assert.rejects(h.driver.reboot(id), isStateError('defined', 'reboot'));
      await assert.rejects(attachVolume(h.driver, id, { volumeId: 'vol-0123456789abcdef0', path: '/nonexistent', format: 'raw' }), isStateError('defined', 'attachVolume'));
      await assert.rejects(h.driver.start('i-00000000000000bad'), VmNotFoundError);
      assert.equal(await h.driver.info('i-00000000000000bad'), undefined);
    });

    test('start runs the guest, whose console shows the instance marker', async () => {
      await h.driver.start(id);
      const info = (await h.driver.info(id)) as VmInfo;
      assert.equal(info.state, 'running');
      assert.ok(info.startedAt instanceof Date);
      assert.equal(info.accelerator, h.driver.accelerator());
      await assert.rejects(h.driver.start(id), isStateError('running', 'start'));
      await waitFor('the guest marker', async () => (await h.driver.consoleOutput(id)).includes(marker(id)));
    });

    test('reboot keeps the VM running and boots the guest again', async () => {
      const before = count(await h.driver.consoleOutput(id), marker(id));
      await h.driver.reboot(id);
      assert.equal(await state(), 'running');
      await waitFor('the marker of the second boot', async () => count(await h.driver.consoleOutput(id), marker(id)) > before);
    });

    test('stop powers the VM off; stopping again is refused; start boots it afresh', async () => {
      await h.driver.stop(id, { timeoutMs: 30_000 });
      assert.equal(await state(), 'stopped');
      assert.equal((await h.driver.info(id))?.startedAt, undefined);
      const consoleText = await h.driver.consoleOutput(id);
      assert.ok(consoleText.includes(marker(id)), 'a stopped VM keeps its last console output');
      h.checkGracefulStop?.(consoleText);
      await assert.rejects(h.driver.stop(id), isStateError('stopped', 'stop'));
      await assert.rejects(h.driver.reboot(id), isStateError('stopped', 'reboot'));
      await assert.rejects(attachVolume(h.driver, id, { volumeId: 'vol-0123456789abcdef0', path: '/nonexistent', format: 'raw' }), isStateError('stopped', 'attachVolume'));
      await h.driver.start(id);
      assert.equal(await state(), 'running');
      await waitFor('the marker after restart', async () => (await h.driver.consoleOutput(id)).includes(marker(id)));
    });

    test('a restarted node controller re-adopts the running VM', async (t) => {
      if (!h.reopen) {
        t.skip(`the ${name} driver keeps no state outside its process`);
        return;
      }
      const before = (await h.driver.info(id)) as VmInfo;
      h.driver = await h.reopen();
      const after = (await h.driver.info(id)) as VmInfo;
      assert.equal(after.state, 'running');
      assert.equal(after.pid, before.pid);
      assert.equal(after.startedAt?.getTime(), before.startedAt?.getTime());
      assert.ok((await h.driver.consoleOutput(id)).includes(marker(id)));
      // And it is fully controllable through the new instance.
      await h.driver.reboot(id);
      assert.equal(await state(), 'running');
    });

    test('a VM whose hypervisor process dies is reported crashed and can be started again', async () => {
      await h.crash(id);
      await waitFor('the crash to be noticed', async () => (await state()) === 'crashed');
      await assert.rejects(h.driver.reboot(id), isStateError('crashed', 'reboot'));
      await h.driver.start(id);
      assert.equal(await state(), 'running');
      await waitFor('the marker after the crash', async () => (await h.driver.consoleOutput(id)).includes(marker(id)));
    });

    test('an operation a driver lacks is UnsupportedOperationError', async () => {
      // Both drivers attach volumes; one without the capability answers through the same helper.
      const lacking = Object.create(h.driver, { attachVolume: { value: undefined } }) as HypervisorDriver;
      await assert.rejects(attachVolume(lacking, id, { volumeId: 'vol-0123456789abcdef0', path: '/nonexistent', format: 'raw' }),
        (err: unknown) => err instanceof UnsupportedOperationError && err.operation === 'attachVolume' && err.driver === name);
    });

    test('destroy removes a running VM and its work files but not its disk', async () => {
      const spec = await h.spec(id);
      await h.driver.destroy(id);
      assert.equal(await state(), 'destroyed');
      assert.deepEqual(await h.driver.list(), []);
      await assert.rejects(h.driver.start(id), isStateError('destroyed', 'start'));
      await assert.rejects(h.driver.destroy(id), isStateError('destroyed', 'destroy'));
      if (h.leftovers) assert.deepEqual(await h.leftovers(id), []);
      if (name === 'qemu') assert.ok((await stat(spec.diskPath)).isFile(), 'the disk belongs to the caller');
      // The id is free again.
      await h.driver.create(spec);
      assert.equal(await state(), 'defined');
      await h.driver.destroy(id);
    });
  });
}

contractSuite('fake', undefined, async () => {
  const fake = new FakeDriver({ delays: { startMs: 5, stopMs: 5 } });
  const h: Harness = {
    driver: fake,
    spec: async (id) => ({
      id, vcpus: 1, memoryMiB: 256, kernelPath: '/boot/vmlinuz', kernelCmdline: 'console=ttyS0',
      diskPath: `/var/lib/ironbark/instances/${id}/disk.qcow2`, macAddress: 'd0:0d:12:34:56:78',
      network: { kind: 'none' }, workDir: `/var/lib/ironbark/run/${id}`,
    }),
    crash: async (id) => fake.simulateCrash(id),
    cleanup: async () => undefined,
  };
  return h;
});

contractSuite('qemu', qemuSkipReason, async () => {
  const root = await mkdtemp(join(tmpdir(), 'ib-hv-'));
  const runDir = join(root, 'run');
  const initrdPath = join(root, 'initrd.cpio');
  await writeFile(initrdPath, buildTestInitramfs());
  const basePath = join(root, 'base.raw');
  await writeFile(basePath, Buffer.alloc(1024 * 1024));
  const drivers: QemuDriver[] = [await QemuDriver.open({ runDir, accelerator: 'tcg', stopTimeoutMs: 30_000 })];
  const h: Harness = {
    driver: drivers[0],
    spec: async (id) => {
      const diskPath = join(root, 'disks', `${id}.qcow2`);
      if (!existsSync(diskPath)) await createInstanceDisk(basePath, diskPath, { baseFormat: 'raw' });
      return {
        id, vcpus: 1, memoryMiB: 192, kernelPath: kernelPath!, initrdPath,
        kernelCmdline: `console=ttyS0 panic=-1 quiet rdinit=/init ironbark.instance-id=${id}`,
        diskPath, macAddress: 'd0:0d:12:34:56:78', network: { kind: 'none' }, workDir: join(runDir, id),
      };
    },
    crash: async (id) => {
      const pid = (await h.driver.info(id))?.pid;
      assert.ok(pid, 'a running qemu VM has a pid');
      process.kill(pid, 'SIGKILL');
    },
    checkGracefulStop: (consoleText) => {
      assert.match(consoleText, /ironbark-guest: power button, powering off/);
    },
    reopen: async () => {
      // The old instance lets go of the monitors the way a dying process would.
      await drivers.at(-1)!.close();
      drivers.push(await QemuDriver.open({ runDir, accelerator: 'tcg', stopTimeoutMs: 30_000 }));
      return drivers.at(-1)!;
    },
    leftovers: async (id) => {
      const inRun = (await readdir(runDir)).filter((e) => e.startsWith(id));
      const inWork = existsSync(join(runDir, id)) ? (await readdir(join(runDir, id))).map((f) => `${id}/${f}`) : [];
      return [...inRun, ...inWork];
    },
    cleanup: async () => {
      // Whatever happened above, no QEMU outlives the test.
      for (const d of drivers) await d.close();
      for (const dir of existsSync(runDir) ? await readdir(runDir) : []) {
        const pid = Number.parseInt(await readFile(join(runDir, dir, 'qemu.pid'), 'utf8').catch(() => ''), 10);
        if (pid > 0 && processAlive(pid)) process.kill(pid, 'SIGKILL');
      }
      await rm(root, { recursive: true, force: true });
    },
  };
  return h;
});

describe('qemu driver specifics', { skip: qemuSkipReason ?? false }, () => {
  let root: string;
  let driver: QemuDriver;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ib-hv2-'));
    driver = await QemuDriver.open({ runDir: join(root, 'run'), accelerator: 'tcg' });
  });
  after(async () => {
    await driver.close();
    for (const dir of await readdir(join(root, 'run')).catch(() => [] as string[])) {
      const pid = Number.parseInt(await readFile(join(root, 'run', dir, 'qemu.pid'), 'utf8').catch(() => ''), 10);
      if (pid > 0 && processAlive(pid)) process.kill(pid, 'SIGKILL');
    }
    await rm(root, { recursive: true, force: true });
  });

  test('a launch that QEMU refuses fails with its reason and leaves the VM startable', async () => {
    const id = 'i-0badd15c0000000001';
    await mkdir(join(root, 'disks'), { recursive: true });
    await driver.create({
      id, vcpus: 1, memoryMiB: 64, kernelPath: kernelPath!, kernelCmdline: 'console=ttyS0',
      diskPath: join(root, 'disks', 'missing.qcow2'), macAddress: 'd0:0d:00:00:00:01',
      network: { kind: 'none' }, workDir: join(root, 'run', id),
    });
    await assert.rejects(driver.start(id), /QEMU could not start VM .*missing\.qcow2/);
    assert.equal((await driver.info(id))?.state, 'defined');
    await driver.destroy(id);
  });

  test('a guest that powers itself off is recorded as stopped, not crashed', async () => {
    const id = 'i-0ff0000000000000001';
    const initrdPath = join(root, 'initrd.cpio');
    await writeFile(initrdPath, buildTestInitramfs());
    const diskPath = join(root, 'disks', `${id}.qcow2`);
    await writeFile(join(root, 'base.raw'), Buffer.alloc(1024 * 1024));
    await createInstanceDisk(join(root, 'base.raw'), diskPath, { baseFormat: 'raw' });
    await driver.create({
      id, vcpus: 1, memoryMiB: 192, kernelPath: kernelPath!, initrdPath,
      kernelCmdline: `console=ttyS0 panic=-1 quiet rdinit=/init ironbark.instance-id=${id} ironbark.test=poweroff`,
      diskPath, macAddress: 'd0:0d:00:00:00:03', network: { kind: 'none' }, workDir: join(root, 'run', id),
    });
    await driver.start(id);
    await waitFor('the guest to power off', async () => (await driver.info(id))?.state === 'stopped');
    assert.ok((await driver.consoleOutput(id)).includes(marker(id)));
    await driver.destroy(id);
  });

  test('a VM found dead after a node restart is crashed', async () => {
    const id = 'i-0dead00000000000001';
    const workDir = join(root, 'run', id);
    await mkdir(workDir, { recursive: true });
    const spec: VmSpec = {
      id, vcpus: 1, memoryMiB: 64, kernelPath: kernelPath!, kernelCmdline: '', diskPath: join(root, 'd.qcow2'),
      macAddress: 'd0:0d:00:00:00:02', network: { kind: 'none' }, workDir,
    };
    // What a node controller leaves behind when it and the VM died together.
    await writeFile(join(workDir, 'vm.json'), JSON.stringify({ spec, state: 'running', startedAt: new Date().toISOString() }));
    await writeFile(join(workDir, 'qemu.pid'), '999999999\n');
    const reopened = await QemuDriver.open({ runDir: join(root, 'run'), accelerator: 'tcg' });
    try {
      assert.equal((await reopened.info(id))?.state, 'crashed');
      await reopened.destroy(id);
    } finally {
      await reopened.close();
    }
  });
});

describe('fake driver at scale', () => {
  test('holds thousands of VMs in one process', async () => {
    const driver = new FakeDriver();
    const n = 5000;
    for (let i = 0; i < n; i++) {
      const id = `i-${i.toString(16).padStart(17, '0')}`;
      await driver.create({
        id, vcpus: 1, memoryMiB: 512, kernelPath: '/k', kernelCmdline: '', diskPath: `/d/${id}`,
        macAddress: 'd0:0d:00:00:00:00', network: { kind: 'tap', tapName: `ibt${i}` }, workDir: `/w/${id}`,
      });
      await driver.start(id);
    }
    const listed = await driver.list();
    assert.equal(listed.length, n);
    assert.ok(listed.every((vm) => vm.state === 'running'));
    assert.match(await driver.consoleOutput('i-00000000000000fff'), /ironbark-guest: instance-id=i-00000000000000fff/);
  });
});

describe('accelerator probe', { skip: qemuSkipReason ?? false }, () => {
  let dir: string;
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'ib-accel-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  test('the probe guest boots and powers itself off (checked with TCG, which always works)', async () => {
    const outcome = await bootProbeVm({ accelerator: 'tcg', kernelPath: kernelPath!, timeoutMs: 60_000 });
    assert.equal(outcome.ok, true, outcome.detail);
  });

  test('a guest that never powers off is killed at the deadline and not believed', async () => {
    // A 1 ms deadline expires long before any guest could power off.
    const outcome = await bootProbeVm({ accelerator: 'tcg', kernelPath: kernelPath!, timeoutMs: 1 });
    assert.equal(outcome.ok, false);
    assert.match(outcome.detail, /killed/);
  });

  test('IRONBARK_ACCEL overrides; a verdict is cached until forced', async () => {
    assert.deepEqual(
      (await probeAccelerator({ kernelPath: kernelPath!, env: { IRONBARK_ACCEL: 'tcg' } })).accelerator, 'tcg');
    await assert.rejects(probeAccelerator({ kernelPath: kernelPath!, env: { IRONBARK_ACCEL: 'xen' } }), /IRONBARK_ACCEL/);
    const cacheFile = join(dir, 'accel.json');
    const first = await probeAccelerator({ kernelPath: kernelPath!, env: {}, cacheFile, timeoutMs: 20_000 });
    assert.ok(first.accelerator === 'kvm' || first.accelerator === 'tcg');
    assert.equal(JSON.parse(await readFile(cacheFile, 'utf8')).accelerator, first.accelerator);
    // Plant a different verdict: a second call must read it rather than probe.
    await writeFile(cacheFile, JSON.stringify({ accelerator: first.accelerator === 'kvm' ? 'tcg' : 'kvm', reason: 'planted', probedAt: 'then' }));
    const cached = await probeAccelerator({ kernelPath: kernelPath!, env: {}, cacheFile });
    assert.notEqual(cached.accelerator, first.accelerator);
    assert.match(cached.reason, /planted/);
    const forced = await probeAccelerator({ kernelPath: kernelPath!, env: {}, cacheFile, force: true, timeoutMs: 20_000 });
    assert.equal(forced.accelerator, first.accelerator);
  });

  test('without a usable /dev/kvm the verdict is TCG without booting anything', async () => {
    const result = await probeAccelerator({ kernelPath: '/nonexistent-kernel', env: {}, kvmDevice: join(dir, 'no-kvm') });
    assert.equal(result.accelerator, 'tcg');
    assert.match(result.reason, /ENOENT/);
  });
});
