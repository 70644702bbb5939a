// A small QEMU Machine Protocol client: one unix socket, newline-delimited JSON, commands matched to
// replies by id, asynchronous events re-emitted. Written on node:net so the node has no native deps.
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpConnectOptions {
  /** Keep retrying a missing or refusing socket this long: QEMU creates it shortly after launch. */
  retryForMs?: number;
  retryIntervalMs?: number;
  /** Default per-command timeout. */
  commandTimeoutMs?: number;
}

/** QEMU answered a command with an error. */
export class QmpCommandError extends Error {
  readonly errorClass: string;
  readonly command: string;
  constructor(command: string, errorClass: string, desc: string) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
    this.name = 'QmpCommandError';
    this.errorClass = errorClass;
    this.command = command;
  }
}

/** The socket went away (QEMU exited or closed the monitor) before a reply came. */
export class QmpDisconnectedError extends Error {
  constructor(command: string, cause?: Error) {
    super(`QMP connection closed before ${command} completed${cause ? `: ${cause.message}` : ''}`);
    this.name = 'QmpDisconnectedError';
  }
}

export class QmpTimeoutError extends Error {
  constructor(command: string, timeoutMs: number) {
    super(`QMP ${command} got no reply within ${timeoutMs} ms`);
    this.name = 'QmpTimeoutError';
  }
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * Emits 'event' (QmpEvent) for every asynchronous QEMU event and 'close' (Error | undefined) once
 * when the connection ends, whoever ended it.
 */
export class QmpClient extends EventEmitter {
  readonly socketPath: string;
  /** The server's greeting ({ QMP: { version, capabilities } }). */
  greeting: Record<string, unknown> = {};
  private readonly socket: Socket;
  private readonly commandTimeoutMs: number;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buffer = '';
  private closed = false;
  private closeError: Error | undefined;

  private constructor(socketPath: string, socket: Socket, commandTimeoutMs: number) {
    super();
    this.socketPath = socketPath;
    this.socket = socket;
    this.commandTimeoutMs = commandTimeoutMs;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => { this.closeError = err; });
    socket.on('close', () => this.onClose());
  }

  static async connect(socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const deadline = Date.now() + (opts.retryForMs ?? 5000);
    const interval = opts.retryIntervalMs ?? 50;
    for (;;) {
      try {
        const socket = await openSocket(socketPath);
        const client = new QmpClient(socketPath, socket, opts.commandTimeoutMs ?? 10_000);
        try {
          await client.negotiate();
        } catch (err) {
          await client.close();
          throw err;
        }
        return client;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const retryable = code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'EAGAIN';
        if (!retryable || Date.now() >= deadline) throw err;
        await sleep(interval);
      }
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs a command and resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closed) {
      return command === 'quit' ? Promise.resolve({} as T) : Promise.reject(new QmpDisconnectedError(command, this.closeError));
    }
    const id = this.nextId++;
    const timeoutMs = opts.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpTimeoutError(command, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const message: Record<string, unknown> = { execute: command, id };
      if (args) message.arguments = args;
      this.socket.write(JSON.stringify(message) + '\n');
    });
  }

  /** Closes the connection; pending commands fail with QmpDisconnectedError. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.once('close', () => resolve());
      this.socket.destroy();
    });
  }

  private async negotiate(): Promise<void> {
    // QEMU serves one monitor client at a time: a second client waits here with no greeting.
    const greeting = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const done = () => { clearTimeout(timer); this.off('greeting', onGreeting); this.off('close', onClose); };
      const onGreeting = (g: Record<string, unknown>) => { done(); resolve(g); };
      const onClose = (err?: Error) => { done(); reject(new QmpDisconnectedError('greeting', err)); };
      const timer = setTimeout(() => { done(); reject(new QmpTimeoutError('greeting', this.commandTimeoutMs)); }, this.commandTimeoutMs);
      this.on('greeting', onGreeting);
      this.on('close', onClose);
    });
    this.greeting = greeting;
    await this.execute('qmp_capabilities');
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line);
    } catch {
      return; // QEMU never sends partial JSON per line; ignore noise rather than kill the session.
    }
    if ('QMP' in message) {
      this.emit('greeting', message);
    } else if (typeof message.event === 'string') {
      this.emit('event', message as unknown as QmpEvent);
    } else if (typeof message.id === 'number') {
      const pending = this.pending.get(message.id);
      if (!pending) return; // reply to a command that already timed out
      this.pending.delete(message.id);
      clearTimeout(pending.timer);
      if ('error' in message) {
        const error = message.error as { class?: string; desc?: string };
        pending.reject(new QmpCommandError(pending.command, error.class ?? 'GenericError', error.desc ?? 'unknown error'));
      } else {
        pending.resolve(message.return);
      }
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      clearTimeout(pending.timer);
      // QEMU may close the monitor before (or instead of) answering quit: the quit still happened.
      if (pending.command === 'quit') pending.resolve({});
      else pending.reject(new QmpDisconnectedError(pending.command, this.closeError));
    }
    this.emit('close', this.closeError);
  }
}

function openSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    const onError = (err: Error) => { socket.destroy(); reject(err); };
    socket.once('error', onError);
    socket.once('connect', () => { socket.off('error', onError); resolve(socket); });
  });
}
