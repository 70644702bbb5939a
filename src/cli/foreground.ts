// Every role runs in the foreground until SIGTERM or SIGINT, then stops cleanly.
import type { Logger } from 'pino';

/** Runs until SIGTERM or SIGINT, then calls `stop`. */
export function untilSignalled(log: Logger, stop: () => Promise<void>): Promise<void> {
  return new Promise<void>((done) => {
    const onSignal = (signal: string) => {
      log.info({ signal }, 'stopping');
      stop().then(done, (err) => { log.error({ err }, 'error while stopping'); done(); });
    };
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
  });
}
