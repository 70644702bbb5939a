// API throughput: signed requests per second and latency percentiles for small and large
// Describe responses, one client at a time and 50 at once, against `ironbark up` in its own process;
// RunInstances in batches of 10 on the fake driver, and DescribeInstances of an account holding 100
// and 1,000 instances (issue 11, item 8): one client's p50 over loopback
// divided by the instance count is the per-instance time (the client only reads the bytes).
// `npm run bench -- api --only run_instances_10,describe_instances_100 --scale 0.2` runs some of
// the measurements with fewer requests (for profiling: NODE_OPTIONS=--cpu-prof also profiles the
// server process, which inherits the environment).
import http from 'node:http';
import { loadavg } from 'node:os';
import { generateKeyPairSync } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { ec2Client, startCloudProcess } from '../test/helpers/cloud.ts';
import { DescribeImagesCommand, RunInstancesCommand } from '@aws-sdk/client-ec2';
import { AdminClient, resolveAdminConfig } from '../src/cli/admin-client.ts';

interface Stats { seq_rps: number; p50_ms: number; p99_ms: number; conc_rps: number; conc_p50_ms: number; conc_p99_ms: number }
interface Creds { accessKeyId: string; secretAccessKey: string }

const REGION = 'ironbark-1';

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function argument(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
}

