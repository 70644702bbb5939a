// A token bucket, the algorithm EC2 throttles its API with: the bucket holds at most `capacity`
// tokens (the burst), gains `refillPerSecond` tokens a second (the sustained rate, fractions
// allowed: EC2 documents rates such as 0.1 a second), and a request is admitted only when it can
// take its tokens. Time comes from a clock the caller gives, so tests drive it by hand.

/** Milliseconds from any fixed origin, never going back (performance.now by default). */
export type Clock = () => number;

export const monotonicClock: Clock = () => performance.now();

export interface BucketLimit {
  /** Most tokens the bucket holds: how many requests may come at once after a quiet spell. */
  capacity: number;
  /** Tokens added each second: how many requests a second may be sustained. */
  refillPerSecond: number;
}

export class TokenBucket {
  private tokens: number;
  private updatedAt: number;
  private limit: BucketLimit;

  /** A new bucket is full. */
  constructor(limit: BucketLimit, private readonly clock: Clock) {
    this.limit = { ...limit };
    this.tokens = limit.capacity;
    this.updatedAt = clock();
  }

  get capacity(): number { return this.limit.capacity; }
  get refillPerSecond(): number { return this.limit.refillPerSecond; }

  /** Tokens in the bucket now (refilled up to the present). */
  available(): number {
    this.refill();
    return this.tokens;
  }

  /**
   * Takes `count` tokens when the bucket holds them and says so; takes nothing otherwise. A count
   * above the capacity asks for a full bucket (it could never be served otherwise).
   */
  tryTake(count = 1): boolean {
    this.refill();
    const need = Math.min(count, this.limit.capacity);
    if (this.tokens < need) return false;
    this.tokens -= need;
    return true;
  }

  /** Whether `count` tokens could be taken now, without taking them. */
  canTake(count = 1): boolean {
    this.refill();
    return this.tokens >= Math.min(count, this.limit.capacity);
  }

  /** Seconds until `count` tokens are there (0 when they are). */
  secondsUntil(count = 1): number {
    this.refill();
    const missing = Math.min(count, this.limit.capacity) - this.tokens;
    if (missing <= 0) return 0;
    return this.limit.refillPerSecond > 0 ? missing / this.limit.refillPerSecond : Infinity;
  }

  /**
   * Changes the limit of a bucket in use. A larger capacity is usable at once (the added room
   * arrives full, as the operator who raised a limit expects); a smaller one drops what no longer fits.
   */
  setLimit(limit: BucketLimit): void {
    this.refill();
    const grown = limit.capacity - this.limit.capacity;
    this.limit = { ...limit };
    this.tokens = Math.min(limit.capacity, this.tokens + Math.max(0, grown));
  }

  /** True when the bucket is full: it remembers nothing a fresh bucket would not. */
  isFull(): boolean {
    return this.available() >= this.limit.capacity;
  }

  private refill(): void {
    const now = this.clock();
    const elapsed = now - this.updatedAt;
    if (elapsed > 0) {
      this.tokens = Math.min(this.limit.capacity, this.tokens + (elapsed / 1000) * this.limit.refillPerSecond);
      this.updatedAt = now;
    } else if (elapsed < 0) {
      // A clock that went back: start counting from here.
      this.updatedAt = now;
    }
  }
}
