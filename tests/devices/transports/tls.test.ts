/**
 * Devices over TLS (docs/security.md, "Encrypted device connections", cases 22-27; docs/protocol.md):
 * TCP lines on DEVICE_TLS_PORT, MQTT on MQTT_TLS_PORT, wss:// and the pages on HTTPS_PORT, each with
 * the CA `npx sockpit tls ca` prints, through real TLS clients: Node's tls, the `mqtt` package,
 * socket.io-client, `ws`, Debian's mosquitto_pub and Python's ssl module. The cases that need a
 * process of their own (logs, exit codes, SIGHUP, RSS) are in tests/tls/process.test.ts.
 */
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import mqtt, { type MqttClient } from 'mqtt';
import * as mqttPacket from 'mqtt-packet';
import { io as ioClient, type Socket as ClientSocket } from 'socket.io-client';
import WebSocket from 'ws';
import { issueServerCert, machineNames } from '../../../server/tls/certificates';
import { HANDSHAKE_TIMEOUT_MS, loadOrCreateCa, tlsFiles } from '../../../server/tls/material';
import { cli, killCliChildren } from '../../support/cli';
import { ensureBuilt, sleep, until } from '../../support/child';
import { addDevice, closeAllServers, connectSocket, createUserAndLogin, db, emitAck, metric, nextEvent, startServer, TestServer } from '../../support/server';
import { certificateFor, httpsRequest, otherCa, presentedCertificate, TlsDevice, tlsRefusal, writePair } from '../../support/tls';

beforeAll(() => ensureBuilt()); // the CLI runs from dist/

const sockets: { close(): void }[] = [];
/** Closes with the test, whatever happened. */
function track<T extends { close(): void }>(x: T): T {
  sockets.push(x);
  return x;
}

afterEach(async () => {
  for (const s of sockets.splice(0)) s.close();
  killCliChildren();
  await closeAllServers();
});

