/** REST API, devices (docs/api.md): list, one, add, rotate the token, remove; roles and bad input. */
import { RawDevice } from '../support/device';
import { addDevice, closeAllServers, startServer, TestServer } from '../support/server';
import { api, expectProblem, keyFor, uniq } from './support';

let server: TestServer;

beforeAll(async () => {
  server = await startServer();
});

afterAll(async () => {
  await closeAllServers();
});

describe('GET /api/v1/devices and /devices/{id}', () => {
  test('when a viewer key lists the devices, then it gets each as the dashboard sees it, online state and latest reading included', async () => {
    const { key } = await keyFor(server, 'viewer');
    const a = await addDevice(server, uniq('list'), 'Greenhouse');
    const dev = await RawDevice.hello(server.devicePort, a.id, a.token);
    try {
      dev.send({ type: 'telemetry', id: 'm1', data: { temp: 21.5 } });
      await dev.next((m) => m.type === 'stored');
      const r = await api(server, '/api/v1/devices', { key });
      expect(r.status).toBe(200);
      const mine = (r.json.devices as any[]).find((d) => d.id === a.id);
      expect(mine).toMatchObject({ id: a.id, name: 'Greenhouse', online: true, latest: { temp: 21.5 }, firmware: 'test/1' });
      expect(mine.transport).toBe('tcp');
      const one = await api(server, `/api/v1/devices/${encodeURIComponent(a.id)}`, { key });
      expect(one.status).toBe(200);
      expect(one.json).toEqual(mine);
    } finally {
      dev.close();
    }
  });

  test('when the device does not exist, then GET /devices/{id} is a 404 problem', async () => {
    const { key } = await keyFor(server, 'viewer');
    expectProblem(await api(server, '/api/v1/devices/no-such-device', { key }), 404, /no-such-device/);
  });
});

