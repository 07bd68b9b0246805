/**
 * For running from the TypeScript sources (tests): builds a worker thread's entry file the way
 * scripts/build.mjs does for dist/, into node_modules/.cache/sockpit/ (so its packages resolve).
 * Never loaded by the bundle.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../paths';

const built = new Map<string, string>();

export function buildThreadEntry(entry: string): string {
  const done = built.get(entry);
  if (done) return done;
  const outfile = path.join(ROOT, 'node_modules', '.cache', 'sockpit', `${path.basename(entry, '.ts')}.js`);
  // Test processes build at the same time: each writes its own file and renames it into place.
  const partial = `${outfile}.${process.pid}`;
  fs.mkdirSync(path.dirname(outfile), { recursive: true });
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const esbuild = require('esbuild') as typeof import('esbuild');
  esbuild.buildSync({ entryPoints: [entry], outfile: partial, bundle: true, platform: 'node', target: 'node20', format: 'cjs', packages: 'external', logLevel: 'error' });
  fs.renameSync(partial, outfile);
  built.set(entry, outfile);
  return outfile;
}