/** The CA as a maker gets it: `npx sockpit tls ca` on the server's data. */
async function caFromCli(server: TestServer): Promise<string> {
  const r = await cli(server, ['tls', 'ca']);
  if (r.code !== 0) throw new Error(`sockpit tls ca exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** The CA in a file, for the command-line clients. */
function caFile(pem: string): string {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-ca-')), 'ca.pem');
  fs.writeFileSync(file, pem);
  return file;
}

type Status = { deviceId: string; online: boolean; transport?: string };
const onlineEvent = (socket: ClientSocket, id: string) => nextEvent<Status>(socket, 'device:status', (s) => s.deviceId === id && s.online);

/** A connected `mqtt` client over TLS (mqtts://) trusting `ca`. */
function mqttsDevice(port: number, id: string, token: string, ca: string, more: mqtt.IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, {
    ca,
    protocolVersion: 4,
    clientId: `${id}-${crypto.randomBytes(3).toString('hex')}`,
    username: id,
    password: token,
    reconnectPeriod: 0,
    connectTimeout: 8000,
    ...more,
  });
}

interface Exec {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], timeoutMs = 20_000): Promise<Exec> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Resolves when the socket is closed, with how long that took from `since`. */
function closedAfter(socket: net.Socket, since: number): Promise<number> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve(Date.now() - since);
    socket.once('close', () => resolve(Date.now() - since));
  });
}

/** A plain TCP connection (no TLS) that collects what it receives. */
function rawConnect(port: number, localAddress?: string): Promise<net.Socket & { received: Buffer[] }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}) }) as net.Socket & { received: Buffer[] };
    s.received = [];
    s.on('data', (d: Buffer) => s.received.push(d));
    s.once('error', reject);
    s.once('connect', () => {
      s.off('error', reject);
      s.on('error', () => {});
      resolve(track(Object.assign(s, { close: () => s.destroy() })));
    });
  });
}

/** A real ClientHello, as a TLS client sends it first (captured from Node's own client). */
function captureClientHello(): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const catcher = net.createServer((s) => {
      s.once('data', (d: Buffer) => {
        resolve(d);
        s.destroy();
        catcher.close();
      });
    });
    catcher.listen(0, '127.0.0.1', () => {
      const c = tls.connect({ host: '127.0.0.1', port: (catcher.address() as net.AddressInfo).port, servername: 'localhost', rejectUnauthorized: false });
      c.on('error', () => {});
    });
    catcher.on('error', reject);
  });
}

/** Whether a TCP port on 127.0.0.1 accepts connections. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** A port nothing listens on (bound and released again). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Ids are unique per test; on PostgreSQL each test has a database of its own anyway. */
let n = 0;
const uniq = (base: string) => `${base}-${++n}`;

describe('TCP lines over TLS (DEVICE_TLS_PORT)', () => {
  test('when a device trusts the CA that `npx sockpit tls ca` prints, then it gets welcome on DEVICE_TLS_PORT, its reading is stored and answered stored, and a command from the dashboard reaches it and is acked', async () => {
    const server = await startServer({ deviceTlsPort: 0 });
    expect(server.tlsPorts.tcp).toBeGreaterThan(0);
    const ca = await caFromCli(server);
    expect(ca).toBe(fs.readFileSync(tlsFiles(server.dataDir).caCert, 'utf8'));
    const socket = track(await connectSocket(server, await createUserAndLogin(server)));
    const id = uniq('tls-line');
    const { token } = await addDevice(server, id);

    const online = onlineEvent(socket, id);
    const device = track(await TlsDevice.hello(server.tlsPorts.tcp, { ca }, id, token));
    expect((await online).transport).toBe('tcp');

    device.send({ type: 'telemetry', id: 'boot1-1', data: { temperature: 21.5 } });
    expect(await device.next((m) => m.type === 'stored')).toEqual({ type: 'stored', id: 'boot1-1' });
    expect(await db(server).countTelemetry(id)).toBe(1);

    const sent = await emitAck(socket, 'command:send', { deviceId: id, action: 'togglerele' });
    const command = await device.next((m) => m.type === 'fromservertonode');
    expect(command).toMatchObject({ msg: 'action', action: 'togglerele', id: sent.command.id });
    const acked = nextEvent(socket, 'command:status', (c: { id: string; status: string }) => c.id === sent.command.id && c.status === 'acked');
    device.send({ type: 'ack', id: command.id, ok: true });
    await acked;
  });

  test('the line rules hold over TLS as on the plain port: a bad line gets its error and the connection stays; a line over 16 KiB gets line_too_long and is closed', async () => {
    const server = await startServer({ deviceTlsPort: 0 });
    const ca = fs.readFileSync(tlsFiles(server.dataDir).caCert, 'utf8');
    const id = uniq('tls-rules');
    const { token } = await addDevice(server, id);
    const device = track(await TlsDevice.hello(server.tlsPorts.tcp, { ca }, id, token));
    device.socket.write('not base64!\n');
    expect(await device.next((m) => m.type === 'error')).toMatchObject({ error: 'bad_base64' });
    await device.roundTrip();
    device.socket.write(Buffer.alloc(17 * 1024, 0x41));
    expect(await device.next((m) => m.type === 'error')).toMatchObject({ error: 'line_too_long' });
    await device.waitClosed();
    expect((await fetch(server.baseUrl + '/healthz')).status).toBe(200);
  });

  test("the server certificate names localhost, 127.0.0.1, ::1, this machine's host name and addresses, and DEVICE_PUBLIC_HOST; a client dialling any of them accepts it", async () => {
    const server = await startServer({ deviceTlsPort: 0, devicePublicHost: 'sockpit-devices.example.net' });
    const ca = fs.readFileSync(tlsFiles(server.dataDir).caCert, 'utf8');
    const names = ['localhost', '127.0.0.1', os.hostname(), 'sockpit-devices.example.net'];
    for (const servername of names) {
      const s = await TlsDevice.connect(server.tlsPorts.tcp, { ca, servername });
      expect(s.socket.authorized).toBe(true);
      s.close();
    }
    // ::1 and the network addresses cannot be dialled here (the test server listens on 127.0.0.1 only),
    // so the certificate is checked against them as a client would.
    const presented = track(await TlsDevice.connect(server.tlsPorts.tcp, { ca })).certificate;
    const cert = { subject: {}, subjectaltname: presented.subjectAltName } as tls.PeerCertificate;
    const addresses = Object.values(os.networkInterfaces()).flatMap((l) => (l ?? []).map((i) => i.address.replace(/%.*$/, '')));
    for (const address of ['::1', ...addresses]) expect(tls.checkServerIdentity(address, cert)).toBeUndefined();
    expect(tls.checkServerIdentity('sockpit.attacker.example', cert)).toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });
});

describe('22. a server the device must not trust', () => {
  test('when a client does not trust the CA (the public CAs only, or another CA), then its own verification refuses the server before it sends anything', async () => {
    const server = await startServer({ deviceTlsPort: 0 });
    const withPublicCas = await tlsRefusal(server.tlsPorts.tcp, {});
    expect(withPublicCas.code).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    const stranger = await otherCa();
    const withAnotherCa = await tlsRefusal(server.tlsPorts.tcp, { ca: stranger.certPem });
    expect(withAnotherCa.code).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    // Nothing reached the device core, and the server goes on.
    expect(await metric(server, 'sockpit_device_connections')).toBe(0);
    expect((await fetch(server.baseUrl + '/healthz')).status).toBe(200);
  });

  test('when a client dials a name the certificate does not carry, then checkServerIdentity refuses it', async () => {
    const server = await startServer({ deviceTlsPort: 0 });
    const ca = fs.readFileSync(tlsFiles(server.dataDir).caCert, 'utf8');
    const err = await tlsRefusal(server.tlsPorts.tcp, { ca, servername: 'sockpit.attacker.example' });
    expect(err.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    expect(err.message).toMatch(/sockpit\.attacker\.example/);
    const wrongAddress = await tlsRefusal(server.tlsPorts.tcp, { ca, servername: '10.255.255.1' });
    expect(wrongAddress.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
  });

  test('when a client offers only TLS 1.0 or 1.1, then the server refuses it with a protocol_version alert (TLS 1.2 or later only)', async () => {
    const server = await startServer({ deviceTlsPort: 0, mqttTlsPort: 0 });
    for (const port of [server.tlsPorts.tcp, server.tlsPorts.mqtt]) {
      const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
        // The client lowers its own floor (OpenSSL's defaults would refuse before the server could).
        const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' });
        s.once('secureConnect', () => {
          s.destroy();
          resolve(null);
        });
        s.once('error', resolve);
      });
      expect(err?.code).toBe('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');
    }
  });
});

describe('MQTT over TLS (MQTT_TLS_PORT)', () => {
  test('when the `mqtt` package connects with the CA, then a QoS 1 reading is PUBACKed once stored, and a command reaches it and is acked', async () => {
    const server = await startServer({ mqttTlsPort: 0 });
    expect(server.tlsPorts.mqtt).toBeGreaterThan(0);
    const ca = await caFromCli(server);
    const socket = track(await connectSocket(server, await createUserAndLogin(server)));
    const id = uniq('tls-mqtt');
    const { token } = await addDevice(server, id);
    const online = onlineEvent(socket, id);
    const client = track({ close: () => void 0 } as { close(): void });
    const device = await mqttsDevice(server.tlsPorts.mqtt, id, token, ca);
    client.close = () => device.end(true);
    expect((await online).transport).toBe('mqtt');

    await device.publishAsync(`sockpit/${id}/telemetry`, JSON.stringify({ type: 'telemetry', id: 'm-1', data: { humidity: 40 } }), { qos: 1 });
    expect(await db(server).countTelemetry(id)).toBe(1);

    await device.subscribeAsync(`sockpit/${id}/commands`, { qos: 1 });
    const received = new Promise<{ id: string; action: string }>((resolve) => device.once('message', (_t, payload) => resolve(JSON.parse(payload.toString()))));
    const sent = await emitAck(socket, 'command:send', { deviceId: id, action: 'togglerele' });
    const command = await received;
    expect(command).toMatchObject({ id: sent.command.id, action: 'togglerele' });
    const acked = nextEvent(socket, 'command:status', (c: { id: string; status: string }) => c.id === command.id && c.status === 'acked');
    await device.publishAsync(`sockpit/${id}/ack`, JSON.stringify({ id: command.id, ok: true }), { qos: 1 });
    await acked;
  });

  test('when mosquitto_pub --cafile publishes with the CA `npx sockpit tls ca` printed, then the reading is stored; with another CA, or without TLS, it fails and nothing is stored', async () => {
    const server = await startServer({ mqttTlsPort: 0 });
    const ca = caFile(await caFromCli(server));
    const id = uniq('mosquitto');
    const { token } = await addDevice(server, id);
    const pub = (extra: string[], msgId: string) =>
      run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(server.tlsPorts.mqtt), '-V', 'mqttv311', '-i', `${id}-${msgId}`, '-u', id, '-P', token, '-q', '1', '-t', `sockpit/${id}/telemetry`, '-m', JSON.stringify({ type: 'telemetry', id: msgId, data: { t: 1 } }), ...extra]);

    const good = await pub(['--cafile', ca], 'ok-1');
    expect(good).toMatchObject({ code: 0, stderr: '' });
    // The name mosquitto checks is the one it dials: localhost is in the certificate too.
    expect(await pub(['--cafile', ca, '-h', 'localhost'], 'ok-2')).toMatchObject({ code: 0 });
    expect(await db(server).countTelemetry(id)).toBe(2);

    const stranger = await pub(['--cafile', caFile((await otherCa()).certPem)], 'bad-1');
    expect(stranger.code).not.toBe(0);
    expect(stranger.stderr).toMatch(/certificate verify failed|TLS error/i);
    const plain = await pub([], 'bad-2');
    expect(plain.code).not.toBe(0);
    expect(await db(server).countTelemetry(id)).toBe(2);
    expect((await fetch(server.baseUrl + '/healthz')).status).toBe(200);
  });
});

/** Python's ssl module as a line device: hello, one reading; prints each reply, or REFUSED and the reason. */
const PYTHON_DEVICE = `
import base64, json, socket, ssl, sys
port, cafile, host, device, token = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
try:
    with socket.create_connection(('127.0.0.1', port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
        f = s.makefile('rwb')
        def send(m):
            f.write(base64.b64encode(json.dumps(m).encode()) + b'\\n'); f.flush()
        def recv():
            return json.loads(base64.b64decode(f.readline().strip()))
        send({'type': 'hello', 'device': device, 'token': token, 'firmware': 'python-ssl'})
        print(json.dumps(recv()))
        send({'type': 'telemetry', 'id': 'py-1', 'data': {'t': 22.5}})
        print(json.dumps(recv()))
        print('VERSION', s.version())
except ssl.SSLCertVerificationError as e:
    print('REFUSED', e.verify_message)
    sys.exit(3)
`;

describe("Python's ssl module as a TLS line client", () => {
  test('when a Python device trusts the CA, then it gets welcome and stored over TLS 1.2 or later; with the default context it refuses the server itself', async () => {
    const server = await startServer({ deviceTlsPort: 0 });
    const ca = caFile(await caFromCli(server));
    const id = uniq('python');
    const { token } = await addDevice(server, id);
    const port = String(server.tlsPorts.tcp);

    const good = await run('python3', ['-c', PYTHON_DEVICE, port, ca, 'localhost', id, token]);
    expect(good.stderr).toBe('');
    const [welcome, stored, version] = good.stdout.trim().split('\n');
    expect(JSON.parse(welcome!)).toMatchObject({ type: 'welcome', device: id });
    expect(JSON.parse(stored!)).toEqual({ type: 'stored', id: 'py-1' });
    expect(version).toMatch(/^VERSION TLSv1\.[23]$/);
    expect(await db(server).countTelemetry(id)).toBe(1);

    const refused = await run('python3', ['-c', PYTHON_DEVICE, port, '', 'localhost', id, token]);
    expect(refused.code).toBe(3);
    expect(refused.stdout).toMatch(/^REFUSED unable to get local issuer certificate/);
    const wrongName = await run('python3', ['-c', PYTHON_DEVICE, port, ca, 'sockpit.attacker.example', id, token]);
    expect(wrongName.code).toBe(3);
    expect(wrongName.stdout).toMatch(/^REFUSED Hostname mismatch/);
  });
});

describe('HTTPS_PORT: pages, Socket.IO and wss:// devices over TLS', () => {
  test('when HTTPS_PORT is on, then the login page is served over HTTPS, a person logs in there, and socket.io-client (polling and websocket) connects with the CA', async () => {
    const server = await startServer({ httpsPort: 0 });
    expect(server.tlsPorts.https).toBeGreaterThan(0);
    const ca = fs.readFileSync(tlsFiles(server.dataDir).caCert, 'utf8');
    const base = `https://127.0.0.1:${server.tlsPorts.https}`;
    await createUserAndLogin(server, { username: 'ann', password: 'correct horse', role: 'admin' });

    const page = await httpsRequest(`${base}/login`, { ca });
    expect(page.status).toBe(200);
    expect(page.body).toMatch(/name="username"/);
    const cookies = new Map<string, string>();
    const keep = (set: string[] | string | undefined) => {
      for (const c of [set ?? []].flat()) cookies.set(c.split('=')[0]!, c.split(';')[0]!);
    };
    keep(page.headers['set-cookie']);
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page.body)![1]!;
    const form = new URLSearchParams({ username: 'ann', password: 'correct horse', _csrf: csrf }).toString();
    const loggedIn = await httpsRequest(`${base}/login`, { ca, method: 'POST', body: form, headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: [...cookies.values()].join('; ') } });
    expect(loggedIn.status).toBe(303);
    keep(loggedIn.headers['set-cookie']);
    const cookie = [...cookies.values()].join('; ');
    const dashboard = await httpsRequest(`${base}/`, { ca, headers: { cookie } });
    expect(dashboard.status).toBe(200);

    for (const transports of [['polling'], ['websocket']]) {
      const socket = track(ioClient(base, { ca, transports, extraHeaders: { cookie }, reconnection: false, forceNew: true } as never));
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('connect_error', reject);
      });
      const { devices } = await emitAck(socket, 'fleet:list', {});
      expect(Array.isArray(devices)).toBe(true);
      socket.close();
    }
    // A client without the CA refuses the HTTPS server itself.
    await expect(httpsRequest(`${base}/login`, { ca: (await otherCa()).certPem })).rejects.toMatchObject({ code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
  });

  test('when a device opens wss:// /device on HTTPS_PORT with ?device= and a Bearer token, then it is welcomed at once and its reading is stored; a bad token gets 401', async () => {
    const server = await startServer({ httpsPort: 0 });
    const ca = fs.readFileSync(tlsFiles(server.dataDir).caCert, 'utf8');
    const socket = track(await connectSocket(server, await createUserAndLogin(server)));
    const id = uniq('wss');
    const { token } = await addDevice(server, id);
    const url = `wss://127.0.0.1:${server.tlsPorts.https}/device?device=${id}`;

    const online = onlineEvent(socket, id);
    const ws = track(new WebSocket(url, { ca, headers: { authorization: `Bearer ${token}` } }));
    const frames: Record<string, unknown>[] = [];
    const next = (type: string) => until(() => frames.some((f) => f.type === type), 8000, `a ${type} frame`);
    ws.on('message', (d) => frames.push(JSON.parse(String(d))));
    await next('welcome');
    expect((await online).transport).toBe('websocket');
    ws.send(JSON.stringify({ type: 'telemetry', id: 'w-1', data: { t: 3 } }));
    await next('stored');
    expect(frames.find((f) => f.type === 'stored')).toEqual({ type: 'stored', id: 'w-1' });
    expect(await db(server).countTelemetry(id)).toBe(1);

    const bad = track(new WebSocket(url, { ca, headers: { authorization: 'Bearer not-the-token' } }));
    const status = await new Promise<number>((resolve) => {
      bad.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      bad.once('open', () => resolve(101));
      bad.on('error', () => {});
    });
    expect(status).toBe(401);
  });

  test('when DEVICE_PLAINTEXT=false, then the plain TCP and MQTT ports are not listening and ws:// on the HTTP port gets 403, while the TLS lines, MQTT and wss:// work', async () => {
    const [devicePort, mqttPort] = [await freePort(), await freePort()];
    const server = await startServer({ devicePlaintext: false, devicePort, mqttPort, deviceTlsPort: 0, mqttTlsPort: 0, httpsPort: 0 });
    const ca = fs.readFileSync(tlsFiles(server.dataDir).caCert, 'utf8');
    expect(await listening(devicePort)).toBe(false);
    expect(await listening(mqttPort)).toBe(false);
    expect(server.devicePort).toBe(0);
    expect(server.mqttPort).toBe(0);

    const id = uniq('tls-only');
    const { token } = await addDevice(server, id);
    const plainWs = track(new WebSocket(`${server.wsUrl}?device=${id}`, { headers: { authorization: `Bearer ${token}` } }));
    const refused = await new Promise<{ status: number; body: string }>((resolve) => {
      plainWs.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      plainWs.once('open', () => resolve({ status: 101, body: '' }));
      plainWs.on('error', () => {});
    });
    expect(refused.status).toBe(403);
    expect(refused.body).toMatch(/wss:\/\//);
    // The pages stay on the HTTP port.
    expect((await fetch(server.baseUrl + '/login')).status).toBe(200);

    const line = track(await TlsDevice.hello(server.tlsPorts.tcp, { ca }, id, token));
    await line.roundTrip();
    line.close();
    const m = await mqttsDevice(server.tlsPorts.mqtt, id, token, ca);
    track({ close: () => m.end(true) });
    await m.publishAsync(`sockpit/${id}/telemetry`, JSON.stringify({ type: 'telemetry', id: 'p-1', data: { t: 1 } }), { qos: 1 });
    await m.endAsync();
    const wss = track(new WebSocket(`wss://127.0.0.1:${server.tlsPorts.https}/device?device=${id}`, { ca, headers: { authorization: `Bearer ${token}` } }));
    const welcome = await new Promise<Record<string, unknown>>((resolve, reject) => {
      wss.once('message', (d) => resolve(JSON.parse(String(d))));
      wss.once('error', reject);
    });
    expect(welcome).toMatchObject({ type: 'welcome', device: id });
    expect(await db(server).countTelemetry(id)).toBe(1);
  });
});

