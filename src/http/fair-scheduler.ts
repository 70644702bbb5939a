// Fair admission of requests that passed their rate limits: at most `perKey` requests of one key
// (an account) run at once, at most `total` of all keys, and the rest wait in one queue per key.
// A free slot goes to the keys in turn (round robin), not to the oldest request: so an account
// with hundreds of requests waiting delays another account's next request by at most one of its
// own, however long its queue. A key whose queue is full is refused, so a flood cannot make the
// process hold an unbounded number of requests.

export interface FairSchedulerOptions {
  /** Requests of one key running at once. */
  perKey: number;
  /** Requests of all keys running at once. */
  total: number;
  /** Requests of one key waiting for a slot; one more is refused. */
  queuePerKey: number;
}

export const QUEUE_FULL = Symbol('queue full');

/** Ends a request's hold on its slot; calling it again does nothing. */
export type Release = () => void;

interface Waiter {
  grant: (release: Release) => void;
}

interface KeyState {
  running: number;
  queue: Waiter[];
}

export class FairScheduler {
  private readonly keys = new Map<string, KeyState>();
  /** Keys with waiting requests, in the order they get the next free slots. */
  private readonly turn: string[] = [];
  private running = 0;

  constructor(private readonly opts: FairSchedulerOptions) {}

  /**
   * A slot for a request of `key`: at once when there is room, after the requests ahead of it
   * otherwise, or QUEUE_FULL when the key already has `queuePerKey` requests waiting.
   */
  acquire(key: string): Release | Promise<Release> | typeof QUEUE_FULL {
    const state = this.stateOf(key);
    if (state.queue.length === 0 && this.hasRoom(state)) return this.start(key, state);
    if (state.queue.length >= this.opts.queuePerKey) {
      this.forgetIfIdle(key, state);
      return QUEUE_FULL;
    }
    return new Promise<Release>((grant) => {
      state.queue.push({ grant });
      if (state.queue.length === 1) this.turn.push(key);
    });
  }

  /** Requests running and waiting, for one key or for all. */
  stats(key?: string): { running: number; waiting: number } {
    if (key !== undefined) {
      const s = this.keys.get(key);
      return { running: s?.running ?? 0, waiting: s?.queue.length ?? 0 };
    }
    let waiting = 0;
    for (const s of this.keys.values()) waiting += s.queue.length;
    return { running: this.running, waiting };
  }

  private stateOf(key: string): KeyState {
    let state = this.keys.get(key);
    if (!state) {
      state = { running: 0, queue: [] };
      this.keys.set(key, state);
    }
    return state;
  }

  private hasRoom(state: KeyState): boolean {
    return state.running < this.opts.perKey && this.running < this.opts.total;
  }

  private start(key: string, state: KeyState): Release {
    state.running++;
    this.running++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      state.running--;
      this.running--;
      this.dispatch();
      this.forgetIfIdle(key, state);
    };
  }

  /** Gives free slots to waiting requests, one key after another. */
  private dispatch(): void {
    let scanned = 0;
    while (this.running < this.opts.total && this.turn.length > 0 && scanned < this.turn.length) {
      const key = this.turn.shift()!;
      const state = this.keys.get(key)!;
      if (state.running >= this.opts.perKey) {
        // This key is at its own limit: it keeps its place for a later turn.
        this.turn.push(key);
        scanned++;
        continue;
      }
      scanned = 0;
      const waiter = state.queue.shift()!;
      if (state.queue.length > 0) this.turn.push(key);
      waiter.grant(this.start(key, state));
    }
  }

  private forgetIfIdle(key: string, state: KeyState): void {
    if (state.running === 0 && state.queue.length === 0) this.keys.delete(key);
  }
}
