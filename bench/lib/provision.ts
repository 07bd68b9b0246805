// Bulk provisioning for the bench: the same functions the CLI's `device add` and `user add` call
// (server/devices/admin.ts, server/auth/users.ts), in one process, because 19,000 CLI runs would
// take over an hour. Bundled by esbuild at run time (bench/lib/build.mjs).
// Usage: DATA_DIR=… BCRYPT_ROUNDS=4 node provision.js SPEC.json OUT.json
import fs from 'node:fs';
import { addUser } from '../../server/auth/users';
import { loadConfig } from '../../server/config';
import { addDevice } from '../../server/devices/admin';
import { openStorage } from '../../server/storage';

interface Spec {
  devices?: { prefix: string; from?: number; count: number };
  users?: { prefix: string; count: number; password: string; role: string };
}

async function main(): Promise<void> {
  const [specFile, outFile] = process.argv.slice(2);
  const spec = JSON.parse(fs.readFileSync(specFile!, 'utf8')) as Spec;
  const config = loadConfig(process.env);
  const storage = await openStorage(config);
  const out: { devices: { id: string; token: string }[]; users: { username: string; password: string }[] } = { devices: [], users: [] };
  try {
    if (spec.devices) {
      const { prefix, from = 0, count } = spec.devices;
      for (let i = from; i < from + count; i++) {
        const id = `${prefix}${String(i).padStart(5, '0')}`;
        const { token } = await addDevice(storage, id);
        out.devices.push({ id, token });
      }
    }
    if (spec.users) {
      const { prefix, count, password, role } = spec.users;
      const pending: Promise<unknown>[] = [];
      for (let i = 0; i < count; i++) {
        const username = count === 1 ? prefix : `${prefix}${String(i).padStart(4, '0')}`;
        pending.push(addUser(storage, username, password, role, config.bcryptRounds));
        out.users.push({ username, password });
        if (pending.length >= 16) await Promise.all(pending.splice(0));
      }
      await Promise.all(pending);
    }
  } finally {
    await storage.close();
  }
  fs.writeFileSync(outFile!, JSON.stringify(out));
}

main().catch((err) => {
  process.stderr.write(`provision: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