describe('23. the wrong port: a plain-text client on a TLS port', () => {
  test('when a plain-text device sends a good hello and a reading to DEVICE_TLS_PORT, and a plain MQTT CONNECT goes to MQTT_TLS_PORT, then each is closed without an answer, nothing is stored, and the server goes on', async () => {
    const server = await startServer({ deviceTlsPort: 0, mqttTlsPort: 0 });
    const ca = fs.readFileSync(tlsFiles(server.dataDir).caCert, 'utf8');
    const id = uniq('plain-on-tls');
    const { token } = await addDevice(server, id);

    const line = await rawConnect(server.tlsPorts.tcp);
    const t0 = Date.now();
    line.write(`{"type":"hello","device":"${id}","token":"${token}"}\n{"type":"telemetry","id":"x-1","data":{"t":1}}\n`);
    expect(await closedAfter(line, t0)).toBeLessThan(2000);
    const lineBytes = Buffer.concat(line.received);
    // At most a TLS alert record (content type 21), never a line of the protocol.
    if (lineBytes.length > 0) expect(lineBytes[0]).toBe(0x15);
    expect(lineBytes.toString('latin1')).not.toMatch(/welcome|eyJ0eXBlIjoid2VsY29tZS/);

    const mq = await rawConnect(server.tlsPorts.mqtt);
    const t1 = Date.now();
    mq.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 60, clientId: id, username: id, password: Buffer.from(token) }));
    expect(await closedAfter(mq, t1)).toBeLessThan(2000);
    const mqBytes = Buffer.concat(mq.received);
    if (mqBytes.length > 0) expect(mqBytes[0]).toBe(0x15); // not a CONNACK (0x20)

    expect(await db(server).countTelemetry(id)).toBe(0);
    expect(await metric(server, 'sockpit_devices_online')).toBe(0);
    // The same device over TLS is fine.
    const good = track(await TlsDevice.hello(server.tlsPorts.tcp, { ca }, id, token));
    await good.roundTrip();
  });
});

