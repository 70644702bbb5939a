// The connection-level limits of the cloud controller's server (EC2 endpoint, admin API, console):
// the largest header section, answered with an EC2 error, and open connections per client address.
import type { Server } from 'node:http';
import { Ec2Error } from '../../protocol/errors.ts';
import { serializeError } from '../../protocol/xml-serializer.ts';
import {
  answerHeaderOverflow, capConnectionsPerAddress, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_MAX_HEADER_BYTES,
} from '../../http/connection-limits.ts';
import { newRequestId } from '../ids.ts';

export interface ServerLimitOptions {
  /** Largest request line and headers, in bytes (64 KiB by default). */
  maxHeaderBytes?: number;
  /** Open connections one client address (an IPv6 /64) may hold; more are closed at once (256 by default). */
  maxConnectionsPerAddress?: number;
}

export function headerTooLargeMessage(maxBytes: number): string {
  return `The request's header section is larger than the ${maxBytes} bytes this endpoint accepts.`;
}

/** Gives `server` the limits, and returns it. */
export function guardEndpointServer<S extends Server>(server: S, opts: ServerLimitOptions = {}): S {
  const maxHeaderBytes = opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  // Read by node:http for each new connection (the createServer option sets the same field).
  (server as Server & { maxHeaderSize?: number }).maxHeaderSize = maxHeaderBytes;
  capConnectionsPerAddress(server, opts.maxConnectionsPerAddress ?? DEFAULT_MAX_CONNECTIONS_PER_ADDRESS);
  answerHeaderOverflow(server, () => {
    // EC2 has no code of its own for this; AWS services call it RequestHeaderSectionTooLarge.
    const requestId = newRequestId();
    return {
      contentType: 'text/xml;charset=UTF-8',
      body: serializeError(new Ec2Error('RequestHeaderSectionTooLarge', headerTooLargeMessage(maxHeaderBytes), 431), requestId),
    };
  });
  return server;
}
