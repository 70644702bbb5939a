// What the volume and snapshot reconcilers share about the storage actions they start: at most one
// action under way per resource (a pass never starts a second beside it), and after a failure the
// same action on the same resource waits `retryAfterMs` before it is tried again.
export class ActionsInFlight {
  readonly #retryAfterMs: number;
  readonly #underWay = new Map<string, Promise<void>>();
  /** When an action last failed, by `action:resource`. */
  readonly #failedAt = new Map<string, number>();

  constructor(retryAfterMs: number) {
    this.#retryAfterMs = retryAfterMs;
  }

  /** Whether `action` may start on the resource now. */
  ready(resourceId: string, action: string, now: number): boolean {
    return !this.#underWay.has(resourceId) && now - (this.#failedAt.get(`${action}:${resourceId}`) ?? 0) >= this.#retryAfterMs;
  }

  /** Starts the action in the background; a failure is told to `onFailure` and paused before a retry. */
  start(resourceId: string, action: string, run: () => Promise<void>, onFailure: (err: unknown) => void): void {
    const key = `${action}:${resourceId}`;
    const work = run()
      .then(() => { this.#failedAt.delete(key); })
      .catch((err: unknown) => {
        this.#failedAt.set(key, Date.now());
        onFailure(err);
      })
      .finally(() => this.#underWay.delete(resourceId));
    this.#underWay.set(resourceId, work);
  }

  /** Waits for every action under way. */
  async settled(): Promise<void> {
    while (this.#underWay.size > 0) await Promise.allSettled([...this.#underWay.values()]);
  }
}
