import type { Logger } from 'pino';
import type { Fabric } from '../cluster/fabric';
import type { CommandDelivery } from '../commands/delivery';
import type { Broadcaster } from '../realtime/broadcast';
import type { Storage } from '../storage';
import type { Transport } from './session';

export interface PresenceDeps {
  storage: Storage;
  fabric: Fabric;
  broadcast: Broadcaster;
  delivery: CommandDelivery;
  log: Logger;
}

/**
 * What happens when a device comes online or goes offline on this instance: its last-seen time
 * is stored, the cluster learns where it is, dashboards are told, and commands that waited for
 * it are delivered.
 */
export class Presence {
  constructor(private readonly deps: PresenceDeps) {}

  async online(deviceId: string, firmware: string | null, transport: Transport): Promise<void> {
    const { storage, fabric, broadcast, delivery, log } = this.deps;
    const now = Date.now();
    // Both at once: until the claim is in Redis, other instances still route to the old holder.
    await Promise.all([
      storage.markDeviceSeen(deviceId, now, firmware).catch((err) => log.warn({ err }, 'could not record last seen')),
      fabric.deviceOnline(deviceId, transport).catch((err) => log.warn({ err }, 'could not publish presence')),
    ]);
    broadcast.deviceStatus({ deviceId, online: true, lastSeen: now, firmware, transport });
    await delivery.deliverQueued(deviceId).catch((err) => log.warn({ err, device: deviceId }, 'could not deliver queued commands'));
  }

  /** A connected device can take commands now (an MQTT device subscribed): those queued for it go out. */
  async commandsWanted(deviceId: string): Promise<void> {
    const { delivery, log } = this.deps;
    await delivery.deliverQueued(deviceId).catch((err) => log.warn({ err, device: deviceId }, 'could not deliver queued commands'));
  }

  offline(deviceId: string, lastSeen: number): void {
    const { storage, fabric, broadcast } = this.deps;
    void storage.markDeviceSeen(deviceId, lastSeen).catch(() => {});
    void fabric.deviceOffline(deviceId, lastSeen).catch(() => {});
    broadcast.deviceStatus({ deviceId, online: false, lastSeen });
  }
}
