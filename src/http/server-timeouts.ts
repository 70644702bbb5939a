// The connection timeouts every Ironbark HTTP server uses (EC2 endpoint and admin API, cluster,
// node, image relay, metadata), set in one place so no server is left with Node's defaults.
import type { Server } from 'node:http';

/**
 * How long an idle keep-alive connection stays open. Node's default (5 s) is shorter than the idle
 * time of SDK connection pools and load balancers (about 60 s), so the server would close sockets
 * that clients still hold, and the next call sent on one fails with ECONNRESET. Outlasting the
 * client means the client is always the side that closes an idle connection.
 */
export const KEEP_ALIVE_TIMEOUT_MS = 65_000;

/**
 * Longest wait for a request's headers. Above the keep-alive timeout, as Node advises: otherwise a
 * request arriving at the end of a long idle period could be cut by the header timer instead.
 */
export const HEADERS_TIMEOUT_MS = 66_000;

/**
 * Longest time to receive a whole request. Bodies are small (the request limits are a few hundred
 * KiB for the EC2 endpoint, tens of MiB between roles), so this only ends connections that trickle.
 */
export const REQUEST_TIMEOUT_MS = 120_000;

/** Gives `server` the shared timeouts, and returns it. */
export function applyServerTimeouts<S extends Server>(server: S): S {
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  return server;
}