describe('24. TLS handshakes that never finish', () => {
  test('when handshakes stall (silent, half a ClientHello, a ClientHello trickled a byte a second, a ClientHello and no answer), then each is dropped within HANDSHAKE_TIMEOUT_MS (10 s), and they hold places in the per-address cap until then', async () => {
    expect(HANDSHAKE_TIMEOUT_MS).toBe(10_000);
    const server = await startServer({ deviceTlsPort: 0, mqttTlsPort: 0, deviceMaxPerIp: 4 });
    const ca = fs.readFileSync(tlsFiles(server.dataDir).caCert, 'utf8');
    const id = uniq('after-stall');
    const { token } = await addDevice(server, id);
    const hello = await captureClientHello();

    const t0 = Date.now();
    const silent = await rawConnect(server.tlsPorts.tcp);
    const half = await rawConnect(server.tlsPorts.tcp);
    half.write(hello.subarray(0, Math.floor(hello.length / 2)));
    const trickle = await rawConnect(server.tlsPorts.mqtt); // the MQTT/TLS port shares the cap
    const noAnswer = await rawConnect(server.tlsPorts.tcp);
    noAnswer.write(hello); // the server answers with its ServerHello and waits for the client's next flight
    let i = 0;
    const timer = setInterval(() => {
      if (!trickle.destroyed && i < hello.length - 1) trickle.write(hello.subarray(i, ++i));
    }, 1000);
    const stalled = [silent, half, trickle, noAnswer];
    const closes = stalled.map((s) => closedAfter(s, t0));
    try {
      await sleep(500);
      // The address has its 4 places: a fifth connection, even a good device, is refused at once.
      const refusedBefore = await metric(server, 'sockpit_device_connections_refused_total');
      await expect(TlsDevice.connect(server.tlsPorts.tcp, { ca })).rejects.toThrow();
      expect(await metric(server, 'sockpit_device_connections_refused_total')).toBe(refusedBefore + 1);
      // Another address is not affected.
      const other = track(await TlsDevice.hello(server.tlsPorts.tcp, { ca, localAddress: '127.0.0.2' }, id, token));
      other.close();

      const times = await Promise.all(closes);
      for (const ms of times) {
        expect(ms).toBeGreaterThanOrEqual(HANDSHAKE_TIMEOUT_MS - 500);
        expect(ms).toBeLessThan(HANDSHAKE_TIMEOUT_MS + 2500);
      }
    } finally {
      clearInterval(timer);
    }
    // Their places are free again.
    const device = track(await TlsDevice.hello(server.tlsPorts.tcp, { ca }, id, token));
    await device.roundTrip();
    expect(await metric(server, 'sockpit_device_connections')).toBe(1);
  }, 30_000);
});

