// One logger for every role: JSON lines on stderr, level from IRONBARK_LOG_LEVEL.
import pino, { type Logger } from 'pino';

export function createLogger(role: string): Logger {
  return pino({ name: `ironbark-${role}`, level: process.env.IRONBARK_LOG_LEVEL ?? 'info' }, pino.destination(2));
}
