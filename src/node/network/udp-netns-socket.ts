// A bound UDP socket inside another network namespace, for a server running in this process
// (the DNS service): see netns-handle.ts.
import type { Socket } from 'node:dgram';
import { socketFromNamespace } from './netns-handle.ts';

const BIND_AND_SEND = `
const dgram = require('node:dgram');
const socket = dgram.createSocket({ type: 'udp4', reuseAddr: false });
socket.on('error', (e) => process.send({ error: e.message }, () => process.disconnect()));
socket.bind({ address: process.argv[1], port: Number(process.argv[2]), exclusive: true }, () => {
  process.send({ ready: true }, socket, () => { socket.close(); process.disconnect(); });
});
`;

export function bindUdpInNamespace(netns: string, host: string, port: number): Promise<Socket> {
  return socketFromNamespace<Socket>(netns, BIND_AND_SEND, [host, String(port)], `bind UDP ${host}:${port}`);
}
