// The zone's NBD server: one qemu-storage-daemon per storage directory, listening on the address
// the zone's nodes reach the cluster at, with TLS from a pre-shared key (tls-creds-psk) so only
// nodes the cluster gave the key can read or write a volume. Exports come and go over its QMP
// socket. The daemon runs on its own (--daemonize, pid file), like the VMs: a cluster controller
// restart re-adopts it and attached volumes keep working; stop() ends it.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { readFile, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { QmpClient, QmpCommandError } from '../../node/qmp-client.ts';
import { ensurePrivateDir, writePrivateFile } from '../../store/private-files.ts';
import { describeExit, lastLines } from '../../node/command-failure.ts';
import type { NbdLocation } from './volume-backend.ts';

export interface NbdExportServerOptions {
  /** Holds the pid file, QMP socket, PSK directory and settings. */
  dir: string;
  /** Address the nodes of the zone connect to (the cluster's zone-facing address). */
  host: string;
  /** TCP port; by default the one used before, else a free one chosen now. */
  port?: number;
  /** The PSK identity, e.g. ironbark-<zone>. */
  identity: string;
  binary?: string;
  /** Named network namespace the server listens in (tests' hosts); the host's own when absent. */
  netns?: string;
}

/** A volume a node is connected to cannot be closed safely (resizing waits until it is detached). */
export class ExportInUseError extends Error {
  constructor(readonly exportName: string) {
    super(`${exportName} is in use by a node (attached)`);
    this.name = 'ExportInUseError';
  }
}

interface Settings { port: number; pskHex: string }

const FILES = { pid: 'nbd.pid', qmp: 'nbd-qmp.sock', settings: 'nbd.json', pskDir: 'psk' } as const;

export class NbdExportServer {
  readonly #opts: NbdExportServerOptions;
  #settings: Settings | undefined;
  #qmp: QmpClient | undefined;
  #starting: Promise<QmpClient> | undefined;
  /** QMP calls are serialised: export set-up is several commands that must not interleave. */
  #chain: Promise<unknown> = Promise.resolve();

  constructor(opts: NbdExportServerOptions) {
    this.#opts = opts;
  }

  /** Runs `work` with the daemon's monitor, starting or re-adopting the daemon first. */
  run<T>(work: (qmp: QmpClient) => Promise<T>): Promise<T> {
    const next = this.#chain.then(async () => work(await this.#monitor()));
    this.#chain = next.catch(() => undefined);
    return next;
  }

