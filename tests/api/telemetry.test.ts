/** REST API, telemetry out (docs/api.md, "Telemetry"): ranges, JSON and CSV, streaming, bad input. */
import http from 'node:http';
import { parse } from 'csv-parse/sync';
import type { TelemetryRow } from '../../server/storage';
import { addDevice, closeAllServers, startServer, TestServer } from '../support/server';
import { api, expectProblem, keyFor, uniq } from './support';

let server: TestServer;
let key: string;

beforeAll(async () => {
  server = await startServer();
  ({ key } = await keyFor(server, 'viewer'));
});

afterAll(async () => {
  await closeAllServers();
});

const T0 = Date.parse('2024-05-01T10:00:00Z');

async function deviceWith(rows: { ts: number; data: Record<string, unknown> }[]): Promise<string> {
  const { id } = await addDevice(server, uniq('tele'));
  const batch: TelemetryRow[] = rows.map((r, i) => ({ deviceId: id, msgId: `m${i}`, ts: r.ts, data: r.data }));
  for (let i = 0; i < batch.length; i += 5000) await server.app.storage.insertTelemetry(batch.slice(i, i + 5000));
  return id;
}

describe('JSON', () => {
  test('when no range is given, then the readings come oldest first with ts, an ISO time and the data, and a count', async () => {
    const id = await deviceWith([
      { ts: T0 + 2000, data: { temp: 22 } },
      { ts: T0, data: { temp: 21, hum: 40 } },
      { ts: T0 + 1000, data: { temp: 21.5 } },
    ]);
    const r = await api(server, `/api/v1/devices/${id}/telemetry`, { key });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    expect(r.json).toEqual({
      deviceId: id,
      from: 0,
      to: expect.any(Number),
      readings: [
        { ts: T0, time: '2024-05-01T10:00:00.000Z', data: { temp: 21, hum: 40 } },
        { ts: T0 + 1000, time: '2024-05-01T10:00:01.000Z', data: { temp: 21.5 } },
        { ts: T0 + 2000, time: '2024-05-01T10:00:02.000Z', data: { temp: 22 } },
      ],
      count: 3,
    });
  });

  test('when from and to are given as unix ms or ISO 8601 (with Z, an offset, or a date), then both ends are inclusive', async () => {
    const id = await deviceWith(Array.from({ length: 10 }, (_, i) => ({ ts: T0 + i * 60_000, data: { i } })));
    const ids = async (q: string) => ((await api(server, `/api/v1/devices/${id}/telemetry?${q}`, { key })).json.readings as { data: { i: number } }[]).map((x) => x.data.i);
    expect(await ids(`from=${T0 + 60_000}&to=${T0 + 180_000}`)).toEqual([1, 2, 3]);
    expect(await ids('from=2024-05-01T10:02:00Z&to=2024-05-01T10:04:00.000Z')).toEqual([2, 3, 4]);
    expect(await ids(`from=${encodeURIComponent('2024-05-01T12:05:00+02:00')}&to=2024-05-01T10:06Z`)).toEqual([5, 6]);
    // An unencoded + arrives as a space; it is still read as the offset it was.
    expect(await ids('from=2024-05-01T12:08:00+02:00')).toEqual([8, 9]);
    expect(await ids('from=2024-05-01&to=2024-05-02')).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(await ids('limit=4')).toEqual([0, 1, 2, 3]);
    expect(await ids('from=2024-05-02')).toEqual([]);
  });

  test('when the device does not exist, then it is 404', async () => {
    expectProblem(await api(server, '/api/v1/devices/ghost/telemetry', { key }), 404);
  });

  test.each([
    ['a limit of a million', 'limit=1000000', /limit: must be at most 100000/],
    ['a limit of 0', 'limit=0', /limit/],
    ['a limit that is no number', 'limit=lots', /limit/],
    ['from after to', `from=${T0 + 1}&to=${T0}`, /from .* is after to/],
    ['an unknown format', 'format=xml', /format: must be json or csv/],
    ['a from that is no time', 'from=yesterday', /from: must be unix milliseconds or ISO 8601/],
    ['a time without a zone', 'from=2024-05-01T10:00:00', /from/],
    ['an impossible date', 'to=2024-02-31', /to/],
  ])('when the query has %s, then it is 400 naming the parameter', async (_what, q, detail) => {
    const { id } = await addDevice(server, uniq('bad'));
    expectProblem(await api(server, `/api/v1/devices/${id}/telemetry?${q}`, { key }), 400, detail);
  });
});

