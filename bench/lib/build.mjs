// Compiles the bench's TypeScript helper (provision.ts) with esbuild, like scripts/build.mjs
// compiles the server: npm packages stay external, so it runs from the project's node_modules.
import { build } from 'esbuild';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '../..');

export async function buildProvision() {
  const outfile = path.join(ROOT, 'dist', 'bench-provision.js');
  await build({
    entryPoints: [path.join(here, 'provision.ts')],
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
