import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { command as commandMessage } from '../devices/outbound';
import type { DeviceRegistry } from '../devices/registry';
import type { DeviceSession } from '../devices/session';
import type { Broadcaster } from '../realtime/broadcast';
import type { Command, Storage } from '../storage';

export interface DeliveryDeps {
  storage: Storage;
  registry: DeviceRegistry;
  broadcast: Broadcaster;
  log: Logger;
}

export interface DeliveryEvents {
  /** A command changed status on this instance (docs/realtime.md, `command:status`). */
  changed: [Command];
}

/**
 * The last leg of a command (docs/protocol.md, "Commands"): writing it to a device connected to
 * this instance, exactly once (the `queued` → `sent` update is conditional), and telling watchers
 * of every status change this instance makes. The command service and the cluster fabric both
 * deliver through it.
 */
export class CommandDelivery extends EventEmitter<DeliveryEvents> {
  /** Commands this instance wrote to a device and still waits on, as they were sent. */
  private readonly inFlight = new Map<string, Command>();
  readonly counters = { sent: 0, acked: 0, failed: 0, timeout: 0, expired: 0, queued: 0 };

  constructor(private readonly deps: DeliveryDeps) {
    super();
  }

  /**
   * Writes the command to its device if it is connected here and can take it now; marks it `sent`
   * exactly once. False: it stays queued (an MQTT device gets it once it subscribes).
   */
  async deliverHere(cmd: Command): Promise<boolean> {
    const { registry, storage } = this.deps;
    if (!registry.get(cmd.deviceId)?.acceptsCommands) return false;
    const now = Date.now();
    const sent = await storage.updateCommand(cmd.id, ['queued'], { status: 'sent', sentAt: now, updatedAt: now });
    // Null when another delivery (or the sweeper) got to it first. A device gone between the check
    // and the update has its command timed out by the sweeper like any unanswered one.
    if (sent) this.transmit(sent, registry.get(cmd.deviceId));
    return true;
  }

  /** Delivers the queued commands of a device that just connected to this instance. */
  async deliverQueued(deviceId: string): Promise<void> {
    const queued = await this.deps.storage.queuedCommands(deviceId, Date.now());
    for (const cmd of queued) await this.deliverHere(cmd);
  }

  /** Writes a command stored as `sent` to the device's session and tells the watchers. */
  transmit(sent: Command, session: DeviceSession | undefined): void {
    this.inFlight.set(sent.id, sent);
    session?.send(commandMessage(sent));
    this.counters.sent++;
    this.report(sent);
  }

  /** The command this instance wrote to `deviceId` and still waits on, as it was sent. */
  awaiting(commandId: string, deviceId: string): Command | undefined {
    const c = this.inFlight.get(commandId);
    return c && c.deviceId === deviceId ? c : undefined;
  }

  /**
   * Stops waiting for commands sent before `time` (another instance's sweep timed them out, which
   * this one does not hear of): the map of commands in flight stays bounded.
   */
  forgetSentBefore(time: number): void {
    for (const [id, c] of this.inFlight) if ((c.sentAt ?? c.createdAt) < time) this.inFlight.delete(id);
  }

  /** The command is final or back in the queue: this instance no longer waits for its ack. */
  settled(commandId: string): void {
    this.inFlight.delete(commandId);
  }

  /** Counts a status change and tells the command's watchers (and its sender), with a line in the device's log. */
  report(c: Command): void {
    if (c.status !== 'sent') this.counters[c.status]++;
    this.deps.broadcast.command(c);
    const detail = c.status === 'acked' ? ` (${JSON.stringify(c.result)})` : c.error ? ` (${c.error})` : '';
    this.deps.broadcast.log(c.deviceId, c.status === 'acked' || c.status === 'sent' ? 'info' : 'warn', `${c.action} ${c.status}${detail}`);
    this.emit('changed', c);
  }

  /** At shutdown the acks of commands in flight can no longer arrive: they become `timeout`. */
  async close(): Promise<void> {
    const now = Date.now();
    for (const id of this.inFlight.keys()) {
      const c = await this.deps.storage
        .updateCommand(id, ['sent'], { status: 'timeout', error: 'server stopped before the device acknowledged', updatedAt: now })
        .catch(() => null);
      if (c) this.report(c);
    }
    this.inFlight.clear();
  }
}
