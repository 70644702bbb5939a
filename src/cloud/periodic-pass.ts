// The loop every background worker of the cloud controller runs (the instance, volume and snapshot
// reconcilers, the scheduled-event runner): a first pass at once, then one an interval after the
// previous pass ended, never two at a time. A failing pass is logged and the next comes as usual;
// stop() waits for the pass under way. The timer does not keep the process alive.
export interface PeriodicPassOptions {
  intervalMs: number;
  pass: () => Promise<void>;
  /** Told of a pass that failed (the loop goes on). */
  onError: (err: unknown) => void;
}

export class PeriodicPass {
  readonly #opts: PeriodicPassOptions;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = true;

  constructor(opts: PeriodicPassOptions) {
    this.#opts = opts;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule(0);
  }

  /** Stops the loop and waits for a pass in progress to finish. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  #schedule(delay: number): void {
    this.#timer = setTimeout(() => {
      this.#running = this.#opts.pass()
        .catch((err) => this.#opts.onError(err))
        .finally(() => {
          this.#running = undefined;
          if (!this.#stopped) this.#schedule(this.#opts.intervalMs);
        });
    }, delay);
    this.#timer.unref?.();
  }
}

/** The message of whatever a pass threw. */
export function errorMessage(err: unknown): string {
  return (err as Error)?.message ?? String(err);
}
