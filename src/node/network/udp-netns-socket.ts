// A bound UDP socket inside another network namespace, for a server running in this process (the
// UDP twin of network-netns-socket.ts): a short-lived child started with `ip netns exec` binds it
// there and hands it back over the IPC channel; datagrams then arrive here with their real sources.
import { spawn } from 'node:child_process';
import type { Socket } from 'node:dgram';
import { Ec2Error } from '../../protocol/errors.ts';

const BIND_AND_SEND = `
const dgram = require('node:dgram');
const socket = dgram.createSocket({ type: 'udp4', reuseAddr: false });
socket.on('error', (e) => process.send({ error: e.message }, () => process.disconnect()));
socket.bind({ address: process.argv[1], port: Number(process.argv[2]), exclusive: true }, () => {
  process.send({ bound: true }, socket, () => { socket.close(); process.disconnect(); });
});
`;

export function bindUdpInNamespace(netns: string, host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', BIND_AND_SEND, host, String(port)], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    let stderr = '';
    let settled = false;
    child.stderr?.on('data', (chunk) => (stderr += chunk));
    child.on('message', (message: { bound?: boolean; error?: string }, handle) => {
      if (settled) return;
      settled = true;
      if (message.bound && handle) resolve(handle as unknown as Socket);
      else reject(new Ec2Error('InternalError', `Cannot bind UDP ${host}:${port} in network namespace ${netns}: ${message.error ?? 'no socket received'}`));
    });
    child.on('error', (e) => {
      if (settled) return;
      settled = true;
      reject(new Ec2Error('InternalError', `Cannot start a helper in network namespace ${netns}: ${e.message}`));
    });
    child.on('exit', (code) => {
      if (settled) return;
      settled = true;
      reject(new Ec2Error('InternalError', `Cannot bind UDP ${host}:${port} in network namespace ${netns} (helper exited ${code}): ${stderr.trim()}`));
    });
  });
}
