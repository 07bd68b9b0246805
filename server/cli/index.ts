import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { read } from 'read';
import { usernameProblem } from '../auth/passwords';
import { createApiKey, revokeApiKey } from '../api/keys';
import { addUser, getUserOrFail, InputError, parseRole, removeUser, setPassword, setRole } from '../auth/users';
import { ConfigError, loadConfig } from '../config';
import { addDevice, removeDevice, rotateDeviceToken } from '../devices/admin';
import { SimulatedDevice } from '../simulator/device';
import { openStorage, Storage } from '../storage';
import { loadOrCreateCa, tlsFiles, TlsSetupError } from '../tls/material';
import { mqttTransport, tcpTransport, websocketTransport } from '../devices/client';
import { DEVICE_WS_PATH } from '../devices/transports/websocket';

const USAGE = `Usage: sockpit <command>

  user add NAME --role admin|operator|viewer   password from a prompt, or stdin when piped
  user list
  user passwd NAME                             password from a prompt, or stdin when piped
  user role NAME ROLE
  user remove NAME
  device add ID [--name TEXT] [--json]         prints the device token once
  device list
  device token ID                              rotates the token and prints the new one
  device remove ID
  apikey add NAME --user USER --role ROLE [--json]   prints the API key once (role at most the user's)
  apikey list [--json]
  apikey revoke ID
  simulate --id ID --token=TOKEN [--host 127.0.0.1] [--port P] [--interval-ms 5000]
           [--transport tcp|ws|mqtt] [--tls [--ca FILE]]   a device that behaves like the firmware
  tls ca                                       prints sockpit's own CA certificate (PEM) for devices

Settings come from the environment as for the server (DATA_DIR, DATABASE_URL, DEVICE_PORT).`;

class UsageError extends Error {}

/**
 * How many words each subcommand takes (itself included): one more is refused, so that
 * `device remove a b` does not remove only `a`, and `device add k1 Kitchen relay` does not
 * silently drop the name that needed --name.
 */
const WORDS: Record<string, Record<string, number>> = {
  user: { add: 2, list: 1, passwd: 2, role: 3, remove: 2 },
  device: { add: 2, list: 1, token: 2, remove: 2 },
  apikey: { add: 2, list: 1, revoke: 2 },
  tls: { ca: 1 },
};

function noExtraWords(cmd: string, positionals: readonly string[]): void {
  const n = WORDS[cmd]?.[positionals[0] ?? ''];
  if (n !== undefined && positionals.length > n) {
    throw new UsageError(`unexpected argument "${positionals[n]}" for ${cmd} ${positionals[0]}${cmd === 'device' && positionals[0] === 'add' ? ' (a name goes in --name "TEXT")' : ''}`);
  }
}

async function readPassword(prompt: string): Promise<string> {
  if (!process.stdin.isTTY) {
    // Piped: the first line of stdin is the password.
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
  }
  const ask = (q: string) => read({ prompt: q, silent: true, replace: '' });
  const a = await ask(prompt);
  const b = await ask('Repeat it: ');
  if (a !== b) throw new InputError('The two passwords differ.');
  return a;
}

async function withStorage<T>(fn: (s: Storage) => Promise<T>): Promise<T> {
  const config = loadConfig(process.env);
  const storage = await openStorage(config);
  try {
    return await fn(storage);
  } finally {
    await storage.close();
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

const when = (ms: number | null) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) : '-');

async function user(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { role: { type: 'string' } } });
  noExtraWords('user', positionals);
  const [sub, name, extra] = positionals;
  const rounds = loadConfig(process.env).bcryptRounds;
  switch (sub) {
    case 'add': {
      if (!name) throw new UsageError('user add needs a NAME');
      if (!values.role) throw new UsageError('user add needs --role admin|operator|viewer');
      // Check what can be checked before asking for a password.
      parseRole(values.role);
      const nameProblem = usernameProblem(name);
      if (nameProblem) throw new InputError(nameProblem);
      const password = await readPassword(`Password for ${name}: `);
      const u = await withStorage((s) => addUser(s, name, password, values.role!, rounds));
      console.log(`User ${u.username} added with role ${u.role}.`);
      return;
    }
    case 'list':
      return withStorage(async (s) => {
        const users = await s.listUsers();
        if (users.length === 0) return console.log('No users yet. Open the web page to create the owner, or run: sockpit user add NAME --role admin');
        console.log(table([['NAME', 'ROLE', 'CREATED'], ...users.map((u) => [u.username, u.role, when(u.createdAt)])]));
      });
    case 'passwd': {
      if (!name) throw new UsageError('user passwd needs a NAME');
      await withStorage((s) => getUserOrFail(s, name));
      const password = await readPassword(`New password for ${name}: `);
      await withStorage((s) => setPassword(s, name, password, rounds));
      console.log(`Password of ${name} changed.`);
      return;
    }
    case 'role': {
      if (!name || !extra) throw new UsageError('user role needs NAME and ROLE');
      await withStorage(async (s) => setRole(s, await getUserOrFail(s, name), extra));
      console.log(`${name} is now ${extra}.`);
      return;
    }
    case 'remove': {
      if (!name) throw new UsageError('user remove needs a NAME');
      await withStorage(async (s) => removeUser(s, await getUserOrFail(s, name)));
      console.log(`User ${name} removed.`);
      return;
    }
    default:
      throw new UsageError(`unknown user command "${sub ?? ''}"`);
  }
}