describe('POST /api/v1/devices', () => {
  test('when an admin key adds a device, then it is 201 with the token once, and the token opens a hello', async () => {
    const { key } = await keyFor(server, 'admin');
    const id = uniq('added');
    const r = await api(server, '/api/v1/devices', { key, body: { id, name: 'Barn' } });
    expect(r.status).toBe(201);
    expect(r.json).toEqual({ id, name: 'Barn', token: expect.stringMatching(/^\S{16,}$/) });
    expect(r.headers.get('location')).toBe(`/api/v1/devices/${id}`);
    const dev = await RawDevice.hello(server.devicePort, id, r.json.token);
    dev.close();
    // Shown once: reading the device back never shows the token.
    expect((await api(server, `/api/v1/devices/${id}`, { key })).text).not.toContain(r.json.token);
  });

  test('when the id exists already, then it is 409', async () => {
    const { key } = await keyFor(server, 'admin');
    const { id } = await addDevice(server, uniq('dup'));
    expectProblem(await api(server, '/api/v1/devices', { key, body: { id } }), 409, /already exists/);
  });

  test('when an operator key adds a device, then it is 403 and nothing is added', async () => {
    const { key } = await keyFor(server, 'operator');
    const id = uniq('nope');
    expectProblem(await api(server, '/api/v1/devices', { key, body: { id } }), 403, /admin/);
    expect(await server.app.storage.getDevice(id)).toBeNull();
  });

  test('when an admin user made a key with the operator role, then the key cannot add devices either', async () => {
    const { key } = await keyFor(server, 'admin', 'operator');
    expectProblem(await api(server, '/api/v1/devices', { key, body: { id: uniq('nope') } }), 403, /acts as operator/);
  });

  test.each([
    ['a bad id', { id: 'has spaces' }, /body\.id/],
    ['an id of only dots (a path a browser resolves away)', { id: '..' }, /body\.id/],
    ['no id', { name: 'x' }, /body\.id/],
    ['an unknown field', { id: 'ok-id', colour: 'red' }, /colour|unrecognized/i],
    ['a name over 100 characters', { id: 'ok-id2', name: 'x'.repeat(101) }, /body\.name/],
    ['an array', [1, 2], /body/],
  ])('when the body has %s, then it is 400 naming the field', async (_what, body, detail) => {
    const { key } = await keyFor(server, 'admin');
    const r = await api(server, '/api/v1/devices', { key, body });
    expectProblem(r, 400, detail);
    expect(r.json.issues.length).toBeGreaterThan(0);
  });

  test('when the body is not valid JSON, then it is 400', async () => {
    const { key } = await keyFor(server, 'admin');
    expectProblem(await api(server, '/api/v1/devices', { key, raw: '{"id": "x",', headers: { 'content-type': 'application/json' } }), 400, /not valid JSON/);
  });

  test('when the body is not JSON at all (a form, text), then it is 415', async () => {
    const { key } = await keyFor(server, 'admin');
    expectProblem(await api(server, '/api/v1/devices', { key, raw: 'id=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, /JSON/);
    expectProblem(await api(server, '/api/v1/devices', { key, raw: 'hello', headers: { 'content-type': 'text/plain' } }), 415, /JSON/);
  });

  test('when there is no body, then it is 400', async () => {
    const { key } = await keyFor(server, 'admin');
    expectProblem(await api(server, '/api/v1/devices', { key, method: 'POST' }), 400, /JSON body/);
  });

  test('when the body is larger than 16 KiB, then it is 413', async () => {
    const { key } = await keyFor(server, 'admin');
    expectProblem(await api(server, '/api/v1/devices', { key, body: { id: 'big', name: 'x'.repeat(20_000) } }), 413, /16 KiB/);
  });
});

describe('POST /api/v1/devices/{id}/token and DELETE /api/v1/devices/{id}', () => {
  test('when an admin key rotates a token, then it is 200 with the new token, the connected device is dropped and only the new token works', async () => {
    const { key } = await keyFor(server, 'admin');
    const a = await addDevice(server, uniq('rot'));
    const dev = await RawDevice.hello(server.devicePort, a.id, a.token);
    const r = await api(server, `/api/v1/devices/${a.id}/token`, { key, method: 'POST' });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ id: a.id, token: expect.stringMatching(/^\S{16,}$/) });
    expect(r.json.token).not.toBe(a.token);
    await dev.waitClosed();
    const again = await RawDevice.hello(server.devicePort, a.id, r.json.token);
    again.close();
  });

  test('when the device to rotate or remove does not exist, then it is 404', async () => {
    const { key } = await keyFor(server, 'admin');
    expectProblem(await api(server, '/api/v1/devices/ghost/token', { key, method: 'POST' }), 404);
    expectProblem(await api(server, '/api/v1/devices/ghost', { key, method: 'DELETE' }), 404);
  });

  test('when an admin key removes a device, then it is 204, the device is disconnected and gone', async () => {
    const { key } = await keyFor(server, 'admin');
    const a = await addDevice(server, uniq('rm'));
    const dev = await RawDevice.hello(server.devicePort, a.id, a.token);
    const r = await api(server, `/api/v1/devices/${a.id}`, { key, method: 'DELETE' });
    expect(r.status).toBe(204);
    expect(r.text).toBe('');
    await dev.waitClosed();
    expectProblem(await api(server, `/api/v1/devices/${a.id}`, { key }), 404);
  });

  test('when an operator key rotates or removes, then it is 403 and the device keeps its token', async () => {
    const { key } = await keyFor(server, 'operator');
    const a = await addDevice(server, uniq('keep'));
    expectProblem(await api(server, `/api/v1/devices/${a.id}/token`, { key, method: 'POST' }), 403);
    expectProblem(await api(server, `/api/v1/devices/${a.id}`, { key, method: 'DELETE' }), 403);
    const dev = await RawDevice.hello(server.devicePort, a.id, a.token);
    dev.close();
  });
});
