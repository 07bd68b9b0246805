import crypto from 'node:crypto';
import type { Logger } from 'pino';
import type { Fabric } from '../cluster/fabric';
import type { DeviceRegistry } from '../devices/registry';
import type { Broadcaster } from '../realtime/broadcast';
import type { Command, CommandPatch, CommandStatus, Storage } from '../storage';
import type { CommandDelivery } from './delivery';

export const ACTIONS = ['togglerele', 'changesetting'] as const;
export type Action = (typeof ACTIONS)[number];

export class NotFoundError extends Error {}

/** An ack that could not be stored is retried this often, this many times (storage briefly unreachable). */
const ACK_RETRY_MS = 1000;
const ACK_RETRIES = 60;
/** How long a stored ack is remembered for the sweeps that began before it (see CommandService.acking). */
const ACKING_KEEP_MS = 60_000;

export interface CommandOptions {
  ttlMs: number;
  timeoutMs: number;
  /** True when this is the only instance, so no other one can be waiting on a `sent` command. */
  soleInstance: boolean;
}

export interface CommandDeps {
  storage: Storage;
  registry: DeviceRegistry;
  delivery: CommandDelivery;
  fabric: Fabric;
  broadcast: Broadcaster;
  log: Logger;
}

/**
 * The command lifecycle (docs/protocol.md, "Commands"): queued → sent → acked | failed | timeout |
 * expired. Every transition is a conditional update in storage, so each happens once even when
 * several instances race (and each is broadcast by the instance that made it).
 */
export class CommandService {
  private sweeper: NodeJS.Timeout | null = null;
  /**
   * Acks reported before they were stored (see ack): when each one's update was answered
   * (`performance.now()`; Infinity while it is pending). A sweep that began before that may have
   * timed the command out in storage first, and must not report it.
   */
  private readonly acking = new Map<string, number>();
  /** Acks being stored (recordAck), and how to cut short their wait before a retry (close). */
  private readonly recording = new Set<Promise<void>>();
  private readonly wakeRetries = new Set<() => void>();
  private closing = false;
  /** onChanged's listeners, called by the one listener (fanOut) on the delivery emitter. */
  private readonly waiters = new Set<{ listener: (c: Command) => void }>();
  private readonly fanOut = (c: Command): void => {
    for (const w of this.waiters) w.listener(c);
  };

  constructor(
    private readonly deps: CommandDeps,
    private readonly opts: CommandOptions,
  ) {}

  get counters(): CommandDelivery['counters'] {
    return this.deps.delivery.counters;
  }

  async start(): Promise<void> {
    if (this.opts.soleInstance) {
      // After a restart no command may stay `sent`: nothing here is waiting for those acks any more.
      const stale = await this.deps.storage.timeoutSent(Number.MAX_SAFE_INTEGER, Date.now());
      for (const c of stale) this.deps.delivery.report(c);
    }
    this.sweeper = setInterval(() => void this.sweep(), 1000);
    this.sweeper.unref();
  }

  /**
   * Calls `listener` with every status change this instance makes; returns the unsubscribe. One
   * listener on the delivery emitter serves them all, so many API waits at once are no "possible
   * leak" warning (EventEmitter's limit of 10) and each change is one loop over a Set.
   */
  onChanged(listener: (c: Command) => void): () => void {
    const waiter = { listener };
    if (this.waiters.size === 0) this.deps.delivery.on('changed', this.fanOut);
    this.waiters.add(waiter);
    return () => {
      if (!this.waiters.delete(waiter)) return;
      if (this.waiters.size === 0) this.deps.delivery.off('changed', this.fanOut);
    };
  }

