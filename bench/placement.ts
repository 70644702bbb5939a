// Scheduler throughput: 1,000 simulated nodes, 10,000 instances in requests of 1-4 instances,
// with each built-in policy. Each placement is committed into the node views before the next
// request, as the cluster controller does once the store has recorded the instances.
// Then the same scale through the real API: `ironbark up --driver fake --nodes 1000` as a child
// process, 10,000 instances launched with RunInstances in batches of 100, and the time of one
// DescribeInstances of all of them, the cloud's memory at that size and its CPU when idle.
import { performance } from 'node:perf_hooks';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { DescribeImagesCommand, DescribeInstancesCommand, RunInstancesCommand } from '@aws-sdk/client-ec2';
import { ec2Client, REGION, startCloudProcess } from '../test/helpers/cloud.ts';
import { AdminClient, resolveAdminConfig } from '../src/cli/admin-client.ts';
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

/** Kernel-reported memory and CPU time of a process. */
function processUsage(pid: number): { rssMb: number; cpuSeconds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
  // Fields 14 and 15 of /proc/PID/stat (after the parenthesised command name) are utime and stime in ticks.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return { rssMb: Math.round(rssKb / 1024), cpuSeconds: ticks / 100 };
}

async function benchThroughApi(): Promise<Record<string, unknown>> {
  const launchStarted = performance.now();
  const cloud = await startCloudProcess(['--driver', 'fake', '--nodes', String(NODE_COUNT),
    '--node-cores', '16', '--node-memory', '65536', '--node-disk', '1000']);
  try {
    const upSeconds = (performance.now() - launchStarted) / 1000;
    const pid = cloud.process.pid!;
    const ec2 = ec2Client(cloud, cloud);
    await new AdminClient(resolveAdminConfig({ dataDir: cloud.dataDir }))
      .request('PUT', '/accounts/admin/quotas', { body: { 'max-instances': INSTANCE_COUNT } });
    const images = await ec2.send(new DescribeImagesCommand({ Filters: [{ Name: 'image-type', Values: ['machine'] }] }));
    const imageId = images.Images![0]!.ImageId!;

    const batch = 100;
    const runLatencies: number[] = [];
    const runStarted = performance.now();
    for (let launched = 0; launched < INSTANCE_COUNT; launched += batch) {
      const t0 = performance.now();
      const out = await ec2.send(new RunInstancesCommand({ ImageId: imageId, InstanceType: 'm1.small', MinCount: batch, MaxCount: batch }));
      runLatencies.push(performance.now() - t0);
      if (out.Instances?.length !== batch) throw new Error(`RunInstances started ${out.Instances?.length} instead of ${batch}`);
    }
    const runSeconds = (performance.now() - runStarted) / 1000;

    const pendingDeadline = Date.now() + 300_000;
    for (;;) {
      const pending = await ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: 'instance-state-name', Values: ['pending'] }] }));
      if ((pending.Reservations ?? []).length === 0) break;
      if (Date.now() > pendingDeadline) throw new Error('instances still pending after 5 minutes');
      await new Promise((r) => setTimeout(r, 500));
    }
    const allRunningSeconds = (performance.now() - runStarted) / 1000;

    // One DescribeInstances of everything, signed ahead and timed from sending to the last byte.
    const url = new URL(cloud.url);
    const signer = new SignatureV4({ service: 'ec2', region: REGION, sha256: Hash.bind(null, 'sha256'),
      credentials: { accessKeyId: cloud.accessKeyId, secretAccessKey: cloud.secretAccessKey } });
    const body = 'Action=DescribeInstances&Version=2016-11-15';
    const describeOnce = async (): Promise<{ ms: number; instances: number; bytes: number }> => {
      const req = await signer.sign({ method: 'POST', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: '/',
        headers: { host: url.host, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }, body });
      const t0 = performance.now();
      const text = await new Promise<string>((resolve, reject) => {
        const r = http.request({ host: url.hostname, port: url.port, method: 'POST', path: '/', headers: req.headers as Record<string, string> }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks).toString('utf8')) : reject(new Error(`HTTP ${res.statusCode}`))));
        });
        r.on('error', reject);
        r.end(body);
      });
      const ms = performance.now() - t0;
      return { ms, instances: text.split('<instanceId>').length - 1, bytes: Buffer.byteLength(text) };
    };
    // Five calls a second apart; the cloud's own background passes (the reconciler every second,
    // node polling) may coincide with one, so the median is the figure and every run is listed.
    const describes: { ms: number; instances: number; bytes: number }[] = [];
    for (let i = 0; i < 5; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 1000));
      describes.push(await describeOnce());
    }
    if (describes.some((d) => d.instances !== INSTANCE_COUNT)) throw new Error(`DescribeInstances returned ${describes.map((d) => d.instances)} instances`);
    const describeMs = describes.map((d) => d.ms).sort((a, b) => a - b);
    const sdkStarted = performance.now();
    const sdk = await ec2.send(new DescribeInstancesCommand({}));
    const sdkMs = performance.now() - sdkStarted;
    const sdkCount = (sdk.Reservations ?? []).reduce((n, r) => n + (r.Instances?.length ?? 0), 0);

    // What the cloud costs while nothing is asked of it: the cluster polls its 1,000 nodes and the
    // reconciler compares 10,000 instances.
    const before = processUsage(pid);
    const idleSeconds = 15;
    await new Promise((r) => setTimeout(r, idleSeconds * 1000));
    const after = processUsage(pid);

    runLatencies.sort((a, b) => a - b);
    const round = (x: number) => Math.round(x * 10) / 10;
    return {
      describe_all_ms: round(describeMs[2]!),
      describe_all_ms_runs: describes.map((d) => round(d.ms)),
      describe_all_bytes: describes[0]!.bytes,
      describe_all_sdk_ms: round(sdkMs),
      describe_all_sdk_instances: sdkCount,
      rss_mb: after.rssMb,
      idle_cpu_pct: round((100 * (after.cpuSeconds - before.cpuSeconds)) / idleSeconds),
      up_s: round(upSeconds),
      run_instances_100_p50_ms: round(percentile(runLatencies, 50)),
      run_instances_100_p99_ms: round(percentile(runLatencies, 99)),
      api_launches_per_s: Math.round(INSTANCE_COUNT / runSeconds),
      all_running_s: round(allRunningSeconds),
    };
  } finally {
    await cloud.stop();
  }
}

export async function benchPlacement(): Promise<Record<string, unknown>> {
  const result: Record<string, unknown> = { nodes: NODE_COUNT, instances: INSTANCE_COUNT };
  for (const spec of ['greedy', 'round-robin', 'power-save']) result[spec] = await benchPolicy(spec);
  Object.assign(result, await benchThroughApi());
  return result;
}
