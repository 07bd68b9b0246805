// Bundles the TypeScript the bench and the soak run outside the server, with esbuild as
// scripts/build.mjs bundles the server (npm packages stay external, so they resolve from the
// project's node_modules): the provisioning helper (provision.ts) and the device client
// (server/devices/client.ts) for the device workers. Also rebuilds dist/ when it is stale.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '../..');

async function bundle(entry, outName) {
  const outfile = path.join(ROOT, 'dist', outName);
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    packages: 'external',
    absWorkingDir: ROOT,
    logLevel: 'warning',
  });
  return outfile;
}

/** dist/bench-provision.js: adds devices and users with the project's own functions. */
export function buildProvision() {
  return bundle(path.join(here, 'provision.ts'), 'bench-provision.js');
}

/** dist/bench-storage-burst.js: a command insert behind a reconnecting fleet's statements (storage-burst.ts). */
export function buildStorageBurst() {
  return bundle(path.join(here, 'storage-burst.ts'), 'bench-storage-burst.js');
}

/** dist/bench-storage-rate.js: the SQLite thread alone under fixed telemetry rates (storage-rate.ts). */
export function buildStorageRate() {
  return bundle(path.join(here, 'storage-rate.ts'), 'bench-storage-rate.js');
}

/** Where the device workers load the device client from (built by buildDeviceClient). */
export const DEVICE_CLIENT_JS = path.join(ROOT, 'dist', 'device-client.js');

/** dist/device-client.js: the one device client (server/devices/client.ts) for plain-node workers. */
export function buildDeviceClient() {
  return bundle(path.join(ROOT, 'server', 'devices', 'client.ts'), path.basename(DEVICE_CLIENT_JS));
}

function newestMtime(dir) {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs);
  }
  return newest;
}

/** Runs scripts/build.mjs when dist/main.js is missing or older than server/. */
export function ensureBuilt() {
  const entry = path.join(ROOT, 'dist', 'main.js');
  if (fs.existsSync(entry) && fs.statSync(entry).mtimeMs >= newestMtime(path.join(ROOT, 'server'))) return;
  execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build.mjs')], { cwd: ROOT, stdio: 'ignore' });
}

/** The open loop's C load generator (bench/gen/opengen.c), built by buildOpengen. */
export const OPENGEN_BIN = path.join(ROOT, 'dist', 'opengen');

/**
 * Builds the C generator with the system's C compiler; null (and the Node generator is used)
 * when there is none or the build fails.
 */
export function buildOpengen() {
  const src = path.join(ROOT, 'bench', 'gen', 'opengen.c');
  try {
    if (fs.existsSync(OPENGEN_BIN) && fs.statSync(OPENGEN_BIN).mtimeMs >= fs.statSync(src).mtimeMs) return OPENGEN_BIN;
    fs.mkdirSync(path.dirname(OPENGEN_BIN), { recursive: true });
    execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-o', OPENGEN_BIN, src], { stdio: ['ignore', 'ignore', 'pipe'] });
    return OPENGEN_BIN;
  } catch (err) {
    console.error(`[bench] the C generator did not build (${String(err.stderr ?? err.message).trim().split('\n')[0]}); using the Node one`);
    return null;
  }
}
