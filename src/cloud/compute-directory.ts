// The clusters the cloud controller can reach, one per availability zone. Clusters come and go
// (a cluster controller connects, restarts, is removed); callers look one up per request.
import type { ClusterApi } from '../cluster/cluster-api.ts';

export class ComputeDirectory {
  readonly #clusters = new Map<string, ClusterApi>();
  /** Instances this cloud process is having a cluster place right now. */
  readonly placing = new PlacementsUnderWay();
  /**
   * Zones whose cluster has not answered for a while (the reconciler keeps this): a launch there
   * is refused at once for capacity, as EC2 refuses a zone it cannot serve, instead of waiting on
   * a cluster that may never answer.
   */
  readonly unreachable = new Set<string>();

  /** Adds the cluster of `cluster.zone`, replacing an earlier one for the same zone. */
  register(cluster: ClusterApi): void {
    this.#clusters.set(cluster.zone, cluster);
  }

  unregister(zone: string): void {
    this.#clusters.delete(zone);
  }

  forZone(zone: string): ClusterApi | undefined {
    return this.#clusters.get(zone);
  }

  /** Registered zone names, sorted, so zone choice is stable across calls. */
  zones(): string[] {
    return [...this.#clusters.keys()].sort();
  }
}

/**
 * The instances one cloud process is asking a cluster to place right now: RunInstances, a
 * ClientToken replay or the reconciler placing a launch that was cut short. Whoever finds an
 * instance here waits for that placement (or leaves it alone) instead of asking a second time.
 */
export class PlacementsUnderWay {
  readonly #placing = new Map<string, Promise<void>>();

  /** Marks the ids as being placed until the returned release is called; undefined (nothing marked) if one already is. */
  claim(ids: readonly string[]): (() => void) | undefined {
    if (ids.some((id) => this.#placing.has(id))) return undefined;
    let done!: () => void;
    const finished = new Promise<void>((resolve) => { done = resolve; });
    for (const id of ids) this.#placing.set(id, finished);
    return () => {
      for (const id of ids) if (this.#placing.get(id) === finished) this.#placing.delete(id);
      done();
    };
  }

  has(id: string): boolean {
    return this.#placing.has(id);
  }

  /** Waits until no placement of these ids is under way; false when none was. */
  async settled(ids: readonly string[]): Promise<boolean> {
    let waited = false;
    for (;;) {
      const under = new Set(ids.map((id) => this.#placing.get(id)).filter((p) => p !== undefined));
      if (under.size === 0) return waited;
      waited = true;
      await Promise.all(under);
    }
  }
}
