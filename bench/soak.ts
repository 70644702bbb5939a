// Soak (issue 11, item 7): 50 concurrent clients keep issuing a mix of EC2 calls against
// `ironbark up --driver fake` in its own process for a bounded time (10 minutes by default,
// `npm run bench -- soak --seconds N`). Every sampling period it prints one JSON line: calls
// answered, throughput, p50/p99 latency, errors (by code, intended ones apart) and the server's
// resident memory; the last line sums it up, with how much the memory grew from the first sample
// after warm-up to the last.
//
// The mix: Describes of everything and by id, status checks, images, groups, regions and zones;
// tags on the client's own instances; launches and terminations of one instance at a time (each
// client keeps at most two, so the account's instance count stays bounded; terminated ones stay
// visible for an hour as on EC2, so Describes grow a little over a long run); stops and starts;
// and intended errors: a Describe of an instance id that does not exist (InvalidInstanceID.NotFound),
// a stop or start while the instance is in transition (IncorrectInstanceState). The account is not throttled: the soak measures the server, and
// EC2's buckets would refuse most of a 50-client flood (request-limits.test.ts proves those).
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { DescribeImagesCommand } from '@aws-sdk/client-ec2';
import { ec2Client, startCloudProcess } from '../test/helpers/cloud.ts';
import { AdminClient, resolveAdminConfig } from '../src/cli/admin-client.ts';

const REGION = 'ironbark-1';
const CLIENTS = 50;
const DEFAULT_SECONDS = 600;
/**
 * Errors the mix asks for on purpose: a Describe of an id that does not exist, and a stop or start
 * of an instance still in transition (pending, stopping), which EC2 refuses the same way.
 */
const INTENDED = new Set(['DescribeInstances: InvalidInstanceID.NotFound', 'StopInstances: IncorrectInstanceState', 'StartInstances: IncorrectInstanceState']);

function secondsFromArgs(argv: string[]): number {
  const i = argv.indexOf('--seconds');
  if (i < 0) return DEFAULT_SECONDS;
  const n = Number(argv[i + 1]);
  if (!Number.isFinite(n) || n < 5 || n > 86_400) throw new Error('--seconds takes a number of seconds from 5 to 86400');
  return n;
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Resident memory of a process in MiB, from /proc (Linux). */
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 102.4) / 10 : NaN;
}

const round = (n: number) => Math.round(n * 100) / 100;

