import { ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { bannerText } from '../../server/banner';
import { childEnv, ensureBuilt, ROOT } from '../support/child';
import { CookieJar, postForm } from '../support/server';

describe('the start banner (text)', () => {
  test('when no user exists yet, then it says to open /setup, and where devices connect', () => {
    const text = bannerText({ httpUrl: 'http://localhost:3000', setupPending: true, devicePort: 7000, deviceHost: '192.168.1.20' });
    expect(text).toBe(
      [
        '',
        '  sockpit is running',
        '',
        '  Open      http://localhost:3000/setup  (no account yet: create the owner account there)',
        '  Devices   TCP port 7000  (from your network: 192.168.1.20:7000)',
        '',
        '  Press Ctrl-C to stop.',
        '',
        '',
      ].join('\n'),
    );
  });

  test('when users exist, then it shows the plain URL', () => {
    const text = bannerText({ httpUrl: 'https://iot.example.com/', setupPending: false, devicePort: 7000, deviceHost: null });
    expect(text).toContain('  Open      https://iot.example.com\n');
    expect(text).not.toContain('/setup');
    expect(text).toContain('  Devices   TCP port 7000\n');
  });

  test('when the listeners are bound to loopback, then it says no other machine can connect', () => {
    const text = bannerText({ httpUrl: 'http://localhost:3000', setupPending: false, devicePort: 7000, deviceHost: null, loopbackOnly: true });
    expect(text).toContain('TCP port 7000 (this computer only: HOST is a loopback address)');
  });

  test('when more device listeners are given, then each gets its own line after TCP, in order', () => {
    const text = bannerText({
      httpUrl: 'http://localhost:3000',
      setupPending: false,
      devicePort: 7000,
      deviceHost: null,
      extra: [
        { label: 'WebSocket', value: 'ws://localhost:3000/device' },
        { label: 'MQTT', value: 'port 1883' },
      ],
    });
    const lines = text.split('\n');
    const tcp = lines.indexOf('  Devices   TCP port 7000');
    expect(lines.slice(tcp, tcp + 3)).toEqual(['  Devices   TCP port 7000', '  WebSocket ws://localhost:3000/device', '  MQTT      port 1883']);
  });
});

describe('the terminal of `npm start` (node dist/main.js, LOG_FORMAT=pretty)', () => {
  let proc: ChildProcess | null = null;
  afterEach(() => {
    if (proc && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    proc = null;
  });

  /** Starts the real entry point and collects its stdout until `until` matches (or it exits). */
  function run(env: Record<string, string>, until: RegExp): Promise<{ out: () => string }> {
    ensureBuilt();
    const child = spawn(process.execPath, [path.join(ROOT, 'dist', 'main.js')], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    proc = child;
    let out = '';
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${until} within 20 s; stdout: ${out}\nstderr: ${err}`)), 20_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString().replace(/\x1b\[[0-9;]*m/g, '');
        if (until.test(out)) {
          clearTimeout(timer);
          resolve({ out: () => out });
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`server exited (${code}) before ${until}; stdout: ${out}\nstderr: ${err}`));
      });
    });
  }

  test('when the server starts on a fresh data dir, then a person sees readable log lines and a banner with the /setup URL and the device port', async () => {
    const { out } = await run(childEnv({ LOG_FORMAT: 'pretty', HOST: '0.0.0.0' }), /Press Ctrl-C to stop\./);
    const text = out();
    // A readable log line, not JSON.
    const listening = text.split('\n').find((l) => l.includes('sockpit listening'));
    expect(listening).toMatch(/^\[\d\d:\d\d:\d\d\] INFO: sockpit listening /);
    expect(text.split('\n').filter((l) => l.startsWith('{"level"'))).toEqual([]);
    // The banner, with the ports actually bound.
    const httpPort = Number(/"httpPort":(\d+)/.exec(listening!)![1]);
    const devicePort = Number(/"devicePort":(\d+)/.exec(listening!)![1]);
    expect(text).toContain('  sockpit is running\n');
    expect(text).toContain(`  Open      http://localhost:${httpPort}/setup  (no account yet: create the owner account there)\n`);
    expect(text).toMatch(new RegExp(`  Devices   TCP port ${devicePort}\\b`));
  });

  test('when the owner account exists, then the banner shows the plain URL to open', async () => {
    const env = childEnv({ LOG_FORMAT: 'pretty', HOST: '127.0.0.1' });
    const first = await run(env, /Press Ctrl-C to stop\./);
    const httpPort = Number(/"httpPort":(\d+)/.exec(first.out())![1]);
    const res = await postForm(`http://127.0.0.1:${httpPort}`, '/setup', '/setup', { username: 'owner', password: 'correct horse battery', password2: 'correct horse battery' }, new CookieJar());
    expect(res.status).toBe(303);
    proc!.kill('SIGKILL');

    const { out } = await run(env, /Press Ctrl-C to stop\./);
    const text = out();
    const port = Number(/"httpPort":(\d+)/.exec(text)![1]);
    expect(text).toContain(`  Open      http://localhost:${port}\n`);
    expect(text).not.toContain('/setup');
    expect(text).toContain('(this computer only: HOST is a loopback address)');
  });

  test('when LOG_FORMAT=json, then there is no banner: JSON lines only, with the setup hint as one of them', async () => {
    const { out } = await run(childEnv({ LOG_FORMAT: 'json' }), /no user yet/);
    const lines = out().trim().split('\n');
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(parsed.find((l) => l.msg === 'sockpit listening')).toMatchObject({ httpPort: expect.any(Number), devicePort: expect.any(Number) });
    expect(parsed.find((l) => String(l.msg).startsWith('no user yet'))).toMatchObject({ url: expect.stringMatching(/^http:\/\/localhost:\d+\/setup$/) });
    expect(out()).not.toContain('sockpit is running');
  });
});
