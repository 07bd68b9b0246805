/**
 * What the server holds for one Socket.IO socket that its peer has not read yet, read from
 * engine.io's internals (cheap: no packet is encoded or copied). Used by the 4 MiB hard cap
 * (io.ts) and by the conflation of lagging batched dashboards (broadcast.ts).
 */
import type { Socket } from 'socket.io';

/** The engine.io connection under a Socket.IO socket, as far as these helpers read it. */
type EngineConn = {
  /** Packets the transport could not take yet (it is still writing the previous ones). */
  writeBuffer?: { data?: unknown }[];
  transport?: {
    /** True when the transport has nothing in flight: the next packet is written at once. */
    writable?: boolean;
    /** The `ws` WebSocket (websocket transport only). */
    socket?: { bufferedAmount?: number; terminate?: () => void };
  };
  close(discard?: boolean): void;
};

function conn(socket: Socket): EngineConn {
  return socket.conn as unknown as EngineConn;
}

/** Bytes in engine.io's queue for this socket (packets not yet handed to the transport). */
export function queuedBytes(socket: Socket): number {
  const queue = conn(socket).writeBuffer;
  if (!queue || queue.length === 0) return 0;
  let bytes = 0;
  for (const p of queue) bytes += typeof p.data === 'string' ? p.data.length : Buffer.isBuffer(p.data) ? p.data.length : 0;
  return bytes;
}

/** Packets in engine.io's queue for this socket. */
export function queuedPackets(socket: Socket): number {
  return conn(socket).writeBuffer?.length ?? 0;
}

/**
 * Bytes the server holds for this socket: engine.io's queue plus what the WebSocket accepted but
 * could not hand to the kernel yet. (The kernel's own send buffer is not visible from Node.)
 */
export function pendingBytes(socket: Socket): number {
  const ws = conn(socket).transport?.socket;
  return queuedBytes(socket) + (typeof ws?.bufferedAmount === 'number' ? ws.bufferedAmount : 0);
}

/** Nothing queued and nothing in flight: what is sent now is written to the socket at once. */
export function drained(socket: Socket): boolean {
  const c = conn(socket);
  return (c.writeBuffer?.length ?? 0) === 0 && c.transport?.writable === true;
}

/** Discards what is queued and cuts the connection now, instead of waiting for a drain that will not come. */
export function dropSocket(socket: Socket): void {
  const c = conn(socket);
  const ws = c.transport?.socket;
  c.close(true);
  ws?.terminate?.();
}
