/** Validation of device → server messages (docs/protocol.md). Each returns the typed message or a reason. */

/** Not only dots: `/devices/..` is a path a browser resolves away, so such a device could not be opened or managed in the page. */
export const DEVICE_ID_RE = /^(?!\.+$)[A-Za-z0-9_.:-]{1,64}$/;
/** Anonymous devices name themselves; any printable text up to 64 characters is kept (and shown as text), but not only dots. */
export const ANON_ID_RE = /^(?!\.+$)[^\x00-\x1f\x7f]{1,64}$/u;

const MSG_ID_MAX = 64;
const TOKEN_MAX = 256;
const FIRMWARE_MAX = 64;

export type DeviceMessage =
  | { type: 'hello'; device: string; token: string; firmware: string | null }
  | { type: 'ack'; id: string; ok: boolean; result: unknown }
  | { type: 'ping' }
  | { type: 'telemetry'; id: string | null; data: Record<string, unknown> };

export type Parsed = { ok: true; msg: DeviceMessage } | { ok: false; detail: string };

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export function parseDeviceMessage(m: Record<string, unknown>): Parsed {
  switch (m.type) {
    case 'hello': {
      if (typeof m.device !== 'string' || !DEVICE_ID_RE.test(m.device)) {
        return { ok: false, detail: 'hello needs "device": 1-64 characters of A-Z a-z 0-9 _ . : -, not only dots' };
      }
      if (typeof m.token !== 'string' || m.token.length === 0 || m.token.length > TOKEN_MAX) {
        return { ok: false, detail: 'hello needs "token"' };
      }
      if (m.firmware !== undefined && (typeof m.firmware !== 'string' || m.firmware.length > FIRMWARE_MAX)) {
        return { ok: false, detail: `"firmware" must be text of at most ${FIRMWARE_MAX} characters` };
      }
      return { ok: true, msg: { type: 'hello', device: m.device, token: m.token, firmware: (m.firmware as string) ?? null } };
    }
    case 'ack': {
      if (typeof m.id !== 'string' || m.id.length === 0 || m.id.length > MSG_ID_MAX) {
        return { ok: false, detail: 'ack needs the command "id"' };
      }
      if (m.ok !== undefined && typeof m.ok !== 'boolean') return { ok: false, detail: '"ok" must be true or false' };
      return { ok: true, msg: { type: 'ack', id: m.id, ok: m.ok !== false, result: m.result ?? null } };
    }
    case 'ping':
      return { ok: true, msg: { type: 'ping' } };
    case 'telemetry': {
      // The reliable form carries an id and a data object; anything else typed "telemetry" is kept as it came.
      if (m.id === undefined && m.data === undefined) return { ok: true, msg: { type: 'telemetry', id: null, data: m } };
      if (typeof m.id !== 'string' || m.id.length === 0 || m.id.length > MSG_ID_MAX) {
        return { ok: false, detail: `telemetry "id" must be text of 1-${MSG_ID_MAX} characters` };
      }
      if (!isObject(m.data)) return { ok: false, detail: 'telemetry "data" must be an object' };
      return { ok: true, msg: { type: 'telemetry', id: m.id, data: m.data } };
    }
    default:
      return { ok: true, msg: { type: 'telemetry', id: null, data: m } };
  }
}
