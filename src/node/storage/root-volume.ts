// Booting from an EBS volume: the instance's root disk is a volume of the zone's storage host,
// reached over NBD with the zone's TLS pre-shared key exactly as attached volumes are
// (qmp-volumes.ts), instead of a copy-on-write overlay on this node. The volume is opened when QEMU
// starts (a block node on the command line, the first virtio disk, so the guest sees it as
// /dev/vda and the firmware boots it as it would the overlay), and stays the instance's across stop and start; the
// node never deletes it (the cloud decides, by DeleteOnTermination).
import type { VolumeAttachment } from '../hypervisor.ts';
import type { NbdLocation } from '../node-api.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { volumeSerial } from './qmp-volumes.ts';

const VOLUME_ID = /^vol-[0-9a-f]{8}([0-9a-f]{9})?$/;

/** The device the guest sees its root volume as (the first virtio disk). */
export const ROOT_VOLUME_DEVICE = '/dev/vda';

/** The root volume as the cluster hands it over: the volume and where this node reaches it. */
export interface RootVolumeSpec {
  volumeId: string;
  /** Filled in by the cluster (its storage's export); the cloud names the volume only. */
  nbd?: NbdLocation;
}

/** Checks what the cluster sent before any of it reaches a file or QEMU's command line. */
export function checkRootVolume(instanceId: string, root: RootVolumeSpec): { volumeId: string; nbd: NbdLocation } {
  const bad = (what: string): never => { throw new Ec2Error('InvalidParameterValue', `Instance ${instanceId} has an invalid root volume: ${what}.`); };
  if (!root || typeof root !== 'object') bad('not an object');
  if (typeof root.volumeId !== 'string' || !VOLUME_ID.test(root.volumeId)) bad(`volume id ${JSON.stringify(root.volumeId)}`);
  const nbd = root.nbd;
  if (!nbd) return bad('no NBD export (the zone keeps no volumes?)');
  if (typeof nbd.host !== 'string' || !/^[A-Za-z0-9.:-]{1,253}$/.test(nbd.host)) bad('NBD host');
  if (!Number.isInteger(nbd.port) || nbd.port < 1 || nbd.port > 65535) bad('NBD port');
  if (nbd.exportName !== root.volumeId) bad('NBD export name');
  if (nbd.tls !== undefined) {
    if (typeof nbd.tls.identity !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(nbd.tls.identity)) bad('TLS identity');
    if (typeof nbd.tls.pskHex !== 'string' || !/^[0-9a-f]{32,128}$/.test(nbd.tls.pskHex)) bad('TLS key');
  }
  return {
    volumeId: root.volumeId,
    nbd: { host: nbd.host, port: nbd.port, exportName: nbd.exportName, ...(nbd.tls ? { tls: { identity: nbd.tls.identity, pskHex: nbd.tls.pskHex } } : {}) },
  };
}

/** QEMU's name for the root disk's block node and TLS credentials. */
const ROOT_NODE = 'rootdisk';
const ROOT_TLS = 'troot';

/** QEMU arguments that make the volume the VM's first disk, booted first. */
export function rootVolumeArgs(volume: VolumeAttachment): string[] {
  const args: string[] = [];
  let blockdev: Record<string, unknown>;
  if (volume.nbd) {
    const { host, port, exportName, tls } = volume.nbd;
    if (tls) {
      const v = (s: string) => s.replaceAll(',', ',,');
      args.push('-object', `tls-creds-psk,id=${ROOT_TLS},endpoint=client,dir=${v(tls.credsDir)},username=${v(tls.identity)}`);
    }
    blockdev = {
      driver: 'nbd', 'node-name': ROOT_NODE, export: exportName,
      server: { type: 'inet', host, port: String(port) },
      ...(tls ? { 'tls-creds': ROOT_TLS } : {}),
      // A storage host that restarts is waited for rather than an I/O error in the guest's root.
      'reconnect-delay': 30,
    };
  } else if (volume.path) {
    blockdev = { driver: volume.format ?? 'raw', 'node-name': ROOT_NODE, file: { driver: 'file', filename: volume.path } };
  } else {
    throw new Error(`root volume ${volume.volumeId} has neither an NBD export nor a file`);
  }
  // JSON form: values (paths, hosts) need no escaping.
  args.push('-blockdev', JSON.stringify(blockdev));
  // No bootindex: -kernel's boot ROM takes index 0, and the firmware boots the first disk anyway.
  args.push('-device', `virtio-blk-pci,drive=${ROOT_NODE},serial=${volumeSerial(volume.volumeId)}`);
  return args;
}
