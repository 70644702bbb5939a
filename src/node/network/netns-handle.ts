// A socket made inside another network namespace and handed to this process. Node cannot switch
// namespaces itself, so a short-lived child started with `ip netns exec` runs `script` there, which
// binds the socket and sends it back over the IPC channel with a `{ ready: true }` message (or
// `{ error }`); traffic then arrives in this process with its real sources from that namespace.
import { spawn } from 'node:child_process';
import { Ec2Error } from '../../protocol/errors.ts';

/** `what` finishes "Cannot …", e.g. `listen on 10.1.0.1:80`. */
export function socketFromNamespace<T>(netns: string, script: string, args: string[], what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', script, ...args], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    let stderr = '';
    let settled = false;
    const settle = (fn: () => void) => { if (!settled) { settled = true; fn(); } };
    child.stderr?.on('data', (chunk) => (stderr += chunk));
    child.on('message', (message: { ready?: boolean; error?: string }, handle) => settle(() => {
      if (message.ready && handle) resolve(handle as unknown as T);
      else reject(new Ec2Error('InternalError', `Cannot ${what} in network namespace ${netns}: ${message.error ?? 'no socket received'}`));
    }));
    child.on('error', (e) => settle(() => reject(new Ec2Error('InternalError', `Cannot start a helper in network namespace ${netns}: ${e.message}`))));
    child.on('exit', (code) => settle(() => reject(new Ec2Error('InternalError', `Cannot ${what} in network namespace ${netns} (helper exited ${code}): ${stderr.trim()}`))));
  });
}
