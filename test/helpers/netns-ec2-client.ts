// An EC2 client in this process for a cloud that listens on loopback inside a network namespace.
// Node cannot enter a namespace, so a small forwarder started there with `ip netns exec` serves a
// unix socket (the file system is shared) and pipes each connection to the cloud's port; no
// traffic leaves the namespace.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { EC2Client } from '@aws-sdk/client-ec2';
import { NodeHttpHandler } from '@smithy/node-http-handler';

/** Starts the forwarder from `socket` to 127.0.0.1:`port` in `ns`; resolves once the socket exists. The caller ends the child. */
export async function forwardPortToSocket(ns: string, port: number, socket: string, timeoutMs = 10_000): Promise<ChildProcess> {
  const forwarder = `require('net').createServer((c) => { const u = require('net').connect(${port}, '127.0.0.1'); c.pipe(u).pipe(c);`
    + ` c.on('error', () => u.destroy()); u.on('error', () => c.destroy()); }).listen(process.env.SOCK)`;
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', forwarder], { stdio: 'ignore', env: { ...process.env, SOCK: socket } });
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(socket)) {
    if (child.exitCode !== null) throw new Error(`the EC2 forwarder in ${ns} exited with ${child.exitCode}`);
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`timed out waiting for the EC2 forwarder in ${ns}`); }
    await new Promise((r) => setTimeout(r, 50));
  }
  return child;
}

/** An EC2 client whose connections go through `socket` (see forwardPortToSocket) to the cloud's `port`. */
export function ec2ClientOverSocket(socket: string, port: number, region: string, credentials: { accessKeyId: string; secretAccessKey: string }): EC2Client {
  const agent = new http.Agent({ keepAlive: false });
  (agent as unknown as { createConnection: () => net.Socket }).createConnection = () => net.connect(socket);
  return new EC2Client({
    endpoint: `http://127.0.0.1:${port}`, region, maxAttempts: 1, credentials,
    requestHandler: new NodeHttpHandler({ httpAgent: agent }),
  });
}