  /**
   * Records a command and delivers it now if its device is online anywhere, else leaves it queued.
   * Each storage call is a round trip (to the SQLite thread or PostgreSQL) that under load also
   * waits for a turn of the event loop, so the path to a device connected here (sole instance) is
   * one write: the command is stored as `sent` and written to the device; the person still sees
   * `queued` then `sent`.
   */
  async send(input: { deviceId: string; action: Action; params: Record<string, unknown> | null; user: { id: number; username: string } }): Promise<Command> {
    const { storage, registry, delivery, fabric, broadcast, log } = this.deps;
    // Alone, a device connected here exists (its token is re-checked against storage every 30 s)
    // and is the one to deliver to. In a cluster a newer connection of it may be on another
    // instance, whose "replaced" notice has not arrived yet, so the fabric decides.
    // (An MQTT device that has not subscribed to its commands topic yet gets it once it does.)
    const here = this.opts.soleInstance && registry.get(input.deviceId)?.acceptsCommands === true;
    if (!here && !(await storage.getDevice(input.deviceId))) throw new NotFoundError(`no device "${input.deviceId}"`);
    const now = Date.now();
    const cmd: Command = {
      id: crypto.randomUUID(),
      deviceId: input.deviceId,
      action: input.action,
      params: input.params,
      status: 'queued',
      result: null,
      error: null,
      createdAt: now,
      updatedAt: now,
      expiresAt: now + this.opts.ttlMs,
      sentAt: null,
      sentBy: input.user.username,
      sentByUserId: input.user.id,
    };
    const sent: Command = { ...cmd, status: 'sent', sentAt: now };
    // (Removed meanwhile, even while connected here: it is being disconnected.)
    if (!(await storage.insertCommand(here ? sent : cmd))) throw new NotFoundError(`no device "${input.deviceId}"`);
    delivery.counters.queued++;
    broadcast.command(cmd);
    broadcast.log(cmd.deviceId, 'info', `${cmd.sentBy} sent ${cmd.action}`);
    if (here) {
      const session = registry.get(cmd.deviceId);
      if (session?.acceptsCommands) {
        delivery.transmit(sent, session);
        return sent;
      }
      // It went while the command was stored: back to `queued`, for its next connection.
      await storage.updateCommand(cmd.id, ['sent'], { status: 'queued', sentAt: null, updatedAt: Date.now() });
    }
    const delivered = await fabric.route(cmd).catch((err: Error) => {
      log.warn({ err, command: cmd.id }, 'could not route command; it stays queued');
      return false;
    });
    if (!delivered) {
      const until = registry.get(cmd.deviceId) ? 'it subscribes to its commands topic' : 'the device connects';
      broadcast.log(cmd.deviceId, 'info', `${cmd.action} queued until ${until}`);
      return cmd;
    }
    return (await storage.getCommand(cmd.id)) ?? cmd;
  }

  /**
   * Records a device's ack. 'unknown' when no command of that device waits for one.
   *
   * On a single instance (no Redis), an ack of a command this instance wrote to that device (the
   * usual case) is reported at once, to the page and to API waits, and stored right after
   * (recordAck): under a busy fleet the storage round trip waited behind telemetry and cost the
   * click most of its time (bench/README.md). With other instances it is stored first, then
   * reported (see below). The status comes from the device, so it is as true before the commit as
   * after it; a read of the command in the few milliseconds between may still say `sent`.
   */
  async ack(deviceId: string, commandId: string, ok: boolean, result: unknown): Promise<'ok' | 'unknown'> {
    const { storage, delivery } = this.deps;
    const status: CommandStatus = ok ? 'acked' : 'failed';
    const patch = { status, result: result ?? null, error: ok ? null : failureText(result), updatedAt: Date.now() };
    // Alone only: with other instances, one of their sweeps could time the command out in storage
    // meanwhile and say so after this report, leaving the page on `timeout` over a stored `acked`.
    const waiting = this.opts.soleInstance && !this.closing ? delivery.awaiting(commandId, deviceId) : undefined;
    if (waiting) {
      delivery.settled(commandId);
      this.acking.set(commandId, Infinity);
      delivery.report({ ...waiting, ...patch });
      const recording = this.recordAck(commandId, deviceId, patch).finally(() => this.recording.delete(recording));
      this.recording.add(recording);
      return 'ok';
    }
    // One round trip in the usual case: the update checks the device and the state itself.
    // A late ack after `timeout` still tells the truth: the device did (or refused) it.
    const updated = await storage.updateCommand(commandId, ['sent', 'timeout'], patch, deviceId);
    if (!updated) {
      // A repeated ack of a finished command is fine; anything else names no command waiting here.
      const cmd = await storage.getCommand(commandId);
      return cmd && cmd.deviceId === deviceId && (cmd.status === 'acked' || cmd.status === 'failed') ? 'ok' : 'unknown';
    }
    delivery.settled(commandId);
    delivery.report(updated);
    return 'ok';
  }

