// Limits a server enforces on connections before any request is read: how many sockets one client
// address may hold open at once (a further one is closed as soon as it is accepted), and the answer
// to a request whose header section is larger than the server's `maxHeaderSize`.
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { isIPv6 } from 'node:net';

/** Open connections one client address may hold on the EC2 endpoint, by default. */
export const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 256;

/**
 * Largest header section (request line and headers) by default. Above Node's 16 KiB: a GET that
 * carries its parameters in the query string (older clients sign GETs) may list a thousand ids.
 */
export const DEFAULT_MAX_HEADER_BYTES = 64 * 1024;

/**
 * The key that limits per client use for `address`: an IPv4 address as it is (also when written as
 * an IPv4-mapped IPv6 address), an IPv6 address by its /64 network, which one host usually holds
 * whole, so that a client cannot get a fresh allowance from each of its addresses.
 */
export function clientKey(address: string | undefined): string {
  if (!address) return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  const zoneless = address.split('%')[0]!;
  const [head = '', tail] = zoneless.split('::');
  const headParts = head === '' ? [] : head.split(':');
  const tailParts = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? headParts : [...headParts, ...Array(8 - headParts.length - tailParts.length).fill('0'), ...tailParts];
  return `${groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16)).join(':')}::/64`;
}

export interface ConnectionCap {
  /** Open connections of the address (or its /64) now. */
  openFrom(address: string): number;
  /** Connections closed at once because their address had too many open. */
  refused(): number;
}

/**
 * Closes every connection beyond `max` open ones from one client address, as soon as it is
 * accepted (nothing is read from it, nothing answered).
 */
export function capConnectionsPerAddress(server: Server, max: number): ConnectionCap {
  const open = new Map<string, number>();
  let refused = 0;
  server.on('connection', (socket: Socket) => {
    const key = clientKey(socket.remoteAddress);
    const count = open.get(key) ?? 0;
    if (count >= max) {
      refused++;
      socket.destroy();
      return;
    }
    open.set(key, count + 1);
    socket.once('close', () => {
      const left = (open.get(key) ?? 1) - 1;
      if (left <= 0) open.delete(key);
      else open.set(key, left);
    });
  });
  return {
    openFrom: (address) => open.get(clientKey(address)) ?? 0,
    refused: () => refused,
  };
}

/** The answer to a request whose header section is over the limit, in the server's API format. */
export interface HeaderOverflowAnswer {
  contentType: string;
  body: string;
}

// What node:http writes itself when a server has no 'clientError' listener (lib/_http_server.js).
const NODE_ANSWERS: Record<string, string> = {
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 'HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n\r\n',
  ERR_HTTP_REQUEST_TIMEOUT: 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n',
};
const NODE_BAD_REQUEST = 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n';

/**
 * Answers a header section over `maxHeaderSize` with 431 and `answer()` (node:http would send the
 * status line alone); every other client error is answered as node:http answers it.
 */
export function answerHeaderOverflow(server: Server, answer: () => HeaderOverflowAnswer): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const pending = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (socket.writable && !pending?.headersSent) {
      if (err.code === 'HPE_HEADER_OVERFLOW') {
        const { contentType, body } = answer();
        socket.write(`HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: ${contentType}\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      } else {
        socket.write(NODE_ANSWERS[err.code ?? ''] ?? NODE_BAD_REQUEST);
      }
    }
    socket.destroy(err);
  });
}
