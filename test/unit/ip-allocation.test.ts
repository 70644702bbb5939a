// Private addresses, MACs and DNS names of instances: AWS's reserved addresses are skipped,
// addresses are unique per zone among live instances, and terminated instances give theirs up.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openStore, type Store } from '../../src/store/store.ts';
import type { InstancesTable } from '../../src/store/schema.ts';
import {
  allocatePrivateIps, isUsableAddress, macForInstance, pickFreeAddresses, privateDnsName, usableRange,
} from '../../src/cloud/ip-allocation.ts';
import { formatIpv4Address } from '../../src/cloud/cidr.ts';
import { Ec2Error } from '../../src/protocol/errors.ts';

function instanceRow(id: string, zone: string, privateIp: string | null, state = 'running'): InstancesTable {
  const now = new Date().toISOString();
  return {
    id, account_id: '111111111111', reservation_id: 'r-0123456789abcdef0', client_token: null, request_hash: null,
    image_id: 'ami-0123456789abcdef0', kernel_id: null, ramdisk_id: null, instance_type: 'm1.small', zone,
    vpc_id: 'vpc-0123456789abcdef0', subnet_id: 'subnet-0123456789abcdef0', private_ip: privateIp, public_ip: null,
    mac: macForInstance(id), key_name: null, user_data: null, security_groups: '[]', launch_index: 0, launch_time: now,
    state, state_reason: null, state_changed_at: now, node_id: null, disable_api_termination: 0, status_impaired: 0, accelerator: null, shutdown_behavior: 'stop',
  };
}

describe('ip allocation', () => {
  let store: Store;
  before(async () => { store = await openStore({ url: ':memory:' }); });
  after(async () => store.close());

  it('skips the network address, .1 to .3 and the broadcast address', () => {
    const { first, last } = usableRange('10.1.0.0/16');
    assert.equal(formatIpv4Address(first), '10.1.0.4');
    assert.equal(formatIpv4Address(last), '10.1.255.254');
    assert.deepEqual(pickFreeAddresses('10.1.0.0/16', new Set(), 3), ['10.1.0.4', '10.1.0.5', '10.1.0.6']);
    assert.equal(isUsableAddress('10.1.0.0/16', '10.1.0.3'), false);
    assert.equal(isUsableAddress('10.1.0.0/16', '10.1.0.4'), true);
    assert.equal(isUsableAddress('10.1.0.0/16', '10.1.255.255'), false);
    assert.equal(isUsableAddress('10.1.0.0/16', '10.2.0.4'), false);
    assert.equal(isUsableAddress('10.1.0.0/16', 'not-an-ip'), false);
  });

  it('fills holes left by earlier instances and fails cleanly when the subnet is full', () => {
    assert.deepEqual(pickFreeAddresses('10.1.0.0/16', new Set(['10.1.0.4', '10.1.0.6']), 2), ['10.1.0.5', '10.1.0.7']);
    // A /28 has 16 addresses: 5 reserved, 11 usable.
    assert.equal(pickFreeAddresses('10.9.0.0/28', new Set(), 11).at(-1), '10.9.0.14');
    assert.throws(() => pickFreeAddresses('10.9.0.0/28', new Set(), 12), (e: unknown) => e instanceof Ec2Error && e.code === 'InsufficientFreeAddressesInSubnet');
  });

  it('counts only live instances of the same zone', async () => {
    await store.db.insertInto('instances').values([
      instanceRow('i-00000000000000001', 'zone-a', '10.1.0.4'),
      instanceRow('i-00000000000000002', 'zone-a', null, 'terminated'),
      instanceRow('i-00000000000000003', 'zone-b', '10.1.0.5'),
    ]).execute();
    assert.deepEqual(await allocatePrivateIps(store.db, 'zone-a', '10.1.0.0/16', 2), ['10.1.0.5', '10.1.0.6']);
    assert.deepEqual(await allocatePrivateIps(store.db, 'zone-b', '10.1.0.0/16', 1), ['10.1.0.4']);
  });

  it('the store refuses one address twice in a zone but allows any number of terminated (NULL) ones', async () => {
    await assert.rejects(store.db.insertInto('instances').values(instanceRow('i-00000000000000004', 'zone-a', '10.1.0.4')).execute(), /UNIQUE/);
    await store.db.insertInto('instances').values(instanceRow('i-00000000000000005', 'zone-a', null, 'terminated')).execute();
    await store.db.insertInto('instances').values(instanceRow('i-00000000000000006', 'zone-c', '10.1.0.4')).execute();
  });

  it('derives a stable MAC with the locally administered d2:0d prefix from the instance id', () => {
    const mac = macForInstance('i-0123456789abcdef0');
    assert.match(mac, /^d2:0d(:[0-9a-f]{2}){4}$/);
    assert.equal(macForInstance('i-0123456789abcdef0'), mac);
    assert.notEqual(macForInstance('i-0123456789abcdef1'), mac);
  });

  it('names hosts as EC2 does', () => {
    assert.equal(privateDnsName('10.1.0.5', 'ironbark-1'), 'ip-10-1-0-5.ironbark-1.compute.internal');
  });
});
