// Process plumbing for the bench: child processes, IPC requests, free ports, /proc sampling.
import { fork, spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

const children = new Set();

/** Every child this run started is ended on exit (by its own pid, never by name). */
export function killAll() {
  for (const c of children) {
    try {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    } catch {}
  }
  children.clear();
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A free TCP port on loopback (the kernel picks it; we close it again at once). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on host:port, or rejects after timeoutMs. */
export async function waitForPort(port, { host = '127.0.0.1', timeoutMs = 20_000, child = null } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) throw new Error(`${child.label ?? 'process'} exited with code ${child.exitCode} before listening on ${port}`);
    const ok = await new Promise((resolve) => {
      const s = net.connect({ port, host });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
}

/** Starts a program; stdout/stderr go to a log file. */
export function startProcess(label, cmd, args, { env = {}, logDir, cwd } = {}) {
  const logFile = path.join(logDir, `${label}.log`);
  const out = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, cwd, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  child.label = label;
  child.logFile = logFile;
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

/** Stops a child politely (SIGTERM), then for sure (SIGKILL) after graceMs. */
export async function stopProcess(child, graceMs = 5000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** Last lines of a child's log, for error messages. */
export function logTail(child, lines = 5) {
  try {
    return fs.readFileSync(child.logFile, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * A bench worker (bench/workers/*.mjs) in its own process, driven by request/response over IPC:
 * `await w.call('cmd', args)` resolves with the worker's answer (bounded by timeoutMs).
 */
export class Worker {
  constructor(label, script, config, { logDir, execArgv = [] } = {}) {
    const logFile = path.join(logDir, `${label}.log`);
    // The config can hold thousands of device tokens: too big for an environment variable.
    const configFile = path.join(logDir, `${label}.config.json`);
    fs.writeFileSync(configFile, JSON.stringify(config));
    const out = fs.openSync(logFile, 'a');
    this.child = fork(script, [], { stdio: ['ignore', out, out, 'ipc'], execArgv, env: { ...process.env, BENCH_WORKER_CONFIG_FILE: configFile } });
    fs.closeSync(out);
    this.child.label = label;
    this.child.logFile = logFile;
    this.label = label;
    children.add(this.child);
    this.nextId = 1;
    this.pending = new Map();
    this.child.on('message', (m) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      if (m.error) p.reject(new Error(`${label}: ${m.error}`));
      else p.resolve(m.result);
    });
    this.child.on('exit', (code, signal) => {
      children.delete(this.child);
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`${label} exited (${code ?? signal}) — ${logTail(this.child, 3)}`));
      }
      this.pending.clear();
    });
  }

  get pid() {
    return this.child.pid;
  }

  call(cmd, args = {}, timeoutMs = 60_000) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.label}: no answer to ${cmd} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.child.send({ id, cmd, args });
    });
  }

  async stop() {
    if (this.child.exitCode !== null) return;
    this.call('exit', {}, 3000).catch(() => {});
    await Promise.race([new Promise((r) => this.child.once('exit', r)), sleep(3000)]);
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

/** The worker side of Worker: register handlers, answer requests. */
export function serveWorker(handlers) {
  process.on('message', async (m) => {
    if (m.cmd === 'exit') {
      process.send({ id: m.id, result: true }, () => process.exit(0));
      return;
    }
    const h = handlers[m.cmd];
    try {
      if (!h) throw new Error(`unknown command ${m.cmd}`);
      process.send({ id: m.id, result: await h(m.args) });
    } catch (err) {
      process.send({ id: m.id, error: err?.stack ?? String(err) });
    }
  });
  // Orphaned (the orchestrator died): leave.
  process.on('disconnect', () => process.exit(0));
}

export function workerConfig() {
  const file = process.env.BENCH_WORKER_CONFIG_FILE;
  return file ? JSON.parse(fs.readFileSync(file, 'utf8')) : {};
}

let clkTck = null;
function ticksPerSecond() {
  if (clkTck === null) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** CPU seconds (user+system) and RSS (KiB) of a process, read from /proc. */
export function procSample(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpu = (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return { t: Date.now(), cpu, rssKib: rss };
  } catch {
    return null;
  }
}

/** Tracks CPU% between two points and the peak RSS of a set of processes over a window. */
export class ProcWatch {
  constructor(pids) {
    this.pids = pids.filter(Boolean);
    this.start = this.pids.map(procSample);
    this.peak = this.start.map((s) => s?.rssKib ?? 0);
    this.timer = setInterval(() => {
      this.pids.forEach((p, i) => {
        const s = procSample(p);
        if (s && s.rssKib > this.peak[i]) this.peak[i] = s.rssKib;
      });
    }, 250);
  }

  /** { cpu_pct, cpu_s, rss_mib, peak_rss_mib } summed over the processes (cpu_s: CPU seconds used). */
  stop() {
    clearInterval(this.timer);
    let cpu = 0;
    let secs = 0;
    let rss = 0;
    let peak = 0;
    this.pids.forEach((p, i) => {
      const a = this.start[i];
      const b = procSample(p);
      if (!a || !b) return;
      cpu += b.cpu - a.cpu;
      secs = Math.max(secs, (b.t - a.t) / 1000);
      rss += b.rssKib;
      peak += Math.max(this.peak[i], b.rssKib);
    });
    return {
      cpu_pct: secs > 0 ? Math.round((cpu / secs) * 1000) / 10 : null,
      cpu_s: cpu,
      rss_mib: Math.round(rss / 102.4) / 10,
      peak_rss_mib: Math.round(peak / 102.4) / 10,
    };
  }
}