describe('24. TLS connections reset at once', () => {
  test('when clients reset their connections as soon as they open them (before the server learns their address), then none keeps a place in the caps: all DEVICE_MAX_CONNECTIONS places are there for devices afterwards', async () => {
    const places = 10;
    const server = await startServer({ deviceTlsPort: 0, mqttTlsPort: 0, deviceMaxConnections: places });
    const ca = fs.readFileSync(tlsFiles(server.dataDir).caCert, 'utf8');
    const devices = await Promise.all(Array.from({ length: places }, () => addDevice(server, uniq('after-resets'))));
    // Rounds of 100 resets on each TLS port.
    for (const port of [server.tlsPorts.tcp, server.tlsPorts.mqtt, server.tlsPorts.tcp, server.tlsPorts.mqtt]) {
      await Promise.all(
        Array.from({ length: 100 }, () =>
          new Promise<void>((resolve) => {
            const s = net.connect({ host: '127.0.0.1', port });
            s.on('error', () => resolve());
            s.on('close', () => resolve());
            s.on('connect', () => s.resetAndDestroy());
          }),
        ),
      );
    }
    await sleep(500);
    const connected = await Promise.all(devices.map((d) => TlsDevice.hello(server.tlsPorts.tcp, { ca }, d.id, d.token).then(track)));
    for (const d of connected) await d.roundTrip();
  });
});

