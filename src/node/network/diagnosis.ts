// What `ironbark admin node diagnose NODE` shows: every piece of host networking Ironbark makes on a
// node (bridges, tunnel ports, taps, nftables tables, the DHCP servers, the tunnel's peers), each as
// ok, missing (it should exist and does not) or extra (it carries Ironbark's prefix and nothing here
// wants it: left behind by something that went away). Pure comparison here; the node network says
// what it wants and reads what the host has.

export type DiagnosisStatus = 'ok' | 'missing' | 'extra';

export interface DiagnosisItem {
  /** bridge | tunnel | tap | nftables-table | dhcp-server | tunnel-peer | address */
  kind: string;
  name: string;
  status: DiagnosisStatus;
  /** What it belongs to or why it is wanted (the instance of a tap, the zone of a bridge). */
  detail?: string;
}

export interface NetworkDiagnosis {
  nodeId: string;
  items: DiagnosisItem[];
  /** Counts per status, for a one-line summary. */
  summary: Record<DiagnosisStatus, number>;
}

export interface WantedItem {
  kind: string;
  name: string;
  detail?: string;
}

/**
 * Compares what should exist with what does. `present` lists what the host has of each kind that
 * carries Ironbark's prefix; an item present and not wanted is extra, wanted and not present missing.
 */
export function compareNetwork(wanted: WantedItem[], present: { kind: string; name: string }[]): DiagnosisItem[] {
  const key = (i: { kind: string; name: string }) => `${i.kind}\u0000${i.name}`;
  const have = new Set(present.map(key));
  const want = new Set(wanted.map(key));
  const items: DiagnosisItem[] = [];
  const seen = new Set<string>();
  for (const w of wanted) {
    if (seen.has(key(w))) continue;
    seen.add(key(w));
    items.push({ kind: w.kind, name: w.name, status: have.has(key(w)) ? 'ok' : 'missing', ...(w.detail ? { detail: w.detail } : {}) });
  }
  for (const p of present) {
    if (want.has(key(p)) || seen.has(key(p))) continue;
    seen.add(key(p));
    items.push({ kind: p.kind, name: p.name, status: 'extra' });
  }
  return items.sort((a, b) => (a.kind === b.kind ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a.kind < b.kind ? -1 : 1));
}

export function summarize(nodeId: string, items: DiagnosisItem[]): NetworkDiagnosis {
  const summary: Record<DiagnosisStatus, number> = { ok: 0, missing: 0, extra: 0 };
  for (const i of items) summary[i.status]++;
  return { nodeId, items, summary };
}
