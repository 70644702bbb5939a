// The clusters the cloud controller can reach, one per availability zone. Clusters come and go
// (a cluster controller connects, restarts, is removed); callers look one up per request.
import type { ClusterApi } from '../cluster/cluster-api.ts';

export class ComputeDirectory {
  readonly #clusters = new Map<string, ClusterApi>();

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
