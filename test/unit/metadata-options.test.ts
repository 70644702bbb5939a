// The metadata service as cloud-init's Ec2 datasource reads it, and each instance's metadata
// options (HttpTokens, HttpEndpoint, HttpPutResponseHopLimit) as the service honours them.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { MetadataService, type InstanceMetadata } from '../../src/node/metadata-service.ts';
import type { HopLimiter } from '../../src/node/metadata-hop-limit.ts';
import { metadataFromSpec } from '../../src/node/metadata-from-spec.ts';
import { checkMetadataOptions, DEFAULT_METADATA_OPTIONS } from '../../src/node/metadata-options.ts';
import type { InstanceSpec } from '../../src/node/node-api.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';

const INSTANCE: InstanceMetadata = {
  instanceId: 'i-0123456789abcdef0',
  amiId: 'ami-0fedcba9876543210',
  instanceType: 't3.micro',
  localIpv4: '10.1.0.5',
  localHostname: 'ip-10-1-0-5.ironbark-1.compute.internal',
  availabilityZone: 'ironbark-1a',
  region: 'ironbark-1',
  publicKeys: [{ name: 'my-key', openssh: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHt0ZXN0 my-key' }],
  securityGroups: ['default'],
  securityGroupIds: ['sg-0123456789abcdef0'],
  reservationId: 'r-0a1b2c3d4e5f60718',
  mac: 'd2:0d:12:34:56:78',
  userData: Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0xff, 0x00]), // gzip bytes: served as they are
  accountId: '123456789012',
  launchTime: new Date('2024-05-06T07:08:09.123Z'),
  amiLaunchIndex: 0,
  vpcId: 'vpc-0123456789abcdef0',
  subnetId: 'subnet-0123456789abcdef0',
  subnetIpv4CidrBlock: '10.1.0.0/16',
  rootDeviceName: '/dev/vda',
};

interface Reply { status: number; headers: http.IncomingHttpHeaders; body: Buffer }

class RecordingLimiter implements HopLimiter {
  calls: { ip: string; port: number; hops: number }[] = [];
  failWith: Error | undefined;
  async limit(ip: string, port: number, hops: number): Promise<void> {
    this.calls.push({ ip, port, hops });
    if (this.failWith) throw this.failWith;
  }
  async close(): Promise<void> {}
}

