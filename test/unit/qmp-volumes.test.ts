// Hot-plugging volumes through QEMU's monitor (src/node/storage/qmp-volumes.ts), against a real
// QEMU held before its first instruction (-S: no guest, so no boot to wait for): every volume lands
// on a port of its own as device 0 of that port's bus — the only place a guest looks — and
// with every port taken one more is refused. (QEMU accepts a second disk on a taken port, at device
// 1, where no guest ever sees it: that was a second attached volume missing in the guest.)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient } from '../../src/node/qmp-client.ts';
import { HOTPLUG_PORTS, hotplugPortArgs, hotplugPortId, pluggedVolumes, plugVolume } from '../../src/node/storage/qmp-volumes.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const QEMU = 'qemu-system-x86_64';
const skip = skipUnlessPresent(spawnSync(QEMU, ['--version']).status === 0 ? false : `${QEMU} (Debian package qemu-system-x86)`);

/** The port (its bus) and the device number on it of a plugged volume's disk. */
async function placeOf(qmp: QmpClient, volumeId: string): Promise<{ bus: string; addr: number }> {
  const path = `/machine/peripheral/v${volumeId}`;
  return { bus: await qmp.execute<string>('qom-get', { path, property: 'parent_bus' }), addr: await qmp.execute<number>('qom-get', { path, property: 'addr' }) };
}

describe('volumes hot-plugged into a q35 VM', { skip }, () => {
  let dir = '';
  let qemu: ChildProcess | undefined;
  let qmp: QmpClient;
  const volumes = ['vol-00000000000000001', 'vol-00000000000000002', 'vol-00000000000000003'];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ib-qmp-volumes-'));
    for (const v of volumes) await writeFile(join(dir, `${v}.raw`), Buffer.alloc(1024 * 1024));
    const socket = join(dir, 'qmp.sock');
    qemu = spawn(QEMU, ['-machine', 'q35', '-accel', 'tcg', '-nodefaults', '-display', 'none', '-S', ...hotplugPortArgs('q35'),
      '-qmp', `unix:${socket},server=on,wait=off`], { stdio: 'ignore' });
    const deadline = Date.now() + 60_000;
    while (!existsSync(socket)) {
      if (qemu.exitCode !== null) throw new Error(`${QEMU} exited with ${qemu.exitCode}`);
      if (Date.now() > deadline) throw new Error(`${QEMU} made no monitor socket within 60 s`);
      await new Promise((r) => setTimeout(r, 50));
    }
    qmp = await QmpClient.connect(socket);
  });

  after(async () => {
    await qmp?.execute('quit').catch(() => undefined);
    qmp?.close();
    qemu?.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('each volume takes a port of its own, as device 0; plugging one again changes nothing', async () => {
    for (const v of volumes) await plugVolume(qmp, { volumeId: v, path: join(dir, `${v}.raw`), format: 'raw' }, 'q35');
    await plugVolume(qmp, { volumeId: volumes[0]!, path: join(dir, `${volumes[0]}.raw`), format: 'raw' }, 'q35');
    assert.deepEqual(await pluggedVolumes(qmp), volumes);
    const places = [];
    for (const v of volumes) places.push(await placeOf(qmp, v));
    assert.deepEqual(places, volumes.map((_, i) => ({ bus: `/machine/peripheral/${hotplugPortId(i)}/${hotplugPortId(i)}`, addr: 0 })));
  });

  test('with every port taken, one more volume is refused with the reason', async () => {
    const more: string[] = [];
    for (let i = volumes.length; i < HOTPLUG_PORTS; i++) more.push(`vol-0000000000000010${i}`);
    for (const v of more) {
      await writeFile(join(dir, `${v}.raw`), Buffer.alloc(1024 * 1024));
      await plugVolume(qmp, { volumeId: v, path: join(dir, `${v}.raw`), format: 'raw' }, 'q35');
    }
    const extra = 'vol-00000000000000999';
    await writeFile(join(dir, `${extra}.raw`), Buffer.alloc(1024 * 1024));
    await assert.rejects(plugVolume(qmp, { volumeId: extra, path: join(dir, `${extra}.raw`), format: 'raw' }, 'q35'),
      new RegExp(`no free hot-plug port for volume ${extra} \\(the VM has ${HOTPLUG_PORTS}\\)`));
    assert.equal((await pluggedVolumes(qmp)).length, HOTPLUG_PORTS);
  });
});
