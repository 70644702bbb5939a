// What a node controller remembers about each of its instances, one JSON file per instance under
// `<stateDir>/instances/`, private to the owner (specs hold user data). The spec is written before
// anything is made for the instance, so an agent that restarts at any moment finds every VM, disk
// and tap it may have made and never makes a second one for the same instance.
//
// A record that cannot be read or makes no sense (damage from outside: writes go through a rename,
// so they are never torn) is quarantined: moved to `<stateDir>/quarantine/` with a note of why, and
// reported. Its instance id (from the file name) stays claimed, so the agent keeps that VM running
// instead of taking it for a leftover; the operator decides what becomes of it.
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensurePrivateDir, restrictFile, writePrivateFile } from '../store/private-files.ts';
import type { InstanceSpec, NodeInstanceState } from './node-api.ts';

export interface InstanceRecord {
  spec: InstanceSpec;
  state: NodeInstanceState;
  /** Why the instance is in this state when that is not what was asked for. */
  reason?: string;
  /** When the instance entered this state (ISO 8601). */
  since: string;
  /** The instance's root disk on this node, once made. */
  diskPath?: string;
}

/** A record set aside because it could not be trusted; its VM, if any, is kept. */
export interface QuarantinedRecord {
  /** The instance the file is named for: its VM is kept and reported, never destroyed. */
  instanceId: string;
  /** Where the record is now (moved aside), or still is when it could not be moved. */
  file: string;
  reason: string;
  /** When it was quarantined (ISO 8601). */
  at: string;
}

export interface LoadedState {
  records: InstanceRecord[];
  /** This load's quarantined records and those of earlier starts still left in the quarantine. */
  quarantined: QuarantinedRecord[];
}

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const STATES: ReadonlySet<string> = new Set<NodeInstanceState>(['pending', 'running', 'stopping', 'stopped', 'crashed', 'shutting-down', 'terminated']);
/** `<instanceId>.<stamp>.json` in the quarantine, with a `.reason` file beside it. */
const QUARANTINED_NAME = /^(.+)\.(\d{8}T\d{6}\d{3}Z(?:-\d+)?)\.json$/;

export class NodeStateStore {
  readonly dir: string;
  readonly quarantineDir: string;
  /** Writes per instance are chained so an older state never lands after a newer one. */
  private readonly chains = new Map<string, Promise<void>>();

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'instances');
    this.quarantineDir = join(stateDir, 'quarantine');
  }

  async load(): Promise<LoadedState> {
    // Specs carry user data: 0600 files in a 0700 directory (narrowed if an earlier version left them open).
    await ensurePrivateDir(this.dir);
    const records: InstanceRecord[] = [];
    const quarantined: QuarantinedRecord[] = [];
    for (const name of (await readdir(this.dir)).sort()) {
      if (!name.endsWith('.json')) continue;
      const instanceId = name.slice(0, -'.json'.length);
      const path = join(this.dir, name);
      let record: InstanceRecord;
      try {
        await restrictFile(path);
        record = JSON.parse(await readFile(path, 'utf8')) as InstanceRecord;
      } catch (err) {
        quarantined.push(await this.quarantine(instanceId, path, `unreadable: ${(err as Error).message}`));
        continue;
      }
      const problem = recordProblem(record, instanceId);
      if (problem) {
        quarantined.push(await this.quarantine(instanceId, path, problem));
        continue;
      }
      records.push(record);
    }
    return { records, quarantined: [...await this.earlierQuarantine(quarantined), ...quarantined] };
  }

  /** Moves a record aside with a note of why; when it cannot be moved it is left where it is, still reported. */
  private async quarantine(instanceId: string, path: string, reason: string): Promise<QuarantinedRecord> {
    const at = new Date().toISOString();
    await ensurePrivateDir(this.quarantineDir);
    const stamp = at.replace(/[-:.]/g, '');
    let base = `${instanceId}.${stamp}`;
    for (let n = 1; (await readdir(this.quarantineDir)).includes(`${base}.json`); n++) base = `${instanceId}.${stamp}-${n}`;
    const target = join(this.quarantineDir, `${base}.json`);
    try {
      await rename(path, target);
    } catch (err) {
      return { instanceId, file: path, reason: `${reason}; it could not be moved to the quarantine (${(err as Error).message})`, at };
    }
    // The note is for the operator; the report carries the reason either way.
    await writeFile(join(this.quarantineDir, `${base}.reason`), `${reason}\n`, { mode: 0o600 }).catch(() => undefined);
    return { instanceId, file: target, reason, at };
  }

  /** Records quarantined at an earlier start that the operator has not dealt with yet. */
  private async earlierQuarantine(now: QuarantinedRecord[]): Promise<QuarantinedRecord[]> {
    const names = await readdir(this.quarantineDir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    const fresh = new Set(now.map((q) => q.file));
    const out: QuarantinedRecord[] = [];
    for (const name of names.sort()) {
      const m = QUARANTINED_NAME.exec(name);
      const file = join(this.quarantineDir, name);
      if (!m || fresh.has(file)) continue;
      const reason = (await readFile(join(this.quarantineDir, `${name.slice(0, -'.json'.length)}.reason`), 'utf8').catch(() => 'quarantined at an earlier start')).trim();
      const s = m[2]!;
      const at = `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(9, 11)}:${s.slice(11, 13)}:${s.slice(13, 15)}.${s.slice(15, 18)}Z`;
      out.push({ instanceId: m[1]!, file, reason, at });
    }
    return out;
  }

  save(record: InstanceRecord): Promise<void> {
    const id = record.spec.instanceId;
    assertInstanceId(id);
    const text = JSON.stringify(record, null, 2) + '\n';
    // The folder was made private by load(); writePrivateFile makes it again (0700) if it went away.
    return this.chain(id, () => writePrivateFile(this.path(id), text, { sync: false }));
  }

  remove(instanceId: string): Promise<void> {
    assertInstanceId(instanceId);
    return this.chain(instanceId, () => rm(this.path(instanceId), { force: true }));
  }

  private path(instanceId: string): string {
    return join(this.dir, `${instanceId}.json`);
  }

  private chain(id: string, work: () => Promise<void>): Promise<void> {
    const next = (this.chains.get(id) ?? Promise.resolve()).then(work);
    const settled = next.catch(() => undefined);
    this.chains.set(id, settled);
    void settled.then(() => { if (this.chains.get(id) === settled) this.chains.delete(id); });
    return next;
  }
}

/** Why a parsed record cannot be trusted, or undefined when it can. */
function recordProblem(record: InstanceRecord, instanceId: string): string | undefined {
  if (!record || typeof record !== 'object' || !record.spec || typeof record.spec !== 'object') return 'not an instance record';
  if (record.spec.instanceId !== instanceId) return `names instance ${JSON.stringify(record.spec.instanceId)}, not ${instanceId}`;
  if (!STATES.has(record.state)) return `unknown state ${JSON.stringify(record.state)}`;
  const t = record.spec.vmType;
  if (!t || ![t.cores, t.memoryMiB, t.diskGiB].every((n) => Number.isInteger(n) && n > 0)) return 'no valid instance type';
  if (typeof record.spec.privateIp !== 'string') return 'no private address';
  return undefined;
}

export function assertInstanceId(instanceId: string): void {
  // The id names files and QEMU options on the node.
  if (!ID_PATTERN.test(instanceId)) throw new Error(`instance id ${JSON.stringify(instanceId)} is not a plain token`);
}
