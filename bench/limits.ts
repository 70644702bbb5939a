// Fairness under a flood (issue 11, item 3): account B's DescribeInstances latency alone, then while
// account A floods DescribeInstances of its 300 instances from 50 concurrent clients, first under
// EC2's buckets (most of the flood is refused with RequestLimitExceeded at once), then with A's
// limits lifted (only the fair scheduling of running calls stands between A and B). Prints B's
// p50/p99 in each phase and how many of A's calls were answered and throttled, against
// `ironbark up --driver fake` in its own process.
import http from 'node:http';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { DescribeImagesCommand, RunInstancesCommand } from '@aws-sdk/client-ec2';
import { ec2Client, startCloudProcess } from '../test/helpers/cloud.ts';
import { AdminClient, resolveAdminConfig } from '../src/cli/admin-client.ts';

const REGION = 'ironbark-1';
/** Enough for A's Describes to cost the process real work, few enough that A can outrun EC2's 10 a second. */
const INSTANCES = 300;
const FLOOD_CLIENTS = 50;
const PHASE_MS = 5000;

interface Creds { accessKeyId: string; secretAccessKey: string }

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function benchLimits(): Promise<Record<string, unknown>> {
  const cloud = await startCloudProcess(['--driver', 'fake', '--node-cores', '4096', '--node-memory', '8388608']);
  try {
    const url = new URL(cloud.url);
    const admin = new AdminClient(resolveAdminConfig({ dataDir: cloud.dataDir }));
    const account = async (name: string): Promise<{ id: string; creds: Creds }> => {
      const d = await admin.request('POST', '/accounts', { body: { name } });
      return { id: d.account.id, creds: { accessKeyId: d.accessKey.accessKeyId, secretAccessKey: d.accessKey.secretAccessKey } };
    };
    const a = await account('flooder');
    const b = await account('neighbour');

    // A's 1,000 instances, launched with its launch limits lifted for the set-up.
    await admin.request('PUT', `/accounts/${a.id}/quotas`, { body: { 'max-instances': INSTANCES } });
    await admin.request('PUT', `/accounts/${a.id}/rate-limits`, { body: { RunInstances: 'unlimited', 'instances-launched': 'unlimited' } });
    const ecA = ec2Client(cloud, a.creds);
    const imageId = (await ecA.send(new DescribeImagesCommand({ Filters: [{ Name: 'image-type', Values: ['machine'] }] }))).Images![0]!.ImageId!;
    for (let n = 0; n < INSTANCES; n += 100) {
      await ecA.send(new RunInstancesCommand({ ImageId: imageId, InstanceType: 't2.nano', MinCount: 100, MaxCount: 100 }));
    }
    ecA.destroy();
    await admin.request('PUT', `/accounts/${a.id}/rate-limits`, { body: { RunInstances: null, 'instances-launched': null } });
    // B's own calls are measured, not throttled: one after another they would outrun its bucket.
    await admin.request('PUT', `/accounts/${b.id}/rate-limits`, { body: { 'unfiltered-describe': 'unlimited' } });

    const agent = new http.Agent({ keepAlive: true, maxSockets: FLOOD_CLIENTS + 8 });
    const body = 'Action=DescribeInstances&Version=2016-11-15';
    const signedFor = async (creds: Creds) => {
      const signer = new SignatureV4({ service: 'ec2', region: REGION, sha256: Hash.bind(null, 'sha256'), credentials: creds });
      // Signed again every few seconds: a signature is good for 15 minutes, the bench lasts less.
      const r = await signer.sign({ method: 'POST', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: '/',
        headers: { host: url.host, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }, body });
      return r.headers as Record<string, string>;
    };
    const send = (headers: Record<string, string>): Promise<number> => new Promise((resolve, reject) => {
      const req = http.request({ host: url.hostname, port: url.port, method: 'POST', path: '/', headers, agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end(body);
    });
    const headersA = await signedFor(a.creds);
    const headersB = await signedFor(b.creds);

    /** B's calls one after another for PHASE_MS, while `flood` runs (or not). */
    async function phase(flood: boolean) {
      let stop = false;
      const aCounts = { answered: 0, throttled: 0, other: 0 };
      const flooders = flood ? Array.from({ length: FLOOD_CLIENTS }, async () => {
        while (!stop) {
          const status = await send(headersA);
          if (status === 200) aCounts.answered++;
          else if (status === 503) aCounts.throttled++;
          else aCounts.other++;
        }
      }) : [];
      const latencies: number[] = [];
      let bErrors = 0;
      const end = performance.now() + PHASE_MS;
      while (performance.now() < end) {
        const t = performance.now();
        if (await send(headersB) !== 200) bErrors++;
        latencies.push(performance.now() - t);
      }
      stop = true;
      await Promise.all(flooders);
      latencies.sort((x, y) => x - y);
      const r = (n: number) => Math.round(n * 100) / 100;
      return {
        b_calls: latencies.length, b_errors: bErrors, b_p50_ms: r(percentile(latencies, 50)), b_p99_ms: r(percentile(latencies, 99)),
        ...(flood ? { a_answered: aCounts.answered, a_throttled: aCounts.throttled, a_other: aCounts.other } : {}),
      };
    }

    const alone = await phase(false);
    const throttled = await phase(true);
    await admin.request('PUT', `/accounts/${a.id}/rate-limits`, { body: { 'unfiltered-describe': 'unlimited' } });
    const unthrottled = await phase(true);
    agent.destroy();
    return {
      a_instances: INSTANCES, flood_clients: FLOOD_CLIENTS, phase_seconds: PHASE_MS / 1000,
      b_alone: alone, a_flood_throttled: throttled, a_flood_unlimited_fair_scheduling_only: unthrottled,
    };
  } finally {
    await cloud.stop();
  }
}
