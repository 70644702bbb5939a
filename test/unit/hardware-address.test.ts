// A node's hardware address for power-save wakes: the MAC format, and which interface's MAC a node
// reports — the one of its advertised address, else the one the route to its cluster leaves by —
// with fake interface tables, routes and sysfs so every case is chosen here.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { NetworkInterfaceInfo } from 'node:os';
import { discoverHostMac, isMacAddress, macOfAddress, normalizeMac, type InterfaceTable, type MacDiscoveryDeps } from '../../src/node/hardware-address.ts';

function v4(address: string, mac: string, internal = false): NetworkInterfaceInfo {
  return { address, mac, internal, family: 'IPv4', netmask: '255.255.255.0', cidr: `${address}/24` };
}

function v6(address: string, mac: string): NetworkInterfaceInfo {
  return { address, mac, internal: false, family: 'IPv6', netmask: 'ffff:ffff:ffff:ffff::', cidr: `${address}/64`, scopeid: 0 };
}

const TABLE: InterfaceTable = {
  lo: [v4('127.0.0.1', '00:00:00:00:00:00', true)],
  eth0: [v4('192.0.2.10', '52:54:00:AA:bb:01'), v6('2001:db8::10', '52:54:00:AA:bb:01')],
  eth1: [v4('198.51.100.7', '52:54:00:aa:bb:02')],
  tun0: [v4('10.8.0.2', '00:00:00:00:00:00')],
};

/** Discovery over TABLE, a fixed route per destination, and sysfs MACs per device; records what was asked. */
function fakeHost(routes: Record<string, string>, sysfs: Record<string, string> = {}) {
  const asked: string[] = [];
  const deps: MacDiscoveryDeps = {
    interfaces: () => TABLE,
    routeDevice: async (ip) => { asked.push(`route ${ip}`); return routes[ip]; },
    deviceMac: async (dev) => { asked.push(`sysfs ${dev}`); return sysfs[dev]; },
    resolve: async (host) => { asked.push(`resolve ${host}`); return host === 'node1.example' ? '192.0.2.10' : host === 'cluster.example' ? '198.51.100.1' : undefined; },
  };
  return { deps, asked };
}

describe('MAC format', () => {
  it('accepts six hex pairs with colons or dashes and gives them lower case with colons', () => {
    assert.equal(normalizeMac('52:54:00:AB:cd:EF'), '52:54:00:ab:cd:ef');
    assert.equal(normalizeMac(' 52-54-00-ab-cd-ef\n'), '52:54:00:ab:cd:ef');
    assert.equal(isMacAddress('52-54-00-ab-cd-ef'), true);
  });

  it('refuses other shapes, and takes the all-zero MAC of loopback for no MAC', () => {
    for (const bad of ['52:54:00:ab:cd', '52:54:00:ab:cd:ef:01', '52:54:00-ab:cd:ef', '5254.00ab.cdef', '52:54:00:ab:cd:eg', '525400abcdef', '']) {
      assert.equal(isMacAddress(bad), false, bad);
      assert.equal(normalizeMac(bad), undefined, bad);
    }
    assert.equal(isMacAddress('00:00:00:00:00:00'), true);
    assert.equal(normalizeMac('00:00:00:00:00:00'), undefined);
  });
});

describe('MAC of an address', () => {
  it('finds the interface that carries the address (IPv4 or IPv6, with brackets)', () => {
    assert.deepEqual(macOfAddress('192.0.2.10', TABLE), { mac: '52:54:00:aa:bb:01', device: 'eth0' });
    assert.deepEqual(macOfAddress('198.51.100.7', TABLE), { mac: '52:54:00:aa:bb:02', device: 'eth1' });
    assert.deepEqual(macOfAddress('[2001:DB8::10]', TABLE), { mac: '52:54:00:aa:bb:01', device: 'eth0' });
  });

  it('has none for loopback, an all-zero tunnel or an address the host does not carry', () => {
    assert.equal(macOfAddress('127.0.0.1', TABLE), undefined);
    assert.equal(macOfAddress('10.8.0.2', TABLE), undefined);
    assert.equal(macOfAddress('203.0.113.5', TABLE), undefined);
  });
});

describe('discovering the MAC a node reports', () => {
  it('uses the interface of the advertised address, without asking for routes', async () => {
    const host = fakeHost({});
    assert.deepEqual(await discoverHostMac({ advertisedUrl: 'http://198.51.100.7:8775', clusterUrl: 'http://192.0.2.1:8774' }, host.deps),
      { mac: '52:54:00:aa:bb:02', device: 'eth1', via: 'advertised address' });
    assert.deepEqual(host.asked, []);
  });

  it('resolves an advertised host name to find its interface', async () => {
    const host = fakeHost({});
    const found = await discoverHostMac({ advertisedUrl: 'http://node1.example:8775', clusterUrl: 'http://192.0.2.1:8774' }, host.deps);
    assert.equal(found?.mac, '52:54:00:aa:bb:01');
    assert.deepEqual(host.asked, ['resolve node1.example']);
  });

  it('falls back to the route towards the cluster when the advertised address is a wildcard or not the host\'s (NAT)', async () => {
    for (const advertisedUrl of ['http://0.0.0.0:8775', 'http://[::]:8775', 'http://203.0.113.5:8775']) {
      const host = fakeHost({ '192.0.2.1': 'eth0' }, { eth0: '52:54:00:aa:bb:01\n' });
      assert.deepEqual(await discoverHostMac({ advertisedUrl, clusterUrl: 'http://192.0.2.1:8774' }, host.deps),
        { mac: '52:54:00:aa:bb:01', device: 'eth0', via: 'route to the cluster' }, advertisedUrl);
      assert.deepEqual(host.asked, ['route 192.0.2.1', 'sysfs eth0']);
    }
  });

  it('resolves the cluster\'s host name for the route, and reads the device from the interfaces when sysfs has nothing', async () => {
    const host = fakeHost({ '198.51.100.1': 'eth1' });
    assert.deepEqual(await discoverHostMac({ advertisedUrl: 'http://203.0.113.5:8775', clusterUrl: 'http://cluster.example:8774' }, host.deps),
      { mac: '52:54:00:aa:bb:02', device: 'eth1', via: 'route to the cluster' });
    assert.deepEqual(host.asked, ['resolve cluster.example', 'route 198.51.100.1', 'sysfs eth1']);
  });

  it('reports no MAC when everything goes through loopback, or there is no route', async () => {
    const loop = fakeHost({ '127.0.0.1': 'lo' }, { lo: '00:00:00:00:00:00' });
    assert.equal(await discoverHostMac({ advertisedUrl: 'http://127.0.0.1:8775', clusterUrl: 'http://127.0.0.1:8774' }, loop.deps), undefined);
    const nowhere = fakeHost({});
    assert.equal(await discoverHostMac({ advertisedUrl: 'http://203.0.113.5:8775', clusterUrl: 'http://192.0.2.99:8774' }, nowhere.deps), undefined);
    const unresolved = fakeHost({});
    assert.equal(await discoverHostMac({ advertisedUrl: 'http://203.0.113.5:8775', clusterUrl: 'http://unknown.example:8774' }, unresolved.deps), undefined);
  });

  it('on this host, a node and cluster both on loopback have no MAC (the real interfaces and routes)', async () => {
    assert.equal(await discoverHostMac({ advertisedUrl: 'http://127.0.0.1:8775', clusterUrl: 'http://127.0.0.1:8774' }), undefined);
  });
});
