import { ConfigError, loadConfig } from '../../server/config';

describe('LOG_FORMAT: readable lines for a person, JSON for machines', () => {
  test('when LOG_FORMAT is not set and stdout is a terminal, then logs are pretty', () => {
    expect(loadConfig({}, { stdoutIsTTY: true }).logFormat).toBe('pretty');
  });

  test('when LOG_FORMAT is not set and stdout is not a terminal (Docker, CI, a pipe), then logs are JSON', () => {
    expect(loadConfig({}, { stdoutIsTTY: false }).logFormat).toBe('json');
    expect(loadConfig({}).logFormat).toBe('json');
  });

  test.each([
    ['json', true, 'json'],
    ['pretty', false, 'pretty'],
    ['JSON', true, 'json'],
  ] as const)('when LOG_FORMAT=%s (terminal: %s), then the setting wins: %s', (value, tty, expected) => {
    expect(loadConfig({ LOG_FORMAT: value }, { stdoutIsTTY: tty }).logFormat).toBe(expected);
  });

  test('when LOG_FORMAT is something else, then start-up fails naming LOG_FORMAT and the choices', () => {
    expect(() => loadConfig({ LOG_FORMAT: 'xml' })).toThrow(ConfigError);
    expect(() => loadConfig({ LOG_FORMAT: 'xml' })).toThrow(/^LOG_FORMAT: must be one of pretty, json, got "xml"$/);
  });
});

describe('DEVICE_PUBLIC_HOST: the address devices dial', () => {
  test('when it is not set, then it is null (the page works it out)', () => {
    expect(loadConfig({}).devicePublicHost).toBeNull();
  });

  test.each([
    ['192.168.1.20', '192.168.1.20'],
    ['sockpit.lan', 'sockpit.lan'],
    ['iot.example.com', 'iot.example.com'],
    ['esp-gw', 'esp-gw'],
    ['fd00::2', 'fd00::2'],
    ['[fd00::2]', 'fd00::2'],
    ['  10.0.0.5  ', '10.0.0.5'],
  ])('when DEVICE_PUBLIC_HOST=%j, then devices are told %s', (value, expected) => {
    expect(loadConfig({ DEVICE_PUBLIC_HOST: value }).devicePublicHost).toBe(expected);
  });

  test.each([
    ['http://192.168.1.20', /no http:\/\/ or other scheme/],
    ['192.168.1.20:7000', /no port: devices use DEVICE_PORT/],
    ['two words', /must be a host name or IP address/],
    ['999.1.1.1', /must be a host name or IP address/],
    ['-bad-.lan', /must be a host name or IP address/],
    ['host/path', /must be a host name or IP address/],
  ])('when DEVICE_PUBLIC_HOST=%j, then start-up fails naming DEVICE_PUBLIC_HOST', (value, why) => {
    expect(() => loadConfig({ DEVICE_PUBLIC_HOST: value })).toThrow(ConfigError);
    expect(() => loadConfig({ DEVICE_PUBLIC_HOST: value })).toThrow(/^DEVICE_PUBLIC_HOST: /);
    expect(() => loadConfig({ DEVICE_PUBLIC_HOST: value })).toThrow(why);
  });
});
