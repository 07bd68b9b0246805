import type { Fabric, PresenceEntry } from '../cluster/fabric';
import type { DeviceView } from '../contract/schemas';
import type { Device, Storage } from '../storage';

/** A stored device as the dashboard and the API show it, with its presence. */
export function deviceView(d: Device, presence: PresenceEntry | undefined): DeviceView {
  const lastSeen = Math.max(d.lastSeen ?? 0, presence?.lastSeen ?? 0) || null;
  const online = presence?.online ?? false;
  return {
    id: d.id,
    name: d.name,
    online,
    lastSeen,
    latest: d.latest,
    latestAt: d.latestAt,
    firmware: d.firmware,
    transport: online ? (presence?.transport ?? null) : null,
  };
}

/** Device views with cluster-wide presence: every device, or those of `ids` that exist. */
export async function fleetViews(storage: Storage, fabric: Fabric, ids?: string[]): Promise<DeviceView[]> {
  const devices = ids ? (await Promise.all(ids.map((id) => storage.getDevice(id)))).filter((d) => d !== null) : await storage.listDevices();
  const presence = await fabric.presence(devices.map((d) => d.id)).catch(() => new Map<string, PresenceEntry>());
  return devices.map((d) => deviceView(d, presence.get(d.id)));
}
