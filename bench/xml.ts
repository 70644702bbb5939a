// The EC2 answer's CPU cost without HTTP or the store: building the Instance structures of a
// DescribeInstances of 100 and 1,000 instances (instance-view.ts) and writing them as XML bytes
// (xml-serializer.ts), in CPU milliseconds (process.cpuUsage, so that other load on a shared
// machine counts less than in wall time): the best and the mean of the last half of 100 rounds.
import { reservationsOf } from '../src/cloud/instance-view.ts';
import type { InstancesTable } from '../src/store/schema.ts';
import { serializeOutputBytes } from '../src/protocol/xml-serializer.ts';
import { newId } from '../src/cloud/ids.ts';

function rowsOf(count: number): InstancesTable[] {
  const rows: InstancesTable[] = [];
  const now = new Date().toISOString();
  for (let r = 0; r < count / 100; r++) {
    const reservation = newId('r');
    for (let i = 0; i < 100; i++) {
      rows.push({
        id: newId('i'), account_id: '123456789012', reservation_id: reservation, client_token: null, request_hash: null,
        image_id: 'ami-0123456789abcdef0', kernel_id: 'aki-0123456789abcdef0', ramdisk_id: null, instance_type: 't2.nano',
        zone: 'ironbark-1a', vpc_id: 'vpc-0123456789abcdef0', subnet_id: 'subnet-0123456789abcdef0', private_ip: `10.1.${r}.${i + 4}`,
        public_ip: null, mac: '02:00:00:00:00:01', key_name: 'key', user_data: null,
        security_groups: JSON.stringify([{ id: 'sg-0123456789abcdef0', name: 'default' }]), launch_index: i, launch_time: now,
        state: 'running', state_reason: null, state_changed_at: now, node_id: 'node-local', disable_api_termination: 0,
        status_impaired: 0, accelerator: null, shutdown_behavior: 'stop', metadata_options: null,
      });
    }
  }
  return rows;
}

function cpuMs(work: () => unknown, rounds = 100): { best_ms: number; mean_ms: number } {
  let best = Infinity;
  let sum = 0;
  for (let i = 0; i < rounds; i++) {
    const start = process.cpuUsage();
    work();
    const used = process.cpuUsage(start);
    const ms = (used.user + used.system) / 1000;
    best = Math.min(best, ms);
    if (i >= rounds / 2) sum += ms;
  }
  const r = (n: number) => Math.round(n * 1000) / 1000;
  return { best_ms: r(best), mean_ms: r(sum / (rounds / 2)) };
}

export async function benchXml(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const count of [100, 1000]) {
    const rows = rowsOf(count);
    const view = { region: 'ironbark-1', vmTypes: new Map() };
    const reservations = reservationsOf(rows, () => [{ Key: 'Name', Value: 'bench & co' }], view);
    let bytes = 0;
    out[`view_${count}`] = cpuMs(() => reservationsOf(rows, () => [{ Key: 'Name', Value: 'bench & co' }], view));
    out[`xml_${count}`] = cpuMs(() => {
      bytes = 0;
      for (const piece of serializeOutputBytes('DescribeInstances', { Reservations: reservations }, 'req')) bytes += piece.length;
    });
    out[`xml_${count}_bytes`] = bytes;
  }
  return out;
}
