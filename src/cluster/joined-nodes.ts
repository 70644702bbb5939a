// The nodes that joined a cluster controller, with their secrets, and the join tokens already used.
// This is the only thing a cluster keeps on disk (everything else is soft state rebuilt from the
// nodes' reports): one JSON file, private to the cluster's user, replaced atomically.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { writePrivateFile } from '../store/private-files.ts';
import { newPeerSecret } from '../auth/peer-auth.ts';

export interface JoinedNode {
  id: string;
  name: string;
  /** Base URL of the node's API, as the node advertised it. */
  url: string;
  /** The node host's MAC, as the node last told it (for `{mac}` in wake commands). */
  mac?: string;
  secret: string;
  joinedAt: string;
}

interface UsedToken { nonce: string; expiresAt: number }

interface FileShape { nodes: JoinedNode[]; usedTokens: UsedToken[] }

export class TokenAlreadyUsedError extends Error {
  constructor() {
    super('the join token was already used by another node');
    this.name = 'TokenAlreadyUsedError';
  }
}

export class JoinedNodes {
  readonly file: string;
  #nodes = new Map<string, JoinedNode>();
  #usedTokens: UsedToken[] = [];
  /** Writes happen one at a time, in order. */
  #writing: Promise<void> = Promise.resolve();

  private constructor(file: string) {
    this.file = file;
  }

  static async open(file: string): Promise<JoinedNodes> {
    const joined = new JoinedNodes(file);
    let text: string | undefined;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text !== undefined) {
      const data = JSON.parse(text) as Partial<FileShape>;
      for (const n of data.nodes ?? []) joined.#nodes.set(n.id, n);
      joined.#usedTokens = data.usedTokens ?? [];
    }
    return joined;
  }

  list(): JoinedNode[] {
    return [...this.#nodes.values()].sort((a, b) => (a.joinedAt < b.joinedAt ? -1 : a.joinedAt > b.joinedAt ? 1 : a.id < b.id ? -1 : 1));
  }

  get(id: string): JoinedNode | undefined {
    return this.#nodes.get(id);
  }

  secretOf(id: string): string | undefined {
    return this.#nodes.get(id)?.secret;
  }

  /**
   * Admits a node for a verified token: records the token as used and the node with a fresh id and
   * secret, on disk before answering, so a restart never forgets a node it has told its secret.
   */
  async join(token: UsedToken, node: { name?: string; url: string; mac?: string }, now = Date.now()): Promise<JoinedNode> {
    this.#usedTokens = this.#usedTokens.filter((t) => t.expiresAt > now);
    if (this.#usedTokens.some((t) => t.nonce === token.nonce)) throw new TokenAlreadyUsedError();
    const id = `nd-${randomBytes(6).toString('hex')}`;
    const joined: JoinedNode = {
      id, name: node.name || id, url: node.url, ...(node.mac ? { mac: node.mac } : {}), secret: newPeerSecret(), joinedAt: new Date(now).toISOString(),
    };
    this.#usedTokens.push(token);
    this.#nodes.set(id, joined);
    await this.#save();
    return joined;
  }

  /**
   * What a node said in its hello: its URL, and its MAC when it knows one. A node that cannot tell
   * its MAC this time keeps the last one it told: the hardware seldom changes, and a wake needs it.
   */
  async updateAddress(id: string, address: { url: string; mac?: string }): Promise<JoinedNode | undefined> {
    const node = this.#nodes.get(id);
    if (!node) return undefined;
    const mac = address.mac ?? node.mac;
    if (node.url === address.url && node.mac === mac) return node;
    node.url = address.url;
    if (mac) node.mac = mac;
    await this.#save();
    return node;
  }

  /** Forgets the node and its secret; false when there was no such node. */
  async revoke(id: string): Promise<boolean> {
    if (!this.#nodes.delete(id)) return false;
    await this.#save();
    return true;
  }

  #save(): Promise<void> {
    const data: FileShape = { nodes: this.list(), usedTokens: this.#usedTokens };
    const text = `${JSON.stringify(data, null, 2)}\n`;
    const write = this.#writing.then(() => writePrivateFile(this.file, text));
    this.#writing = write.catch(() => undefined);
    return write;
  }
}
