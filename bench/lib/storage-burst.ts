// A command written while a fleet reconnects (bench/README.md, "Statements on the SQLite thread"):
// every device's last-seen write and its queued-commands read are sent at once, then one command
// insert, as Send Action to Node does. Reports how long the insert took to be answered, per round.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteStorage } from '../../server/storage/sqlite-storage';

const devices = Number(process.argv[2] ?? 1000);
const rounds = Number(process.argv[3] ?? 7);

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-storage-burst-'));
  const storage = await SqliteStorage.open(dir);
  try {
    for (let i = 0; i < devices; i++) await storage.createDevice({ id: `d${i}`, name: `d${i}`, tokenHash: 'x' });
    const times: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const burst: Promise<unknown>[] = [];
      for (let i = 0; i < devices; i++) {
        burst.push(storage.markDeviceSeen(`d${i}`, Date.now(), 'fw'));
        burst.push(storage.listCommands(`d${i}`, 10));
      }
      const t0 = performance.now();
      const now = Date.now();
      await storage.insertCommand({
        id: `c${round}`, deviceId: 'd1', action: 'togglerele', params: null, status: 'sent', result: null, error: null,
        createdAt: now, updatedAt: now, expiresAt: now + 60_000, sentAt: now, sentBy: 'bench', sentByUserId: null,
      });
      times.push(performance.now() - t0);
      await Promise.all(burst);
    }
    const sorted = [...times].sort((a, b) => a - b);
    console.log(JSON.stringify({ devices, statements_ahead: 2 * devices, rounds, insert_ms: times.map((t) => Math.round(t * 10) / 10), median_ms: Math.round(sorted[Math.floor(rounds / 2)]! * 10) / 10 }));
  } finally {
    await storage.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

void main();