async function device(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { name: { type: 'string' }, json: { type: 'boolean', default: false } },
  });
  noExtraWords('device', positionals);
  const [sub, id] = positionals;
  switch (sub) {
    case 'add': {
      if (!id) throw new UsageError('device add needs an ID');
      const { device: d, token } = await withStorage((s) => addDevice(s, id, values.name));
      if (values.json) console.log(JSON.stringify({ id: d.id, token }));
      else {
        console.log(`Device ${d.id} added. Its token (shown only once):\n\n  ${token}\n`);
        console.log(`Try it with the simulator:\n  npx sockpit simulate --id ${d.id} --token=${token}`);
      }
      return;
    }
    case 'list':
      return withStorage(async (s) => {
        const devices = await s.listDevices();
        if (values.json) return console.log(JSON.stringify(devices.map((d) => ({ id: d.id, name: d.name, lastSeen: d.lastSeen, firmware: d.firmware }))));
        if (devices.length === 0) return console.log('No devices yet. Add one with: sockpit device add ID');
        console.log(table([['ID', 'NAME', 'LAST SEEN', 'FIRMWARE'], ...devices.map((d) => [d.id, d.name, when(d.lastSeen), d.firmware ?? '-'])]));
      });
    case 'token': {
      if (!id) throw new UsageError('device token needs an ID');
      const token = await withStorage((s) => rotateDeviceToken(s, id));
      if (values.json) console.log(JSON.stringify({ id, token }));
      else console.log(`New token for ${id} (the old one no longer works; shown only once):\n\n  ${token}\n`);
      return;
    }
    case 'remove': {
      if (!id) throw new UsageError('device remove needs an ID');
      await withStorage((s) => removeDevice(s, id));
      console.log(`Device ${id} removed, with its telemetry and commands.`);
      return;
    }
    default:
      throw new UsageError(`unknown device command "${sub ?? ''}"`);
  }
}

async function apikey(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { user: { type: 'string' }, role: { type: 'string' }, json: { type: 'boolean', default: false } },
  });
  noExtraWords('apikey', positionals);
  const [sub, arg] = positionals;
  switch (sub) {
    case 'add': {
      if (!arg) throw new UsageError('apikey add needs a NAME');
      if (!values.user) throw new UsageError('apikey add needs --user USER');
      if (!values.role) throw new UsageError('apikey add needs --role viewer|operator|admin');
      const { apiKey, key } = await withStorage(async (s) => createApiKey(s, await getUserOrFail(s, values.user!), arg, values.role!));
      if (values.json) console.log(JSON.stringify({ id: apiKey.id, key }));
      else {
        console.log(`API key ${apiKey.id} ("${apiKey.name}") added for ${apiKey.username} with role ${apiKey.role}. The key (shown only once):\n\n  ${key}\n`);
        console.log(`Use it as a header, never in a URL:\n  curl -H "Authorization: Bearer ${key}" http://HOST:PORT/api/v1/devices`);
      }
      return;
    }
    case 'list':
      return withStorage(async (s) => {
        const keys = await s.listApiKeys();
        if (values.json) return console.log(JSON.stringify(keys));
        if (keys.length === 0) return console.log('No API keys yet. Add one with: sockpit apikey add NAME --user USER --role ROLE');
        console.log(
          table([
            ['ID', 'NAME', 'USER', 'ROLE', 'CREATED', 'LAST USED'],
            ...keys.map((k) => [k.id, k.name, k.username ?? '(removed)', k.role, when(k.createdAt), when(k.lastUsedAt)]),
          ]),
        );
      });
    case 'revoke': {
      if (!arg) throw new UsageError('apikey revoke needs an ID (see apikey list)');
      if (!(await withStorage((s) => revokeApiKey(s, arg, 'cli')))) throw new InputError(`No API key "${arg}".`);
      console.log(`API key ${arg} revoked.`);
      return;
    }
    default:
      throw new UsageError(`unknown apikey command "${sub ?? ''}"`);
  }
}

