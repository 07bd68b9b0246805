// Usage: node bench/storage-burst.mjs [devices=1000] [rounds=7]
// A command insert sent behind one statement pair per device of a reconnecting fleet, on the
// SQLite thread (bench/README.md, "Statements on the SQLite thread"). Prints one JSON line.
import { execFileSync } from 'node:child_process';
import { buildStorageBurst, ensureBuilt, ROOT } from './lib/build.mjs';

ensureBuilt(); // dist/sqlite-worker.js, which the SQLite thread loads
const script = await buildStorageBurst();
execFileSync(process.execPath, [script, ...process.argv.slice(2)], { cwd: ROOT, stdio: 'inherit' });