  /**
   * Stores an ack that was already reported. From `sent` or `timeout`: a sweep may have timed the
   * command out in storage meanwhile (its report is skipped, see sweep). Retried every second for
   * a minute while storage is unreachable, so that the row ends as the page showed it; at
   * shutdown, once more (close waits for it).
   */
  private async recordAck(commandId: string, deviceId: string, patch: CommandPatch): Promise<void> {
    const { storage, log } = this.deps;
    for (let attempt = 0; ; attempt++) {
      try {
        await storage.updateCommand(commandId, ['sent', 'timeout'], patch, deviceId);
        break;
      } catch (err) {
        if (attempt >= ACK_RETRIES || this.closing) {
          log.error({ err, command: commandId }, 'could not store an ack; the command stays sent in storage');
          break;
        }
        if (attempt === 0) log.warn({ err, command: commandId }, 'could not store an ack; retrying');
        await new Promise<void>((resolve) => {
          const wake = () => {
            clearTimeout(timer);
            this.wakeRetries.delete(wake);
            resolve();
          };
          const timer = setTimeout(wake, ACK_RETRY_MS);
          timer.unref();
          this.wakeRetries.add(wake);
        });
      }
    }
    this.acking.set(commandId, performance.now());
  }

  /** Moves expired and timed-out commands on. Runs every second on every instance. */
  async sweep(): Promise<void> {
    const { storage, delivery, log } = this.deps;
    const started = performance.now();
    try {
      const now = Date.now();
      for (const c of await storage.expireQueued(now)) delivery.report(c);
      for (const c of await storage.timeoutSent(now - this.opts.timeoutMs, now)) {
        delivery.settled(c.id);
        // Acked here before this sweep could see it stored: the page has the ack, and the ack's
        // update (from `timeout` too) follows this one in storage.
        if (started < (this.acking.get(c.id) ?? -Infinity)) continue;
        delivery.report(c);
      }
    } catch (err) {
      log.warn({ err }, 'command sweep failed; will retry');
    }
    for (const [id, storedAt] of this.acking) if (storedAt < started - ACKING_KEEP_MS) this.acking.delete(id);
    // Timed out long ago, by this instance's sweep or another's: an ack that still comes finds it in storage.
    delivery.forgetSentBefore(Date.now() - this.opts.timeoutMs - ACKING_KEEP_MS);
  }

  /**
   * Stops the sweeper and waits for the acks being stored; commands still in flight then become
   * `timeout` (CommandDelivery.close).
   */
  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    // Acks already shown on the page are stored before storage closes: those waiting to be
    // retried try once more now.
    this.closing = true;
    for (const wake of this.wakeRetries) wake();
    this.wakeRetries.clear();
    await Promise.allSettled([...this.recording]);
  }

  recent(deviceId: string, limit = 20): Promise<Command[]> {
    return this.deps.storage.listCommands(deviceId, limit);
  }
}

function failureText(result: unknown): string {
  if (typeof result === 'string') return result.slice(0, 200);
  if (result && typeof result === 'object' && typeof (result as { error?: unknown }).error === 'string') {
    return ((result as { error: string }).error).slice(0, 200);
  }
  return 'the device reported failure';
}
