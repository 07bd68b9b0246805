import type { Logger } from 'pino';
import type { CommandDelivery } from '../../commands/delivery';
import type { DeviceRegistry } from '../../devices/registry';
import type { Transport } from '../../devices/session';
import type { Broadcaster, IO } from '../../realtime/broadcast';
import type { Command, Storage } from '../../storage';
import type { Fabric, PresenceEntry } from '../fabric';
import type { Redis } from './client';
import type { Holder, Leases } from './leases';

/** How long a routed command waits for the holding instance to say whether it delivered. */
export const ROUTE_TIMEOUT_MS = 3000;
/** Lapsed leases handled per reaper pass. */
const REAP_BATCH = 500;
/** Devices per lease renewal call. */
const RENEW_BATCH = 1000;

export interface RedisFabricDeps {
  leases: Leases;
  /** The command connection (its `ready` event starts the catch-up after an outage). */
  cmd: Redis;
  sub: Redis;
  io: IO;
  storage: Storage;
  registry: DeviceRegistry;
  delivery: CommandDelivery;
  broadcast: Broadcaster;
  log: Logger;
  /** A device's presence lease; the instance holding it renews it every third of this. */
  leaseMs: number;
}

/**
 * Device routing and presence across instances (docs/deploying.md).
 *
 * - Leases in Redis say which instance holds each device's connection (leases.ts); the holder
 *   renews them every leaseMs/3.
 * - A command for a device held elsewhere is offered to the other instances with Socket.IO's
 *   `serverSideEmitWithAck` (`fabric:deliver`, naming the holder); only the holder delivers it,
 *   through the conditional `queued` → `sent` update, so it is written once, and the answer
 *   comes back within ROUTE_TIMEOUT_MS or the command stays queued.
 * - A device that connects here while another instance held it: that instance is told
 *   (`fabric:replaced`) to close its stale connection.
 * - Every instance reaps lapsed leases (their instance died or lost Redis); exactly one reaper
 *   announces the device offline. Bound: offline at most leaseMs after the holder's last renewal,
 *   announced within the reaper period (≤ 2 s).
 * - While Redis is unreachable the instance serves the devices connected to it on its own; when
 *   it returns, it re-asserts its leases and delivers what was queued meanwhile.
 */
export class RedisFabric implements Fabric {
  readonly kind = 'redis' as const;
  /** Devices connected to this instance and their transport, so they are served while Redis is away. */
  private readonly held = new Map<string, Transport>();
  /** Presence changes Redis missed while unreachable; replayed when it returns. */
  private readonly unclaimed = new Set<string>();
  private readonly unreleased = new Set<string>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly onReady = () => void this.recover();
  private closed = false;

  constructor(private readonly deps: RedisFabricDeps) {
    const { io, leaseMs } = deps;
    io.on('fabric:deliver', (commandId, holder, ack) => void this.onDeliver(commandId, holder, ack));
    io.on('fabric:replaced', (deviceId, at) => {
      if (typeof deviceId === 'string' && typeof at === 'number') deps.registry.replacedElsewhere(deviceId, at);
    });
    this.every(leaseMs / 3, () => this.heartbeat());
    this.every(Math.min(2000, leaseMs / 5), () => this.reap());
    deps.cmd.on('ready', this.onReady);
  }

  get instanceId(): string {
    return this.deps.leases.instanceId;
  }

  async route(cmd: Command): Promise<boolean> {
    let holder: Holder | null | undefined;
    try {
      [holder] = await this.deps.leases.holders([cmd.deviceId]);
    } catch (err) {
      // Redis is away: a device connected here is still ours to serve.
      if (this.held.has(cmd.deviceId)) return this.deps.delivery.deliverHere(cmd);
      throw err;
    }
    if (!holder || holder.instance === this.instanceId) return this.held.has(cmd.deviceId) ? this.deps.delivery.deliverHere(cmd) : false;
    return this.ask(holder.instance, cmd);
  }

  async deviceOnline(deviceId: string, transport: Transport): Promise<void> {
    this.held.set(deviceId, transport);
    this.unreleased.delete(deviceId);
    try {
      const previous = await this.deps.leases.claim(deviceId, transport);
      this.unclaimed.delete(deviceId);
      if (previous) {
        this.deps.log.info({ device: deviceId, previous }, 'device moved here from another instance');
        // The old connection may linger half-open there; tell that instance to close it.
        this.deps.io.serverSideEmit('fabric:replaced', deviceId, Date.now());
      }
    } catch (err) {
      this.unclaimed.add(deviceId);
      throw err;
    }
  }

  async deviceOffline(deviceId: string, _lastSeen: number): Promise<void> {
    this.held.delete(deviceId);
    this.unclaimed.delete(deviceId);
    try {
      const other = await this.deps.leases.release(deviceId);
      // The device is connected to another instance by now; the offline the caller announced is stale.
      if (other) this.deps.broadcast.deviceStatus({ deviceId, online: true, lastSeen: Date.now() });
    } catch (err) {
      this.unreleased.add(deviceId);
      throw err;
    }
  }

