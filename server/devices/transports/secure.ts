import type net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { TlsMaterial } from '../../tls/material';
import type { Admission, DeviceCore } from '../core';
import { remoteAddressOf } from './net';

/**
 * A TLS server for a device transport (TCP lines, MQTT). Each connection takes its place in the
 * per-address and total caps on its first byte, so a handshake that never finishes counts (and is
 * dropped after HANDSHAKE_TIMEOUT_MS); a renewed or reloaded certificate applies to new connections.
 */
export function secureServer(material: TlsMaterial, core: DeviceCore, log: Logger, onSecure: (socket: tls.TLSSocket, admission: Admission) => void): tls.Server {
  const server = tls.createServer(material.serverOptions());
  // Admissions of connections still in their handshake, by address and port. A list: connections
  // reset before they were accepted all have the same key (no address), and each must release its
  // own. Admissions of one key are alike (one address), so whichever a secure connection takes,
  // the counts stay right.
  const pending = new Map<string, Admission[]>();
  const key = (s: net.Socket) => `${s.remoteAddress}|${s.remotePort}`;
  server.on('connection', (raw: net.Socket) => {
    raw.on('error', () => {});
    const admission = core.admit(remoteAddressOf(raw));
    if (!admission) {
      raw.destroy();
      return;
    }
    const k = key(raw);
    const waiting = pending.get(k) ?? [];
    waiting.push(admission);
    pending.set(k, waiting);
    raw.once('close', () => {
      const list = pending.get(k);
      const i = list ? list.indexOf(admission) : -1;
      if (i < 0) return; // its session has it, and releases it
      list!.splice(i, 1);
      if (list!.length === 0) pending.delete(k);
      admission.release();
    });
  });
  server.on('secureConnection', (socket) => {
    const k = key(socket);
    const list = pending.get(k);
    const admission = list?.shift();
    if (!admission) {
      socket.destroy();
      return;
    }
    if (list!.length === 0) pending.delete(k);
    onSecure(socket, admission);
  });
  // A plain-text client, a client that does not trust us, a handshake that timed out: its socket
  // closes. Node only reports a handshake timeout here and leaves the socket open, so it is closed here.
  server.on('tlsClientError', (err, socket) => {
    log.debug({ err: err.message, remote: socket.remoteAddress }, 'TLS handshake failed');
    socket.destroy();
  });
  const onChanged = () => server.setSecureContext(material.secureContext());
  material.on('changed', onChanged);
  server.once('close', () => material.off('changed', onChanged));
  return server;
}
