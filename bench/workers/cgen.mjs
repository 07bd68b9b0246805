// Load generator for the open loop's TCP targets: the same devices and readings as
// bench/workers/devices.mjs, with the hot loop in C (bench/gen/opengen.c, built by
// bench/lib/build.mjs). This process only relays bench/run.mjs's IPC requests to it, one line each.
// Same config and requests as devices.mjs (connect, load with a rate, stats, close); the closed
// loop stays on devices.mjs. `connect` also answers the C process's pid, for its CPU.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import readline from 'node:readline';
import { OPENGEN_BIN } from '../lib/build.mjs';
import { serveWorker, workerConfig } from '../lib/proc.mjs';

const cfg = workerConfig();
const configFile = `${process.env.BENCH_WORKER_CONFIG_FILE}.opengen`;
const lines = [`target ${cfg.target}`, `port ${cfg.port}`, `tag ${cfg.tag}`];
cfg.devices.forEach((d, i) => {
  const local = d.localAddress ?? (cfg.localAddresses?.length ? cfg.localAddresses[i % cfg.localAddresses.length] : '-');
  lines.push(`dev ${d.id} ${d.token ?? 'x'} ${local}`);
});
fs.writeFileSync(configFile, `${lines.join('\n')}\n`);

const gen = spawn(OPENGEN_BIN, [configFile], { stdio: ['pipe', 'pipe', 'inherit'] });
gen.on('exit', (code, signal) => {
  for (const w of waiting.splice(0)) w.reject(new Error(`opengen exited (${code ?? signal})`));
  process.exit(1);
});
/** Answers come in the order of the requests. */
const waiting = [];
readline.createInterface({ input: gen.stdout }).on('line', (line) => waiting.shift()?.resolve(line));
const ask = (line) =>
  new Promise((resolve, reject) => {
    waiting.push({ resolve, reject });
    gen.stdin.write(`${line}\n`);
  });

function fields(line) {
  const out = {};
  for (const kv of line.split(' ').slice(1)) {
    const i = kv.indexOf('=');
    out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

serveWorker({
  async connect({ concurrency = 200, timeoutMs = 120_000 }) {
    const [, ready, elapsed, p99, why] = (await ask(`connect ${concurrency} ${timeoutMs}`)).split(' ');
    const failures = {};
    if (why !== '-') for (const kv of why.split(',')) failures[kv.slice(0, kv.lastIndexOf('='))] = Number(kv.slice(kv.lastIndexOf('=') + 1));
    return { ready: Number(ready), elapsed_ms: Number(elapsed), p99_connect_ms: Number(p99), failures, pids: [gen.pid] };
  },
  async load({ rate = 0, max = false, count = null }) {
    if (max) throw new Error('the C generator runs the open loop only (bench/workers/devices.mjs has the closed loop)');
    await ask(`rate ${rate} ${count ?? -1}`);
    return true;
  },
  async stats({ reset = false } = {}) {
    const f = fields(await ask(`stats ${reset ? 1 : 0}`));
    const errors = {};
    if (f.errors !== '-') for (const kv of f.errors.split(',')) errors[kv.slice(0, kv.lastIndexOf(':'))] = Number(kv.slice(kv.lastIndexOf(':') + 1));
    const n = (k) => Number(f[k]);
    return {
      sent: n('sent'),
      dropped: n('dropped'),
      lagged: n('lagged'),
      stored: n('stored'),
      commands: n('commands'),
      closed: n('closed'),
      errors,
      since_ms: n('since_ms'),
      ready: n('ready'),
      total_sent: n('total_sent'),
      total_stored: n('total_stored'),
    };
  },
  async close() {
    await ask('close').catch(() => {});
    return true;
  },
});
