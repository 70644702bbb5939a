// A listening TCP socket inside another network namespace, for a server running in this process
// (the metadata service): see network/netns-handle.ts.
import type { Server } from 'node:net';
import { socketFromNamespace } from './network/netns-handle.ts';

const BIND_AND_SEND = `
const net = require('node:net');
const server = net.createServer();
server.on('error', (e) => process.send({ error: e.message }, () => process.disconnect()));
server.listen({ host: process.argv[1], port: Number(process.argv[2]), exclusive: true }, () => {
  process.send({ ready: true }, server, () => { server.close(); process.disconnect(); });
});
`;

export function listenInNamespace(netns: string, host: string, port: number): Promise<Server> {
  return socketFromNamespace<Server>(netns, BIND_AND_SEND, [host, String(port)], `listen on ${host}:${port}`);
}
