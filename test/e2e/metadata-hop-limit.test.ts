// HttpPutResponseHopLimit on the wire: the metadata service in one network namespace (the node),
// an instance in a second one directly attached to it, and a "container" in a third one routed
// through the instance (one more hop). With hop limit 1 the instance gets a token and the
// container does not (the answer dies at the instance's forwarding, as on EC2), while IMDSv1 GETs
// are unaffected; with hop limit 2 the container gets its token too. Every namespace is the test's own.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { canUseNetns, TestNetns } from '../helpers/netns.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';
import { MetadataService, type InstanceMetadata } from '../../src/node/metadata-service.ts';
import { METADATA_ADDRESS } from '../../src/node/network.ts';

const execFileAsync = promisify(execFile);
const skip = skipUnlessPresent(canUseNetns() ?? (spawnSync('nft', ['--version']).status !== 0 ? 'nft (Debian nftables)' : undefined));

/** One HTTP request from inside a namespace, by a throwaway node process; status or "timeout". */
const CLIENT = `
const http = require('node:http');
const [method, path, header, value] = process.argv.slice(1);
const headers = header ? { [header]: value } : {};
let done = false;
const answer = (r) => { if (!done) { done = true; process.stdout.write(JSON.stringify(r)); } };
const req = http.request({ host: '169.254.169.254', port: 80, method, path, headers, agent: false, timeout: 4000 }, (res) => {
  let body = '';
  res.on('data', (d) => (body += d));
  res.on('end', () => answer({ status: res.statusCode, body }));
});
req.on('timeout', () => { answer({ status: 'timeout' }); req.destroy(); });
req.on('error', (e) => answer({ status: 'error', body: e.message }));
req.end();
`;

describe('metadata token answers limited to the instance hop limit', { skip, timeout: 120_000 }, () => {
  let node: TestNetns;
  let guest: TestNetns;
  let container: TestNetns;
  let service: MetadataService | undefined;
  let hops = 1;
  const guestIp = '10.88.0.2';
  const containerIp = '10.88.1.2';

  const meta = (ip: string): InstanceMetadata => ({
    instanceId: ip === guestIp ? 'i-0aaaaaaaaaaaaaaa1' : 'i-0aaaaaaaaaaaaaaa2', amiId: 'ami-1', instanceType: 't3.micro',
    localIpv4: ip, localHostname: 'ip-x', availabilityZone: 'z', region: 'r', publicKeys: [], securityGroups: [],
    reservationId: 'r-1', mac: 'd2:0d:00:00:00:01', accountId: '123456789012', launchTime: new Date(), amiLaunchIndex: 0,
    httpPutResponseHopLimit: hops,
  });

  // Asynchronous: the service answers from this very process.
  async function call(ns: TestNetns, method: string, path: string, header?: [string, string]): Promise<{ status: number | string; body?: string }> {
    const { stdout } = await execFileAsync('ip', ['netns', 'exec', ns.name, process.execPath, '-e', CLIENT, method, path, ...(header ?? [])], { encoding: 'utf8', timeout: 30_000 });
    return JSON.parse(stdout) as { status: number | string; body?: string };
  }

  before(async () => {
    node = new TestNetns('ibt-hop-n');
    guest = new TestNetns('ibt-hop-g');
    container = new TestNetns('ibt-hop-c');
    const ip = (ns: TestNetns, ...args: string[]) => ns.exec('ip', args);
    // node <-> guest
    ip(node, 'link', 'add', 'ibhn0', 'type', 'veth', 'peer', 'name', 'ibhg0', 'netns', guest.name);
    ip(node, 'addr', 'add', '10.88.0.1/24', 'dev', 'ibhn0');
    ip(node, 'addr', 'add', `${METADATA_ADDRESS}/32`, 'dev', 'lo');
    ip(node, 'link', 'set', 'ibhn0', 'up');
    ip(node, 'route', 'add', '10.88.1.0/24', 'via', guestIp);
    ip(guest, 'addr', 'add', `${guestIp}/24`, 'dev', 'ibhg0');
    ip(guest, 'link', 'set', 'ibhg0', 'up');
    ip(guest, 'route', 'add', 'default', 'via', '10.88.0.1');
    // guest <-> container, the guest routing between them
    ip(guest, 'link', 'add', 'ibhg1', 'type', 'veth', 'peer', 'name', 'ibhc0', 'netns', container.name);
    ip(guest, 'addr', 'add', '10.88.1.1/24', 'dev', 'ibhg1');
    ip(guest, 'link', 'set', 'ibhg1', 'up');
    guest.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
    ip(container, 'addr', 'add', `${containerIp}/24`, 'dev', 'ibhc0');
    ip(container, 'link', 'set', 'ibhc0', 'up');
    ip(container, 'route', 'add', 'default', 'via', '10.88.1.1');

    service = new MetadataService({ lookupByIp: (addr) => (addr === guestIp || addr === containerIp ? meta(addr) : undefined), hopLimit: true });
    await service.listen(METADATA_ADDRESS, 80, { netns: node.name });
  });

  after(async () => {
    await service?.close().catch(() => undefined);
    container?.dispose();
    guest?.dispose();
    node?.dispose();
  });

  it('hop limit 1: the instance gets a token, a container behind it does not, IMDSv1 reaches both', async () => {
    hops = 1;
    const own = await call(guest, 'PUT', '/latest/api/token', ['X-aws-ec2-metadata-token-ttl-seconds', '60']);
    assert.equal(own.status, 200);
    const t = own.body!;
    assert.equal((await call(guest, 'GET', '/latest/meta-data/instance-id', ['X-aws-ec2-metadata-token', t])).body, 'i-0aaaaaaaaaaaaaaa1');
    assert.equal((await call(container, 'PUT', '/latest/api/token', ['X-aws-ec2-metadata-token-ttl-seconds', '60'])).status, 'timeout');
    assert.deepEqual(await call(container, 'GET', '/latest/meta-data/instance-id'), { status: 200, body: 'i-0aaaaaaaaaaaaaaa2' });
    const table = node.exec('nft', ['list', 'table', 'ip', 'ib_imds_80']);
    assert.match(table, /ip ttl set 1/);
  });

  it('hop limit 2: the container gets its token too', async () => {
    hops = 2;
    const r = await call(container, 'PUT', '/latest/api/token', ['X-aws-ec2-metadata-token-ttl-seconds', '60']);
    assert.equal(r.status, 200);
    assert.equal((await call(container, 'GET', '/latest/meta-data/instance-id', ['X-aws-ec2-metadata-token', r.body!])).body, 'i-0aaaaaaaaaaaaaaa2');
  });

  it('removes its nftables table when the service closes', async () => {
    await service!.close();
    service = undefined;
    const r = spawnSync('ip', ['netns', 'exec', node.name, 'nft', 'list', 'table', 'ip', 'ib_imds_80'], { encoding: 'utf8' });
    assert.notEqual(r.status, 0, 'table gone');
  });
});
