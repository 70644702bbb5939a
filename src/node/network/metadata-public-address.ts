// The public address the metadata service reports (public-ipv4, public-hostname, the interface's
// ipv4-associations) follows AssociateAddress and DisassociateAddress while the instance runs: the
// launch spec gives the address the instance started with, and the zone's firewall document (which
// the cloud sends on every change, within seconds) gives the one it has now. An instance the
// document does not know yet keeps its spec's.
import type { InstanceMetadata } from '../metadata-service.ts';
import type { FirewallDocument } from './firewall-document.ts';
import type { NodeFirewallDocuments } from './firewall-documents.ts';

/** Each document's instance -> public address, built once per document. */
const indexes = new WeakMap<FirewallDocument, Map<string, string | undefined>>();

function publicAddresses(doc: FirewallDocument): Map<string, string | undefined> {
  let index = indexes.get(doc);
  if (!index) {
    index = new Map(doc.instances.map((i) => [i.id, i.publicIp]));
    indexes.set(doc, index);
  }
  return index;
}

/** EC2's public host name for an address (the same as the cloud's, cloud/network/public-addresses.ts). */
export function publicHostnameFor(address: string, region: string): string {
  return `ec2-${address.replaceAll('.', '-')}.${region}.compute.amazonaws.com`;
}

export function withCurrentPublicAddress(metadata: InstanceMetadata | undefined, docs: NodeFirewallDocuments): InstanceMetadata | undefined {
  if (!metadata) return undefined;
  const doc = docs.get(metadata.availabilityZone);
  const index = doc ? publicAddresses(doc) : undefined;
  if (!index?.has(metadata.instanceId)) return metadata;
  const current = index.get(metadata.instanceId);
  if (current === metadata.publicIpv4) return metadata;
  return { ...metadata, publicIpv4: current, publicHostname: current ? publicHostnameFor(current, metadata.region) : undefined };
}
