// Gzip-compressed user data (issue 12): EC2 keeps user data as the bytes the user gave and its
// metadata service hands them back untouched; cloud-init sees the gzip magic and gunzips itself.
// Followed here from what RunInstances stores (base64 of the bytes, as the aws CLI sends
// `fileb://` files) through the node's spec to the metadata service's answer, byte for byte.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { gunzipSync, gzipSync } from 'node:zlib';
import { MetadataService, type InstanceMetadata } from '../../src/node/metadata-service.ts';
import { metadataFromSpec } from '../../src/node/metadata-from-spec.ts';
import type { InstanceSpec } from '../../src/node/node-api.ts';

const CLOUD_CONFIG = '#cloud-config\nhostname: gzipped-host\nruncmd:\n  - echo "from gzip" > /var/tmp/gz\n';

function specWith(userData: string): InstanceSpec {
  const ref = { id: 'ami-0123456789abcdef0', url: '/img/disk', sha256: '0'.repeat(64), sizeBytes: 1, format: 'raw' as const };
  return {
    instanceId: 'i-0123456789abcdef0', reservationId: 'r-0123456789abcdef0', accountId: '123456789012', imageId: ref.id,
    root: ref, bootMode: 'legacy-bios', kernelCmdline: '', vmType: { name: 'm1.small', cores: 1, memoryMiB: 256, diskGiB: 5 },
    zone: 'ironbark-1a', region: 'ironbark-1', subnetCidr: '10.1.0.0/16', subnetId: 'subnet-0123456789abcdef0',
    vpcId: 'vpc-0123456789abcdef0', privateIp: '10.1.0.5', privateDnsName: 'ip-10-1-0-5.ironbark-1.compute.internal',
    mac: 'd2:0d:12:34:56:78', userData, publicKeys: [], securityGroups: [], launchIndex: 0, launchTime: new Date().toISOString(),
  };
}

describe('gzip-compressed user data', () => {
  let metadata: InstanceMetadata | undefined;
  const service = new MetadataService({ lookupByIp: (ip) => (ip === '127.0.0.1' ? metadata : undefined) });
  let port = 0;
  before(async () => { port = (await service.listen('127.0.0.1', 0)).port; });
  after(() => service.close());

  function get(path: string): Promise<{ status: number; type?: string; body: Buffer }> {
    return new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'], body: Buffer.concat(chunks) }));
      }).on('error', reject);
    });
  }

  it('is served as the exact bytes given, which gunzip to the cloud-config', async () => {
    const gz = gzipSync(Buffer.from(CLOUD_CONFIG), { level: 9 });
    assert.deepEqual([...gz.subarray(0, 2)], [0x1f, 0x8b]);
    metadata = metadataFromSpec(specWith(gz.toString('base64')));
    const reply = await get('/latest/user-data');
    assert.equal(reply.status, 200);
    assert.equal(reply.type, 'application/octet-stream');
    assert.ok(reply.body.equals(gz), 'byte for byte, not decoded, re-encoded or decompressed');
    assert.equal(gunzipSync(reply.body).toString('utf8'), CLOUD_CONFIG);
  });

  it('keeps every byte value, including ones that are not UTF-8', async () => {
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    metadata = metadataFromSpec(specWith(all.toString('base64')));
    assert.ok((await get('/latest/user-data')).body.equals(all));
  });
});
