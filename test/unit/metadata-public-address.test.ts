// The metadata service's public-ipv4 follows the zone's firewall document (AssociateAddress and
// DisassociateAddress while the instance runs), falling back to the launch spec's address for an
// instance the document does not know yet; served through the real metadata service.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NodeFirewallDocuments } from '../../src/node/network/firewall-documents.ts';
import { makeFirewallDocument } from '../../src/node/network/firewall-document.ts';
import { withCurrentPublicAddress } from '../../src/node/network/metadata-public-address.ts';
import { metadataFromSpec } from '../../src/node/metadata-from-spec.ts';
import type { InstanceSpec } from '../../src/node/node-api.ts';

const ZONE = 'ironbark-1a';
const spec = {
  instanceId: 'i-0123456789abcdef0', reservationId: 'r-0123456789abcdef0', accountId: '123456789012', imageId: 'ami-0123456789abcdef0',
  root: { id: 'ami-0123456789abcdef0', url: 'http://x/ami', sha256: 'a'.repeat(64), sizeBytes: 1, format: 'qcow2' },
  kernel: { id: 'aki-0123456789abcdef0', url: 'http://x/aki', sha256: 'b'.repeat(64), sizeBytes: 1, format: 'raw' },
  kernelCmdline: '', vmType: { name: 'm1.small', cores: 1, memoryMiB: 256, diskGiB: 1 }, zone: ZONE, region: 'ironbark-1',
  subnetCidr: '10.1.0.0/16', subnetId: 'subnet-0123456789abcdef0', vpcId: 'vpc-0123456789abcdef0', privateIp: '10.1.0.4',
  privateDnsName: 'ip-10-1-0-4.ironbark-1.compute.internal', mac: 'd2:0d:00:00:00:01', publicIp: '203.0.113.1',
  publicKeys: [], securityGroups: [{ id: 'sg-0123456789abcdef0', name: 'default' }], launchIndex: 0, launchTime: new Date().toISOString(),
} as unknown as InstanceSpec;

const entry = (publicIp?: string) => ({ id: spec.instanceId, ip: spec.privateIp, vpcId: spec.vpcId, groups: ['sg-0123456789abcdef0'], ...(publicIp ? { publicIp } : {}) });

describe('public-ipv4 in the metadata service', () => {
  it("reports the launch spec's address until the zone's document knows the instance, then the document's", async () => {
    const docs = new NodeFirewallDocuments(undefined);
    const fromSpec = metadataFromSpec(spec);
    assert.equal(withCurrentPublicAddress(fromSpec, docs)!.publicIpv4, '203.0.113.1');
    assert.equal(withCurrentPublicAddress(fromSpec, docs)!.publicHostname, 'ec2-203-0-113-1.ironbark-1.compute.amazonaws.com');

    await docs.put(makeFirewallDocument(ZONE, [], [entry('203.0.113.9')]));
    const associated = withCurrentPublicAddress(fromSpec, docs)!;
    assert.equal(associated.publicIpv4, '203.0.113.9');
    assert.equal(associated.publicHostname, 'ec2-203-0-113-9.ironbark-1.compute.amazonaws.com');

    await docs.put(makeFirewallDocument(ZONE, [], [entry()]));
    const disassociated = withCurrentPublicAddress(fromSpec, docs)!;
    assert.equal(disassociated.publicIpv4, undefined);
    assert.equal(disassociated.publicHostname, undefined);

    await docs.put(makeFirewallDocument(ZONE, [], []));
    assert.equal(withCurrentPublicAddress(fromSpec, docs)!.publicIpv4, '203.0.113.1', 'an instance the document does not list keeps its spec');
    assert.equal(withCurrentPublicAddress(undefined, docs), undefined);
  });

  it('refuses a document whose public address is not an IPv4 address', async () => {
    const docs = new NodeFirewallDocuments(undefined);
    const doc = makeFirewallDocument(ZONE, [], [entry('203.0.113.9')]);
    await assert.rejects(docs.put({ ...doc, instances: [{ ...doc.instances[0], publicIp: '203.0.113.9; flush ruleset' }] }), /publicIp is not an IPv4 address/);
  });
});
