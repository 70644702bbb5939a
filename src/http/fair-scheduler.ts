// Fair admission of requests that passed their rate limits, per key (an account):
// - at most `perKey` requests of one key run at once, at most `total` of all keys;
// - at most `perTurn` requests of one key start in one turn of the event loop. Handlers whose store
//   calls complete as microtasks (better-sqlite3) run from start to end without yielding, so
//   without this a process reading fifty ready requests of one account would run all fifty before
//   it reads the next account's request: a limit on requests running at once never engages when
//   each one finishes before the next starts.
// The rest wait in one queue per key. At each turn every key with requests waiting starts its next
// ones (round robin), so an account with hundreds of requests waiting delays another account's next
// request by about one of its own, however long its queue. A key whose queue is full is refused, so
// a flood cannot make the process hold an unbounded number of requests.

export interface FairSchedulerOptions {
  /** Requests of one key running at once. */
  perKey: number;
  /** Requests of all keys running at once. */
  total: number;
  /** Requests of one key waiting for a slot; one more is refused. */
  queuePerKey: number;
  /** Requests of one key that may start in one turn of the event loop (1 by default). */
  perTurn?: number;
}

export const QUEUE_FULL = Symbol('queue full');

/** Ends a request's hold on its slot; calling it again does nothing. */
export type Release = () => void;

interface Waiter {
  grant: (release: Release) => void;
}

interface KeyState {
  running: number;
  /** Requests started since the last turn began. */
  startedThisTurn: number;
  queue: Waiter[];
}

export class FairScheduler {
  private readonly keys = new Map<string, KeyState>();
  /** Keys with waiting requests, in the order they are served. */
  private readonly turn: string[] = [];
  private running = 0;
  private readonly perTurn: number;
  private tickScheduled = false;

  constructor(private readonly opts: FairSchedulerOptions) {
    this.perTurn = opts.perTurn ?? 1;
  }

  /**
   * A slot for a request of `key`: at once when the key may start one now, after the requests
   * ahead of it otherwise, or QUEUE_FULL when the key already has `queuePerKey` requests waiting.
   */
  acquire(key: string): Release | Promise<Release> | typeof QUEUE_FULL {
    const state = this.stateOf(key);
    if (state.queue.length === 0 && this.mayStart(state)) return this.start(key, state);
    if (state.queue.length >= this.opts.queuePerKey) {
      this.forgetIfIdle(key, state);
      return QUEUE_FULL;
    }
    return new Promise<Release>((grant) => {
      state.queue.push({ grant });
      if (state.queue.length === 1) this.turn.push(key);
      this.scheduleTick();
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
      state = { running: 0, startedThisTurn: 0, queue: [] };
      this.keys.set(key, state);
    }
    return state;
  }

  private mayStart(state: KeyState): boolean {
    return state.running < this.opts.perKey && this.running < this.opts.total && state.startedThisTurn < this.perTurn;
  }

  private start(key: string, state: KeyState): Release {
    state.running++;
    state.startedThisTurn++;
    this.running++;
    // The next turn forgets what was started in this one.
    this.scheduleTick();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      state.running--;
      this.running--;
      if (this.turn.length > 0) this.scheduleTick();
      this.forgetIfIdle(key, state);
    };
  }

  private scheduleTick(): void {
    if (this.tickScheduled) return;
    this.tickScheduled = true;
    setImmediate(() => this.tick());
  }

  /** A new turn: every key may start again; waiting requests start, key after key. */
  private tick(): void {
    this.tickScheduled = false;
    for (const [key, state] of this.keys) {
      state.startedThisTurn = 0;
      this.forgetIfIdle(key, state);
    }
    // Each key with requests waiting is looked at once per turn, in order; one that may start
    // none now (its own or the process's running limit) keeps its place for a later turn.
    for (let n = this.turn.length; n > 0 && this.running < this.opts.total; n--) {
      const key = this.turn.shift()!;
      const state = this.keys.get(key)!;
      while (state.queue.length > 0 && this.mayStart(state)) state.queue.shift()!.grant(this.start(key, state));
      if (state.queue.length > 0) this.turn.push(key);
    }
  }

  private forgetIfIdle(key: string, state: KeyState): void {
    if (state.running === 0 && state.queue.length === 0 && state.startedThisTurn === 0) this.keys.delete(key);
  }
}
