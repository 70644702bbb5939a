// The volumes a node's instances keep (AttachVolume), one private file per instance under
// `<stateDir>/volumes/`, so a volume stays attached across stop/start and node controller restarts:
// a stopped instance keeps its attachments and gets them plugged in again at every boot. The TLS
// pre-shared key of the zone's storage host is written where QEMU reads it (a keys.psk file in a
// private directory per key), and never leaves this host's state directory.
import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ensurePrivateDir, writePrivateFile } from '../../store/private-files.ts';
import type { VolumeAttachment } from '../hypervisor.ts';
import type { NodeVolumeAttachment } from '../node-api.ts';
import { Ec2Error } from '../../protocol/errors.ts';

const VOLUME_ID = /^vol-[0-9a-f]{8}([0-9a-f]{9})?$/;
const DEVICE = /^\/dev\/(sd[b-z]|xvd[b-z]|sd[b-z][1-9]|xvd[b-z][1-9]|nvme[0-9]+n1|vd[b-z])$/;

/** Checks what the cluster sent before any of it reaches a file or QEMU. */
export function checkAttachment(att: NodeVolumeAttachment): NodeVolumeAttachment {
  const bad = (what: string) => { throw new Ec2Error('InvalidParameterValue', `Invalid volume attachment: ${what}.`); };
  if (!att || typeof att !== 'object') bad('not an object');
  if (typeof att.volumeId !== 'string' || !VOLUME_ID.test(att.volumeId)) bad(`volume id ${JSON.stringify(att.volumeId)}`);
  if (typeof att.device !== 'string' || !DEVICE.test(att.device)) bad(`device ${JSON.stringify(att.device)}`);
  const nbd = att.nbd;
  if (!nbd || typeof nbd.host !== 'string' || !/^[A-Za-z0-9.:-]{1,253}$/.test(nbd.host)) bad('NBD host');
  if (!Number.isInteger(nbd.port) || nbd.port < 1 || nbd.port > 65535) bad('NBD port');
  if (nbd.exportName !== att.volumeId) bad('NBD export name');
  if (nbd.tls !== undefined) {
    if (typeof nbd.tls.identity !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(nbd.tls.identity)) bad('TLS identity');
    if (typeof nbd.tls.pskHex !== 'string' || !/^[0-9a-f]{32,128}$/.test(nbd.tls.pskHex)) bad('TLS key');
  }
  return { volumeId: att.volumeId, device: att.device, nbd: { host: nbd.host, port: nbd.port, exportName: nbd.exportName, ...(nbd.tls ? { tls: { identity: nbd.tls.identity, pskHex: nbd.tls.pskHex } } : {}) } };
}

export class NodeVolumes {
  readonly #dir: string;
  readonly #keysDir: string;

  constructor(stateDir: string) {
    this.#dir = join(stateDir, 'volumes');
    this.#keysDir = join(stateDir, 'volume-keys');
  }

  async of(instanceId: string): Promise<NodeVolumeAttachment[]> {
    const text = await readFile(this.#file(instanceId), 'utf8').catch(() => undefined);
    if (text === undefined) return [];
    const parsed = JSON.parse(text) as NodeVolumeAttachment[];
    return Array.isArray(parsed) ? parsed : [];
  }

  /** Records the attachment (replacing an earlier one of the same volume). */
  async add(instanceId: string, att: NodeVolumeAttachment): Promise<void> {
    const list = (await this.of(instanceId)).filter((a) => a.volumeId !== att.volumeId);
    list.push(att);
    await this.#save(instanceId, list);
  }

  async remove(instanceId: string, volumeId: string): Promise<void> {
    const list = await this.of(instanceId);
    const left = list.filter((a) => a.volumeId !== volumeId);
    if (left.length !== list.length) await this.#save(instanceId, left);
  }

  /** Forgets every attachment of a terminated instance. */
  async forget(instanceId: string): Promise<void> {
    await rm(this.#file(instanceId), { force: true });
  }

  /** What the hypervisor driver plugs: the key written where QEMU reads it. */
  async forDriver(att: NodeVolumeAttachment): Promise<VolumeAttachment> {
    const { host, port, exportName, tls } = att.nbd;
    if (!tls) return { volumeId: att.volumeId, nbd: { host, port, exportName } };
    const credsDir = join(this.#keysDir, createHash('sha256').update(`${tls.identity}:${tls.pskHex}`).digest('hex').slice(0, 16));
    await ensurePrivateDir(this.#keysDir);
    await ensurePrivateDir(credsDir);
    await writePrivateFile(join(credsDir, 'keys.psk'), `${tls.identity}:${tls.pskHex}\n`);
    return { volumeId: att.volumeId, nbd: { host, port, exportName, tls: { credsDir, identity: tls.identity } } };
  }

  async #save(instanceId: string, list: NodeVolumeAttachment[]): Promise<void> {
    if (list.length === 0) return this.forget(instanceId);
    await ensurePrivateDir(this.#dir);
    await writePrivateFile(this.#file(instanceId), JSON.stringify(list, null, 2) + '\n');
  }

  #file(instanceId: string): string {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(instanceId)) throw new Error(`invalid instance id ${JSON.stringify(instanceId)}`);
    return join(this.#dir, `${instanceId}.json`);
  }
}
