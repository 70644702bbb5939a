// A KeyResolver that remembers store lookups (found and not found) for a short time, so hot API
// paths don't query the store on every request. Several controllers may share one PostgreSQL and
// nothing tells this process when another one revokes a key, so the TTL bounds how long a revoked
// or deactivated key keeps working here; `invalidate` makes local changes take effect at once.
import type { Store } from '../store/store.ts';
import type { KeyResolver, ResolvedKey } from './authenticate.ts';
import { findAccessKey } from './identities.ts';

export interface KeyResolverOptions {
  ttlMs?: number;
  /** Maximum number of remembered keys; unknown ids an attacker sprays must not grow memory without bound. */
  maxEntries?: number;
  /** Clock in milliseconds; tests pass their own. */
  now?: () => number;
}

export interface CachingKeyResolver extends KeyResolver {
  invalidate(accessKeyId: string): void;
  clear(): void;
}

interface Entry {
  key: ResolvedKey | undefined;
  expiresAt: number;
}

export function createKeyResolver(store: Pick<Store, 'db'>, options: KeyResolverOptions = {}): CachingKeyResolver {
  const ttlMs = options.ttlMs ?? 5000;
  const maxEntries = options.maxEntries ?? 50_000;
  const now = options.now ?? Date.now;
  const entries = new Map<string, Entry>();
  // Concurrent requests with the same key share one store query.
  const pending = new Map<string, Promise<ResolvedKey | undefined>>();
  let generation = 0;

  function remember(accessKeyId: string, key: ResolvedKey | undefined): void {
    entries.delete(accessKeyId);
    if (entries.size >= maxEntries) {
      // Maps iterate in insertion order: drop the oldest entry.
      const oldest = entries.keys().next().value;
      if (oldest !== undefined) entries.delete(oldest);
    }
    entries.set(accessKeyId, { key, expiresAt: now() + ttlMs });
  }

  const resolve = (async (accessKeyId: string) => {
    const hit = entries.get(accessKeyId);
    if (hit !== undefined) {
      if (hit.expiresAt > now()) return hit.key;
      entries.delete(accessKeyId);
    }
    const inFlight = pending.get(accessKeyId);
    if (inFlight) return inFlight;
    const startedIn = generation;
    const lookup: Promise<ResolvedKey | undefined> = findAccessKey(store.db, accessKeyId)
      .then((key) => {
        // An invalidation during the lookup means the answer may already be stale: use it once, don't keep it.
        if (startedIn === generation) remember(accessKeyId, key);
        return key;
      })
      .finally(() => {
        if (pending.get(accessKeyId) === lookup) pending.delete(accessKeyId);
      });
    pending.set(accessKeyId, lookup);
    return lookup;
  }) as CachingKeyResolver;

  resolve.invalidate = (accessKeyId: string) => {
    entries.delete(accessKeyId);
    pending.delete(accessKeyId);
    generation++;
  };
  resolve.clear = () => {
    entries.clear();
    pending.clear();
    generation++;
  };
  return resolve;
}