export async function benchSoak(argv: string[] = process.argv.slice(3)): Promise<Record<string, unknown>> {
  const seconds = secondsFromArgs(argv);
  const sampleMs = Math.min(30_000, Math.max(2000, (seconds * 1000) / 20));
  const cloud = await startCloudProcess(['--driver', 'fake', '--node-cores', '4096', '--node-memory', '8388608']);
  const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS + 4 });
  try {
    const url = new URL(cloud.url);
    const pid = cloud.process.pid!;
    const admin = new AdminClient(resolveAdminConfig({ dataDir: cloud.dataDir }));
    const made = await admin.request('POST', '/accounts', { body: { name: 'soak' } });
    const accountId = made.account.id as string;
    await admin.request('PUT', `/accounts/${accountId}/quotas`, { body: { 'max-instances': 4 * CLIENTS + 50, 'max-cores': null, 'max-memory-mib': null } });
    const unlimited = Object.fromEntries(
      ['non-mutating', 'unfiltered-describe', 'mutating', 'RunInstances', 'StartInstances', 'TerminateInstances', 'CreateTags',
        'instances-launched', 'instances-started', 'instances-stopped', 'instances-terminated'].map((f) => [f, 'unlimited']));
    await admin.request('PUT', `/accounts/${accountId}/rate-limits`, { body: unlimited });
    const creds = { accessKeyId: made.accessKey.accessKeyId as string, secretAccessKey: made.accessKey.secretAccessKey as string };
    const sdk = ec2Client(cloud, creds);
    const imageId = (await sdk.send(new DescribeImagesCommand({ Filters: [{ Name: 'image-type', Values: ['machine'] }] }))).Images![0]!.ImageId!;
    sdk.destroy();

    const signer = new SignatureV4({ service: 'ec2', region: REGION, sha256: Hash.bind(null, 'sha256'), credentials: creds });
    /** One signed call; resolves with the HTTP status, the error code if any, and the body. */
    async function call(params: Record<string, string>): Promise<{ status: number; code?: string; body: string }> {
      const body = new URLSearchParams({ ...params, Version: '2016-11-15' }).toString();
      const signed = await signer.sign({ method: 'POST', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: '/',
        headers: { host: url.host, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }, body });
      return new Promise((resolve, reject) => {
        const req = http.request({ host: url.hostname, port: url.port, method: 'POST', path: '/', headers: signed.headers as Record<string, string>, agent }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            resolve({ status, body: text, ...(status === 200 ? {} : { code: /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? `HTTP ${status}` }) });
          });
        });
        req.on('error', reject);
        req.end(body);
      });
    }
    const ids = (xml: string) => [...xml.matchAll(/<instanceId>(i-[0-9a-f]+)<\/instanceId>/g)].map((m) => m[1]!);

    // What each sampling period saw.
    let latencies: number[] = [];
    let calls = 0;
    let errors: Record<string, number> = {};
    let intended = 0;
    const totals = { calls: 0, errors: 0, intended: 0, byCode: {} as Record<string, number> };

    async function timed(params: Record<string, string>) {
      const t = performance.now();
      let r: Awaited<ReturnType<typeof call>>;
      try {
        r = await call(params);
      } catch (e) {
        r = { status: 0, code: `connection: ${(e as Error).message}`, body: '' };
      }
      latencies.push(performance.now() - t);
      calls++;
      if (r.code) {
        if (INTENDED.has(`${params.Action}: ${r.code}`)) intended++;
        else errors[`${params.Action}: ${r.code}`] = (errors[`${params.Action}: ${r.code}`] ?? 0) + 1;
      }
      return r;
    }

    let stop = false;
    async function client(n: number) {
      const mine: string[] = [];
      const stopped = new Set<string>();
      for (let step = 0; !stop; step++) {
        const roll = (step * 7 + n * 13) % 100;
        if (roll < 25) await timed({ Action: 'DescribeInstances' });
        else if (roll < 35) await timed({ Action: 'DescribeInstanceStatus', IncludeAllInstances: 'true' });
        else if (roll < 45) await timed({ Action: 'DescribeSecurityGroups' });
        else if (roll < 52) await timed({ Action: 'DescribeImages', 'Filter.1.Name': 'image-type', 'Filter.1.Value.1': 'machine' });
        else if (roll < 60) await timed({ Action: roll % 2 ? 'DescribeRegions' : 'DescribeAvailabilityZones' });
        else if (roll < 65) await timed({ Action: 'DescribeInstances', 'InstanceId.1': `i-${(n * 1_000_003 + step).toString(16).padStart(17, '0').slice(-17)}` });
        else if (roll < 75 && mine.length > 0) {
          await timed({ Action: 'CreateTags', 'ResourceId.1': mine[step % mine.length]!, 'Tag.1.Key': 'soak', 'Tag.1.Value': String(step) });
        } else if (roll < 85 && mine.length > 0) {
          await timed({ Action: 'DescribeInstances', 'InstanceId.1': mine[step % mine.length]! });
        } else if (roll < 90 && mine.length > 0) {
          // Stop one running instance, or start one stopped earlier (refused while in transition,
          // as by EC2: tried again later).
          const id = mine[step % mine.length]!;
          const r = await timed({ Action: stopped.has(id) ? 'StartInstances' : 'StopInstances', 'InstanceId.1': id });
          if (r.status === 200) { if (stopped.has(id)) stopped.delete(id); else stopped.add(id); }
        } else if (step % 40 === n % 40) {
          // Launch and terminate, one instance at a time, at most two per client.
          if (mine.length < 2) {
            const r = await timed({ Action: 'RunInstances', ImageId: imageId, InstanceType: 't2.nano', MinCount: '1', MaxCount: '1' });
            mine.push(...ids(r.body));
          } else {
            const id = mine.shift()!;
            stopped.delete(id);
            await timed({ Action: 'TerminateInstances', 'InstanceId.1': id });
          }
        } else {
          await timed({ Action: 'DescribeInstances', 'Filter.1.Name': 'instance-state-name', 'Filter.1.Value.1': 'running' });
        }
      }
      // Leave nothing running.
      if (mine.length > 0) await timed({ Action: 'TerminateInstances', ...Object.fromEntries(mine.map((id, i) => [`InstanceId.${i + 1}`, id])) });
    }

    const samples: Record<string, unknown>[] = [];
    const started = performance.now();
    const clients = Array.from({ length: CLIENTS }, (_, n) => client(n));
    let periodStart = started;
    const sampler = (async () => {
      while (!stop) {
        const finish = started + seconds * 1000;
        const end = Math.min(finish, performance.now() + sampleMs);
        const last = end === finish;
        await new Promise((r) => setTimeout(r, Math.max(0, end - performance.now())));
        const sorted = latencies.sort((a, b) => a - b);
        const errorCount = Object.values(errors).reduce((a, b) => a + b, 0);
        const sample = {
          t_s: round((performance.now() - started) / 1000), calls, rps: round(calls / ((performance.now() - periodStart) / 1000)),
          p50_ms: round(percentile(sorted, 50)), p99_ms: round(percentile(sorted, 99)),
          errors: errorCount, intended_errors: intended, rss_mib: rssMiB(pid),
          ...(errorCount > 0 ? { error_codes: errors } : {}),
        };
        samples.push(sample);
        process.stdout.write(JSON.stringify(sample) + '\n');
        totals.calls += calls; totals.errors += errorCount; totals.intended += intended;
        for (const [k, v] of Object.entries(errors)) totals.byCode[k] = (totals.byCode[k] ?? 0) + v;
        latencies = []; calls = 0; errors = {}; intended = 0;
        periodStart = performance.now();
        if (last) stop = true;
      }
    })();
    await sampler;
    await Promise.all(clients);

    const rss = samples.map((s) => s.rss_mib as number);
    // The first quarter is warm-up (the JIT, the store's caches, the instances' first launches).
    const settled = rss.slice(Math.floor(rss.length / 4));
    return {
      seconds, clients: CLIENTS, calls: totals.calls, rps: round(totals.calls / seconds),
      p99_ms_worst_sample: Math.max(...samples.map((s) => s.p99_ms as number)),
      errors: totals.errors, intended_errors: totals.intended, ...(totals.errors > 0 ? { error_codes: totals.byCode } : {}),
      rss_mib_first: rss[0], rss_mib_after_warmup: settled[0], rss_mib_last: rss.at(-1), rss_mib_max: Math.max(...rss),
      rss_growth_after_warmup_mib: round(rss.at(-1)! - settled[0]!),
      samples,
    };
  } finally {
    agent.destroy();
    await cloud.stop();
  }
}
