// NodeNetwork against the real kernel: one network namespace plays the node host, another plays
// a guest attached through a veth standing in for its tap. All traffic stays in these namespaces.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeNetwork, allocateMac, METADATA_ADDRESS } from '../../src/node/network.ts';
import { MetadataService, type InstanceMetadata } from '../../src/node/metadata-service.ts';
import { bridgeNameForZone, tapNameForInstance, firewallTableName } from '../../src/node/network-addressing.ts';
import { makeFirewallDocument } from '../../src/node/network/firewall-document.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

function run(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 30_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function must(file: string, args: string[]): Promise<string> {
  const r = await run(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

const inNs = (ns: string, file: string, args: string[]) => run('ip', ['netns', 'exec', ns, file, ...args]);

function onPath(tool: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').some((dir) => existsSync(join(dir, tool)));
}

function skipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  for (const tool of ['ip', 'nft', 'dnsmasq', 'busybox']) if (!onPath(tool)) return `${tool} is not installed`;
  return false;
}

describe('node network names and MACs', () => {
  it('gives each instance a stable, locally administered unicast MAC', () => {
    const mac = allocateMac('i-0123456789abcdef0');
    assert.equal(mac, allocateMac('i-0123456789abcdef0'));
    assert.notEqual(mac, allocateMac('i-0123456789abcdef1'));
    assert.match(mac, /^d2:0d(:[0-9a-f]{2}){4}$/);
    const first = parseInt(mac.slice(0, 2), 16);
    assert.equal(first & 0x02, 0x02, 'locally administered bit set');
    assert.equal(first & 0x01, 0, 'unicast');
  });

  it('names links with the ib prefix within 15 characters', () => {
    assert.equal(bridgeNameForZone('us-east-1a'), 'ibbr-us-east-1a');
    assert.match(bridgeNameForZone('a-very-long-zone-name-1a'), /^ibbr-[0-9a-f]{8}$/);
    assert.equal(tapNameForInstance('i-0123456789abcdef0'), 'ibtap-012345678');
    assert.match(tapNameForInstance('weird id'), /^ibtap-[0-9a-f]{9}$/);
    assert.equal(firewallTableName('ibbr-us-east-1a'), 'ib_br_us_east_1a');
  });

  it('rejects a CIDR with host bits set and a bridge name without the prefix', () => {
    assert.throws(() => new NodeNetwork({ zone: 'z', cidr: '10.77.0.1/24', stateDir: '/nonexistent' }), /host bits/);
    assert.throws(() => new NodeNetwork({ zone: 'z', cidr: '10.77.0.0/24', bridgeName: 'br0', stateDir: '/nonexistent' }), /must start with 'ib'/);
  });
});

describe('NodeNetwork in network namespaces', { skip: skipUnlessPresent(skipReason()) }, () => {
  const suffix = randomBytes(3).toString('hex');
  const hostNs = `ibtest-${suffix}`;
  const vmNs = `ibtest-${suffix}-vm`;
  const zone = 'ibtest-zone-a';
  const cidr = '10.77.0.0/24';
  const instanceId = 'i-0a1b2c3d4e5f60789';
  const vmMac = allocateMac(instanceId);
  const vmIp = '10.77.0.23';
  let stateDir = '';
  let network: NodeNetwork;
  let metadata: MetadataService;
  const metadataFor = new Map<string, InstanceMetadata>();
  const options = () => ({ zone, cidr, stateDir, netns: hostNs });

  async function linksInHost(): Promise<{ ifname: string; master?: string; linkinfo?: { info_kind?: string } }[]> {
    return JSON.parse(await must('ip', ['-n', hostNs, '-j', '-d', 'link', 'show']));
  }

  async function dnsmasqPidsInHost(): Promise<number[]> {
    const pids = (await must('ip', ['netns', 'pids', hostNs])).split('\n').filter(Boolean).map(Number);
    const out: number[] = [];
    for (const pid of pids) {
      const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
      if (comm.trim() === 'dnsmasq') out.push(pid);
    }
    return out;
  }

  /** Runs busybox udhcpc in the guest namespace; returns what the server offered. */
  async function leaseInGuest(): Promise<Record<string, string>> {
    const envFile = join(stateDir, `udhcpc-${randomBytes(3).toString('hex')}.env`);
    const script = join(stateDir, 'udhcpc.script');
    await writeFile(
      script,
      `#!/bin/sh
case "$1" in
  bound|renew)
    echo "ip=$ip" > ${envFile}
    echo "mask=$mask" >> ${envFile}
    echo "router=$router" >> ${envFile}
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    ip route replace default via "$router" dev "$interface"
    ;;
esac
exit 0
`,
    );
    await chmod(script, 0o755);
    const r = await inNs(vmNs, 'busybox', ['udhcpc', '-i', 'eth0', '-f', '-q', '-n', '-t', '5', '-T', '1', '-s', script]);
    if (r.code !== 0) {
      const log = await readFile(network.dhcp.logPath, 'utf8').catch(() => '(no dnsmasq log)');
      assert.fail(`udhcpc failed: ${r.stderr}\ndnsmasq log:\n${log}`);
    }
    const text = await readFile(envFile, 'utf8');
    return Object.fromEntries(text.trim().split('\n').map((line) => line.split('=') as [string, string]));
  }

  before(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'ibtest-node-network-'));
    await must('ip', ['netns', 'add', hostNs]);
    await must('ip', ['netns', 'add', vmNs]);
    await must('ip', ['-n', hostNs, 'link', 'set', 'lo', 'up']);
    await must('ip', ['-n', vmNs, 'link', 'set', 'lo', 'up']);
    network = new NodeNetwork(options());
    metadata = new MetadataService({ lookupByIp: (ip) => metadataFor.get(ip) });
    metadataFor.set(vmIp, {
      instanceId,
      amiId: 'ami-0123456789abcdef0',
      instanceType: 't3.micro',
      localIpv4: vmIp,
      localHostname: 'ip-10-77-0-23',
      availabilityZone: zone,
      region: 'ibtest',
      publicKeys: [],
      securityGroups: ['default'],
      reservationId: 'r-0123456789abcdef0',
      mac: vmMac,
      accountId: '123456789012',
      launchTime: new Date(),
      amiLaunchIndex: 0,
    });
  });

  after(async () => {
    await metadata?.close().catch(() => undefined);
    await network?.tearDown().catch(() => undefined);
    // Whatever still runs in the test namespaces was started by this test; stop it by pid.
    for (const ns of [hostNs, vmNs]) {
      const pids = (await run('ip', ['netns', 'pids', ns])).stdout.split('\n').filter(Boolean).map(Number);
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await run('ip', ['netns', 'del', ns]);
    }
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  it('sets up the bridge with the gateway and metadata addresses, DHCP and the firewall table', async () => {
    await network.setUp();
    const bridge = (await linksInHost()).find((l) => l.ifname === network.bridgeName);
    assert.equal(bridge?.linkinfo?.info_kind, 'bridge');
    const addresses = await must('ip', ['-n', hostNs, '-4', '-o', 'addr', 'show', 'dev', network.bridgeName]);
    assert.match(addresses, /inet 10\.77\.0\.1\/24 /);
    assert.match(addresses, /inet 169\.254\.169\.254\/32 /);
    assert.equal((await dnsmasqPidsInHost()).length, 1);
    const tables = await must('ip', ['netns', 'exec', hostNs, 'nft', 'list', 'tables']);
    assert.match(tables, new RegExp(`table bridge ${network.firewallTable}\\b`));
  });

  it('is idempotent: a second set-up adopts the running dnsmasq', async () => {
    const before = await dnsmasqPidsInHost();
    await new NodeNetwork(options()).setUp();
    assert.deepEqual(await dnsmasqPidsInHost(), before);
  });

  it('serves metadata on 169.254.169.254:80 inside the host namespace', async () => {
    await metadata.listen(METADATA_ADDRESS, 80, { netns: hostNs });
  });

  it('attaches a guest port to the bridge', async () => {
    const tapName = tapNameForInstance(instanceId);
    // The guest end plays the VM's NIC, so it carries the instance's MAC.
    await must('ip', ['-n', hostNs, 'link', 'add', tapName, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', vmNs]);
    await must('ip', ['-n', vmNs, 'link', 'set', 'eth0', 'address', vmMac]);
    await must('ip', ['-n', vmNs, 'link', 'set', 'eth0', 'up']);
    // Every port is closed until its groups are known: this one's group lets everything in and out.
    const open = [{ protocol: '-1', cidr: '0.0.0.0/0' }];
    await network.setFirewallDocument(makeFirewallDocument(zone, [{ id: 'sg-0000000000000a001', vpcId: 'vpc-0000000000000a001', ingress: open, egress: open }], []));
    const result = await network.addInstance({ instanceId, mac: vmMac, ip: vmIp, firewall: { vpcId: 'vpc-0000000000000a001', groups: ['sg-0000000000000a001'] } });
    assert.equal(result.tapName, tapName);
    const port = (await linksInHost()).find((l) => l.ifname === tapName);
    assert.equal(port?.master, network.bridgeName);
  });

  it('gives the guest exactly its reserved address by DHCP', async () => {
    const lease = await leaseInGuest();
    assert.equal(lease.ip, vmIp);
    assert.equal(lease.mask, '24');
    assert.equal(lease.router, '10.77.0.1');
  });

  it('lets the host reach the guest', async () => {
    const r = await inNs(hostNs, 'busybox', ['ping', '-c', '1', '-W', '2', vmIp]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });

  it('lets the guest read its own metadata at 169.254.169.254 (v1 and v2)', async () => {
    const v1 = await inNs(vmNs, 'busybox', ['wget', '-q', '-O', '-', `http://${METADATA_ADDRESS}/latest/meta-data/instance-id`]);
    assert.equal(v1.code, 0, v1.stderr);
    assert.equal(v1.stdout, instanceId);
    const v2Script = `
      const base = 'http://${METADATA_ADDRESS}';
      const token = await (await fetch(base + '/latest/api/token', { method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': '60' } })).text();
      const res = await fetch(base + '/latest/meta-data/local-ipv4', { headers: { 'X-aws-ec2-metadata-token': token } });
      process.stdout.write(res.status + ' ' + (await res.text()));
    `;
    const v2 = await inNs(vmNs, process.execPath, ['--input-type=module', '-e', v2Script]);
    assert.equal(v2.stdout, `200 ${vmIp}`, v2.stderr);
  });

  it('drops packets a guest sends from an address that is not its own', async () => {
    assert.equal((await inNs(vmNs, 'busybox', ['ping', '-c', '1', '-W', '2', '10.77.0.1'])).code, 0);
    await must('ip', ['-n', vmNs, 'addr', 'add', '10.77.0.99/24', 'dev', 'eth0']);
    const spoofed = await inNs(vmNs, 'busybox', ['ping', '-c', '1', '-W', '1', '-I', '10.77.0.99', '10.77.0.1']);
    assert.notEqual(spoofed.code, 0, 'spoofed ping must not be answered');
    await must('ip', ['-n', vmNs, 'addr', 'del', '10.77.0.99/24', 'dev', 'eth0']);
  });

  it('repairs the pieces after a crash: dnsmasq, port membership and firewall rules', async () => {
    const [oldPid] = await dnsmasqPidsInHost();
    process.kill(oldPid!, 'SIGKILL');
    const tapName = tapNameForInstance(instanceId);
    await must('ip', ['-n', hostNs, 'link', 'set', tapName, 'nomaster']);
    await must('ip', ['netns', 'exec', hostNs, 'nft', 'delete', 'table', 'bridge', network.firewallTable]);

    network = new NodeNetwork(options());
    await network.setUp();
    const pids = await dnsmasqPidsInHost();
    assert.equal(pids.length, 1);
    assert.notEqual(pids[0], oldPid);
    assert.equal((await linksInHost()).find((l) => l.ifname === tapName)?.master, network.bridgeName);
    const rules = await must('ip', ['netns', 'exec', hostNs, 'nft', 'list', 'table', 'bridge', network.firewallTable]);
    assert.match(rules, new RegExp(`"${tapName}"`));
    assert.match(rules, new RegExp(`ip saddr != ${vmIp.replace(/\./g, '\\.')} drop`));
    assert.equal((await leaseInGuest()).ip, vmIp, 'the restarted DHCP server still knows the reservation');
  });

  it('creates a real tap for an instance and removes it again', async () => {
    const otherId = 'i-0ffeeffeeffeeffee';
    const otherMac = allocateMac(otherId);
    const { tapName } = await network.addInstance({ instanceId: otherId, mac: otherMac, ip: '10.77.0.24' });
    const tap = (await linksInHost()).find((l) => l.ifname === tapName);
    assert.equal(tap?.linkinfo?.info_kind, 'tun');
    assert.equal(tap?.master, network.bridgeName);
    assert.match(await readFile(network.dhcp.hostsPath, 'utf8'), new RegExp(`${otherMac},10\\.77\\.0\\.24`));
    // Adding the same instance again changes nothing.
    assert.deepEqual(await network.addInstance({ instanceId: otherId, mac: otherMac, ip: '10.77.0.24' }), { tapName });

    await network.removeInstance(otherId);
    assert.equal((await linksInHost()).some((l) => l.ifname === tapName), false);
    assert.doesNotMatch(await readFile(network.dhcp.hostsPath, 'utf8'), new RegExp(otherMac));
    await network.removeInstance(otherId); // removing twice is harmless
  });

  it('refuses an address that another instance holds, or one outside the range', async () => {
    await assert.rejects(
      network.addInstance({ instanceId: 'i-0123123123123123a', mac: allocateMac('x'), ip: vmIp }),
      (e: Error & { code?: string }) => e.code === 'InvalidIPAddress.InUse',
    );
    await assert.rejects(
      network.addInstance({ instanceId: 'i-0123123123123123a', mac: allocateMac('x'), ip: '10.78.0.5' }),
      /not an assignable host address/,
    );
    await assert.rejects(
      network.addInstance({ instanceId: 'i-0123123123123123a', mac: allocateMac('x'), ip: '10.77.0.1' }),
      /not an assignable host address/,
    );
  });

  it('removes the instance and tears everything down, leaving no ib link, dnsmasq or nft table', async () => {
    await metadata.close();
    assert.ok((await network.dhcp.readLeases()).some((l) => l.ip === vmIp && l.mac === vmMac), 'dnsmasq recorded the lease');
    await network.removeInstance(instanceId);
    assert.equal((await linksInHost()).some((l) => l.ifname === tapNameForInstance(instanceId)), false);
    assert.equal((await network.dhcp.readLeases()).some((l) => l.ip === vmIp), false, 'the lease is released');
    await network.tearDown();
    assert.deepEqual((await linksInHost()).filter((l) => l.ifname.startsWith('ib')), []);
    assert.deepEqual(await dnsmasqPidsInHost(), []);
    const tables = await must('ip', ['netns', 'exec', hostNs, 'nft', 'list', 'tables']);
    assert.doesNotMatch(tables, /\bib_/);
    const left = (await readdir(stateDir)).filter((f) => f.startsWith(network.bridgeName));
    assert.deepEqual(left, []);
    await network.tearDown(); // tearing down twice is harmless
  });
});
