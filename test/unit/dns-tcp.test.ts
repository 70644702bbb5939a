// The zone's name service over TCP (dns-service.ts): the same answers as over UDP, each message
// with its two-byte length before it, several queries on one connection, answered by the asker's VPC.
// On loopback, in this process.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { ZoneDnsService } from '../../src/node/network/dns-service.ts';
import { RCODE, TYPE_A, TYPE_PTR } from '../../src/node/network/dns-wire.ts';

function query(id: number, name: string, type: number): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4);
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(type, 0);
  tail.writeUInt16BE(1, 2);
  return Buffer.concat([header, ...labels, Buffer.from([0]), tail]);
}

const framed = (m: Buffer) => Buffer.concat([Buffer.from([m.length >> 8, m.length & 0xff]), m]);

/** Sends `messages` (already framed, possibly split oddly) on one connection; resolves with `count` replies. */
function exchange(port: number, bytes: Buffer[], count: number): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const conn = net.connect(port, '127.0.0.1');
    let buffered = Buffer.alloc(0);
    const replies: Buffer[] = [];
    conn.on('error', reject);
    conn.on('connect', async () => {
      for (const b of bytes) {
        conn.write(b);
        await new Promise((r) => setTimeout(r, 20));
      }
    });
    conn.on('data', (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        replies.push(buffered.subarray(2, 2 + buffered.readUInt16BE(0)));
        buffered = buffered.subarray(2 + replies.at(-1)!.length);
      }
      if (replies.length >= count) {
        conn.end();
        resolve(replies);
      }
    });
  });
}

describe('zone DNS over TCP', () => {
  let dns: ZoneDnsService;
  let port = 0;

  before(async () => {
    // A port free for TCP now (and, in practice, for UDP too).
    port = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (probe.address() as net.AddressInfo).port;
        probe.close(() => resolve(p));
      });
    });
    dns = new ZoneDnsService({
      asker: (ip) => (ip === '127.0.0.1' ? { vpcId: 'vpc-a', region: 'ironbark-1' } : undefined),
      vpcOf: (ip) => (ip === '10.1.0.5' ? 'vpc-a' : ip === '10.1.0.6' ? 'vpc-b' : undefined),
      upstream: [],
    });
    await dns.listen('127.0.0.1', port);
  });

  after(async () => dns.close());

  it('answers the asker\'s own VPC names, forward and reverse, several queries on one connection, split anyhow', async () => {
    const a = framed(query(0x1111, 'ip-10-1-0-5.ironbark-1.compute.internal', TYPE_A));
    const ptr = framed(query(0x2222, '5.0.1.10.in-addr.arpa', TYPE_PTR));
    const foreign = framed(query(0x3333, 'ip-10-1-0-6.ironbark-1.compute.internal', TYPE_A));
    const all = Buffer.concat([a, ptr, foreign]);
    // The first message's length split from its body, the rest in one piece.
    const replies = await exchange(port, [all.subarray(0, 1), all.subarray(1, 9), all.subarray(9)], 3);
    const byId = new Map(replies.map((r) => [r.readUInt16BE(0), r]));
    const forward = byId.get(0x1111)!;
    assert.equal(forward.readUInt16BE(2) & 0xf, RCODE.NOERROR);
    assert.equal(forward.readUInt16BE(6), 1, 'one answer');
    assert.deepEqual([...forward.subarray(forward.length - 4)], [10, 1, 0, 5]);
    const reverse = byId.get(0x2222)!;
    assert.equal(reverse.readUInt16BE(6), 1);
    assert.match(reverse.toString('latin1'), /\x0bip-10-1-0-5\x0aironbark-1\x07compute\x08internal\x00$/, 'the PTR name, in wire labels');
    assert.equal(byId.get(0x3333)!.readUInt16BE(2) & 0xf, RCODE.NXDOMAIN, 'another VPC\'s name does not exist for it');
  });

  it('gives the same bytes as over UDP', async () => {
    const q = query(0x4444, 'ip-10-1-0-5.ironbark-1.compute.internal', TYPE_A);
    const [overTcp] = await exchange(port, [framed(q)], 1);
    assert.deepEqual(overTcp, await dns.answer(q, '127.0.0.1'));
  });
});
