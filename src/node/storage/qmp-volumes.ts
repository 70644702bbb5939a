// EBS volumes hot-plugged into a running QEMU over its monitor: the volume's NBD export (or a
// local file) becomes a block node (blockdev-add), and a virtio-blk disk on one of the VM's
// hot-plug ports uses it (device_add); detaching reverses both once the guest has let go of the
// disk (device_del, then the DEVICE_DELETED the guest's acknowledgement brings). The disk's serial
// is the volume id without its dash (20 characters, as EC2's Nitro disks show it), so the guest
// finds it at /dev/disk/by-id/virtio-vol….
import { setTimeout as sleep } from 'node:timers/promises';
import { QmpCommandError, type QmpClient } from '../qmp-client.ts';
import type { VolumeAttachment } from '../hypervisor.ts';

/** PCIe root ports the qemu driver gives every q35 VM for disks plugged after boot. */
export const HOTPLUG_PORTS = 8;

export function hotplugPortId(i: number): string {
  return `hp${i}`;
}

/** QEMU arguments for the hot-plug ports (q35: one pcie-root-port per disk; pc: its PCI bus takes them). */
export function hotplugPortArgs(machine: 'q35' | 'pc'): string[] {
  if (machine !== 'q35') return [];
  const args: string[] = [];
  for (let i = 0; i < HOTPLUG_PORTS; i++) args.push('-device', `pcie-root-port,id=${hotplugPortId(i)},bus=pcie.0,chassis=${i + 1}`);
  return args;
}

const nodeName = (volumeId: string) => `d${volumeId}`;
const deviceId = (volumeId: string) => `v${volumeId}`;
const tlsId = (volumeId: string) => `t${volumeId}`;
export const volumeSerial = (volumeId: string) => volumeId.replace('-', '');

async function peripherals(qmp: QmpClient): Promise<Set<string>> {
  const list = await qmp.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' });
  return new Set(list.map((p) => p.name));
}

async function blockNodes(qmp: QmpClient): Promise<Set<string>> {
  const nodes = await qmp.execute<{ 'node-name': string }[]>('query-named-block-nodes', { flat: true });
  return new Set(nodes.map((n) => n['node-name']));
}

async function objects(qmp: QmpClient): Promise<Set<string>> {
  const list = await qmp.execute<{ name: string }[]>('qom-list', { path: '/objects' });
  return new Set(list.map((p) => p.name));
}

/** Volume ids plugged into the VM (its virtio disks named v<volume id>). */
export async function pluggedVolumes(qmp: QmpClient): Promise<string[]> {
  return [...await peripherals(qmp)].filter((n) => /^vvol-[0-9a-f]+$/.test(n)).map((n) => n.slice(1)).sort();
}

/** Plugs the volume in; a volume already plugged is left as it is. */
export async function plugVolume(qmp: QmpClient, volume: VolumeAttachment, machine: 'q35' | 'pc'): Promise<void> {
  const id = volume.volumeId;
  if ((await peripherals(qmp)).has(deviceId(id))) return;
  if (!(await blockNodes(qmp)).has(nodeName(id))) {
    let blockdev: Record<string, unknown>;
    if (volume.nbd) {
      const { host, port, exportName, tls } = volume.nbd;
      if (tls && !(await objects(qmp)).has(tlsId(id))) {
        await qmp.execute('object-add', { 'qom-type': 'tls-creds-psk', id: tlsId(id), endpoint: 'client', dir: tls.credsDir, username: tls.identity });
      }
      blockdev = {
        driver: 'nbd', 'node-name': nodeName(id), export: exportName,
        server: { type: 'inet', host, port: String(port) },
        ...(tls ? { 'tls-creds': tlsId(id) } : {}),
        // A storage host that restarts (or a short network cut) is waited for, not an I/O error at once.
        'reconnect-delay': 30,
      };
    } else if (volume.path) {
      blockdev = { driver: volume.format ?? 'raw', 'node-name': nodeName(id), file: { driver: 'file', filename: volume.path } };
    } else {
      throw new Error(`volume ${id} has neither an NBD export nor a file`);
    }
    await qmp.execute('blockdev-add', blockdev);
  }
  const device = { driver: 'virtio-blk-pci', id: deviceId(id), drive: nodeName(id), serial: volumeSerial(id) };
  if (machine !== 'q35') {
    await qmp.execute('device_add', device);
    return;
  }
  // The first free hot-plug port: each takes one disk, as device 0 of the port's bus. Without the
  // address QEMU puts a second disk on an occupied port at device 1, which it accepts and no guest
  // ever sees (a PCIe port's bus has only device 0).
  let last: unknown;
  for (let i = 0; i < HOTPLUG_PORTS; i++) {
    try {
      await qmp.execute('device_add', { ...device, bus: hotplugPortId(i), addr: '0' });
      return;
    } catch (err) {
      if (!(err instanceof QmpCommandError)) throw err;
      last = err;
    }
  }
  throw new Error(`no free hot-plug port for volume ${id} (the VM has ${HOTPLUG_PORTS}): ${(last as Error)?.message}`);
}

/**
 * Unplugs the volume: asks the guest to let go of the disk and waits until it has (up to
 * `timeoutMs`), then closes the block node. Throws when the guest keeps the disk.
 */
export async function unplugVolume(qmp: QmpClient, volumeId: string, timeoutMs: number): Promise<void> {
  if ((await peripherals(qmp)).has(deviceId(volumeId))) {
    await qmp.execute('device_del', { id: deviceId(volumeId) }).catch((err) => {
      // Asked twice (a retry while the guest is still letting go): keep waiting for the first.
      if (!(err instanceof QmpCommandError)) throw err;
    });
    const deadline = Date.now() + timeoutMs;
    while ((await peripherals(qmp)).has(deviceId(volumeId))) {
      if (Date.now() >= deadline) throw new Error(`the guest did not release volume ${volumeId} within ${Math.round(timeoutMs / 1000)} s`);
      await sleep(250);
    }
  }
  if ((await blockNodes(qmp)).has(nodeName(volumeId))) await qmp.execute('blockdev-del', { 'node-name': nodeName(volumeId) });
  if ((await objects(qmp)).has(tlsId(volumeId))) await qmp.execute('object-del', { id: tlsId(volumeId) });
}
