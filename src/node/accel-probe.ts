// Decides whether this host can run VMs with KVM or must fall back to TCG (pure emulation).
// /dev/kvm existing proves little: under nested virtualization KVM may hang or abort on the first
// guest instruction. So we boot a tiny probe VM with KVM and believe KVM only if the guest both
// runs its init and powers itself off within the time limit.
import { spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Accelerator } from './hypervisor.ts';

export interface AccelProbeOptions {
  kernelPath: string;
  timeoutMs?: number;
  /** Where the verdict is kept so a node restart does not probe again. */
  cacheFile?: string;
  /** Probe even when a cached verdict exists. */
  force?: boolean;
  qemuBinary?: string;
  kvmDevice?: string;
  /** Defaults to process.env; IRONBARK_ACCEL=kvm|tcg overrides the probe. */
  env?: NodeJS.ProcessEnv;
}

export interface AccelProbeResult {
  accelerator: Accelerator;
  reason: string;
}

const PROBE_MARKER = 'ironbark-accel-probe: ok';

export async function probeAccelerator(opts: AccelProbeOptions): Promise<AccelProbeResult> {
  const env = opts.env ?? process.env;
  const override = env.IRONBARK_ACCEL;
  if (override !== undefined && override !== '') {
    if (override !== 'kvm' && override !== 'tcg') {
      throw new Error(`IRONBARK_ACCEL must be kvm or tcg, not ${JSON.stringify(override)}`);
    }
    return { accelerator: override, reason: `IRONBARK_ACCEL=${override} set in the environment` };
  }
  if (opts.cacheFile && !opts.force) {
    const cached = await readCachedVerdict(opts.cacheFile);
    if (cached) return cached;
  }
  const result = await probe(opts);
  if (opts.cacheFile) await writeCachedVerdict(opts.cacheFile, result);
  return result;
}