describe('25. a client certificate nobody asked for', () => {
  test('when a device presents a client certificate from a CA the server never heard of, then the handshake still succeeds and the device works (the token is what counts)', async () => {
    const server = await startServer({ deviceTlsPort: 0, mqttTlsPort: 0 });
    const ca = fs.readFileSync(tlsFiles(server.dataDir).caCert, 'utf8');
    const id = uniq('client-cert');
    const { token } = await addDevice(server, id);
    const theirs = await otherCa();
    const clientCert = await issueServerCert(theirs, ['device.local']);

    const device = track(await TlsDevice.hello(server.tlsPorts.tcp, { ca, cert: clientCert.certPem, key: clientCert.keyPem }, id, token));
    device.send({ type: 'telemetry', id: 'c-1', data: { t: 1 } });
    expect(await device.next((m) => m.type === 'stored')).toEqual({ type: 'stored', id: 'c-1' });
    device.close();

    const m = await mqttsDevice(server.tlsPorts.mqtt, id, token, ca, { cert: clientCert.certPem, key: clientCert.keyPem });
    track({ close: () => m.end(true) });
    await m.publishAsync(`sockpit/${id}/telemetry`, JSON.stringify({ type: 'telemetry', id: 'c-2', data: { t: 2 } }), { qos: 1 });
    expect(await db(server).countTelemetry(id)).toBe(2);
  });
});

