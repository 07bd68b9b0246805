import pino, { Logger } from 'pino';
import type { Config } from './config';

/** Structured JSON logs (pino) on stdout. */
export function createLogger(config: Pick<Config, 'logLevel'>, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level: config.logLevel,
      base: { app: 'sockpit' },
      redact: { paths: ['token', 'password', '*.token', '*.password', 'req.headers.cookie'], censor: '[redacted]' },
    },
    destination,
  );
}
