/**
 * The WAL checkpointer: a thread with its own connection that copies committed pages from the WAL
 * into the database file while the SQLite thread goes on committing (see sqlite-thread.ts).
 * Started by the SQLite thread with the first telemetry; a CLI run never needs it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { CheckpointerData, CheckpointerSays } from './sqlite-protocol';

const data = workerData as CheckpointerData;
const port = parentPort!;
const conn = new Database(data.file);
let asked = false;

const checkpoint = () => (conn.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[])[0]!;
const say = (m: CheckpointerSays) => port.postMessage(m);

port.on('message', (m: string) => {
  if (m !== 'held') return;
  try {
    checkpoint();
  } finally {
    asked = false;
    say('release');
  }
});

setInterval(() => {
  if (asked) return;
  // Copies what was committed since the last one, while the writer goes on.
  const r = checkpoint();
  if (r.log >= data.resetFrames) {
    asked = true;
    say('hold');
  }
}, data.everyMs);
