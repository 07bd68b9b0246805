import type { Command } from '../storage';

export interface PresenceEntry {
  online: boolean;
  lastSeen: number | null;
}

/**
 * How device routing and presence cross instances. The embedded default is one process
 * (LocalFabric); with REDIS_URL it is RedisFabric. The command service and the realtime layer only
 * see this interface.
 */
export interface Fabric {
  readonly kind: 'local' | 'redis';
  /** Set once at start: how this instance delivers a command to a device connected to it. */
  onDeliver(handler: (cmd: Command) => Promise<boolean>): void;
  /**
   * Set once at start: how this instance closes a device connection that reconnected elsewhere
   * (`at`: when the newer connection was claimed).
   */
  onReplaced(handler: (deviceId: string, at: number) => void): void;
  /** Hands a command to the instance holding its device. True if some instance delivered it. */
  route(cmd: Command): Promise<boolean>;
  deviceOnline(deviceId: string): Promise<void>;
  deviceOffline(deviceId: string, lastSeen: number): Promise<void>;
  /** Cluster-wide presence of the given devices (absent = offline, never seen by presence). */
  presence(deviceIds: string[]): Promise<Map<string, PresenceEntry>>;
  /** True when every other instance's state is reachable (Redis up). */
  healthy(): Promise<boolean>;
  close(): Promise<void>;
}

/** One process: the device is either connected here or offline. */
export class LocalFabric implements Fabric {
  readonly kind = 'local' as const;
  private deliver: ((cmd: Command) => Promise<boolean>) | null = null;
  private readonly online = new Map<string, PresenceEntry>();

  onDeliver(handler: (cmd: Command) => Promise<boolean>): void {
    this.deliver = handler;
  }

  /** One process: the hub replaces a duplicate connection itself. */
  onReplaced(): void {}

  async route(cmd: Command): Promise<boolean> {
    return this.deliver ? this.deliver(cmd) : false;
  }

  async deviceOnline(deviceId: string): Promise<void> {
    this.online.set(deviceId, { online: true, lastSeen: Date.now() });
  }

  async deviceOffline(deviceId: string, lastSeen: number): Promise<void> {
    this.online.set(deviceId, { online: false, lastSeen });
  }

  async presence(deviceIds: string[]): Promise<Map<string, PresenceEntry>> {
    const out = new Map<string, PresenceEntry>();
    for (const id of deviceIds) {
      const p = this.online.get(id);
      if (p) out.set(id, p);
    }
    return out;
  }

  async healthy(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {}
}
