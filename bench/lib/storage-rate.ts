// The SQLite thread alone under a fleet's telemetry (bench/README.md, "The SQLite thread alone"):
// 1,000 devices' readings sent to storage at fixed rates in batches every 20 ms, as the telemetry
// writer sends them, and a click's storage work every 100 ms: the user's read, the command insert,
// then the ack's update. Reports per rate: CPU of the whole process per row (the storage threads
// do nearly all of it), how long a batch took to be committed, and how long each part of a click took.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteStorage } from '../../server/storage/sqlite-storage';
import type { TelemetryRow } from '../../server/storage/types';

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=')));
const devices = Number(args.devices ?? 1000);
const prefill = Number(args.prefill ?? 500_000);
const seconds = Number(args.seconds ?? 10);
const rates = String(args.rates ?? '10000,20000,30000').split(',').map(Number);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! * 10) / 10;
};
let seq = 0;
const row = (i: number): TelemetryRow => {
  const n = seq++;
  return { deviceId: `d${i % devices}`, msgId: `m-${n}`, ts: Date.now(), data: { t: Date.now(), seq: n, temp: 21.5, hum: 40.25 } };
};

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-storage-rate-'));
  const storage = await SqliteStorage.open(dir);
  try {
    const user = (await storage.createUser({ username: 'bench', passwordHash: 'x', role: 'operator' }))!;
    for (let i = 0; i < devices; i++) await storage.createDevice({ id: `d${i}`, name: `d${i}`, tokenHash: 'x' });
    for (let done = 0; done < prefill; ) {
      const n = Math.min(5000, prefill - done);
      await storage.insertTelemetry(Array.from({ length: n }, (_, k) => row(done + k)));
      done += n;
    }
    await sleep(1000);
    const steps = [];
    for (const rate of rates) {
      const perBatch = Math.max(1, Math.round((rate * 20) / 1000));
      const commitMs: number[] = [];
      const readMs: number[] = [];
      const insertMs: number[] = [];
      const readInsertMs: number[] = [];
      const updateMs: number[] = [];
      const writes: Promise<unknown>[] = [];
      let rows = 0;
      let cmd = 0;
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      let next = t0;
      let nextClick = t0 + 50;
      while (performance.now() - t0 < seconds * 1000) {
        const sent = performance.now();
        writes.push(storage.insertTelemetry(Array.from({ length: perBatch }, (_, k) => row(rows + k))).then(() => commitMs.push(performance.now() - sent)));
        rows += perBatch;
        if (sent >= nextClick) {
          nextClick += 100;
          const id = `c${rate}-${cmd++}`;
          const now = Date.now();
          writes.push(
            (async () => {
              const asked = performance.now();
              await storage.getUserById(user.id);
              const t0 = performance.now();
              readMs.push(t0 - asked);
              await storage.insertCommand({
                id, deviceId: 'd1', action: 'togglerele', params: null, status: 'sent', result: null, error: null,
                createdAt: now, updatedAt: now, expiresAt: now + 60_000, sentAt: now, sentBy: 'bench', sentByUserId: user.id,
              });
              const t1 = performance.now();
              insertMs.push(t1 - t0);
              readInsertMs.push(t1 - asked);
              await storage.updateCommand(id, ['sent'], { status: 'acked', updatedAt: Date.now() });
              updateMs.push(performance.now() - t1);
            })(),
          );
        }
        next += 20;
        const wait = next - performance.now();
        if (wait > 0) await sleep(wait);
      }
      await Promise.all(writes);
      const cpu = process.cpuUsage(cpu0);
      const wall = performance.now() - t0;
      steps.push({
        rate, rows, achieved_per_s: Math.round((rows / wall) * 1000),
        cpu_us_per_row: Math.round(((cpu.user + cpu.system) / rows) * 10) / 10,
        cores: Math.round(((cpu.user + cpu.system) / 1000 / wall) * 100) / 100,
        commit_ms: { p50: pct(commitMs, 50), p99: pct(commitMs, 99), max: pct(commitMs, 100) },
        click_user_read_ms: { p50: pct(readMs, 50), p99: pct(readMs, 99), max: pct(readMs, 100) },
        click_insert_ms: { p50: pct(insertMs, 50), p99: pct(insertMs, 99), max: pct(insertMs, 100) },
        click_read_and_insert_ms: { p50: pct(readInsertMs, 50), p99: pct(readInsertMs, 99), max: pct(readInsertMs, 100) },
        click_update_ms: { p50: pct(updateMs, 50), p99: pct(updateMs, 99), max: pct(updateMs, 100) },
      });
      console.log(JSON.stringify(steps[steps.length - 1]));
      await sleep(1000);
    }
    // Every row sent is stored, once.
    const stored = await storage.countTelemetry();
    console.log(JSON.stringify({ sent: seq, stored }));
    if (stored !== seq) process.exitCode = 1;
  } finally {
    await storage.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

void main();
