import type { ErrorCode } from './outbound';
import { GOING_AWAY } from './outbound';
import { DeviceSession, Transport, TRANSPORTS } from './session';

/**
 * The devices connected to this instance, one session each, whatever their transport. A newer
 * connection of a device replaces the older one (docs/protocol.md).
 */
export class DeviceRegistry {
  private readonly byDevice = new Map<string, DeviceSession>();

  /** The ready session of a device on this instance. */
  get(deviceId: string): DeviceSession | undefined {
    return this.byDevice.get(deviceId);
  }

  /** Makes `session` its device's connection here; returns the one it replaces, if any. */
  claim(session: DeviceSession): DeviceSession | undefined {
    const id = session.deviceId!;
    const previous = this.byDevice.get(id);
    this.byDevice.set(id, session);
    return previous === session ? undefined : previous;
  }

  /** Forgets a closed session; true when it was still its device's connection (the device went offline). */
  release(session: DeviceSession): boolean {
    const id = session.deviceId;
    if (id === null || this.byDevice.get(id) !== session) return false;
    this.byDevice.delete(id);
    return true;
  }

  /** Closes a device's connection here with an error (its token was rotated, it was removed). */
  kick(deviceId: string, code: ErrorCode, detail: string): boolean {
    const s = this.byDevice.get(deviceId);
    if (!s) return false;
    s.error(code, detail, true);
    return true;
  }

  /**
   * A newer connection of the device was claimed on another instance at `at`: ours is stale,
   * unless it is newer still (a device may flap back here).
   */
  replacedElsewhere(deviceId: string, at: number): void {
    const s = this.byDevice.get(deviceId);
    if (s && s.connectedAt < at) s.error('going_away', GOING_AWAY.replaced, true);
  }

  get onlineCount(): number {
    return this.byDevice.size;
  }

  ids(): IterableIterator<string> {
    return this.byDevice.keys();
  }

  sessions(): IterableIterator<DeviceSession> {
    return this.byDevice.values();
  }

  /** Online devices here per transport (for /metrics). */
  onlineByTransport(): Record<Transport, number> {
    const out = Object.fromEntries(TRANSPORTS.map((t) => [t, 0])) as Record<Transport, number>;
    for (const s of this.byDevice.values()) out[s.transport]++;
    return out;
  }
}
