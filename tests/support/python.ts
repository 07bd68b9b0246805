/**
 * Python clients nobody here wrote (Debian's python3-websockets and python3-paho-mqtt), run as child
 * processes: the test reads what they print, line by line.
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';

const CANDIDATES = [process.env.PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => !!p);
const found = new Map<string, string>();

/**
 * A python3 that can import `modules` (Debian's /usr/bin/python3 has the python3-* packages; a
 * pyenv or venv python3 earlier on PATH may not). Throws with what to install.
 */
export function python(...modules: string[]): string {
  const key = modules.join(',');
  const hit = found.get(key);
  if (hit) return hit;
  for (const exe of CANDIDATES) {
    try {
      execFileSync(exe, ['-c', modules.map((m) => `import ${m}`).join('; ') || 'pass'], { stdio: 'ignore' });
      found.set(key, exe);
      return exe;
    } catch {
      // not this one
    }
  }
  throw new Error(`no python3 with ${modules.join(', ')}: apt-get install python3-websockets python3-paho-mqtt (or set PYTHON)`);
}

export class PythonProcess {
  readonly lines: string[] = [];
  stderr = '';
  readonly exited: Promise<number | null>;
  private waiters: { match: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  private buf = '';

  constructor(readonly proc: ChildProcess) {
    proc.stdout!.on('data', (d: Buffer) => {
      this.buf += d.toString();
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).replace(/\r$/, '');
        this.buf = this.buf.slice(nl + 1);
        this.lines.push(line);
        for (const w of [...this.waiters]) {
          if (w.match(line)) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.resolve(line);
          }
        }
      }
    });
    proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
  }

  /** The first line (printed already or to come) that matches. */
  line(match: string | RegExp | ((l: string) => boolean), timeoutMs = 10_000): Promise<string> {
    const m = typeof match === 'function' ? match : typeof match === 'string' ? (l: string) => l === match : (l: string) => match.test(l);
    const seen = this.lines.find(m);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w = {
        match: m,
        resolve: (l: string) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`python printed no line matching ${String(match)} within ${timeoutMs} ms; stdout: ${JSON.stringify(this.lines)}; stderr: ${this.stderr}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

const running = new Set<PythonProcess>();

/** Runs a python script (a file, or `-c` code) unbuffered, with extra environment. */
export function runPython(modules: string[], args: string[], env: Record<string, string> = {}): PythonProcess {
  const proc = spawn(python(...modules), ['-u', ...args], { env: { ...process.env, ...env, PYTHONUNBUFFERED: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const p = new PythonProcess(proc);
  running.add(p);
  void p.exited.then(() => running.delete(p));
  return p;
}

/** Kills every python process still running; call in afterEach/afterAll. */
export function killPython(): void {
  for (const p of running) p.kill();
  running.clear();
}
