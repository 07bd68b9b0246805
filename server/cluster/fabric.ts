import type { CommandDelivery } from '../commands/delivery';
import type { Transport } from '../devices/session';
import type { Command } from '../storage';

export interface PresenceEntry {
  online: boolean;
  lastSeen: number | null;
  /** How the device is connected, while it is online. */
  transport: Transport | null;
}

/**
 * How device routing and presence cross instances. The embedded default is one process
 * (LocalFabric); with REDIS_URL it is RedisFabric (redis/fabric.ts). The command service and the
 * realtime layer only see this interface.
 */
export interface Fabric {
  readonly kind: 'local' | 'redis';
  /** Hands a command to the instance holding its device. True if some instance delivered it. */
  route(cmd: Command): Promise<boolean>;
  deviceOnline(deviceId: string, transport: Transport): Promise<void>;
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
  private readonly online = new Map<string, PresenceEntry>();

  constructor(private readonly delivery: CommandDelivery) {}

  route(cmd: Command): Promise<boolean> {
    return this.delivery.deliverHere(cmd);
  }

  async deviceOnline(deviceId: string, transport: Transport): Promise<void> {
    this.online.set(deviceId, { online: true, lastSeen: Date.now(), transport });
  }

  async deviceOffline(deviceId: string, lastSeen: number): Promise<void> {
    this.online.set(deviceId, { online: false, lastSeen, transport: null });
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
