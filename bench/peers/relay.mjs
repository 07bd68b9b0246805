// The bare Node relay: the practical limit for Node on this machine. Devices connect to
// RELAY_DEVICE_PORT and send base64-JSON lines (docs/protocol.md framing); each line is decoded, parsed,
// and forwarded as a JSON line to the subscribers on RELAY_SUB_PORT. No auth, no storage.
import net from 'node:net';

const subs = new Set();
net.createServer((s) => { subs.add(s); s.on('error', () => {}); s.on('close', () => subs.delete(s)); })
  .listen(Number(process.env.RELAY_SUB_PORT), '127.0.0.1');

net.createServer({ noDelay: true }, (s) => {
  let rest = '';
  s.on('error', () => {});
  s.on('data', (chunk) => {
    const text = rest + chunk.toString('latin1');
    let start = 0;
    let out = '';
    for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
      const line = text.slice(start, text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl);
      start = nl + 1;
      const json = line[0] === '{' ? line : Buffer.from(line, 'base64').toString('utf8');
      try { JSON.parse(json); } catch { continue; }
      out += json + '\n';
    }
    rest = text.slice(start);
    if (out) for (const sub of subs) sub.write(out);
  });
}).listen(Number(process.env.RELAY_DEVICE_PORT), '127.0.0.1');
