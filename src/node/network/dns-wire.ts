// The few pieces of the DNS wire format (RFC 1035) the zone's name service needs: read the one
// question of a query, and write an answer with A or PTR records, or an empty one with a response
// code. Anything it cannot read is answered FORMERR by the caller, never trusted further.

export const TYPE_A = 1;
export const TYPE_PTR = 12;
export const CLASS_IN = 1;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;

export interface DnsQuestion {
  id: number;
  /** The query's flags word (its RD bit is echoed). */
  flags: number;
  /** Lower-case, without the trailing dot. */
  name: string;
  type: number;
  class: number;
  /** Bytes of the header and question section, echoed in the answer. */
  questionEnd: number;
}

/** The query's header and single question, or undefined when the packet is not one plain query. */
export function parseQuery(packet: Buffer): DnsQuestion | undefined {
  if (packet.length < 12) return undefined;
  const id = packet.readUInt16BE(0);
  const flags = packet.readUInt16BE(2);
  const qdcount = packet.readUInt16BE(4);
  if ((flags & 0x8000) !== 0 || ((flags >> 11) & 0xf) !== 0 || qdcount !== 1) return undefined; // a response, not QUERY, or not one question
  const labels: string[] = [];
  let offset = 12;
  for (;;) {
    if (offset >= packet.length) return undefined;
    const length = packet[offset]!;
    offset++;
    if (length === 0) break;
    if (length > 63 || offset + length > packet.length) return undefined; // compression never appears in a question
    labels.push(packet.toString('latin1', offset, offset + length).toLowerCase());
    offset += length;
  }
  if (offset + 4 > packet.length) return undefined;
  const name = labels.join('.');
  if (name.length > 253) return undefined;
  return { id, flags, name, type: packet.readUInt16BE(offset), class: packet.readUInt16BE(offset + 2), questionEnd: offset + 4 };
}

function encodeName(name: string): Buffer {
  const parts = name.split('.').filter(Boolean).map((label) => {
    const bytes = Buffer.from(label, 'latin1');
    return Buffer.concat([Buffer.from([bytes.length]), bytes]);
  });
  return Buffer.concat([...parts, Buffer.from([0])]);
}

export interface DnsRecord {
  type: typeof TYPE_A | typeof TYPE_PTR;
  ttl: number;
  /** A: dotted IPv4; PTR: a host name. */
  value: string;
}

/** The answer to `query`: its question echoed, `records` for it (by a pointer to its name), and `rcode`. */
export function buildAnswer(query: Buffer, q: DnsQuestion, rcode: number, records: DnsRecord[] = []): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(q.id, 0);
  // QR, AA (the zone's names are ours), RD echoed, RA (other names are forwarded).
  header.writeUInt16BE(0x8000 | 0x0400 | (q.flags & 0x0100) | 0x0080 | rcode, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(records.length, 6);
  const answers = records.map((r) => {
    const rdata = r.type === TYPE_A ? Buffer.from(r.value.split('.').map(Number)) : encodeName(r.value);
    const fixed = Buffer.alloc(12);
    fixed.writeUInt16BE(0xc00c, 0); // the question's name, at offset 12
    fixed.writeUInt16BE(r.type, 2);
    fixed.writeUInt16BE(CLASS_IN, 4);
    fixed.writeUInt32BE(r.ttl, 6);
    fixed.writeUInt16BE(rdata.length, 10);
    return Buffer.concat([fixed, rdata]);
  });
  return Buffer.concat([header, query.subarray(12, q.questionEnd), ...answers]);
}