describe('27. certificates that change while devices are connected', () => {
  test('when the own server certificate comes due for renewal, then reload() issues a new one: the connected TLS device stays and keeps working, and new connections on every TLS port get the new certificate', async () => {
    // A DATA_DIR whose server certificate is 12 s away from its renewal date (30 days before it ends).
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-renew-'));
    const ca = await loadOrCreateCa(dataDir);
    const dueInS = 15;
    const old = await issueServerCert(ca, machineNames(null), new Date(), 30 + dueInS / 86_400);
    const files = tlsFiles(dataDir);
    fs.writeFileSync(files.cert, old.certPem);
    fs.writeFileSync(files.key, old.keyPem, { mode: 0o600 });
    const oldSerial = new crypto.X509Certificate(old.certPem).serialNumber;

    const server = await startServer({ dataDir, deviceTlsPort: 0, mqttTlsPort: 0, httpsPort: 0 });
    const id = uniq('renewal');
    const { token } = await addDevice(server, id);
    const device = track(await TlsDevice.hello(server.tlsPorts.tcp, { ca: ca.certPem }, id, token));
    expect(device.certificate.serialNumber).toBe(oldSerial); // the one on disk was still good at start

    await server.app.reloadTls();
    expect((await presentedCertificate(server.tlsPorts.tcp)).serialNumber).toBe(oldSerial); // not due yet: kept

    const due = Date.parse(new crypto.X509Certificate(old.certPem).validTo) - 30 * 86_400_000;
    await sleep(Math.max(0, due - Date.now()) + 1100);
    await server.app.reloadTls(); // what the 12-hourly check does
    for (const port of [server.tlsPorts.tcp, server.tlsPorts.mqtt, server.tlsPorts.https]) {
      const now = await presentedCertificate(port);
      expect(now.serialNumber).not.toBe(oldSerial);
      expect(now.verify(new crypto.X509Certificate(ca.certPem).publicKey)).toBe(true);
      expect(Date.parse(now.validTo) - Date.now()).toBeGreaterThan(390 * 86_400_000);
    }
    expect(new crypto.X509Certificate(fs.readFileSync(files.cert)).serialNumber).not.toBe(oldSerial);

    // The device connected before the renewal is still there, on its old certificate, and works.
    expect(device.closed).toBe(false);
    expect(device.certificate.serialNumber).toBe(oldSerial);
    device.send({ type: 'telemetry', id: 'r-1', data: { t: 1 } });
    expect(await device.next((m) => m.type === 'stored')).toEqual({ type: 'stored', id: 'r-1' });
    const fresh = track(await TlsDevice.connect(server.tlsPorts.tcp, { ca: ca.certPem }));
    expect(fresh.certificate.serialNumber).not.toBe(oldSerial);
  }, 40_000);

  test('when the TLS_CERT and TLS_KEY files are replaced, then the change is picked up by itself: new connections get the new certificate and the connected device stays', async () => {
    const theirCa = await otherCa();
    const names = ['localhost', '127.0.0.1'];
    const first = await certificateFor(theirCa, names, -1, 90);
    const files = writePair(first);
    const server = await startServer({ deviceTlsPort: 0, tlsCert: files.cert, tlsKey: files.key });
    const id = uniq('watched');
    const { token } = await addDevice(server, id);
    const device = track(await TlsDevice.hello(server.tlsPorts.tcp, { ca: theirCa.certPem }, id, token));
    const firstSerial = device.certificate.serialNumber;
    expect(firstSerial).toBe(new crypto.X509Certificate(first.certPem).serialNumber);

    const second = await certificateFor(theirCa, names, -1, 180);
    const secondSerial = new crypto.X509Certificate(second.certPem).serialNumber;
    writePair(second, files.dir);
    await until(async () => (await presentedCertificate(server.tlsPorts.tcp)).serialNumber === secondSerial, 10_000, 'the new certificate');
    expect(device.closed).toBe(false);
    await device.roundTrip();
    expect(device.certificate.serialNumber).toBe(firstSerial);
  }, 20_000);
});
