// One logger for every role: JSON lines on stderr, level from IRONBARK_LOG_LEVEL.
import pino, { type DestinationStream, type Logger } from 'pino';

/**
 * Fields that hold a secret when they appear in a log object (a row, a credentials object, a
 * request body): written as "[redacted]" at the top level and one level down, whatever a log
 * call passes. The store's rows are decrypted in memory, so this is where they could leak.
 */
const SECRET_FIELDS = ['secret', 'secretAccessKey', 'secret_access_key', 'cloudSecret', 'password', 'token'];

export function createLogger(role: string, destination: DestinationStream = pino.destination(2)): Logger {
  return pino({
    name: `ironbark-${role}`,
    level: process.env.IRONBARK_LOG_LEVEL ?? 'info',
    redact: { paths: [...SECRET_FIELDS, ...SECRET_FIELDS.map((f) => `*.${f}`)], censor: '[redacted]' },
  }, destination);
}
