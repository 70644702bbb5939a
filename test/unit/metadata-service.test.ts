import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { MetadataService, type InstanceMetadata } from '../../src/node/metadata-service.ts';

const INSTANCE: InstanceMetadata = {
  instanceId: 'i-0123456789abcdef0',
  amiId: 'ami-0fedcba9876543210',
  instanceType: 't3.micro',
  localIpv4: '10.1.0.5',
  localHostname: 'ip-10-1-0-5.ironbark.internal',
  availabilityZone: 'ironbark-1a',
  region: 'ironbark-1',
  publicKeys: [{ name: 'my-key', openssh: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHt0ZXN0 my-key' }],
  securityGroups: ['default', 'web'],
  reservationId: 'r-0a1b2c3d4e5f60718',
  mac: 'd2:0d:12:34:56:78',
  userData: Buffer.from('#!/bin/sh\necho hello\n'),
  accountId: '123456789012',
  launchTime: new Date('2024-05-06T07:08:09.123Z'),
  amiLaunchIndex: 0,
  vpcId: 'vpc-0123456789abcdef0',
  subnetIpv4CidrBlock: '10.1.0.0/16',
};

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

describe('MetadataService', () => {
  let instance: InstanceMetadata | undefined = INSTANCE;
  let clock = Date.parse('2025-01-01T00:00:00Z');
  const service = new MetadataService({
    lookupByIp: (ip) => (ip === '127.0.0.1' ? instance : undefined),
    now: () => clock,
  });
  let port = 0;

  function request(method: string, path: string, headers: Record<string, string> = {}): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      });
      req.on('error', reject);
      req.end();
    });
  }
  const get = (path: string, headers?: Record<string, string>) => request('GET', path, headers);
  const getToken = (ttl: string, extra: Record<string, string> = {}) =>
    request('PUT', '/latest/api/token', { 'X-aws-ec2-metadata-token-ttl-seconds': ttl, ...extra });

  before(async () => {
    port = (await service.listen('127.0.0.1', 0)).port;
  });
  after(() => service.close());

  describe('IMDSv1', () => {
    it('answers the instance its own scalar values', async () => {
      const expected: Record<string, string> = {
        'instance-id': 'i-0123456789abcdef0',
        'ami-id': 'ami-0fedcba9876543210',
        'ami-launch-index': '0',
        'instance-type': 't3.micro',
        'local-ipv4': '10.1.0.5',
        'local-hostname': 'ip-10-1-0-5.ironbark.internal',
        hostname: 'ip-10-1-0-5.ironbark.internal',
        mac: 'd2:0d:12:34:56:78',
        'reservation-id': 'r-0a1b2c3d4e5f60718',
        'security-groups': 'default\nweb',
        'placement/availability-zone': 'ironbark-1a',
        'placement/region': 'ironbark-1',
      };
      for (const [path, value] of Object.entries(expected)) {
        const reply = await get(`/latest/meta-data/${path}`);
        assert.equal(reply.status, 200, path);
        assert.equal(reply.body, value, path);
        assert.match(String(reply.headers['content-type']), /^text\/plain/);
      }
    });

    it('lists the meta-data directory with a trailing slash on subdirectories', async () => {
      const reply = await get('/latest/meta-data/');
      assert.equal(reply.status, 200);
      const names = reply.body.split('\n');
      for (const leaf of ['ami-id', 'ami-launch-index', 'hostname', 'instance-id', 'instance-type', 'local-hostname', 'local-ipv4', 'mac', 'reservation-id', 'security-groups']) {
        assert.ok(names.includes(leaf), `${leaf} listed`);
      }
      for (const directory of ['network/', 'placement/', 'public-keys/']) assert.ok(names.includes(directory), `${directory} listed`);
      assert.ok(!names.includes('public-ipv4'), 'public-ipv4 is absent without a public address');
      assert.ok(!names.includes('kernel-id'), 'kernel-id is absent without a kernel');
      assert.equal((await get('/latest/meta-data/public-ipv4')).status, 404);
      assert.deepEqual((await get('/latest/meta-data/placement/')).body.split('\n'), ['availability-zone', 'region']);
      // A directory asked for without its slash is listed too.
      assert.equal((await get('/latest/meta-data/placement')).body, 'availability-zone\nregion');
    });

    it('lists the API versions at / and the top of a version', async () => {
      const versions = (await get('/')).body.split('\n');
      assert.equal(versions.at(-1), 'latest');
      assert.ok(versions.includes('2009-04-04'));
      assert.equal((await get('/latest/')).body, 'dynamic\nmeta-data\nuser-data');
      // Older clients (cloud-init) ask under a dated version.
      assert.equal((await get('/2009-04-04/meta-data/instance-id')).body, 'i-0123456789abcdef0');
      assert.equal((await get('/1999-01-01/meta-data/instance-id')).status, 404);
    });

    it('serves public keys as EC2 does', async () => {
      assert.equal((await get('/latest/meta-data/public-keys/')).body, '0=my-key');
      assert.equal((await get('/latest/meta-data/public-keys/0/')).body, 'openssh-key');
      assert.equal((await get('/latest/meta-data/public-keys/0/openssh-key')).body, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHt0ZXN0 my-key\n');
      assert.equal((await get('/latest/meta-data/public-keys/1/openssh-key')).status, 404);
    });

    it('serves the network interface tree under the MAC', async () => {
      assert.equal((await get('/latest/meta-data/network/interfaces/macs/')).body, 'd2:0d:12:34:56:78/');
      const base = '/latest/meta-data/network/interfaces/macs/d2:0d:12:34:56:78';
      const names = (await get(`${base}/`)).body.split('\n');
      for (const name of ['local-ipv4s', 'mac', 'subnet-ipv4-cidr-block', 'vpc-id', 'owner-id']) assert.ok(names.includes(name), name);
      assert.ok(!names.includes('public-ipv4s'));
      assert.equal((await get(`${base}/local-ipv4s`)).body, '10.1.0.5');
      assert.equal((await get(`${base}/subnet-ipv4-cidr-block`)).body, '10.1.0.0/16');
      assert.equal((await get(`${base}/vpc-id`)).body, 'vpc-0123456789abcdef0');
      assert.equal((await get('/latest/meta-data/network/interfaces/macs/d2:0d:00:00:00:00/mac')).status, 404);
    });

    it('serves user-data as bytes, and 404 when the instance has none', async () => {
      const reply = await get('/latest/user-data');
      assert.equal(reply.status, 200);
      assert.equal(reply.body, '#!/bin/sh\necho hello\n');
      instance = { ...INSTANCE, userData: undefined };
      try {
        assert.equal((await get('/latest/user-data')).status, 404);
        assert.equal((await get('/latest/')).body, 'dynamic\nmeta-data');
      } finally {
        instance = INSTANCE;
      }
    });

    it('shows public-ipv4 only when the instance has one', async () => {
      instance = { ...INSTANCE, publicIpv4: '192.0.2.10' };
      try {
        assert.equal((await get('/latest/meta-data/public-ipv4')).body, '192.0.2.10');
        assert.ok((await get('/latest/meta-data/')).body.split('\n').includes('public-ipv4'));
      } finally {
        instance = INSTANCE;
      }
    });

    it('serves the instance identity document', async () => {
      assert.equal((await get('/latest/dynamic/')).body, 'instance-identity/');
      const reply = await get('/latest/dynamic/instance-identity/document');
      assert.equal(reply.status, 200);
      const doc = JSON.parse(reply.body);
      assert.equal(doc.accountId, '123456789012');
      assert.equal(doc.architecture, 'x86_64');
      assert.equal(doc.availabilityZone, 'ironbark-1a');
      assert.equal(doc.imageId, 'ami-0fedcba9876543210');
      assert.equal(doc.instanceId, 'i-0123456789abcdef0');
      assert.equal(doc.instanceType, 't3.micro');
      assert.equal(doc.pendingTime, '2024-05-06T07:08:09Z');
      assert.equal(doc.privateIp, '10.1.0.5');
      assert.equal(doc.region, 'ironbark-1');
      assert.equal(doc.version, '2017-09-30');
      assert.equal(doc.kernelId, null);
      assert.equal(doc.ramdiskId, null);
    });

    it('answers 404 to an address that is no instance', async () => {
      instance = undefined;
      try {
        assert.equal((await get('/latest/meta-data/instance-id')).status, 404);
        assert.equal((await getToken('60')).status, 404);
      } finally {
        instance = INSTANCE;
      }
    });

    it('answers 404 to unknown paths and 405 to other methods', async () => {
      assert.equal((await get('/latest/meta-data/no-such-thing')).status, 404);
      assert.equal((await get('/latest/meta-data/instance-id/extra')).status, 404);
      assert.equal((await request('POST', '/latest/meta-data/instance-id')).status, 405);
    });
  });

  describe('IMDSv2', () => {
    it('issues a token with the requested TTL and accepts it', async () => {
      const reply = await getToken('300');
      assert.equal(reply.status, 200);
      assert.equal(reply.headers['x-aws-ec2-metadata-token-ttl-seconds'], '300');
      assert.ok(reply.body.length > 20);
      const data = await get('/latest/meta-data/instance-id', { 'X-aws-ec2-metadata-token': reply.body });
      assert.equal(data.status, 200);
      assert.equal(data.body, 'i-0123456789abcdef0');
    });

    it('enforces TTL bounds of 1 to 21600 seconds', async () => {
      assert.equal((await getToken('1')).status, 200);
      assert.equal((await getToken('21600')).status, 200);
      for (const bad of ['0', '21601', '-5', 'abc', '1.5']) assert.equal((await getToken(bad)).status, 400, `ttl ${bad}`);
      assert.equal((await request('PUT', '/latest/api/token')).status, 400, 'missing TTL header');
    });

    it('refuses to issue a token through a proxy (X-Forwarded-For)', async () => {
      assert.equal((await getToken('60', { 'X-Forwarded-For': '10.1.0.9' })).status, 403);
    });

    it('answers 401 to an invalid or tampered token', async () => {
      assert.equal((await get('/latest/meta-data/instance-id', { 'X-aws-ec2-metadata-token': 'not-a-token' })).status, 401);
      const token = (await getToken('60')).body;
      const tampered = token.slice(0, -2) + (token.endsWith('AA') ? 'BB' : 'AA');
      assert.equal((await get('/latest/meta-data/instance-id', { 'X-aws-ec2-metadata-token': tampered })).status, 401);
    });

    it('answers 401 once the token has expired', async () => {
      const token = (await getToken('60')).body;
      const headers = { 'X-aws-ec2-metadata-token': token };
      clock += 59_000;
      assert.equal((await get('/latest/meta-data/instance-id', headers)).status, 200);
      clock += 1_000;
      assert.equal((await get('/latest/meta-data/instance-id', headers)).status, 401);
    });

    it('binds a token to the instance that asked for it', async () => {
      const token = (await getToken('60')).body;
      instance = { ...INSTANCE, instanceId: 'i-0aaaaaaaaaaaaaaaa' };
      try {
        assert.equal((await get('/latest/meta-data/instance-id', { 'X-aws-ec2-metadata-token': token })).status, 401);
      } finally {
        instance = INSTANCE;
      }
    });

    it('refuses token-less requests when the instance requires tokens', async () => {
      instance = { ...INSTANCE, httpTokens: 'required' };
      try {
        assert.equal((await get('/latest/meta-data/instance-id')).status, 401);
        const token = (await getToken('60')).body;
        assert.equal((await get('/latest/meta-data/instance-id', { 'X-aws-ec2-metadata-token': token })).body, 'i-0123456789abcdef0');
      } finally {
        instance = INSTANCE;
      }
    });
  });
});