async function probe(opts: AccelProbeOptions): Promise<AccelProbeResult> {
  const kvmDevice = opts.kvmDevice ?? '/dev/kvm';
  try {
    await access(kvmDevice, fsConstants.R_OK | fsConstants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { accelerator: 'tcg', reason: `${kvmDevice} is not usable (${code}); using TCG emulation` };
  }
  const outcome = await bootProbeVm({
    accelerator: 'kvm',
    kernelPath: opts.kernelPath,
    timeoutMs: opts.timeoutMs ?? 8000,
    qemuBinary: opts.qemuBinary,
  });
  if (outcome.ok) return { accelerator: 'kvm', reason: `KVM probe VM booted and powered off in ${outcome.elapsedMs} ms` };
  return { accelerator: 'tcg', reason: `KVM probe failed (${outcome.detail}); using TCG emulation` };
}

export interface ProbeVmOutcome {
  ok: boolean;
  elapsedMs: number;
  detail: string;
}

/**
 * Boots the kernel with a one-program initramfs whose init prints a marker and powers off.
 * Resolves (never rejects) with whether that happened before the deadline; the VM is killed on expiry.
 */
export async function bootProbeVm(opts: {
  accelerator: Accelerator;
  kernelPath: string;
  timeoutMs: number;
  qemuBinary?: string;
}): Promise<ProbeVmOutcome> {
  const dir = await mkdtemp(join(tmpdir(), 'ironbark-accel-probe-'));
  const started = Date.now();
  try {
    const initrd = join(dir, 'probe.cpio');
    const consoleLog = join(dir, 'console.log');
    await writeFile(initrd, buildNewcArchive([
      { path: 'dev', kind: 'dir', mode: 0o755 },
      { path: 'dev/console', kind: 'chardev', mode: 0o600, rdev: [5, 1] },
      { path: 'init', kind: 'file', mode: 0o755, data: poweroffInitElf(PROBE_MARKER + '\n') },
    ]));
    const args = [
      '-accel', opts.accelerator, '-cpu', opts.accelerator === 'kvm' ? 'host' : 'max',
      '-m', '128', '-smp', '1',
      '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-kernel', opts.kernelPath, '-initrd', initrd,
      '-append', 'console=ttyS0 panic=-1 rdinit=/init',
      '-serial', `file:${consoleLog}`,
    ];
    const exit = await runWithDeadline(opts.qemuBinary ?? 'qemu-system-x86_64', args, opts.timeoutMs);
    const elapsedMs = Date.now() - started;
    const console = await readFile(consoleLog, 'utf8').catch(() => '');
    if (exit.timedOut) {
      return { ok: false, elapsedMs, detail: `the probe VM made no progress within ${opts.timeoutMs} ms and was killed (nested virtualization hang?)` };
    }
    if (exit.code === 0 && console.includes(PROBE_MARKER)) return { ok: true, elapsedMs, detail: 'powered off' };
    const why = lastLine(exit.stderr) || lastLine(console) || 'no output';
    return { ok: false, elapsedMs, detail: `QEMU exited with ${exit.signal ?? `code ${exit.code}`}: ${why}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function runWithDeadline(binary: string, args: string[], timeoutMs: number) {
  return new Promise<{ code: number | null; signal: string | null; stderr: string; timedOut: boolean }>((resolve) => {
    const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let timedOut = false;
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => { if (stderr.length < 16_384) stderr += chunk; });
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
    child.on('error', (err) => { clearTimeout(timer); resolve({ code: null, signal: null, stderr: err.message, timedOut: false }); });
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stderr, timedOut }); });
  });
}

function lastLine(text: string): string {
  return text.trim().split('\n').filter(Boolean).at(-1)?.trim() ?? '';
}

async function readCachedVerdict(file: string): Promise<AccelProbeResult | undefined> {
  try {
    const parsed = JSON.parse(await readFile(file, 'utf8')) as { accelerator?: string; reason?: string; probedAt?: string };
    if (parsed.accelerator !== 'kvm' && parsed.accelerator !== 'tcg') return undefined;
    return { accelerator: parsed.accelerator, reason: `cached verdict from ${parsed.probedAt}: ${parsed.reason}` };
  } catch {
    return undefined;
  }
}

async function writeCachedVerdict(file: string, result: AccelProbeResult): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify({ ...result, probedAt: new Date().toISOString() }) + '\n');
  await rename(tmp, file);
}

/**
 * A static x86-64 ELF executable that writes `message` to fd 1 and calls reboot(POWER_OFF).
 * Hand-assembled so the probe needs nothing from the host but the kernel; never run it on the host.
 */
export function poweroffInitElf(message: string): Buffer {
  const msg = Buffer.from(message, 'utf8');
  const code = Buffer.from([
    0xb8, 0x01, 0x00, 0x00, 0x00, //       mov eax, 1 (write)
    0xbf, 0x01, 0x00, 0x00, 0x00, //       mov edi, 1
    0x48, 0x8d, 0x35, 0x1f, 0x00, 0x00, 0x00, // lea rsi, [rip+31] -> message at code offset 48
    0xba, 0x00, 0x00, 0x00, 0x00, //       mov edx, len (patched below)
    0x0f, 0x05, //                         syscall
    0xb8, 0xa9, 0x00, 0x00, 0x00, //       mov eax, 169 (reboot)
    0xbf, 0xad, 0xde, 0xe1, 0xfe, //       mov edi, LINUX_REBOOT_MAGIC1
    0xbe, 0x69, 0x19, 0x12, 0x28, //       mov esi, LINUX_REBOOT_MAGIC2
    0xba, 0xdc, 0xfe, 0x21, 0x43, //       mov edx, LINUX_REBOOT_CMD_POWER_OFF
    0x0f, 0x05, //                         syscall
    0xeb, 0xfe, //                         jmp . (if reboot failed, wait for the deadline)
  ]);
  code.writeUInt32LE(msg.length, 18);
  const headerSize = 64 + 56;
  const base = 0x400000;
  const total = headerSize + code.length + msg.length;
  const elf = Buffer.alloc(total);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0], 0); // ELF, 64-bit, little-endian, version 1, System V
  elf.writeUInt16LE(2, 16); // ET_EXEC
  elf.writeUInt16LE(0x3e, 18); // x86-64
  elf.writeUInt32LE(1, 20);
  elf.writeBigUInt64LE(BigInt(base + headerSize), 24); // entry
  elf.writeBigUInt64LE(64n, 32); // program headers right after this header
  elf.writeUInt16LE(64, 52);
  elf.writeUInt16LE(56, 54);
  elf.writeUInt16LE(1, 56);
  // One PT_LOAD segment mapping the whole file read+execute.
  elf.writeUInt32LE(1, 64);
  elf.writeUInt32LE(5, 68);
  elf.writeBigUInt64LE(0n, 72);
  elf.writeBigUInt64LE(BigInt(base), 80);
  elf.writeBigUInt64LE(BigInt(base), 88);
  elf.writeBigUInt64LE(BigInt(total), 96);
  elf.writeBigUInt64LE(BigInt(total), 104);
  elf.writeBigUInt64LE(0x1000n, 112);
  code.copy(elf, headerSize);
  msg.copy(elf, headerSize + code.length);
  return elf;
}

export type NewcEntry =
  | { path: string; kind: 'dir'; mode: number }
  | { path: string; kind: 'file'; mode: number; data: Buffer }
  | { path: string; kind: 'symlink'; target: string }
  | { path: string; kind: 'chardev'; mode: number; rdev: [number, number] };

/** An initramfs in the kernel's "newc" cpio format; device nodes need no privileges to describe. */
export function buildNewcArchive(entries: NewcEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  const push = (name: string, mode: number, data: Buffer, rdev: [number, number] = [0, 0]) => {
    const nameBytes = Buffer.from(name + '\0', 'utf8');
    const fields = [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, rdev[0], rdev[1], nameBytes.length, 0];
    const header = Buffer.from('070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join(''), 'ascii');
    parts.push(header, nameBytes, pad4(header.length + nameBytes.length), data, pad4(data.length));
  };
  for (const entry of entries) {
    switch (entry.kind) {
      case 'dir': push(entry.path, 0o040000 | entry.mode, Buffer.alloc(0)); break;
      case 'file': push(entry.path, 0o100000 | entry.mode, entry.data); break;
      case 'symlink': push(entry.path, 0o120777, Buffer.from(entry.target, 'utf8')); break;
      case 'chardev': push(entry.path, 0o020000 | entry.mode, Buffer.alloc(0), entry.rdev); break;
    }
  }
  ino = 0;
  push('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}
