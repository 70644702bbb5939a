// API throughput: signed requests per second and latency percentiles for small and large
// Describe responses, one client at a time and 50 at once, against `ironbark up` in its own process.
import http from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { startCloudProcess } from '../test/helpers/cloud.ts';

interface Stats { seq_rps: number; p50_ms: number; p99_ms: number; conc_rps: number; conc_p50_ms: number; conc_p99_ms: number }

const REGION = 'ironbark-1';

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function benchApi(): Promise<Record<string, unknown>> {
  const cloud = await startCloudProcess();
  try {
    const url = new URL(cloud.url);
    const signer = new SignatureV4({ service: 'ec2', region: REGION, sha256: Hash.bind(null, 'sha256'),
      credentials: { accessKeyId: cloud.accessKeyId, secretAccessKey: cloud.secretAccessKey } });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

    // Requests are signed ahead of time so the client's CPU goes to sending them; the server
    // still verifies every signature in full.
    async function signed(body: string) {
      const req = await signer.sign({ method: 'POST', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: '/',
        headers: { host: url.host, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }, body });
      return { headers: req.headers as Record<string, string>, body };
    }
    function send(r: { headers: Record<string, string>; body: string }): Promise<number> {
      return new Promise((resolve, reject) => {
        const req = http.request({ host: url.hostname, port: url.port, method: 'POST', path: '/', headers: r.headers, agent }, (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === 200 ? resolve(res.statusCode) : reject(new Error(`HTTP ${res.statusCode}`))));
        });
        req.on('error', reject);
        req.end(r.body);
      });
    }

    // 1,000 security groups and 1,000 key pairs in the account.
    const setup: string[] = [];
    for (let i = 0; i < 1000; i++) setup.push(`Action=CreateSecurityGroup&Version=2016-11-15&GroupName=bench-${i}&GroupDescription=bench`);
    for (let i = 0; i < 1000; i++) {
      const pub = generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' }).subarray(12);
      const part = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
      const line = `ssh-ed25519 ${Buffer.concat([part(Buffer.from('ssh-ed25519')), part(pub)]).toString('base64')}`;
      setup.push(`Action=ImportKeyPair&Version=2016-11-15&KeyName=bench-${i}&PublicKeyMaterial=${encodeURIComponent(Buffer.from(line).toString('base64'))}`);
    }
    for (let i = 0; i < setup.length; i += 20) {
      await Promise.all(setup.slice(i, i + 20).map(async (b) => send(await signed(b))));
    }

    async function measure(body: string, seqCount: number, concCount: number): Promise<Stats> {
      const req = await signed(body);
      for (let i = 0; i < 20; i++) await send(req); // warm-up
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
      const r = (n: number) => Math.round(n * 100) / 100;
      return {
        seq_rps: r(seqCount / seqSeconds), p50_ms: r(percentile(seq, 50)), p99_ms: r(percentile(seq, 99)),
        conc_rps: r(concCount / concSeconds), conc_p50_ms: r(percentile(conc, 50)), conc_p99_ms: r(percentile(conc, 99)),
      };
    }

    return {
      describe_regions: await measure('Action=DescribeRegions&Version=2016-11-15', 2000, 5000),
      describe_key_pairs_1000: await measure('Action=DescribeKeyPairs&Version=2016-11-15', 100, 300),
      describe_security_groups_1000: await measure('Action=DescribeSecurityGroups&Version=2016-11-15', 100, 300),
    };
  } finally {
    await cloud.stop();
  }
}
