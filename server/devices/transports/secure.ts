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
  const pending = new Map<string, Admission>();
  const key = (s: net.Socket) => `${s.remoteAddress}|${s.remotePort}`;
  server.on('connection', (raw: net.Socket) => {
    raw.on('error', () => {});
    const admission = core.admit(remoteAddressOf(raw));
    if (!admission) {
      raw.destroy();
      return;
    }
    const k = key(raw);
    pending.set(k, admission);
    raw.once('close', () => {
      if (pending.get(k) !== admission) return;
      pending.delete(k);
      admission.release();
    });
  });
  server.on('secureConnection', (socket) => {
    const k = key(socket);
    const admission = pending.get(k);
    if (!admission) {
      socket.destroy();
      return;
    }
    pending.delete(k);
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
