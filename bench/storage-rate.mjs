// Usage: node bench/storage-rate.mjs [--rates=10000,20000,30000] [--seconds=10] [--prefill=500000] [--devices=1000]
// The SQLite thread alone under a fleet's telemetry at fixed rates, with a click's two writes every
// 100 ms (bench/README.md, "The SQLite thread alone"). Prints one JSON line per rate.
import { execFileSync } from 'node:child_process';
import { buildStorageRate, ensureBuilt, ROOT } from './lib/build.mjs';

ensureBuilt(); // dist/sqlite-worker.js, which the SQLite thread loads
const script = await buildStorageRate();
execFileSync(process.execPath, [script, ...process.argv.slice(2)], { cwd: ROOT, stdio: 'inherit' });
