// What a node controller remembers about each of its instances, one JSON file per instance under
// `<stateDir>/instances/`, private to the owner (specs hold user data). The spec is written before
// anything is made for the instance, so an agent that restarts at any moment finds every VM, disk
// and tap it may have made and never makes a second one for the same instance.
import { readdir, readFile, rm } from 'node:fs/promises';
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

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class NodeStateStore {
  readonly dir: string;
  /** Writes per instance are chained so an older state never lands after a newer one. */
  private readonly chains = new Map<string, Promise<void>>();

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'instances');
  }

  async load(): Promise<InstanceRecord[]> {
    // Specs carry user data: 0600 files in a 0700 directory (narrowed if an earlier version left them open).
    await ensurePrivateDir(this.dir);
    const out: InstanceRecord[] = [];
    for (const name of (await readdir(this.dir)).sort()) {
      if (!name.endsWith('.json')) continue;
      await restrictFile(join(this.dir, name));
      const text = await readFile(join(this.dir, name), 'utf8').catch(() => undefined);
      if (text === undefined) continue;
      let record: InstanceRecord;
      try {
        record = JSON.parse(text) as InstanceRecord;
      } catch {
        // A torn write cannot happen (rename is atomic), so this is damage from outside: keep the
        // file for the operator and skip it rather than refuse to start.
        continue;
      }
      if (record?.spec?.instanceId === name.slice(0, -'.json'.length)) out.push(record);
    }
    return out;
  }

  save(record: InstanceRecord): Promise<void> {
    const id = record.spec.instanceId;
    assertInstanceId(id);
    const text = JSON.stringify(record, null, 2) + '\n';
    return this.chain(id, async () => {
      await ensurePrivateDir(this.dir);
      await writePrivateFile(this.path(id), text, { sync: false });
    });
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

export function assertInstanceId(instanceId: string): void {
  // The id names files and QEMU options on the node.
  if (!ID_PATTERN.test(instanceId)) throw new Error(`instance id ${JSON.stringify(instanceId)} is not a plain token`);
}
