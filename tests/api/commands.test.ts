/** REST API, commands (docs/api.md, "Commands"): send, wait for the answer, list; live on the page. */
import { RawDevice } from '../support/device';
import { addDevice, closeAllServers, connectSocket, createUserAndLogin, emitAck, nextEvent, startServer, TestServer } from '../support/server';
import { clusterAvailable, redisDb, startInstances } from '../support/cluster';
import { api, expectProblem, keyFor, uniq } from './support';

let server: TestServer;

beforeAll(async () => {
  server = await startServer({ commandTimeoutS: 2 });
});

afterAll(async () => {
  await closeAllServers();
});

/** A device that acks every command after `delayMs`, with a result. */
async function ackingDevice(id: string, token: string, delayMs = 0): Promise<RawDevice> {
  const dev = await RawDevice.hello(server.devicePort, id, token);
  let buf = '';
  dev.socket.on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let m: Record<string, unknown>;
      try {
        m = JSON.parse(line.startsWith('{') ? line : Buffer.from(line, 'base64').toString('utf8'));
      } catch {
        continue;
      }
      if (m.type !== 'fromservertonode') continue;
      setTimeout(() => {
        if (!dev.closed) dev.send({ type: 'ack', id: m.id, ok: true, result: { relay: 'on', action: m.action } });
      }, delayMs);
    }
  });
  return dev;
}

describe('POST /api/v1/devices/{id}/commands', () => {
  test('when an operator key sends togglerele to an online device, then it is 202 with the command `sent`, and the page watching the device sees it live with the key\'s user as sender', async () => {
    const a = await addDevice(server, uniq('cmd'));
    const { key, user } = await keyFor(server, 'operator');
    const dev = await ackingDevice(a.id, a.token);
    const cookie = await createUserAndLogin(server, { username: uniq('watcher'), password: 'correct horse', role: 'viewer' });
    const socket = await connectSocket(server, cookie);
    try {
      await emitAck(socket, 'device:watch', { deviceId: a.id });
      const live = nextEvent(socket, 'command:status', (c: { status: string; deviceId: string }) => c.deviceId === a.id && c.status === 'acked');
      const r = await api(server, `/api/v1/devices/${a.id}/commands`, { key, body: { action: 'togglerele' } });
      expect(r.status).toBe(202);
      expect(r.json).toMatchObject({ deviceId: a.id, action: 'togglerele', status: 'sent', sentBy: user.username, params: null });
      expect(r.headers.get('location')).toBe(`/api/v1/commands/${r.json.id}`);
      const seen = await live;
      expect(seen).toMatchObject({ id: r.json.id, sentBy: user.username, result: { relay: 'on', action: 'togglerele' } });
    } finally {
      socket.close();
      dev.close();
    }
  });

  test('when the device is offline, then the command is 202 `queued`, and it is delivered when the device connects', async () => {
    const a = await addDevice(server, uniq('offline'));
    const { key } = await keyFor(server, 'operator');
    const r = await api(server, `/api/v1/devices/${a.id}/commands`, { key, body: { action: 'changesetting', params: { interval_ms: 5000 } } });
    expect(r.status).toBe(202);
    expect(r.json).toMatchObject({ status: 'queued', params: { interval_ms: 5000 } });
    const dev = await RawDevice.hello(server.devicePort, a.id, a.token);
    try {
      expect(await dev.next((m) => m.type === 'fromservertonode')).toMatchObject({ id: r.json.id, action: 'changesetting', params: { interval_ms: 5000 } });
    } finally {
      dev.close();
    }
  });

  test('when a viewer key sends a command, then it is 403 and nothing is sent', async () => {
    const a = await addDevice(server, uniq('viewer'));
    const { key } = await keyFor(server, 'viewer');
    expectProblem(await api(server, `/api/v1/devices/${a.id}/commands`, { key, body: { action: 'togglerele' } }), 403, /operator/);
    expect(await server.app.storage.listCommands(a.id, 10)).toEqual([]);
  });

  test('when the device does not exist, then it is 404', async () => {
    const { key } = await keyFor(server, 'operator');
    expectProblem(await api(server, '/api/v1/devices/ghost/commands', { key, body: { action: 'togglerele' } }), 404, /ghost/);
  });

  test.each([
    ['an unknown action', { action: 'selfdestruct' }, /action/],
    ['changesetting without params', { action: 'changesetting' }, /changesetting needs params/],
    ['a nested param', { action: 'changesetting', params: { a: { b: 1 } } }, /params/],
    ['too many params', { action: 'changesetting', params: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, i])) }, /at most 16/],
  ])('when the body has %s, then it is 400', async (_what, body, detail) => {
    const a = await addDevice(server, uniq('badcmd'));
    const { key } = await keyFor(server, 'operator');
    expectProblem(await api(server, `/api/v1/devices/${a.id}/commands`, { key, body }), 400, detail);
  });
});

