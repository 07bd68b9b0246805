import fs from 'node:fs';
import path from 'node:path';

/** Start-up cannot go on, for a reason one line tells (main.ts prints it). */
export class StartError extends Error {}

/** The file that says which server process uses a DATA_DIR (docs/deploying.md). */
export const PID_FILE = 'sockpit.pid';

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * Claims DATA_DIR for this server process: SQLite is one process's (the CLI beside it only reads
 * and writes rows). A second server started by mistake on the same data, even on other ports, would
 * time out the first one's commands at its start and share its file without either knowing; it
 * now stops with one line. A file left by a process that is gone (SIGKILL, a crash) is taken
 * over. Returns the release, for a clean shutdown.
 */
export function claimDataDir(dir: string): () => void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new StartError(`DATA_DIR: cannot create ${dir}: ${(err as Error).message}`);
  }
  const file = path.join(dir, PID_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      return () => {
        try {
          if (fs.readFileSync(file, 'utf8').trim() === String(process.pid)) fs.unlinkSync(file);
        } catch {
          // (Already gone.)
        }
      };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST') throw new StartError(`DATA_DIR: cannot write ${file}: ${(err as Error).message}`);
    }
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
      throw new StartError(`another sockpit server (pid ${pid}) is using DATA_DIR ${dir}; stop it first (if none is running, delete ${file})`);
    }
    fs.rmSync(file, { force: true });
  }
  throw new StartError(`DATA_DIR: could not claim ${file}; another sockpit server is starting on it`);
}
