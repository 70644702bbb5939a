// The firewall documents a node holds, one per zone: the last one the cloud sent through the
// cluster, checked, kept in memory and (for nodes with real networking) on disk under
// `<stateDir>/firewall/<zone>.json`, so a restarted node rebuilds its security-group rules from
// state before the cloud speaks again. Nodes without networking (the fake driver, simulated by
// the thousand) keep them in memory only.
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../network-files.ts';
import { validateFirewallDocument, type FirewallDocument } from './firewall-document.ts';

export class NodeFirewallDocuments {
  private readonly byZone = new Map<string, FirewallDocument>();
  private readonly dir: string | undefined;

  /** `stateDir`: where to keep them on disk; undefined keeps them in memory only. */
  constructor(stateDir: string | undefined) {
    this.dir = stateDir === undefined ? undefined : join(stateDir, 'firewall');
  }

  /** Reads the documents kept on disk; one that no longer passes the checks is ignored. */
  async load(onError?: (file: string, err: Error) => void): Promise<void> {
    if (!this.dir) return;
    const names = await readdir(this.dir).catch(() => [] as string[]);
    for (const name of names.sort()) {
      if (!name.endsWith('.json')) continue;
      try {
        const doc = validateFirewallDocument(JSON.parse(await readFile(join(this.dir, name), 'utf8')));
        this.byZone.set(doc.zone, doc);
      } catch (err) {
        onError?.(name, err as Error);
      }
    }
  }

  get(zone: string): FirewallDocument | undefined {
    return this.byZone.get(zone);
  }

  /** Checks a document and keeps it (writing it to disk when its version is new); returns the checked copy. */
  async put(raw: unknown): Promise<FirewallDocument> {
    const doc = validateFirewallDocument(raw);
    const previous = this.byZone.get(doc.zone);
    this.byZone.set(doc.zone, doc);
    if (this.dir && previous?.version !== doc.version) {
      await mkdir(this.dir, { recursive: true });
      await writeFileAtomic(join(this.dir, `${doc.zone}.json`), JSON.stringify(doc) + '\n');
    }
    return doc;
  }
}
