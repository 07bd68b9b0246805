#!/usr/bin/env node
// Builds everything sockpit runs from:
//   client/main.ts          -> public/build/app.js   (browser bundle: socket.io-client + uPlot)
//   uplot/dist/uPlot.min.css -> public/build/uPlot.min.css
//   server/main.ts          -> dist/main.js          (node20, cjs, npm packages stay external)
//   server/cli/index.ts     -> dist/cli.js
//   server/storage/sqlite-{worker,checkpointer}.ts -> dist/ (the SQLite threads)
// Usage: node scripts/build.mjs [--watch]
import { build, context } from 'esbuild';
import { copyFile, mkdir, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const rel = (p) => path.relative(root, p) || '.';
const watch = process.argv.includes('--watch');
const started = performance.now();

const kb = (bytes) => (bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KiB`);

/** @type {Array<{label: string, entry: string, options: import('esbuild').BuildOptions}>} */
const targets = [
  {
    label: 'client',
    entry: 'client/main.ts',
    options: {
      outfile: path.join(root, 'public/build/app.js'),
      platform: 'browser',
      format: 'iife',
      target: 'es2020',
      minify: true,
      sourcemap: true,
      define: { 'process.env.NODE_ENV': '"production"' },
    },
  },
  {
    label: 'server',
    entry: 'server/main.ts',
    options: {
      outfile: path.join(root, 'dist/main.js'),
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      packages: 'external',
      sourcemap: true,
    },
  },
  // The SQLite thread and its checkpointer run from files of their own (server/storage/sqlite-thread.ts).
  ...['sqlite-worker', 'sqlite-checkpointer'].map((name) => ({
    label: name,
    entry: `server/storage/${name}.ts`,
    options: {
      outfile: path.join(root, `dist/${name}.js`),
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      packages: 'external',
      sourcemap: true,
    },
  })),
  {
    label: 'cli',
    entry: 'server/cli/index.ts',
    options: {
      outfile: path.join(root, 'dist/cli.js'),
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      packages: 'external',
      sourcemap: true,
    },
  },
];

async function copyAssets() {
  const from = path.join(root, 'node_modules/uplot/dist/uPlot.min.css');
  const to = path.join(root, 'public/build/uPlot.min.css');
  await mkdir(path.dirname(to), { recursive: true });
  await copyFile(from, to);
  console.log(`  ${rel(to).padEnd(28)} ${kb((await stat(to)).size).padStart(10)}  (copied)`);
}

function optionsFor(t) {
  return {
    entryPoints: [path.join(root, t.entry)],
    bundle: true,
    absWorkingDir: root,
    logLevel: 'warning',
    metafile: true,
    ...t.options,
  };
}

function report(t, result, ms) {
  const out = result.metafile?.outputs?.[rel(t.options.outfile)];
  const size = out ? kb(out.bytes) : '?';
  console.log(`  ${rel(t.options.outfile).padEnd(28)} ${size.padStart(10)}  ${ms.toFixed(0)} ms`);
}

const active = targets.filter((t) => {
  if (existsSync(path.join(root, t.entry))) return true;
  console.warn(`  warning: ${t.entry} not found, skipping ${rel(t.options.outfile)}`);
  return false;
});

if (watch) {
  await copyAssets();
  for (const t of active) {
    const ctx = await context({
      ...optionsFor(t),
      plugins: [
        {
          name: 'report',
          setup(b) {
            let t0 = 0;
            b.onStart(() => {
              t0 = performance.now();
            });
            b.onEnd((result) => {
              if (result.errors.length === 0) report(t, result, performance.now() - t0);
            });
          },
        },
      ],
    });
    await ctx.watch();
  }
  console.log('watching for changes (Ctrl-C to stop)');
} else {
  let failed = false;
  await Promise.all([
    copyAssets().catch((err) => {
      failed = true;
      console.error(`  error: could not copy uPlot.min.css: ${err.message}`);
    }),
    ...active.map(async (t) => {
      const t0 = performance.now();
      try {
        const result = await build(optionsFor(t));
        report(t, result, performance.now() - t0);
      } catch {
        // esbuild has already printed the errors (logLevel 'warning').
        failed = true;
        console.error(`  error: ${t.entry} failed to build`);
      }
    }),
  ]);
  if (failed) {
    process.exitCode = 1;
  } else {
    console.log(`build done in ${(performance.now() - started).toFixed(0)} ms`);
  }
}