describe('GET /api/v1/commands/{id}?wait=S', () => {
  test('when a script sends a command and waits, then the answer comes once the device acked, with its result, not after the wait', async () => {
    const a = await addDevice(server, uniq('wait'));
    const { key } = await keyFor(server, 'operator');
    const dev = await ackingDevice(a.id, a.token, 700);
    try {
      const sent = await api(server, `/api/v1/devices/${a.id}/commands`, { key, body: { action: 'togglerele' } });
      const t0 = Date.now();
      const r = await api(server, `/api/v1/commands/${sent.json.id}?wait=20`, { key });
      const took = Date.now() - t0;
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ id: sent.json.id, status: 'acked', result: { relay: 'on' } });
      expect(took).toBeGreaterThan(300);
      expect(took).toBeLessThan(5000);
    } finally {
      dev.close();
    }
  });

  test('when the device never answers, then the wait ends with the final `timeout` status', async () => {
    const a = await addDevice(server, uniq('silent'));
    const { key } = await keyFor(server, 'operator');
    const dev = await RawDevice.hello(server.devicePort, a.id, a.token);
    try {
      const sent = await api(server, `/api/v1/devices/${a.id}/commands`, { key, body: { action: 'togglerele' } });
      const r = await api(server, `/api/v1/commands/${sent.json.id}?wait=10`, { key });
      expect(r.json).toMatchObject({ status: 'timeout', error: expect.any(String) });
    } finally {
      dev.close();
    }
  });

  test('when the wait runs out first, then it is 200 with the command as it is', async () => {
    const a = await addDevice(server, uniq('short'));
    const { key } = await keyFor(server, 'operator');
    const sent = await api(server, `/api/v1/devices/${a.id}/commands`, { key, body: { action: 'togglerele' } });
    const t0 = Date.now();
    const r = await api(server, `/api/v1/commands/${sent.json.id}?wait=1`, { key });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(r.json).toMatchObject({ id: sent.json.id, status: 'queued' });
  });

  test('when the command is final already or no wait is asked, then the answer is at once', async () => {
    const a = await addDevice(server, uniq('now'));
    const { key } = await keyFor(server, 'viewer');
    const op = await keyFor(server, 'operator');
    const sent = await api(server, `/api/v1/devices/${a.id}/commands`, { key: op.key, body: { action: 'togglerele' } });
    const t0 = Date.now();
    expect((await api(server, `/api/v1/commands/${sent.json.id}`, { key })).json.status).toBe('queued');
    expect(Date.now() - t0).toBeLessThan(900);
  });

  test.each([
    ['a 30-minute wait', 'wait=1800', /wait: must be at most 30 seconds/],
    ['a negative wait', 'wait=-1', /wait/],
    ['a wait that is no number', 'wait=soon', /wait/],
  ])('when the query has %s, then it is 400', async (_what, q, detail) => {
    const { key } = await keyFor(server, 'viewer');
    expectProblem(await api(server, `/api/v1/commands/whatever?${q}`, { key }), 400, detail);
  });

  test('when the command\'s device is removed during the wait, then the answer is 404, as without a wait', async () => {
    const a = await addDevice(server, uniq('removed'));
    const op = await keyFor(server, 'operator');
    const sent = await api(server, `/api/v1/devices/${a.id}/commands`, { key: op.key, body: { action: 'togglerele' } });
    expect(sent.json.status).toBe('queued');
    const waiting = api(server, `/api/v1/commands/${sent.json.id}?wait=2`, { key: op.key });
    await new Promise((r) => setTimeout(r, 300));
    await server.app.storage.deleteDevice(a.id);
    expectProblem(await waiting, 404);
    expectProblem(await api(server, `/api/v1/commands/${sent.json.id}`, { key: op.key }), 404);
  });

  test('when a wait runs on a single instance, then it costs no polling: storage is read at the start and at the end only', async () => {
    const a = await addDevice(server, uniq('nopoll'));
    const op = await keyFor(server, 'operator');
    const sent = await api(server, `/api/v1/devices/${a.id}/commands`, { key: op.key, body: { action: 'togglerele' } });
    const reads = jest.spyOn(server.app.storage, 'getCommand');
    try {
      const r = await api(server, `/api/v1/commands/${sent.json.id}?wait=3`, { key: op.key });
      expect(r.json).toMatchObject({ id: sent.json.id, status: 'queued' });
      // The first read, one right after subscribing (it may have changed in between), one at the end.
      expect(reads.mock.calls.filter(([id]) => id === sent.json.id).length).toBeLessThanOrEqual(3);
    } finally {
      reads.mockRestore();
    }
  });

  test('when 15 clients wait at once, then no MaxListenersExceededWarning is printed', async () => {
    const a = await addDevice(server, uniq('many'));
    const op = await keyFor(server, 'operator');
    const sent = await api(server, `/api/v1/devices/${a.id}/commands`, { key: op.key, body: { action: 'togglerele' } });
    // Node prints the warning on the process's stderr (jest's sandboxed `process` hears no 'warning' event).
    const printed: string[] = [];
    const stderr = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      printed.push(String(chunk));
      return true;
    });
    try {
      const answers = await Promise.all(Array.from({ length: 15 }, () => api(server, `/api/v1/commands/${sent.json.id}?wait=1`, { key: op.key })));
      expect(answers.map((r) => r.status)).toEqual(Array(15).fill(200));
      await new Promise((r) => setImmediate(r));
    } finally {
      stderr.mockRestore();
    }
    expect(printed.filter((line) => /MaxListenersExceeded/.test(line))).toEqual([]);
  });

  test('when the command does not exist, then it is 404, with or without a wait', async () => {
    const { key } = await keyFor(server, 'viewer');
    expectProblem(await api(server, '/api/v1/commands/no-such-command', { key }), 404);
    expectProblem(await api(server, '/api/v1/commands/no-such-command?wait=5', { key }), 404);
  });
});