  location(exportName: string): NbdLocation {
    const s = this.#settings!;
    return { host: this.#opts.host, port: s.port, exportName, tls: { identity: this.#opts.identity, pskHex: s.pskHex } };
  }

  /** Exports the qcow2 file as `name` (writable), unless it already is. */
  async ensureExport(name: string, file: string): Promise<NbdLocation> {
    await this.run(async (qmp) => {
      const exports = await qmp.execute<{ id: string }[]>('query-block-exports');
      if (exports.some((e) => e.id === exportId(name))) return;
      let top = topNode(await nodeNames(qmp), name);
      if (top === undefined) {
        await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': nodeName(name), file: fileNode(file) });
        top = nodeName(name);
      }
      await qmp.execute('block-export-add', { type: 'nbd', id: exportId(name), 'node-name': top, name, writable: true });
    });
    return this.location(name);
  }

  /**
   * Puts the empty qcow2 `overlayFile` (whose backing file is the image `name` has open now) on
   * top of it, at one point between two writes: from then on every write of the export's clients
   * goes to the overlay and the image below stays as it was (blockdev-snapshot). The export follows
   * the new top by itself. `name` must be open (exported) already.
   */
  async swapTop(name: string, overlayFile: string): Promise<void> {
    await this.run(async (qmp) => {
      const names = await nodeNames(qmp);
      const top = topNode(names, name);
      if (top === undefined) throw new Error(`${name} is not open in the NBD server`);
      const next = `${nodeName(name)}.${generation(top, name) + 1}`;
      // No backing here: blockdev-snapshot makes the image open now the backing, not a second copy of it.
      await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': next, file: fileNode(overlayFile), backing: null });
      try {
        await qmp.execute('blockdev-snapshot', { node: top, overlay: next });
      } catch (err) {
        await qmp.execute('blockdev-del', { 'node-name': next }).catch(() => undefined);
        throw err;
      }
    });
  }

  /**
   * Ends the export and closes the file. `hard` cuts connected clients off; `safe` refuses
   * (ExportInUseError) while a client is connected. `keepOpen` leaves the file open for a new export.
   */
  async removeExport(name: string, opts: { mode?: 'hard' | 'safe'; keepOpen?: boolean } = {}): Promise<void> {
    await this.run(async (qmp) => {
      const exports = await qmp.execute<{ id: string }[]>('query-block-exports');
      if (exports.some((e) => e.id === exportId(name))) {
        try {
          await qmp.execute('block-export-del', { id: exportId(name), mode: opts.mode ?? 'hard' });
        } catch (err) {
          if (err instanceof QmpCommandError && opts.mode === 'safe') throw new ExportInUseError(name);
          throw err;
        }
        for (let i = 0; i < 200; i++) {
          const left = await qmp.execute<{ id: string }[]>('query-block-exports');
          if (!left.some((e) => e.id === exportId(name))) break;
          await sleep(25);
        }
      }
      if (opts.keepOpen) return;
      // The top first: each node below is its backing until the one above it goes.
      const mine = (await nodeNames(qmp)).filter((n) => generation(n, name) >= 0).sort((a, b) => generation(b, name) - generation(a, name));
      for (const node of mine) await qmp.execute('blockdev-del', { 'node-name': node });
    });
  }

  /** Whether the daemon has `file` open (as any node): a snapshot's swap that reached it. */
  async hasOpen(file: string): Promise<boolean> {
    return this.run(async (qmp) => (await qmp.execute<{ file: string }[]>('query-named-block-nodes', { flat: true })).some((n) => n.file === file));
  }

  async isExported(name: string): Promise<boolean> {
    return this.run(async (qmp) => (await qmp.execute<{ id: string }[]>('query-block-exports')).some((e) => e.id === exportId(name)));
  }

  /** Lets go of the monitor; the daemon keeps serving attached volumes. */
  async close(): Promise<void> {
    await this.#chain;
    await this.#qmp?.close();
    this.#qmp = undefined;
  }

  /** Ends the daemon (every export with it). */
  async stop(): Promise<void> {
    await this.#chain;
    const pid = await this.#livePid();
    if (this.#qmp && !this.#qmp.isClosed) await this.#qmp.execute('quit', undefined, { timeoutMs: 5000 }).catch(() => undefined);
    await this.#qmp?.close();
    this.#qmp = undefined;
    if (pid !== undefined) {
      for (let i = 0; i < 200 && alive(pid); i++) await sleep(25);
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
    await rm(join(this.#opts.dir, FILES.pid), { force: true });
    await rm(join(this.#opts.dir, FILES.qmp), { force: true });
  }

  async #monitor(): Promise<QmpClient> {
    if (this.#qmp && !this.#qmp.isClosed) return this.#qmp;
    this.#starting ??= this.#startOrAdopt().finally(() => { this.#starting = undefined; });
    return this.#starting;
  }

  async #startOrAdopt(): Promise<QmpClient> {
    const dir = this.#opts.dir;
    await ensurePrivateDir(dir);
    this.#settings ??= await this.#loadSettings();
    const socket = join(dir, FILES.qmp);
    if ((await this.#livePid()) === undefined) {
      await rm(socket, { force: true });
      await this.#launch();
    }
    const qmp = await QmpClient.connect(socket, { retryForMs: 10_000 });
    this.#qmp = qmp;
    return qmp;
  }

  async #loadSettings(): Promise<Settings> {
    const file = join(this.#opts.dir, FILES.settings);
    const saved = await readFile(file, 'utf8').then((t) => JSON.parse(t) as Partial<Settings>, () => ({} as Partial<Settings>));
    const settings: Settings = {
      port: this.#opts.port ?? (Number.isInteger(saved.port) ? saved.port! : await freePort(this.#opts.host)),
      pskHex: typeof saved.pskHex === 'string' && /^[0-9a-f]{64}$/.test(saved.pskHex) ? saved.pskHex : randomBytes(32).toString('hex'),
    };
    await writePrivateFile(file, JSON.stringify(settings) + '\n');
    // QEMU reads "identity:key" lines from keys.psk in the credentials directory.
    await ensurePrivateDir(join(this.#opts.dir, FILES.pskDir));
    await writePrivateFile(join(this.#opts.dir, FILES.pskDir, 'keys.psk'), `${this.#opts.identity}:${settings.pskHex}\n`);
    return settings;
  }

  async #launch(): Promise<void> {
    const dir = this.#opts.dir;
    const s = this.#settings!;
    const host = this.#opts.host.includes(':') ? `[${this.#opts.host}]` : this.#opts.host;
    const args = [
      '--object', `tls-creds-psk,id=tls0,endpoint=server,dir=${opt(join(dir, FILES.pskDir))}`,
      '--chardev', `socket,id=qmp0,path=${opt(join(dir, FILES.qmp))},server=on,wait=off`,
      '--monitor', 'chardev=qmp0',
      '--nbd-server', `addr.type=inet,addr.host=${host},addr.port=${s.port},tls-creds=tls0`,
      '--pidfile', join(dir, FILES.pid),
      '--daemonize',
    ];
    let binary = this.#opts.binary ?? 'qemu-storage-daemon';
    const netns = this.#opts.netns;
    if (netns !== undefined) {
      if (!/^[A-Za-z0-9_.-]+$/.test(netns)) throw new Error(`invalid network namespace name ${netns}`);
      args.unshift('netns', 'exec', netns, binary);
      binary = 'ip';
    }
    await new Promise<void>((resolve, reject) => {
      execFile(binary, args, { timeout: 30_000, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
        if (!err) return resolve();
        const exitCode = typeof err.code === 'number' ? err.code : null;
        reject(new Error(`qemu-storage-daemon could not serve NBD on ${host}:${s.port} (${describeExit({ exitCode, signal: err.signal, timedOut: err.killed })}): ${lastLines(stderr, 5).replace(/\n/g, '; ') || err.message}`));
      });
    });
  }

  /** The daemon's pid while it runs for this directory (a reused pid is not taken for it). */
  async #livePid(): Promise<number | undefined> {
    const text = await readFile(join(this.#opts.dir, FILES.pid), 'utf8').catch(() => '');
    const pid = Number.parseInt(text.trim(), 10);
    if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return undefined;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      return cmdline.includes(join(this.#opts.dir, FILES.qmp)) ? pid : undefined;
    } catch {
      return undefined;
    }
  }
}

function nodeName(name: string): string {
  return `n${name}`;
}

// A volume opened once is node n<name>; each snapshot puts a new top on it, n<name>.1, .2, ...
// (swapTop), so the daemon itself says which node is the volume's top after a controller restart.

/** The node's generation for `name` (0 for n<name>), or -1 when it is not one of name's nodes. */
function generation(node: string, name: string): number {
  const base = nodeName(name);
  if (node === base) return 0;
  if (!node.startsWith(`${base}.`)) return -1;
  const n = Number(node.slice(base.length + 1));
  return Number.isInteger(n) && n > 0 ? n : -1;
}

function topNode(names: string[], name: string): string | undefined {
  let top: string | undefined;
  for (const n of names) if (generation(n, name) >= 0 && (top === undefined || generation(n, name) > generation(top, name))) top = n;
  return top;
}

/**
 * A volume's own image, as the daemon opens it. Without file locks: after a snapshot the frozen
 * image stays open (read-write, as it was opened) below the volume's new top, and volumes made
 * from the snapshot open the same file again as their backing, which a write lock would refuse.
 * The daemon is the only process that opens the storage directory's images for writing (the
 * back-end reads them with qemu-img -U), and a frozen image gets no more writes.
 */
function fileNode(filename: string) {
  return { driver: 'file', filename, locking: 'off' };
}

async function nodeNames(qmp: QmpClient): Promise<string[]> {
  return (await qmp.execute<{ 'node-name': string }[]>('query-named-block-nodes', { flat: true })).map((n) => n['node-name']);
}

function exportId(name: string): string {
  return `e${name}`;
}

function opt(value: string): string {
  return value.replaceAll(',', ',,');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** A port nothing listens on now; the daemon binds it a moment later and keeps it (saved in nbd.json). */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
