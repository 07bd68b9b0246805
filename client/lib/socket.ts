// The page's Socket.IO connection: same origin, session cookie goes along.
import { io, type Socket } from 'socket.io-client';
import { $, setText } from './dom';
import type { Answer, ClientEventName, ClientToServerEvents, PayloadOf, ServerToClientEvents } from './types';

export type AppSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

type ConnState = 'connecting' | 'connected' | 'reconnecting' | 'offline';

const LABELS: Record<ConnState, string> = {
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
};

function setConnState(state: ConnState): void {
  const el = $('#conn');
  if (!el) return;
  el.hidden = false;
  el.dataset.state = state;
  el.title = state === 'connected' ? 'Live updates are on' : 'Live updates are paused until the connection is back';
  setText($('.conn__label', el), LABELS[state]);
  document.body.classList.toggle('is-disconnected', state !== 'connected');
}

let leaving = false;
function goToLogin(): void {
  if (leaving) return;
  leaving = true;
  window.location.assign('/login');
}

export function connect(): AppSocket {
  // `telemetry: 'batch'`: the fleet's readings come as one `fleet:telemetry` array per server
  // tick instead of one `device:telemetry` event each (docs/realtime.md).
  const socket: AppSocket = io({ transports: ['websocket', 'polling'], auth: { telemetry: 'batch' } });
  setConnState('connecting');

  socket.on('connect', () => setConnState('connected'));
  socket.on('disconnect', (reason) => {
    if (leaving) return;
    setConnState('reconnecting');
    // The server closed us without a session:ended first: try again; a dead
    // session comes back as connect_error "unauthorized" and we go to /login.
    if (reason === 'io server disconnect') window.setTimeout(() => socket.connect(), 1500);
  });
  socket.on('connect_error', (err) => {
    if (err.message === 'unauthorized') goToLogin();
    else setConnState(socket.active ? 'reconnecting' : 'offline');
  });
  socket.on('session:ended', () => goToLogin());

  window.addEventListener('online', () => {
    if (!socket.connected) socket.connect();
  });
  return socket;
}

/**
 * Emits a client event with an acknowledgement; resolves to the server's answer, or to
 * {ok:false} with `disconnected`, `timeout` or `bad_response` decided here.
 */
export function request<E extends ClientEventName>(socket: AppSocket, event: E, payload: PayloadOf<E>, timeoutMs = 8000): Promise<Answer<E>> {
  return new Promise((resolve) => {
    if (!socket.connected) {
      resolve({ ok: false, error: 'disconnected' });
      return;
    }
    // socket.io's typed emit cannot resolve its parameters for a generic event name; the call is
    // typed by this function's own signature instead, and the answer is checked before it is trusted.
    const timed = socket.timeout(timeoutMs) as unknown as { emit(ev: E, p: PayloadOf<E>, cb: (err: Error | null, res: unknown) => void): void };
    timed.emit(event, payload, (err, res) => {
      if (err) resolve({ ok: false, error: 'timeout' });
      else if (res && typeof res === 'object' && 'ok' in res) resolve(res as Answer<E>);
      else resolve({ ok: false, error: 'bad_response' });
    });
  });
}

/** Human text for the error codes of docs/realtime.md. */
export function errorText(code: string): string {
  switch (code) {
    case 'forbidden':
      return 'Your role is not allowed to do this.';
    case 'rate_limited':
      return 'Too many requests. Wait a moment and try again.';
    case 'bad_request':
      return 'The server did not accept this request.';
    case 'not_found':
      return 'This device no longer exists.';
    case 'disconnected':
      return 'Not connected. Waiting for the connection to come back.';
    case 'timeout':
      return 'The server did not answer in time.';
    default:
      return `Failed: ${code}`;
  }
}