export async function benchApi(): Promise<Record<string, unknown>> {
  const only = argument('only')?.split(',');
  const scale = Number(argument('scale') ?? 1);
  if (!(scale > 0)) throw new Error('--scale must be a positive number');
  const n = (count: number) => Math.max(1, Math.round(count * scale));
  const wanted = (name: string) => only === undefined || only.includes(name);
  // Room for every instance the launch measurement makes (fake VMs hold no real memory).
  const cloud = await startCloudProcess(['--driver', 'fake', '--node-cores', '65536', '--node-memory', '67108864', '--node-disk', '1048576']);
  try {
    const url = new URL(cloud.url);
    const signerFor = (credentials: Creds) => new SignatureV4({ service: 'ec2', region: REGION, sha256: Hash.bind(null, 'sha256'), credentials });
    const adminSigner = signerFor({ accessKeyId: cloud.accessKeyId, secretAccessKey: cloud.secretAccessKey });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

    // Requests are signed ahead of time so the client's CPU goes to sending them; the server
    // still verifies every signature in full.
    async function signed(body: string, signer = adminSigner) {
      const req = await signer.sign({ method: 'POST', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: '/',
        headers: { host: url.host, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }, body });
      return { headers: req.headers as Record<string, string>, body };
    }
    function send(r: { headers: Record<string, string>; body: string }): Promise<void> {
      return new Promise((resolve, reject) => {
        const req = http.request({ host: url.hostname, port: url.port, method: 'POST', path: '/', headers: r.headers, agent }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => { if (res.statusCode !== 200) chunks.push(c); });
          res.on('end', () => (res.statusCode === 200 ? resolve()
            : reject(new Error(`HTTP ${res.statusCode}: ${Buffer.concat(chunks).toString().slice(0, 300)}`))));
        });
        req.on('error', reject);
        req.end(r.body);
      });
    }

    // 1,000 security groups and 1,000 key pairs in the account.
    const setup: string[] = [];
    const setupCount = wanted('describe_key_pairs_1000') || wanted('describe_security_groups_1000') ? 1000 : 0;
    for (let i = 0; i < setupCount; i++) setup.push(`Action=CreateSecurityGroup&Version=2016-11-15&GroupName=bench-${i}&GroupDescription=bench`);
    for (let i = 0; i < setupCount; i++) {
      const pub = generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' }).subarray(12);
      const part = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
      const line = `ssh-ed25519 ${Buffer.concat([part(Buffer.from('ssh-ed25519')), part(pub)]).toString('base64')}`;
      setup.push(`Action=ImportKeyPair&Version=2016-11-15&KeyName=bench-${i}&PublicKeyMaterial=${encodeURIComponent(Buffer.from(line).toString('base64'))}`);
    }
    for (let i = 0; i < setup.length; i += 20) {
      await Promise.all(setup.slice(i, i + 20).map(async (b) => send(await signed(b))));
    }

    async function measure(body: string, seqCount: number, concCount: number, signer = adminSigner, warmUp = 20): Promise<Stats> {
      const req = await signed(body, signer);
      for (let i = 0; i < warmUp; i++) await send(req);
      const seq: number[] = [];
      const seqStart = performance.now();
      for (let i = 0; i < seqCount; i++) {
        const t = performance.now();
        await send(req);
        seq.push(performance.now() - t);
      }
      const seqSeconds = (performance.now() - seqStart) / 1000;
      const conc: number[] = [];
      let next = 0;
      const concStart = performance.now();
      await Promise.all(Array.from({ length: 50 }, async () => {
        while (next++ < concCount) {
          const t = performance.now();
          await send(req);
          conc.push(performance.now() - t);
        }
      }));
      const concSeconds = (performance.now() - concStart) / 1000;
      seq.sort((a, b) => a - b);
      conc.sort((a, b) => a - b);
      const r = (n: number) => Math.round(n * 1000) / 1000;
      return {
        seq_rps: r(seqCount / seqSeconds), p50_ms: r(percentile(seq, 50)), p99_ms: r(percentile(seq, 99)),
        conc_rps: r(concCount / concSeconds), conc_p50_ms: r(percentile(conc, 50)), conc_p99_ms: r(percentile(conc, 99)),
      };
    }

    // Accounts of their own for the instance measurements, unthrottled (the bench measures the
    // server, not EC2's buckets) and with room for what they launch.
    const admin = new AdminClient(resolveAdminConfig({ dataDir: cloud.dataDir }));
    const unthrottled = { RunInstances: 'unlimited', 'instances-launched': 'unlimited', 'unfiltered-describe': 'unlimited', 'non-mutating': 'unlimited', mutating: 'unlimited' };
    async function account(name: string, maxInstances: number): Promise<Creds> {
      const d = await admin.request('POST', '/accounts', { body: { name } });
      await admin.request('PUT', `/accounts/${d.account.id}/quotas`, { body: { 'max-instances': maxInstances, 'max-cores': null, 'max-memory-mib': null } });
      await admin.request('PUT', `/accounts/${d.account.id}/rate-limits`, { body: unthrottled });
      return { accessKeyId: d.accessKey.accessKeyId, secretAccessKey: d.accessKey.secretAccessKey };
    }
    const imageId = await (async () => {
      const ec2 = ec2Client(cloud, cloud);
      try {
        return (await ec2.send(new DescribeImagesCommand({ Filters: [{ Name: 'image-type', Values: ['machine'] }] }))).Images![0]!.ImageId!;
      } finally { ec2.destroy(); }
    })();
    const runBody = `Action=RunInstances&Version=2016-11-15&ImageId=${imageId}&InstanceType=t2.nano&MinCount=10&MaxCount=10`;
    const RUN_SEQ = n(50);
    const RUN_CONC = n(150);
    const launcher = await account('bench-launcher', 10 * (RUN_SEQ + RUN_CONC + 5));

    /** An account holding `count` instances, and a DescribeInstances of all of them. */
    async function describeInstancesAt(count: number, seqCount: number, concCount: number) {
      const creds = await account(`bench-describe-${count}`, count);
      const ec2 = ec2Client(cloud, creds);
      try {
        for (let n = 0; n < count; n += 100) await ec2.send(new RunInstancesCommand({ ImageId: imageId, InstanceType: 't2.nano', MinCount: 100, MaxCount: 100 }));
      } finally { ec2.destroy(); }
      const stats = await measure('Action=DescribeInstances&Version=2016-11-15', seqCount, concCount, signerFor(creds));
      return { ...stats, p50_ms_per_instance: Math.round((stats.p50_ms / count) * 1e5) / 1e5 };
    }

    const measurements: Array<[string, () => Promise<unknown>]> = [
      ['describe_regions', () => measure('Action=DescribeRegions&Version=2016-11-15', n(2000), n(5000))],
      ['describe_key_pairs_1000', () => measure('Action=DescribeKeyPairs&Version=2016-11-15', n(100), n(300))],
      ['describe_security_groups_1000', () => measure('Action=DescribeSecurityGroups&Version=2016-11-15', n(100), n(300))],
      ['run_instances_10', () => measure(runBody, RUN_SEQ, RUN_CONC, signerFor(launcher), 5)],
      ['describe_instances_100', () => describeInstancesAt(100, n(200), n(1000))],
      ['describe_instances_1000', () => describeInstancesAt(1000, n(50), n(200))],
    ];
    // The machine may be shared: the load average says what else ran meanwhile.
    const results: Record<string, unknown> = { load_average_before: loadavg().map((l) => Math.round(l * 100) / 100) };
    for (const [name, run] of measurements) if (wanted(name)) results[name] = await run();
    results.load_average_after = loadavg().map((l) => Math.round(l * 100) / 100);
    return results;
  } finally {
    await cloud.stop();
  }
}