describe('GET /api/v1/devices/{id}/commands', () => {
  test('when a viewer lists a device\'s commands, then they come newest first, at most `limit`', async () => {
    const a = await addDevice(server, uniq('list'));
    const op = await keyFor(server, 'operator');
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      ids.push((await api(server, `/api/v1/devices/${a.id}/commands`, { key: op.key, body: { action: 'togglerele' } })).json.id);
      await new Promise((r) => setTimeout(r, 5));
    }
    const { key } = await keyFor(server, 'viewer');
    const r = await api(server, `/api/v1/devices/${a.id}/commands?limit=2`, { key });
    expect(r.status).toBe(200);
    expect(r.json.commands.map((c: { id: string }) => c.id)).toEqual([ids[2], ids[1]]);
    expectProblem(await api(server, `/api/v1/devices/${a.id}/commands?limit=1000`, { key }), 400, /limit/);
    expectProblem(await api(server, '/api/v1/devices/ghost/commands', { key }), 404);
  });
});

describe('waiting on another instance (multi-instance mode)', () => {
  // Several instances need Redis and a shared PostgreSQL (TEST_REDIS_URL, the postgres project).
  const testCluster = clusterAvailable ? test : test.skip;

  testCluster('when the device answers on another instance than the one holding the wait, then the wait still ends with `acked` (storage is re-read every second)', async () => {
    // b is not told of a change a makes (the device is a's): it has to re-read storage.
    const [a, b] = (await startInstances(2, await redisDb(12))) as [TestServer, TestServer];
    const d = await addDevice(a, uniq('elsewhere'));
    const { key } = await keyFor(a, 'operator');
    const dev = await RawDevice.hello(a.devicePort, d.id, d.token);
    try {
      const sent = await api(a, `/api/v1/devices/${d.id}/commands`, { key, body: { action: 'togglerele' } });
      expect(sent.json.status).toBe('sent');
      const cmd = await dev.next((m) => m.type === 'fromservertonode');
      setTimeout(() => dev.send({ type: 'ack', id: cmd.id, ok: true, result: 'done' }), 1500);
      const t0 = Date.now();
      const r = await api(b, `/api/v1/commands/${sent.json.id}?wait=20`, { key });
      expect(r.json).toMatchObject({ status: 'acked', result: 'done' });
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      dev.close();
    }
  });
});
