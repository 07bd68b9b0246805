import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { ConfigError, loadConfig } from '../../server/config';

describe('settings', () => {
  test('when nothing is set, then the defaults of SPEC §1 apply', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ port: 3000, host: '0.0.0.0', devicePort: 7000, databaseUrl: null, redisUrl: null, trustProxy: false, allowAnonymousDevices: false, logLevel: 'info' });
    expect(c.dataDir).toBe(path.resolve('./data'));
  });

  test.each([
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['DEVICE_PORT', '-1'],
    ['DATABASE_URL', 'mysql://x'],
    ['REDIS_URL', 'not a url'],
    ['PUBLIC_ORIGIN', 'https://x.example/path'],
    ['TRUST_PROXY', 'maybe'],
    ['ALLOW_ANONYMOUS_DEVICES', '2'],
    ['LOG_LEVEL', 'loud'],
    ['SESSION_SECRET', 'short'],
  ])('when %s=%s, then start-up fails naming that setting', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(`^${name}:`));
  });

  test('when the server starts with a bad setting, then it prints one clear line and no stack trace', () => {
    const main = path.join(__dirname, '..', '..', 'dist', 'main.js');
    const res = spawnSync(process.execPath, [main], { env: { ...process.env, PORT: 'abc' }, encoding: 'utf8', timeout: 10000 });
    expect(res.status).toBe(2);
    expect(res.stderr.trim().split('\n')).toHaveLength(1);
    expect(res.stderr).toMatch(/^sockpit: bad setting PORT: /);
  });
});
