// A listening TCP socket inside another network namespace, for a server running in this process.
// Node cannot switch namespaces itself, so a short-lived child started with `ip netns exec` binds
// the socket there and hands the listening descriptor back over the IPC channel; connections then
// arrive in this process with their real source addresses from inside that namespace.
import { spawn } from 'node:child_process';
import type { Server } from 'node:net';
import { Ec2Error } from '../protocol/errors.ts';

const BIND_AND_SEND = `
const net = require('node:net');
const server = net.createServer();
server.on('error', (e) => process.send({ error: e.message }, () => process.disconnect()));
server.listen({ host: process.argv[1], port: Number(process.argv[2]), exclusive: true }, () => {
  process.send({ listening: true }, server, () => { server.close(); process.disconnect(); });
});
`;

export function listenInNamespace(netns: string, host: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', BIND_AND_SEND, host, String(port)], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    let stderr = '';
    let settled = false;
    child.stderr?.on('data', (chunk) => (stderr += chunk));
    child.on('message', (message: { listening?: boolean; error?: string }, handle) => {
      if (settled) return;
      settled = true;
      if (message.listening && handle) resolve(handle as Server);
      else reject(new Ec2Error('InternalError', `Cannot listen on ${host}:${port} in network namespace ${netns}: ${message.error ?? 'no socket received'}`));
    });
    child.on('error', (e) => {
      if (settled) return;
      settled = true;
      reject(new Ec2Error('InternalError', `Cannot start a helper in network namespace ${netns}: ${e.message}`));
    });
    child.on('exit', (code) => {
      if (settled) return;
      settled = true;
      reject(new Ec2Error('InternalError', `Cannot listen on ${host}:${port} in network namespace ${netns} (helper exited ${code}): ${stderr.trim()}`));
    });
  });
}
