/**
 * Storage contract for API keys and telemetry ranges (docs/api.md), on the configured engine:
 * SQLite here, PostgreSQL again in the postgres project.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStorage, Storage, TelemetryPoint } from '../../server/storage';
import { testDatabaseUrl } from '../support/server';

let storage: Storage;

beforeEach(async () => {
  storage = await openStorage({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-keys-')), databaseUrl: testDatabaseUrl() });
});

afterEach(async () => {
  await storage.close();
});

async function collect(it: AsyncIterable<TelemetryPoint[]>): Promise<{ pages: number; points: TelemetryPoint[] }> {
  const points: TelemetryPoint[] = [];
  let pages = 0;
  for await (const page of it) {
    pages++;
    points.push(...page);
  }
  return { pages, points };
}

describe('api keys', () => {
  test('a key is stored by its hash, found by it, listed with its user, touched, and deleted', async () => {
    const u = (await storage.createUser({ username: 'ann', passwordHash: 'x', role: 'operator' }))!;
    const v = (await storage.createUser({ username: 'bob', passwordHash: 'x', role: 'viewer' }))!;
    const a = await storage.createApiKey({ id: 'k1', userId: u.id, name: 'cron', role: 'operator', keyHash: 'sha256:aa' });
    expect(a).toEqual({ id: 'k1', userId: u.id, username: 'ann', name: 'cron', role: 'operator', createdAt: expect.any(Number), lastUsedAt: null });
    await storage.createApiKey({ id: 'k2', userId: v.id, name: 'ha', role: 'viewer', keyHash: 'sha256:bb' });
    expect(await storage.getApiKeyByHash('sha256:aa')).toEqual(a);
    expect(await storage.getApiKeyByHash('sha256:cc')).toBeNull();
    expect((await storage.listApiKeys()).map((k) => k.id)).toEqual(['k1', 'k2']);
    expect((await storage.listApiKeys(v.id)).map((k) => k.id)).toEqual(['k2']);
    await storage.touchApiKey('k1', 1234);
    expect((await storage.getApiKey('k1'))!.lastUsedAt).toBe(1234);
    expect(await storage.deleteApiKey('k1')).toBe(true);
    expect(await storage.deleteApiKey('k1')).toBe(false);
    expect(await storage.getApiKeyByHash('sha256:aa')).toBeNull();
  });

  test('a key whose user was removed is still listed, with no user name', async () => {
    const u = (await storage.createUser({ username: 'gone', passwordHash: 'x', role: 'admin' }))!;
    await storage.createApiKey({ id: 'k3', userId: u.id, name: 'old', role: 'admin', keyHash: 'sha256:dd' });
    await storage.deleteUser(u.id);
    expect(await storage.getApiKey('k3')).toMatchObject({ id: 'k3', username: null });
  });
});

describe('telemetry ranges', () => {
  beforeEach(async () => {
    await storage.createDevice({ id: 'd1', name: 'd1', tokenHash: 'x' });
    await storage.createDevice({ id: 'd2', name: 'd2', tokenHash: 'x' });
  });

  test('readings come oldest first in pages, bounded by from, to and limit, and equal times are neither lost nor repeated across pages', async () => {
    // 25 readings, three per millisecond, so page borders fall inside runs of equal ts.
    const rows = Array.from({ length: 25 }, (_, i) => ({ deviceId: 'd1', msgId: `m${i}`, ts: 1000 + Math.floor(i / 3), data: { i } }));
    await storage.insertTelemetry([...rows, { deviceId: 'd2', msgId: 'x', ts: 1001, data: { other: true } }]);
    const all = await collect(storage.telemetryRange('d1', { from: 0, to: 10_000, limit: 1000 }, 4));
    // Oldest first; readings of the same millisecond come in storage order, each exactly once.
    const ts = all.points.map((p) => p.ts);
    expect(ts).toEqual([...ts].sort((a, b) => a - b));
    expect(all.points.map((p) => p.data.i as number).sort((a, b) => a - b)).toEqual(rows.map((r) => r.data.i));
    expect(all.points.every((p) => p.ts === 1000 + Math.floor((p.data.i as number) / 3))).toBe(true);
    expect(all.pages).toBe(7);
    const some = await collect(storage.telemetryRange('d1', { from: 1002, to: 1004, limit: 1000 }, 2));
    expect(some.points.map((p) => p.ts)).toEqual([1002, 1002, 1002, 1003, 1003, 1003, 1004, 1004, 1004]);
    const limited = await collect(storage.telemetryRange('d1', { from: 0, to: 10_000, limit: 5 }, 2));
    expect(limited.points.map((p) => p.ts)).toEqual([1000, 1000, 1000, 1001, 1001]);
    expect((await collect(storage.telemetryRange('d1', { from: 5000, to: 6000, limit: 10 }))).points).toEqual([]);
  });

  test('stopping early stops reading: no page is read after the consumer leaves', async () => {
    await storage.insertTelemetry(Array.from({ length: 10 }, (_, i) => ({ deviceId: 'd1', msgId: `s${i}`, ts: i, data: { i } })));
    let pages = 0;
    for await (const page of storage.telemetryRange('d1', { from: 0, to: 100, limit: 100 }, 3)) {
      pages++;
      expect(page).toHaveLength(3);
      break;
    }
    expect(pages).toBe(1);
  });

  test('the key pass returns the distinct keys of the range, sorted, and null past the cap', async () => {
    await storage.insertTelemetry([
      { deviceId: 'd1', msgId: 'a', ts: 1, data: { temp: 1, hum: 2 } },
      { deviceId: 'd1', msgId: 'b', ts: 2, data: { temp: 1, gps: { lat: 1 } } },
      { deviceId: 'd1', msgId: 'c', ts: 3, data: { late: true } },
      { deviceId: 'd2', msgId: 'd', ts: 2, data: { elsewhere: 1 } },
    ]);
    expect(await storage.telemetryKeys('d1', { from: 0, to: 10, limit: 1000 }, 100)).toEqual(['gps', 'hum', 'late', 'temp']);
    // Only the readings the export will contain: the first two.
    expect(await storage.telemetryKeys('d1', { from: 0, to: 10, limit: 2 }, 100)).toEqual(['gps', 'hum', 'temp']);
    expect(await storage.telemetryKeys('d1', { from: 0, to: 10, limit: 1000 }, 3)).toBeNull();
    expect(await storage.telemetryKeys('d1', { from: 50, to: 60, limit: 1000 }, 3)).toEqual([]);
  });
});