describe('metadata service: what cloud-init reads, and the metadata options', () => {
  let instance: InstanceMetadata = INSTANCE;
  const limiter = new RecordingLimiter();
  const errors: string[] = [];
  const service = new MetadataService({
    lookupByIp: (ip) => (ip === '127.0.0.1' ? instance : undefined),
    hopLimit: limiter,
    onError: (err, what) => errors.push(`${what}: ${err.message}`),
  });
  let port = 0;

  function request(method: string, path: string, headers: Record<string, string> = {}): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      });
      req.on('error', reject);
      req.end();
    });
  }
  const get = async (path: string, headers?: Record<string, string>) => request('GET', path, headers);
  const text = async (path: string, headers?: Record<string, string>) => (await get(path, headers)).body.toString('utf8');
  const token = async (ttl = '21600') => {
    const reply = await request('PUT', '/latest/api/token', { 'X-aws-ec2-metadata-token-ttl-seconds': ttl });
    assert.equal(reply.status, 200);
    return reply.body.toString('utf8');
  };

  before(async () => {
    port = (await service.listen('127.0.0.1', 0)).port;
  });
  after(() => service.close());

  it('lists the versions cloud-init probes, and serves each of them', async () => {
    const versions = (await text('/')).split('\n');
    for (const v of ['latest', '2009-04-04', '2016-09-02', '2018-09-24', '2021-03-23']) {
      assert.ok(versions.includes(v), `${v} listed`);
      assert.equal(await text(`/${v}/meta-data/instance-id`), INSTANCE.instanceId, v);
    }
    assert.equal((await get('/2000-01-01/meta-data/instance-id')).status, 404, 'a version EC2 never had');
  });

  it('serves block-device-mapping, the interface tree and the key as cloud-init crawls them', async () => {
    const md = (await text('/2021-03-23/meta-data/')).split('\n');
    for (const name of ['ami-id', 'block-device-mapping/', 'hostname', 'instance-id', 'instance-type', 'local-hostname', 'local-ipv4',
      'mac', 'network/', 'placement/', 'public-keys/', 'reservation-id', 'security-groups']) {
      assert.ok(md.includes(name), `${name} listed: ${md.join(' ')}`);
    }
    assert.deepEqual((await text('/2021-03-23/meta-data/block-device-mapping/')).split('\n'), ['ami', 'root']);
    assert.equal(await text('/2021-03-23/meta-data/block-device-mapping/ami'), '/dev/vda');
    assert.equal(await text('/2021-03-23/meta-data/block-device-mapping/root'), '/dev/vda');
    const mac = INSTANCE.mac;
    const nic = (await text(`/2021-03-23/meta-data/network/interfaces/macs/${mac}/`)).split('\n');
    for (const name of ['device-number', 'local-ipv4s', 'mac', 'subnet-id', 'vpc-id', 'security-group-ids']) assert.ok(nic.includes(name), name);
    assert.equal(await text(`/2021-03-23/meta-data/network/interfaces/macs/${mac}/device-number`), '0');
    assert.equal(await text(`/2021-03-23/meta-data/network/interfaces/macs/${mac}/subnet-id`), INSTANCE.subnetId);
    assert.equal(await text('/2021-03-23/meta-data/public-keys/'), '0=my-key');
    assert.equal(await text('/2021-03-23/meta-data/public-keys/0/openssh-key'), `${INSTANCE.publicKeys[0]!.openssh}\n`);
  });

  it('serves user data as the raw bytes given (cloud-init unpacks gzip and MIME itself)', async () => {
    const reply = await get('/latest/user-data');
    assert.equal(reply.status, 200);
    assert.deepEqual(reply.body, INSTANCE.userData);
  });

  it('serves the identity document and answers its signature paths honestly: not signed, so 404', async () => {
    assert.deepEqual((await text('/latest/dynamic/instance-identity/')).split('\n'), ['document']);
    const doc = JSON.parse(await text('/latest/dynamic/instance-identity/document')) as Record<string, unknown>;
    assert.equal(doc.instanceId, INSTANCE.instanceId);
    assert.equal(doc.region, 'ironbark-1');
    for (const p of ['pkcs7', 'signature', 'rsa2048']) assert.equal((await get(`/latest/dynamic/instance-identity/${p}`)).status, 404, p);
  });

  it('says how long a token has left on every answer given with one', async () => {
    const t = await token('300');
    const reply = await get('/latest/meta-data/instance-id', { 'X-aws-ec2-metadata-token': t });
    assert.equal(reply.status, 200);
    const left = Number(reply.headers['x-aws-ec2-metadata-token-ttl-seconds']);
    assert.ok(left >= 1 && left <= 300, `ttl header ${left}`);
    assert.equal((await get('/latest/meta-data/instance-id')).headers['x-aws-ec2-metadata-token-ttl-seconds'], undefined, 'IMDSv1 answers carry none');
  });

  it('HttpTokens=required: IMDSv1 gets 401, IMDSv2 works', async () => {
    instance = { ...INSTANCE, httpTokens: 'required' };
    try {
      assert.equal((await get('/latest/meta-data/instance-id')).status, 401);
      const t = await token();
      assert.equal(await text('/latest/meta-data/instance-id', { 'X-aws-ec2-metadata-token': t }), INSTANCE.instanceId);
    } finally {
      instance = INSTANCE;
    }
  });

  it('HttpEndpoint=disabled: every request, token or not, gets 403', async () => {
    const t = await token();
    instance = { ...INSTANCE, httpEndpoint: 'disabled' };
    try {
      assert.equal((await get('/latest/meta-data/instance-id')).status, 403);
      assert.equal((await get('/latest/meta-data/instance-id', { 'X-aws-ec2-metadata-token': t })).status, 403);
      assert.equal((await request('PUT', '/latest/api/token', { 'X-aws-ec2-metadata-token-ttl-seconds': '60' })).status, 403);
    } finally {
      instance = INSTANCE;
    }
  });

  it('HttpPutResponseHopLimit: each token answer is limited to the instance hop limit on its own connection', async () => {
    limiter.calls = [];
    instance = { ...INSTANCE, httpPutResponseHopLimit: 2 };
    try {
      await token();
    } finally {
      instance = INSTANCE;
    }
    await token();
    assert.equal(limiter.calls.length, 2);
    assert.deepEqual(limiter.calls.map((c) => [c.ip, c.hops]), [['127.0.0.1', 2], ['127.0.0.1', 1]], 'EC2 default is 1');
    assert.ok(limiter.calls.every((c) => Number.isInteger(c.port) && c.port > 0));
    await get('/latest/meta-data/instance-id');
    assert.equal(limiter.calls.length, 2, 'GETs are not limited, as on EC2');
  });

  it('still gives the token when the hop limit cannot be applied, and says so', async () => {
    limiter.failWith = new Error('nft: no such table');
    try {
      await token();
    } finally {
      limiter.failWith = undefined;
    }
    assert.match(errors.join('\n'), /hop limit.*no such table/);
  });
});