async function simulate(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      id: { type: 'string' },
      token: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string' },
      transport: { type: 'string', default: 'tcp' },
      tls: { type: 'boolean', default: false },
      ca: { type: 'string' },
      'interval-ms': { type: 'string', default: '5000' },
    },
  });
  if (!values.id || !values.token) throw new UsageError('simulate needs --id and --token');
  const kind = values.transport!;
  if (kind !== 'tcp' && kind !== 'ws' && kind !== 'mqtt') throw new UsageError('--transport must be tcp, ws or mqtt');
  if (values.ca && !values.tls) throw new UsageError('--ca goes with --tls');
  const config = loadConfig(process.env);
  const secure = values.tls === true;
  // Each transport's own port, as the server's settings say, unless --port names one.
  const defaultPort = {
    tcp: secure ? config.deviceTlsPort : config.devicePort,
    ws: secure ? config.httpsPort : config.port,
    mqtt: secure ? config.mqttTlsPort : config.mqttPort,
  }[kind];
  const port = Number(values.port ?? defaultPort);
  const intervalMs = Number(values['interval-ms']);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`--port must be 1-65535${values.port === undefined ? ' (the server setting for this transport is off; give --port)' : ''}`);
  if (!Number.isInteger(intervalMs) || intervalMs < 100) throw new UsageError('--interval-ms must be a whole number ≥ 100');
  const tls = secure ? { ca: readCa(values.ca, config.dataDir) } : undefined;
  const host = values.host!;
  const transport =
    kind === 'ws'
      ? websocketTransport({ url: `${secure ? 'wss' : 'ws'}://${host.includes(':') ? `[${host}]` : host}:${port}${DEVICE_WS_PATH}`, tls })
      : kind === 'mqtt'
        ? mqttTransport({ host, port, id: values.id, token: values.token, tls })
        : tcpTransport({ host, port, tls });
  const sim = new SimulatedDevice({ host, port, transport, id: values.id, token: values.token, intervalMs });
  sim.start();
  const stop = () => {
    sim.stop();
    process.exit(process.exitCode ?? 0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

/** The CA the simulator trusts over TLS: --ca FILE, else this machine's sockpit CA when there is one, else the system's. */
function readCa(file: string | undefined, dataDir: string): string | undefined {
  const path = file ?? tlsFiles(dataDir).caCert;
  try {
    return fs.readFileSync(path, 'utf8');
  } catch (err) {
    if (file) throw new InputError(`cannot read --ca ${file}: ${(err as Error).message}`);
    return undefined;
  }
}

/** `tls ca`: the CA devices trust (docs/security.md); made on first use, as the server would. */
async function tlsCommand(args: string[]): Promise<void> {
  const [sub] = args;
  if (sub !== 'ca') throw new UsageError(`unknown tls command "${sub ?? ''}"`);
  noExtraWords('tls', args);
  const config = loadConfig(process.env);
  if (config.tlsCert) {
    throw new InputError(`TLS_CERT is set (${config.tlsCert}): sockpit presents that certificate, so devices need the CA that signed it, not sockpit's own`);
  }
  const ca = await loadOrCreateCa(config.dataDir);
  process.stdout.write(ca.certPem.endsWith('\n') ? ca.certPem : `${ca.certPem}\n`);
}

export async function runCli(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === 'user') await user(rest);
    else if (cmd === 'device') await device(rest);
    else if (cmd === 'apikey') await apikey(rest);
    else if (cmd === 'simulate') await simulate(rest);
    else if (cmd === 'tls') await tlsCommand(rest);
    else if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') console.log(USAGE);
    else throw new UsageError(`unknown command "${cmd}"`);
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`sockpit: ${(err as Error).message}\n\n${USAGE}`);
      process.exitCode = 2;
    } else if (err instanceof InputError) {
      console.error(`sockpit: ${err.message}`);
      process.exitCode = 1;
    } else if (err instanceof ConfigError || err instanceof TlsSetupError) {
      console.error(`sockpit: bad setting ${err.message}`);
      process.exitCode = 2;
    } else {
      console.error(`sockpit: ${(err as Error).message}`);
      process.exitCode = 1;
    }
  }
}

if (require.main === module) void runCli(process.argv.slice(2));