describe('CSV', () => {
  test('when format=csv, then there is a time column and one column per key; values are escaped by the CSV rules, nested values are JSON, formulas are defused', async () => {
    const id = await deviceWith([
      { ts: T0, data: { temp: 21.5, note: 'hello, "world"\nline 2', gps: { lat: 48.1, lon: 11.5 } } },
      { ts: T0 + 1000, data: { temp: -3, ok: true, note: '=HYPERLINK("http://x")', time: 1351824120 } },
      { ts: T0 + 2000, data: { hum: null } },
    ]);
    const r = await api(server, `/api/v1/devices/${id}/telemetry?format=csv`, { key });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/csv/);
    expect(r.headers.get('content-disposition')).toBe(`attachment; filename="${id}-telemetry.csv"`);
    const rows = parse(r.text) as string[][];
    // A reading's own `time` key (the thesis's GPS sends one) becomes data.time.
    expect(rows[0]).toEqual(['time', 'gps', 'hum', 'note', 'ok', 'temp', 'data.time']);
    expect(rows[1]).toEqual(['2024-05-01T10:00:00.000Z', '{"lat":48.1,"lon":11.5}', '', 'hello, "world"\nline 2', '', '21.5', '']);
    expect(rows[2]).toEqual(['2024-05-01T10:00:01.000Z', '', '', `'=HYPERLINK("http://x")`, 'true', '-3', '1351824120']);
    expect(rows[3]).toEqual(['2024-05-01T10:00:02.000Z', '', '', '', '', '', '']);
    expect(rows).toHaveLength(4);
  });

  test('when the range is empty, then the CSV is the time header alone', async () => {
    const { id } = await addDevice(server, uniq('empty'));
    const r = await api(server, `/api/v1/devices/${id}/telemetry?format=csv`, { key });
    expect(r.status).toBe(200);
    expect(r.text).toBe('time\n');
  });

  test('when the readings of a range have more than 1,000 different keys, then the CSV is 400 (ask for JSON); 1,000 keys are fine', async () => {
    // Five readings of 200 keys of their own: 1,000 keys, the most a CSV may have.
    const wide = (r: number) => ({ ts: T0 + r, data: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`r${r}k${i}`, i])) });
    const rows = [0, 1, 2, 3, 4].map(wide);
    const id = await deviceWith([...rows, { ts: T0 + 10, data: { one: 'more' } }]);
    const ok = await api(server, `/api/v1/devices/${id}/telemetry?format=csv&to=${T0 + 4}`, { key });
    expect(ok.status).toBe(200);
    expect(ok.text.split('\n', 1)[0]!.split(',')).toHaveLength(1 + 1000);
    expectProblem(await api(server, `/api/v1/devices/${id}/telemetry?format=csv&limit=100000`, { key }), 400, /more than 1000 different keys.*format=json/);
    expect((await api(server, `/api/v1/devices/${id}/telemetry?limit=100000`, { key })).json.count).toBe(6);
  });
});

describe('streaming', () => {
  test('when 100,000 readings are asked for, then all come, in order, as JSON and as CSV', async () => {
    const n = 100_000;
    const id = await deviceWith(Array.from({ length: n }, (_, i) => ({ ts: T0 + i, data: { i, v: i % 7 } })));
    const j = await api(server, `/api/v1/devices/${id}/telemetry?limit=100000`, { key });
    expect(j.status).toBe(200);
    expect(j.json.count).toBe(n);
    expect(j.json.readings[0].data.i).toBe(0);
    expect(j.json.readings[n - 1].data.i).toBe(n - 1);
    expect((j.json.readings as { ts: number }[]).every((r, i) => r.ts === T0 + i)).toBe(true);
    const c = await api(server, `/api/v1/devices/${id}/telemetry?limit=100000&format=csv`, { key });
    const lines = c.text.trimEnd().split('\n');
    expect(lines[0]).toBe('time,i,v');
    expect(lines).toHaveLength(n + 1);
    expect(lines[n]).toBe(`${new Date(T0 + n - 1).toISOString()},${n - 1},${(n - 1) % 7}`);
  }, 120_000);

  test('when a client reads slowly, then the server waits for it (backpressure) and the answer is still complete; a client that leaves ends the export', async () => {
    const n = 50_000;
    const id = await deviceWith(Array.from({ length: n }, (_, i) => ({ ts: T0 + i, data: { i, pad: 'x'.repeat(300) } })));
    const url = new URL(`${server.baseUrl}/api/v1/devices/${id}/telemetry?limit=${n}&format=csv`);
    // Count the pages the export reads from storage (1,000 readings each).
    const storage = server.app.storage;
    const original = storage.telemetryRange.bind(storage);
    let pagesRead = 0;
    storage.telemetryRange = async function* (...args: Parameters<typeof original>) {
      for await (const page of original(...args)) {
        pagesRead++;
        yield page;
      }
    };
    try {
      // A client that stops reading after the first chunk for a second: the server must pause too.
      const { body, readWhilePaused } = await new Promise<{ body: string; readWhilePaused: number }>((resolve, reject) => {
        const req = http.get(url, { headers: { authorization: `Bearer ${key}` } }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.once('data', (chunk: string) => {
            text += chunk;
            res.pause();
            setTimeout(() => {
              const readWhilePaused = pagesRead;
              res.on('data', (c: string) => (text += c));
              res.on('end', () => resolve({ body: text, readWhilePaused }));
              res.resume();
            }, 1000);
          });
        });
        req.on('error', reject);
      });
      // 50 pages (15 MB) in all; while the client read nothing, only what fits the socket buffers was read.
      expect(readWhilePaused).toBeLessThan(30);
      expect(pagesRead).toBe(50);
      expect(body.trimEnd().split('\n')).toHaveLength(n + 1);
    } finally {
      storage.telemetryRange = original;
    }

    // A client that goes away mid-export: the server stays fine and answers the next request.
    await new Promise<void>((resolve) => {
      const req = http.get(url, { headers: { authorization: `Bearer ${key}` } }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => resolve());
    });
    expect((await api(server, `/api/v1/devices/${id}/telemetry?limit=1`, { key })).json.count).toBe(1);
  }, 120_000);
});
