/**
 * Every message the server sends to a device, built in one place (docs/protocol.md, "Server →
 * device"). Transports only encode them: a line, a WebSocket frame, or an MQTT packet.
 */

export type ErrorCode =
  | 'unauthorized'
  | 'bad_base64'
  | 'bad_json'
  | 'line_too_long'
  | 'rate_limited'
  | 'protocol'
  | 'going_away'
  | 'unavailable';

export interface WelcomeMessage {
  type: 'welcome';
  device: string;
  time: number;
}
export interface PongMessage {
  type: 'pong';
}
export interface StoredMessage {
  type: 'stored';
  id: string;
}
export interface CommandMessage {
  type: 'fromservertonode';
  msg: 'action';
  action: string;
  id: string;
  params?: Record<string, unknown>;
}
export interface ErrorMessage {
  type: 'error';
  error: ErrorCode;
  detail?: string;
}

export type ServerMessage = WelcomeMessage | PongMessage | StoredMessage | CommandMessage | ErrorMessage;

export const welcome = (device: string, time = Date.now()): WelcomeMessage => ({ type: 'welcome', device, time });

export const PONG: PongMessage = Object.freeze({ type: 'pong' });

export const stored = (id: string): StoredMessage => ({ type: 'stored', id });

export function command(c: { id: string; action: string; params: Record<string, unknown> | null }): CommandMessage {
  const m: CommandMessage = { type: 'fromservertonode', msg: 'action', action: c.action, id: c.id };
  if (c.params) m.params = c.params;
  return m;
}

export const error = (code: ErrorCode, detail?: string): ErrorMessage => (detail ? { type: 'error', error: code, detail } : { type: 'error', error: code });

/** Why the server closes a good connection: the words devices and tests see. */
export const GOING_AWAY = {
  shutdown: 'server is shutting down',
  replaced: 'replaced by a newer connection of this device',
} as const;
