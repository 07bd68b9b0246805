/**
 * REST API rate limits (docs/api.md, "Limits"): 300 requests a minute per key, 600 per address,
 * answered with 429, Retry-After and a problem document. In-memory here; Redis-backed in
 * multi-instance mode.
 */
import { DEFAULT_API_RATE_LIMITS } from '../../server/api/rate-limit';
import { closeAllServers, startServer, TestServer } from '../support/server';
import { api, expectProblem, keyFor } from './support';

let server: TestServer;

beforeAll(async () => {
  server = await startServer();
});

afterAll(async () => {
  await closeAllServers();
});

/** Sends `n` requests, 10 at a time; returns their statuses in order. */
async function burst(n: number, path: string, key?: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i += 10) {
    const batch = Array.from({ length: Math.min(10, n - i) }, () => fetch(server.baseUrl + path, { headers: key ? { authorization: `Bearer ${key}` } : {} }).then(async (r) => (await r.arrayBuffer(), r.status)));
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

test('when one key sends more than its limit in a window, then it gets 429 with Retry-After; another key from the same address still gets through; then the address as a whole is limited', async () => {
  const { perKey, perAddress } = DEFAULT_API_RATE_LIMITS;
  const a = await keyFor(server, 'viewer');
  const b = await keyFor(server, 'viewer');
  const statuses = await burst(perKey, '/api/v1/devices', a.key);
  expect(statuses.every((s) => s === 200)).toBe(true);
  const limited = await api(server, '/api/v1/devices', { key: a.key });
  expectProblem(limited, 429, /this key/);
  expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
  expect((await api(server, '/api/v1/devices', { key: b.key })).status).toBe(200);

  // The address has used perKey + 2 of its requests; the rest go, then everyone from it waits.
  const rest = await burst(perAddress - perKey - 2, '/api/v1/openapi.json');
  expect(rest.every((s) => s === 200)).toBe(true);
  const blocked = await api(server, '/api/v1/devices', { key: b.key });
  expectProblem(blocked, 429, /this address/);
  expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
  expectProblem(await api(server, '/api/v1/devices'), 429);
  // The pages are not the API's to limit.
  expect((await fetch(server.baseUrl + '/healthz')).status).toBe(200);
}, 60_000);
