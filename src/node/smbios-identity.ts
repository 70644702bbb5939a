// How a guest can tell it runs on an EC2-style cloud: like an EC2 instance, it sees an SMBIOS
// system UUID that starts with "ec2" and a serial number equal to it. cloud-init's Ec2 datasource
// identifies the platform this way (uuid starting "ec2" and equal to the serial) and only then
// speaks IMDSv2, runs its network-configuring Ec2Local stage and trusts the metadata service
// without warnings. The UUID is derived from the instance id, so it is stable across stop/start.
import { createHash } from 'node:crypto';

export interface SmbiosSystem {
  manufacturer: string;
  product: string;
  uuid: string;
  serial: string;
}

/** e.g. "ec2e1916-9099-7caf-fd21-0123456789ab": "ec2" and 29 hex digits from the instance id. */
export function ec2SystemUuid(instanceId: string): string {
  const hex = 'ec2' + createHash('sha256').update(`ironbark-smbios:${instanceId}`).digest('hex').slice(0, 29);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

export function smbiosSystemFor(instanceId: string): SmbiosSystem {
  const uuid = ec2SystemUuid(instanceId);
  return { manufacturer: 'Ironbark', product: 'Ironbark EC2-compatible instance', uuid, serial: uuid };
}

/** QEMU's `-smbios type=1,...` value for the instance (commas doubled, as QEMU option values need). */
export function smbiosType1Arg(instanceId: string): string {
  const s = smbiosSystemFor(instanceId);
  const v = (x: string) => x.replaceAll(',', ',,');
  return `type=1,manufacturer=${v(s.manufacturer)},product=${v(s.product)},serial=${v(s.serial)},uuid=${s.uuid}`;
}
