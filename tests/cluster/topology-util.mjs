#!/usr/bin/env node
// Plumbing for .ci/topology, so the bash script needs neither psql nor redis-cli:
//   ports N                 N free loopback TCP ports, one a line
//   createdb BASE_URL       creates a fresh database beside BASE_URL's; prints its URL
//   dropdb BASE_URL URL     drops the database URL names (ending its connections)
//   flushredis URL          empties the Redis database URL selects
//   wait-ready URL SECONDS [PID]
//                           waits until GET URL answers 200; gives up at once if process PID ends
//   wait-port PORT SECONDS  waits until 127.0.0.1:PORT accepts connections
import crypto from 'node:crypto';
import { createRequire } from 'node:module';
import net from 'node:net';

const require = createRequire(import.meta.url);
const [cmd, ...args] = process.argv.slice(2);

function freePorts(n) {
  return Promise.all(
    Array.from({ length: n }, () => {
      const s = net.createServer();
      return new Promise((resolve, reject) => {
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => resolve(s));
      });
    }),
  ).then((servers) => {
    const ports = servers.map((s) => s.address().port);
    return Promise.all(servers.map((s) => new Promise((r) => s.close(r)))).then(() => ports);
  });
}

async function withPg(url, fn) {
  const pg = require('pg');
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(what, seconds, probe, pid) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    if (await probe().catch(() => false)) return;
    if (pid && !alive(pid)) throw new Error(`process ${pid} ended while waiting for ${what}`);
    if (Date.now() > deadline) throw new Error(`timed out after ${seconds} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const commands = {
  async ports(n) {
    console.log((await freePorts(Number(n))).join('\n'));
  },
  async createdb(base) {
    const name = `sockpit_topology_${crypto.randomBytes(5).toString('hex')}`;
    await withPg(base, (c) => c.query(`CREATE DATABASE ${name} TEMPLATE template0`));
    const u = new URL(base);
    u.pathname = `/${name}`;
    console.log(u.toString());
  },
  async dropdb(base, url) {
    const name = new URL(url).pathname.slice(1);
    if (!/^sockpit_topology_[a-f0-9]+$/.test(name)) throw new Error(`refusing to drop ${name}`);
    await withPg(base, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  },
  async flushredis(url) {
    const { createClient } = require('redis');
    const c = createClient({ url, socket: { reconnectStrategy: false } });
    c.on('error', () => {});
    await c.connect();
    await c.flushDb();
    c.destroy();
  },
  async 'wait-ready'(url, seconds, pid) {
    await until(url, Number(seconds), async () => (await fetch(url)).status === 200, pid ? Number(pid) : 0);
  },
  async 'wait-port'(port, seconds) {
    await until(`port ${port}`, Number(seconds), () => new Promise((resolve) => {
      const s = net.connect(Number(port), '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    }));
  },
};

const run = commands[cmd];
if (!run) {
  console.error(`usage: topology-util.mjs ${Object.keys(commands).join('|')} ...`);
  process.exit(2);
}
run(...args).catch((err) => {
  console.error(`topology-util ${cmd}: ${err.message}`);
  process.exit(1);
});