describe('metadata options on their way to the node', () => {
  it('checks every value', () => {
    assert.deepEqual(checkMetadataOptions({ httpTokens: 'required', httpPutResponseHopLimit: 64, httpEndpoint: 'disabled' }),
      { httpTokens: 'required', httpPutResponseHopLimit: 64, httpEndpoint: 'disabled' });
    const bad = [
      { ...DEFAULT_METADATA_OPTIONS, httpTokens: 'sometimes' },
      { ...DEFAULT_METADATA_OPTIONS, httpEndpoint: 'on' },
      { ...DEFAULT_METADATA_OPTIONS, httpPutResponseHopLimit: 0 },
      { ...DEFAULT_METADATA_OPTIONS, httpPutResponseHopLimit: 65 },
      { ...DEFAULT_METADATA_OPTIONS, httpPutResponseHopLimit: '2; drop' },
      null,
    ];
    for (const b of bad) assert.throws(() => checkMetadataOptions(b), (e: unknown) => e instanceof Ec2Error && e.code === 'InvalidParameterValue', JSON.stringify(b));
  });

  it('reach the metadata service from the spec, with EC2 defaults when absent', () => {
    const spec = {
      instanceId: 'i-0123456789abcdef0', reservationId: 'r-1', accountId: '123456789012', imageId: 'ami-1',
      kernel: { id: 'aki-1', url: '/k', sha256: 'a', sizeBytes: 1, format: 'raw' }, root: { id: 'ami-1', url: '/r', sha256: 'b', sizeBytes: 1, format: 'qcow2' },
      kernelCmdline: '', vmType: { name: 't3.micro', cores: 1, memoryMiB: 512, diskGiB: 5 }, zone: 'z', region: 'r', subnetCidr: '10.1.0.0/16',
      subnetId: 'subnet-1', vpcId: 'vpc-1', privateIp: '10.1.0.5', privateDnsName: 'ip-10-1-0-5.r.compute.internal', mac: 'd2:0d:00:00:00:01',
      publicKeys: [], securityGroups: [], launchIndex: 0, launchTime: '2024-01-01T00:00:00Z',
    } satisfies InstanceSpec;
    const plain = metadataFromSpec(spec);
    assert.deepEqual([plain.httpTokens, plain.httpPutResponseHopLimit, plain.httpEndpoint], ['optional', 1, 'enabled']);
    const strict = metadataFromSpec({ ...spec, metadataOptions: { httpTokens: 'required', httpPutResponseHopLimit: 3, httpEndpoint: 'disabled' } });
    assert.deepEqual([strict.httpTokens, strict.httpPutResponseHopLimit, strict.httpEndpoint], ['required', 3, 'disabled']);
  });
});
