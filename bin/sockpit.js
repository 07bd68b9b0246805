#!/usr/bin/env node
'use strict';
// The CLI runs from the build (dist/cli.js); build it first when needed (fresh clone without `npm ci`).
const fs = require('node:fs');
const path = require('node:path');
const root = path.join(__dirname, '..');
const cli = path.join(root, 'dist', 'cli.js');
if (!fs.existsSync(cli)) {
  require('node:child_process').execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], { stdio: 'ignore' });
}
require(cli).runCli(process.argv.slice(2));
