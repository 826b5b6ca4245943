import { type Logger, pino } from 'pino';

/** Structured logs (JSON lines on stderr) with --log-json; silent otherwise. */
export function createLogger(json: boolean): Logger {
  return pino({ name: 'xen-depriv', level: json ? 'info' : 'silent' }, pino.destination(2));
}
