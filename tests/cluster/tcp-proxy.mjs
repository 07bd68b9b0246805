#!/usr/bin/env node
// A TCP proxy that can be cut, to make a service unreachable for one instance without stopping
// the shared one: node tcp-proxy.mjs LISTEN_PORT TARGET_PORT [TARGET_HOST]
//   SIGUSR1  cut: stop listening (new connections are refused) and drop every open connection
//   SIGUSR2  restore: listen again
import net from 'node:net';

const [listenPort, targetPort, targetHost = '127.0.0.1'] = process.argv.slice(2);
if (!listenPort || !targetPort) {
  console.error('usage: tcp-proxy.mjs LISTEN_PORT TARGET_PORT [TARGET_HOST]');
  process.exit(2);
}

const open = new Set();
let server = null;

function listen() {
  server = net.createServer((client) => {
    const upstream = net.connect(Number(targetPort), targetHost);
    open.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream).pipe(client);
  });
  server.listen(Number(listenPort), '127.0.0.1', () => console.log(`proxy ${listenPort} -> ${targetHost}:${targetPort}`));
}

process.on('SIGUSR1', () => {
  server?.close();
  server = null;
  for (const s of open) s.destroy();
  open.clear();
  console.log('cut');
});
process.on('SIGUSR2', () => {
  if (!server) listen();
});
process.on('SIGTERM', () => process.exit(0));
// While cut nothing else keeps the process alive.
setInterval(() => {}, 1 << 30);
listen();
