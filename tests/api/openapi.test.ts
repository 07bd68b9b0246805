/**
 * The served OpenAPI document (GET /api/v1/openapi.json) against the real answers: every response
 * below is validated with Ajv against the schema the document gives for its path, method, status
 * and media type, so the document cannot drift from the code. And /api/docs shows it from the
 * app itself under the strict CSP.
 */
import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { RawDevice } from '../support/device';
import { addDevice, closeAllServers, startServer, TestServer } from '../support/server';
import { Answer, api, browser, keyFor, uniq } from './support';

let server: TestServer;
let doc: any;
let ajv: Ajv2020;
const checked = new Set<string>();

beforeAll(async () => {
  server = await startServer({ commandTimeoutS: 2 });
  const r = await fetch(server.baseUrl + '/api/v1/openapi.json');
  expect(r.status).toBe(200);
  doc = await r.json();
  ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addSchema(doc, 'openapi.json');
});

afterAll(async () => {
  await closeAllServers();
});

const pointer = (...parts: string[]) => parts.map((p) => p.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');

/** Validates a real answer against the document: its status must be listed, and its body must match the schema for its media type. */
function conforms(method: string, path: string, a: Answer): void {
  const op = doc.paths[path]?.[method];
  expect({ path, method, documented: Boolean(op) }).toEqual({ path, method, documented: true });
  const resp = op.responses[String(a.status)];
  expect({ path, method, status: a.status, documented: Boolean(resp) }).toEqual({ path, method, status: a.status, documented: true });
  checked.add(`${method} ${path} ${a.status}`);
  if (!resp.content) {
    expect(a.text).toBe('');
    return;
  }
  const type = (a.headers.get('content-type') ?? '').split(';')[0]!.trim();
  expect(Object.keys(resp.content)).toContain(type);
  if (type === 'text/csv') return;
  const ref = `openapi.json#/${pointer('paths', path, method, 'responses', String(a.status), 'content', type, 'schema')}`;
  const validate = ajv.compile({ $ref: ref });
  const ok = validate(JSON.parse(a.text));
  if (!ok) throw new Error(`${method.toUpperCase()} ${path} ${a.status} does not match the document: ${ajv.errorsText(validate.errors)}\n${a.text.slice(0, 500)}`);
}

test('the document is OpenAPI 3.1, documents every endpoint of docs/api.md, and is served without login', () => {
  expect(doc.openapi).toMatch(/^3\.1\./);
  expect(doc.servers).toEqual([{ url: '/api/v1' }]);
  const ops = Object.entries(doc.paths).flatMap(([p, item]) => Object.keys(item as object).map((m) => `${m.toUpperCase()} ${p}`));
  expect(ops.sort()).toEqual(
    [
      'GET /devices',
      'GET /devices/{id}',
      'POST /devices',
      'POST /devices/{id}/token',
      'DELETE /devices/{id}',
      'GET /devices/{id}/telemetry',
      'POST /devices/{id}/commands',
      'GET /devices/{id}/commands',
      'GET /commands/{id}',
      'GET /keys',
      'POST /keys',
      'DELETE /keys/{id}',
    ].sort(),
  );
  expect(doc.components.securitySchemes.apiKey).toMatchObject({ type: 'http', scheme: 'bearer' });
  expect(doc.components.schemas.Device.properties.transport).toBeDefined();
});

test('real answers of every endpoint, successes and problems, match the served document', async () => {
  const admin = await keyFor(server, 'admin');
  const viewer = await keyFor(server, 'viewer');
  const id = uniq('doc');
  const added = await api(server, '/api/v1/devices', { key: admin.key, body: { id, name: 'Doc' } });
  conforms('post', '/devices', added);
  const dev = await RawDevice.hello(server.devicePort, id, added.json.token);
  try {
    dev.send({ type: 'telemetry', id: 'r1', data: { temp: 20, gps: { lat: 1 } } });
    await dev.next((m) => m.type === 'stored');
    conforms('get', '/devices', await api(server, '/api/v1/devices', { key: viewer.key }));
    conforms('get', '/devices/{id}', await api(server, `/api/v1/devices/${id}`, { key: viewer.key }));
    conforms('get', '/devices/{id}', await api(server, '/api/v1/devices/ghost', { key: viewer.key }));
    conforms('get', '/devices/{id}/telemetry', await api(server, `/api/v1/devices/${id}/telemetry`, { key: viewer.key }));
    conforms('get', '/devices/{id}/telemetry', await api(server, `/api/v1/devices/${id}/telemetry?format=csv`, { key: viewer.key }));
    conforms('get', '/devices/{id}/telemetry', await api(server, `/api/v1/devices/${id}/telemetry?limit=1000000`, { key: viewer.key }));

    const sent = await api(server, `/api/v1/devices/${id}/commands`, { key: admin.key, body: { action: 'changesetting', params: { interval_ms: 500, mode: 'eco', on: true } } });
    conforms('post', '/devices/{id}/commands', sent);
    const cmd = await dev.next((m) => m.type === 'fromservertonode');
    dev.send({ type: 'ack', id: cmd.id, ok: true, result: { applied: ['interval_ms'] } });
    conforms('get', '/commands/{id}', await api(server, `/api/v1/commands/${sent.json.id}?wait=5`, { key: viewer.key }));
    conforms('get', '/commands/{id}', await api(server, '/api/v1/commands/nope', { key: viewer.key }));
    conforms('get', '/commands/{id}', await api(server, '/api/v1/commands/nope?wait=1800', { key: viewer.key }));
    conforms('get', '/devices/{id}/commands', await api(server, `/api/v1/devices/${id}/commands`, { key: viewer.key }));
    conforms('post', '/devices/{id}/commands', await api(server, `/api/v1/devices/${id}/commands`, { key: viewer.key, body: { action: 'togglerele' } }));

    conforms('post', '/devices', await api(server, '/api/v1/devices', { key: admin.key, body: { id } }));
    conforms('post', '/devices', await api(server, '/api/v1/devices', { key: admin.key, body: { id: 'bad id' } }));
    conforms('post', '/devices', await api(server, '/api/v1/devices', { key: admin.key, raw: 'x', headers: { 'content-type': 'text/plain' } }));
    conforms('post', '/devices', await api(server, '/api/v1/devices', { key: admin.key, body: { id: 'x', name: 'y'.repeat(20_000) } }));
    conforms('post', '/devices', await api(server, '/api/v1/devices', { key: 'spk_wrong' }));
    conforms('post', '/devices/{id}/token', await api(server, `/api/v1/devices/${id}/token`, { key: admin.key, method: 'POST' }));
    await dev.waitClosed();
  } finally {
    dev.close();
  }
  conforms('delete', '/devices/{id}', await api(server, `/api/v1/devices/${id}`, { key: viewer.key, method: 'DELETE' }));
  conforms('delete', '/devices/{id}', await api(server, `/api/v1/devices/${id}`, { key: admin.key, method: 'DELETE' }));
  conforms('delete', '/devices/{id}', await api(server, `/api/v1/devices/${id}`, { key: admin.key, method: 'DELETE' }));

  const b = await browser(server, 'operator');
  const made = await api(server, '/api/v1/keys', { cookie: b.cookie, csrf: b.csrf, body: { name: 'doc', role: 'viewer' } });
  conforms('post', '/keys', made);
  conforms('post', '/keys', await api(server, '/api/v1/keys', { cookie: b.cookie, csrf: b.csrf, body: { name: 'doc', role: 'admin' } }));
  conforms('get', '/keys', await api(server, '/api/v1/keys', { cookie: b.cookie }));
  conforms('get', '/keys', await api(server, '/api/v1/keys', { key: viewer.key }));
  conforms('delete', '/keys/{id}', await api(server, `/api/v1/keys/${made.json.id}`, { cookie: b.cookie, csrf: b.csrf, method: 'DELETE' }));
  conforms('delete', '/keys/{id}', await api(server, `/api/v1/keys/${made.json.id}`, { cookie: b.cookie, csrf: b.csrf, method: 'DELETE' }));

  // Every documented success status was seen at least once.
  for (const [p, item] of Object.entries(doc.paths)) {
    for (const [m, op] of Object.entries(item as Record<string, { responses: Record<string, unknown> }>)) {
      const success = Object.keys(op.responses).find((s) => s.startsWith('2'))!;
      expect(checked).toContain(`${m} ${p} ${success}`);
    }
  }
}, 60_000);

test('every operation\'s documented problems include the 400s it answers: a credential-named query parameter, an id too long, a body it does not take', async () => {
  const admin = await keyFor(server, 'admin');
  const b = await browser(server, 'admin');
  const auth = (p: string) => (p.startsWith('/keys') ? { cookie: b.cookie, csrf: b.csrf } : { key: admin.key });
  const long = 'x'.repeat(301);
  for (const [p, item] of Object.entries(doc.paths)) {
    for (const m of Object.keys(item as object)) {
      const url = `/api/v1${p.replace('{id}', 'ghost')}`;
      const method = m.toUpperCase();
      // Refused before anything else, whoever asks.
      const refused = await api(server, `${url}?access_token=x`, { method });
      expect({ m, p, status: refused.status }).toEqual({ m, p, status: 400 });
      conforms(m, p, refused);
      if (p.includes('{id}')) conforms(m, p, await api(server, `/api/v1${p.replace('{id}', long)}`, { ...auth(p), method }));
      // An operation without a body ignores one (no 413 or 415 it does not document).
      if (method !== 'GET' && !(item as Record<string, { requestBody?: unknown }>)[m]!.requestBody) {
        conforms(m, p, await api(server, url, { ...auth(p), method, raw: 'x'.repeat(20_000), headers: { 'content-type': 'application/json; charset=latin1' } }));
      }
    }
  }
  for (const [p, status] of [
    ['get /devices/{id}', 400],
    ['delete /devices/{id}', 400],
    ['post /devices/{id}/token', 400],
    ['get /devices', 400],
  ] as const) {
    expect(checked).toContain(`${p} ${status}`);
  }
}, 60_000);

test('/api/docs renders the document from the app itself: its own script files, no inline script, the strict CSP', async () => {
  const page = await fetch(server.baseUrl + '/api/docs');
  expect(page.status).toBe(200);
  const html = await page.text();
  const csp = page.headers.get('content-security-policy') ?? '';
  expect(csp).toContain("script-src 'self'");
  expect(csp).not.toContain('unsafe-inline');
  const scripts = [...html.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)];
  expect(scripts.length).toBeGreaterThan(0);
  for (const [, attrs, body] of scripts) {
    expect(body!.trim()).toBe('');
    expect(attrs).toMatch(/src="\/api\/docs\/[\w.-]+"/);
  }
  expect(html).not.toMatch(/https?:\/\//);
  for (const src of [...html.matchAll(/(?:src|href)="(\/api\/docs\/[^"]+)"/g)].map((m) => m[1]!)) {
    const r = await fetch(server.baseUrl + src);
    expect({ src, status: r.status }).toEqual({ src, status: 200 });
  }
  expect(await (await fetch(server.baseUrl + '/api/docs/init.js')).text()).toContain('/api/v1/openapi.json');
  expect((await fetch(server.baseUrl + '/api/docs/package.json')).status).toBe(404);
});
