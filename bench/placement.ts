// Scheduler throughput: 1,000 simulated nodes, 10,000 instances in requests of 1-4 instances,
// with each built-in policy. Each placement is committed into the node views before the next
// request, as the cluster controller does once the store has recorded the instances.
import { performance } from 'node:perf_hooks';
import { Scheduler } from '../src/cluster/scheduler.ts';
import { createPolicy } from '../src/cluster/policies/index.ts';
import { PowerManager } from '../src/cluster/power.ts';
import type { NodeView, PlacementRequest, VmTypeNeed } from '../src/cluster/policy.ts';

const NODE_COUNT = 1_000;
const INSTANCE_COUNT = 10_000;
const SMALL: VmTypeNeed = { name: 'm1.small', cores: 1, memoryMiB: 2048, diskGiB: 10 };
const LARGE: VmTypeNeed = { name: 'm1.large', cores: 2, memoryMiB: 4096, diskGiB: 20 };

interface PolicyStats { placements_per_s: number; p99_ms: number; p50_ms: number; requests: number; failed_requests: number; woken_nodes: number }

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** 16-core nodes; for power-save every other node starts asleep, as after a quiet night. */
function simulatedNodes(withSleepers: boolean): NodeView[] {
  return Array.from({ length: NODE_COUNT }, (_, i) => {
    const name = `node-${String(i).padStart(4, '0')}`;
    return {
      id: `nc-${i}`, name, address: `10.${(i >> 8) & 255}.${i & 255}.1`, mac: `52:54:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
      state: withSleepers && i % 2 === 1 ? 'asleep' : 'up',
      capacity: { cores: 16, memoryMiB: 65536, diskGiB: 500 },
      free: { cores: 16, memoryMiB: 65536, diskGiB: 500 },
      instanceCount: 0,
    } satisfies NodeView;
  });
}

function requests(): PlacementRequest[] {
  const out: PlacementRequest[] = [];
  let placed = 0;
  for (let r = 0; placed < INSTANCE_COUNT; r++) {
    const count = Math.min(1 + (r % 4), INSTANCE_COUNT - placed);
    const vmType = r % 5 === 4 ? LARGE : SMALL;
    out.push({ requestId: `r-${r}`, instances: Array.from({ length: count }, (_, i) => ({ instanceId: `i-${r}-${i}`, vmType })) });
    placed += count;
  }
  return out;
}

async function benchPolicy(spec: string): Promise<PolicyStats> {
  const nodes = simulatedNodes(spec === 'power-save');
  const byId = new Map(nodes.map((n) => [n.id, n]));
  // Wake commands are not run for real; a woken node is taken to be up by its next report.
  const power = new PowerManager({ wakeCommand: 'wakeonlan {mac}', sleepCommand: 'true', run: async () => ({ exitCode: 0, stdout: '', stderr: '', timedOut: false }) });
  const scheduler = new Scheduler({ policy: await createPolicy(spec), power });
  const latencies: number[] = [];
  let failed = 0;
  let woken = 0;
  const all = requests();
  const started = performance.now();
  for (const req of all) {
    const t0 = performance.now();
    const result = await scheduler.place(req, nodes);
    latencies.push(performance.now() - t0);
    if (!result.ok) { failed++; continue; }
    result.placements.forEach((p, i) => {
      const n = byId.get(p.nodeId)!;
      const vm = req.instances[i]!.vmType;
      n.free.cores -= vm.cores;
      n.free.memoryMiB -= vm.memoryMiB;
      n.free.diskGiB -= vm.diskGiB;
      n.instanceCount++;
    });
    for (const id of result.woken) { byId.get(id)!.state = 'up'; woken++; }
    scheduler.commit(result.reservationId);
  }
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return {
    placements_per_s: Math.round(INSTANCE_COUNT / seconds),
    p99_ms: round(percentile(latencies, 99)),
    p50_ms: round(percentile(latencies, 50)),
    requests: all.length,
    failed_requests: failed,
    woken_nodes: woken,
  };
}

export async function benchPlacement(): Promise<Record<string, unknown>> {
  const result: Record<string, unknown> = { nodes: NODE_COUNT, instances: INSTANCE_COUNT };
  for (const spec of ['greedy', 'round-robin', 'power-save']) result[spec] = await benchPolicy(spec);
  return result;
}
