import pino, { Logger } from 'pino';
import pretty from 'pino-pretty';
import type { Config } from './config';

type LoggerConfig = Pick<Config, 'logLevel'> & Partial<Pick<Config, 'logFormat'>>;

/**
 * pino on stdout (or `destination`): JSON lines by default, readable lines when `logFormat` is
 * `pretty`. Redaction runs in pino before either format sees a line, so tokens and passwords are
 * censored in both.
 */
export function createLogger(config: LoggerConfig, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level: config.logLevel,
    base: { app: 'sockpit' },
    redact: { paths: ['token', 'password', 'key', 'authorization', '*.token', '*.password', '*.key', '*.authorization', 'req.headers.cookie', 'req.headers.authorization'], censor: '[redacted]' },
  };
  if (config.logFormat !== 'pretty') return pino(options, destination);
  // Synchronous, in this thread: a person reading a terminal does not need a worker, and the last
  // lines before an exit are not lost. Colours follow the terminal (and NO_COLOR / FORCE_COLOR).
  return pino(
    options,
    pretty({
      sync: true,
      singleLine: true,
      translateTime: 'SYS:HH:MM:ss',
      ignore: 'pid,hostname,app',
      ...(destination ? { destination } : {}),
    }),
  );
}
