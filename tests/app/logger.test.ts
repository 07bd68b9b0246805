import { Writable } from 'node:stream';
import { createLogger } from '../../server/logger';

/** A destination that keeps what the logger wrote. */
function capture(): { stream: Writable & { write: Writable['write'] }; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return { stream, text: () => chunks.join('') };
}

describe('logs in both formats (LOG_FORMAT)', () => {
  test('when the format is json, then each line is pino JSON with the message and fields', () => {
    const out = capture();
    createLogger({ logLevel: 'info', logFormat: 'json' }, out.stream).info({ device: 'kitchen' }, 'device online');
    const line = JSON.parse(out.text().trim());
    expect(line).toMatchObject({ level: 30, app: 'sockpit', device: 'kitchen', msg: 'device online' });
  });

  test('when the format is pretty, then a line reads as time, level, message and fields, not JSON', () => {
    const out = capture();
    createLogger({ logLevel: 'info', logFormat: 'pretty' }, out.stream).warn({ device: 'kitchen' }, 'device went quiet');
    // Colours follow the terminal (and FORCE_COLOR); the words are what counts here.
    const text = out.text().replace(/\x1b\[[0-9;]*m/g, '');
    expect(text.trim().split('\n')).toHaveLength(1);
    expect(text).toMatch(/^\[\d\d:\d\d:\d\d\] WARN: device went quiet \{"device":"kitchen"\}\n$/);
    expect(() => JSON.parse(text)).toThrow();
  });

  test.each(['json', 'pretty'] as const)('when the format is %s, then tokens and passwords are redacted', (logFormat) => {
    const out = capture();
    const log = createLogger({ logLevel: 'info', logFormat }, out.stream);
    log.info({ token: 'tok-SECRET-1', password: 'pw-SECRET-2', device: { token: 'tok-SECRET-3' } }, 'hello');
    const text = out.text();
    expect(text).toContain('hello');
    expect(text).toContain('[redacted]');
    expect(text).not.toMatch(/SECRET/);
  });

  test('when no format is given (tests, tools), then it is JSON', () => {
    const out = capture();
    createLogger({ logLevel: 'info' }, out.stream).info('plain');
    expect(JSON.parse(out.text()).msg).toBe('plain');
  });
});