  async presence(deviceIds: string[]): Promise<Map<string, PresenceEntry>> {
    const out = new Map<string, PresenceEntry>();
    if (deviceIds.length === 0) return out;
    let holders: (Holder | null)[];
    try {
      holders = await this.deps.leases.holders(deviceIds);
    } catch (err) {
      this.deps.log.debug({ err }, 'presence from this instance only (redis unreachable)');
      holders = deviceIds.map((id) => {
        const transport = this.held.get(id);
        return transport ? { instance: this.instanceId, transport } : null;
      });
    }
    deviceIds.forEach((id, i) => {
      const h = holders[i];
      if (h) out.set(id, { online: true, lastSeen: null, transport: h.transport });
    });
    return out;
  }

  async healthy(): Promise<boolean> {
    const { cmd, sub } = this.deps;
    if (!cmd.isReady || !sub.isReady) return false;
    return cmd
      .withCommandOptions({ timeout: 1000 })
      .ping()
      .then(
        () => true,
        () => false,
      );
  }

  /** Stops the timers; leases of devices still held lapse on their own (graceful shutdown closes devices first). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.deps.cmd.off('ready', this.onReady);
  }

  // ---- routing ----

  /** Offers the command to the other instances; true when its holder delivered it. */
  private async ask(holder: string, cmd: Command): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    // The adapter times its requests out too, but while Redis is away it may never answer at all.
    const late = new Promise<boolean[]>((resolve) => {
      timer = setTimeout(() => resolve([]), ROUTE_TIMEOUT_MS + 500);
    });
    try {
      const answers = await Promise.race([this.deps.io.serverSideEmitWithAck('fabric:deliver', cmd.id, holder), late]);
      return answers.some((a) => a === true);
    } catch (err) {
      // Timed out: the holder is gone or stuck. Whoever answered in time still counts.
      const partial = (err as { responses?: unknown[] }).responses ?? [];
      return partial.some((a) => a === true);
    } finally {
      clearTimeout(timer);
    }
  }

  private async onDeliver(commandId: unknown, holder: unknown, ack: unknown): Promise<void> {
    if (typeof ack !== 'function') return;
    const answer = ack as (delivered: boolean) => void;
    if (holder !== this.instanceId || typeof commandId !== 'string') return answer(false);
    let ok = false;
    try {
      const cmd = await this.deps.storage.getCommand(commandId);
      ok = cmd !== null && (await this.deps.delivery.deliverHere(cmd));
    } catch (err) {
      this.deps.log.warn({ err, command: commandId }, 'could not deliver a routed command');
    }
    answer(ok);
  }

  // ---- presence upkeep ----

  private every(ms: number, task: () => Promise<void>): void {
    let running = false;
    const t = setInterval(() => {
      if (running || this.closed || !this.deps.cmd.isReady) return;
      running = true;
      task()
        .catch((err: unknown) => this.deps.log.warn({ err }, 'redis presence upkeep failed; will retry'))
        .finally(() => {
          running = false;
        });
    }, Math.max(100, Math.floor(ms)));
    t.unref();
    this.timers.push(t);
  }

  /** Replays what Redis missed, then renews every lease this instance holds. */
  private async heartbeat(): Promise<void> {
    const { leases, broadcast, log } = this.deps;
    for (const id of [...this.unreleased]) {
      const other = await leases.release(id);
      this.unreleased.delete(id);
      if (other) broadcast.deviceStatus({ deviceId: id, online: true, lastSeen: Date.now() });
    }
    for (const id of [...this.unclaimed]) {
      const transport = this.held.get(id);
      if (transport) await leases.claim(id, transport);
      this.unclaimed.delete(id);
      if (transport) broadcast.deviceStatus({ deviceId: id, online: true, lastSeen: Date.now(), transport });
    }
    const held = [...this.held];
    for (let i = 0; i < held.length; i += RENEW_BATCH) {
      const batch = held.slice(i, i + RENEW_BATCH);
      const codes = await leases.renew(batch);
      batch.forEach(([id, transport], j) => {
        if (codes[j] === 1) broadcast.deviceStatus({ deviceId: id, online: true, lastSeen: Date.now(), transport });
        else if (codes[j] === 2) {
          // A newer connection of this device is on another instance; ours is stale.
          this.held.delete(id);
          log.info({ device: id }, 'device is now held by another instance');
        }
      });
    }
  }

  private async reap(): Promise<void> {
    const { leases, storage, broadcast, log } = this.deps;
    for (const id of await leases.reap(REAP_BATCH)) {
      if (this.held.has(id)) {
        // Our own lease lapsed (this process stalled); the device is still here.
        this.unclaimed.add(id);
        continue;
      }
      const device = await storage.getDevice(id).catch(() => null);
      log.info({ device: id }, 'device lease lapsed; it is offline');
      broadcast.deviceStatus({ deviceId: id, online: false, lastSeen: device?.lastSeen ?? null });
    }
  }

  /** After an outage: re-assert presence, then deliver what other instances could only queue meanwhile. */
  private async recover(): Promise<void> {
    if (this.closed) return;
    try {
      await this.heartbeat();
      const now = Date.now();
      for (const id of [...this.held.keys()]) {
        for (const cmd of await this.deps.storage.queuedCommands(id, now)) await this.deps.delivery.deliverHere(cmd);
      }
    } catch (err) {
      this.deps.log.warn({ err }, 'could not catch up after redis returned; the heartbeat will retry');
    }
  }
}
