import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import {
  QmpClient, QmpCommandError, QmpDisconnectedError, QmpTimeoutError, type QmpEvent,
} from '../../src/node/qmp-client.ts';

// A stand-in for QEMU's monitor that speaks just enough QMP to exercise the client.
class FakeQmpServer {
  readonly server: Server;
  readonly sockets = new Set<Socket>();
  readonly received: Array<Record<string, unknown>> = [];
  private deferred: Array<{ socket: Socket; id: unknown; command: string }> = [];

  constructor(readonly path: string) {
    this.server = createServer((socket) => this.onConnection(socket));
  }

  async listen(): Promise<void> {
    this.server.listen(this.path);
    await once(this.server, 'listening');
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }

  dropAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  private onConnection(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.write(JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } }) + '\r\n');
    let buffer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        this.handle(socket, JSON.parse(line));
      }
    });
  }

  private reply(socket: Socket, message: Record<string, unknown>): void {
    socket.write(JSON.stringify(message) + '\r\n');
  }

  private handle(socket: Socket, msg: { execute: string; id?: unknown; arguments?: Record<string, unknown> }): void {
    this.received.push(msg);
    const { id } = msg;
    switch (msg.execute) {
      case 'qmp_capabilities': return this.reply(socket, { return: {}, id });
      case 'query-status': return this.reply(socket, { return: { status: 'running', running: true }, id });
      case 'echo': return this.reply(socket, { return: msg.arguments, id });
      case 'human-monitor-command':
        return this.reply(socket, { error: { class: 'GenericError', desc: 'no such device' }, id });
      case 'system_powerdown':
        this.reply(socket, { event: 'POWERDOWN', timestamp: { seconds: 1, microseconds: 2 } });
        return this.reply(socket, { return: {}, id });
      case 'quit':
        // Like QEMU racing its exit against the reply: the connection just ends.
        return void socket.destroy();
      case 'defer':
        this.deferred.push({ socket, id, command: String(msg.arguments?.tag) });
        return;
      case 'flush-reversed': {
        const pending = this.deferred.reverse();
        this.deferred = [];
        for (const d of pending) this.reply(d.socket, { return: { tag: d.command }, id: d.id });
        return this.reply(socket, { return: {}, id });
      }
      default: // 'hang' and anything else: never answered
    }
  }
}

describe('QmpClient', () => {
  let dir: string;
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'ironbark-qmp-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  async function withServer(fn: (server: FakeQmpServer, client: QmpClient) => Promise<void>, name: string) {
    const server = new FakeQmpServer(join(dir, `${name}.sock`));
    await server.listen();
    const client = await QmpClient.connect(server.path, { retryForMs: 1000, commandTimeoutMs: 2000 });
    try {
      await fn(server, client);
    } finally {
      await client.close();
      await server.close();
    }
  }

  test('negotiates capabilities and executes commands', () => withServer(async (server, client) => {
    assert.equal(server.received[0].execute, 'qmp_capabilities');
    assert.deepEqual((client.greeting as { QMP: { version: { qemu: { major: number } } } }).QMP.version.qemu.major, 7);
    assert.deepEqual(await client.execute('query-status'), { status: 'running', running: true });
    assert.deepEqual(await client.execute('echo', { a: 1, b: 'two' }), { a: 1, b: 'two' });
  }, 'basic'));

  test('rejects with the QMP error class and description', () => withServer(async (_server, client) => {
    await assert.rejects(client.execute('human-monitor-command', { 'command-line': 'x' }), (err: unknown) => {
      assert.ok(err instanceof QmpCommandError);
      assert.equal(err.errorClass, 'GenericError');
      assert.match(err.message, /no such device/);
      return true;
    });
  }, 'error'));

  test('matches replies to commands by id even when they arrive out of order', () => withServer(async (_server, client) => {
    const first = client.execute('defer', { tag: 'first' });
    const second = client.execute('defer', { tag: 'second' });
    await client.execute('flush-reversed');
    assert.deepEqual(await first, { tag: 'first' });
    assert.deepEqual(await second, { tag: 'second' });
  }, 'order'));

  test('emits asynchronous events', () => withServer(async (_server, client) => {
    const events: QmpEvent[] = [];
    client.on('event', (e: QmpEvent) => events.push(e));
    await client.execute('system_powerdown');
    assert.equal(events.length, 1);
    assert.equal(events[0].event, 'POWERDOWN');
    assert.deepEqual(events[0].timestamp, { seconds: 1, microseconds: 2 });
  }, 'events'));

  test('a command without a reply times out and a later command still works', () => withServer(async (_server, client) => {
    await assert.rejects(client.execute('hang', undefined, { timeoutMs: 100 }), QmpTimeoutError);
    assert.deepEqual(await client.execute('query-status'), { status: 'running', running: true });
  }, 'timeout'));

  test('fails every pending command when the socket drops, and reports the close', () => withServer(async (server, client) => {
    const closed = once(client, 'close');
    const pending = [client.execute('hang'), client.execute('defer', { tag: 'x' }), client.execute('hang')];
    // Wait until the server has all three before cutting the line.
    while (server.received.length < 4) await new Promise((r) => setTimeout(r, 5));
    server.dropAll();
    const results = await Promise.allSettled(pending);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.ok((r as PromiseRejectedResult).reason instanceof QmpDisconnectedError);
    }
    await closed;
    assert.equal(client.isClosed, true);
    await assert.rejects(client.execute('query-status'), QmpDisconnectedError);
  }, 'drop'));

  test('quit succeeds although the connection ends instead of replying', () => withServer(async (_server, client) => {
    const closed = once(client, 'close');
    assert.deepEqual(await client.execute('quit'), {});
    await closed;
    assert.deepEqual(await client.execute('quit'), {}, 'quit on a closed monitor is already done');
  }, 'quit'));

  test('connect retries until QEMU creates its socket', async () => {
    const server = new FakeQmpServer(join(dir, 'late.sock'));
    const connecting = QmpClient.connect(server.path, { retryForMs: 5000, retryIntervalMs: 20 });
    await new Promise((r) => setTimeout(r, 150));
    await server.listen();
    const client = await connecting;
    try {
      assert.deepEqual(await client.execute('query-status'), { status: 'running', running: true });
    } finally {
      await client.close();
      await server.close();
    }
  });

  test('connect gives up after its retry window', async () => {
    await assert.rejects(
      QmpClient.connect(join(dir, 'never.sock'), { retryForMs: 100, retryIntervalMs: 20 }),
      (err: NodeJS.ErrnoException) => err.code === 'ENOENT',
    );
  });
});
