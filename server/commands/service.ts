import crypto from 'node:crypto';
import type { Logger } from 'pino';
import type { Fabric } from '../cluster/fabric';
import type { DeviceConnection } from '../devices/connection';
import type { DeviceHub } from '../devices/hub';
import type { Broadcaster } from '../realtime/broadcast';
import type { Command, CommandStatus, Storage } from '../storage';

export const ACTIONS = ['togglerele', 'changesetting'] as const;
export type Action = (typeof ACTIONS)[number];

export class NotFoundError extends Error {}

export interface CommandOptions {
  ttlMs: number;
  timeoutMs: number;
  /** True when this is the only instance, so no other one can be waiting on a `sent` command. */
  soleInstance: boolean;
}

/**
 * The command lifecycle of SPEC §4: queued → sent → acked | failed | timeout | expired.
 * Every transition is a conditional update in storage, so each happens once even when several
 * instances race (and each is broadcast by the instance that made it).
 */
export class CommandService {
  private sweeper: NodeJS.Timeout | null = null;
  /** Commands this instance wrote to a device and still waits on. */
  private readonly inFlight = new Set<string>();
  readonly counters = { sent: 0, acked: 0, failed: 0, timeout: 0, expired: 0, queued: 0 };

  constructor(
    private readonly storage: Storage,
    private readonly hub: DeviceHub,
    private readonly fabric: Fabric,
    private readonly broadcast: Broadcaster,
    private readonly log: Logger,
    private readonly opts: CommandOptions,
  ) {
    fabric.onDeliver((cmd) => this.deliverHere(cmd));
  }

  async start(): Promise<void> {
    if (this.opts.soleInstance) {
      // After a restart no command may stay `sent`: nothing here is waiting for those acks any more.
      const stale = await this.storage.timeoutSent(Number.MAX_SAFE_INTEGER, Date.now());
      for (const c of stale) this.changed(c);
    }
    this.sweeper = setInterval(() => void this.sweep(), 1000);
    this.sweeper.unref();
  }

  /**
   * Records a command and delivers it now if its device is online anywhere, else leaves it queued.
   * Each storage call is a round trip (to the SQLite thread or PostgreSQL) that under load also
   * waits for a turn of the event loop, so the path to a device connected here (sole instance) is
   * one write: the command is stored as `sent` and written to the device; the person still sees
   * `queued` then `sent`.
   */
  async send(input: { deviceId: string; action: Action; params: Record<string, unknown> | null; user: { id: number; username: string } }): Promise<Command> {
    // Alone, a device connected here exists (its token is re-checked against storage every 30 s)
    // and is the one to deliver to. In a cluster a newer connection of it may be on another
    // instance, whose "replaced" notice has not arrived yet, so the fabric decides.
    const here = this.opts.soleInstance && Boolean(this.hub.get(input.deviceId));
    if (!here && !(await this.storage.getDevice(input.deviceId))) throw new NotFoundError(`no device "${input.deviceId}"`);
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
    await this.storage.insertCommand(here ? sent : cmd);
    this.counters.queued++;
    this.broadcast.command(cmd);
    this.broadcast.log(cmd.deviceId, 'info', `${cmd.sentBy} sent ${cmd.action}`);
    if (here) {
      const conn = this.hub.get(cmd.deviceId);
      if (conn) {
        this.transmit(sent, conn);
        return sent;
      }
      // It went while the command was stored: back to `queued`, for its next connection.
      await this.storage.updateCommand(cmd.id, ['sent'], { status: 'queued', sentAt: null, updatedAt: Date.now() });
    }
    const delivered = await this.fabric.route(cmd).catch((err: Error) => {
      this.log.warn({ err, command: cmd.id }, 'could not route command; it stays queued');
      return false;
    });
    if (!delivered) {
      this.broadcast.log(cmd.deviceId, 'info', `${cmd.action} queued until the device connects`);
      return cmd;
    }
    return (await this.storage.getCommand(cmd.id)) ?? cmd;
  }

  /** Delivers queued commands to a device that just connected to this instance. */
  async deliverQueued(deviceId: string): Promise<void> {
    const queued = await this.storage.queuedCommands(deviceId, Date.now());
    for (const cmd of queued) await this.deliverHere(cmd);
  }

  /** Writes the command to the device if it is connected here; marks it `sent` exactly once. */
  async deliverHere(cmd: Command): Promise<boolean> {
    if (!this.hub.get(cmd.deviceId)) return false;
    const now = Date.now();
    const sent = await this.storage.updateCommand(cmd.id, ['queued'], { status: 'sent', sentAt: now, updatedAt: now });
    // Null when another delivery (or the sweeper) got to it first. A device gone between the check
    // and the update has its command timed out by the sweeper like any unanswered one.
    if (sent) this.transmit(sent, this.hub.get(cmd.deviceId));
    return true;
  }

  /** Writes a command stored as `sent` to the device's connection and tells the watchers. */
  private transmit(sent: Command, conn: DeviceConnection | undefined): void {
    this.inFlight.add(sent.id);
    const line: Record<string, unknown> = { type: 'fromservertonode', msg: 'action', action: sent.action, id: sent.id };
    if (sent.params) line.params = sent.params;
    conn?.send(line);
    this.counters.sent++;
    this.changed(sent);
  }

  /** Records a device's ack. 'unknown' when no command of that device waits for one. */
  async ack(deviceId: string, commandId: string, ok: boolean, result: unknown): Promise<'ok' | 'unknown'> {
    const status: CommandStatus = ok ? 'acked' : 'failed';
    // One round trip in the usual case: the update checks the device and the state itself.
    // A late ack after `timeout` still tells the truth: the device did (or refused) it.
    const updated = await this.storage.updateCommand(
      commandId,
      ['sent', 'timeout'],
      { status, result: result ?? null, error: ok ? null : failureText(result), updatedAt: Date.now() },
      deviceId,
    );
    if (!updated) {
      // A repeated ack of a finished command is fine; anything else names no command waiting here.
      const cmd = await this.storage.getCommand(commandId);
      return cmd && cmd.deviceId === deviceId && (cmd.status === 'acked' || cmd.status === 'failed') ? 'ok' : 'unknown';
    }
    this.inFlight.delete(commandId);
    this.changed(updated);
    return 'ok';
  }

  /** Moves expired and timed-out commands on. Runs every second on every instance. */
  async sweep(): Promise<void> {
    try {
      const now = Date.now();
      for (const c of await this.storage.expireQueued(now)) this.changed(c);
      for (const c of await this.storage.timeoutSent(now - this.opts.timeoutMs, now)) {
        this.inFlight.delete(c.id);
        this.changed(c);
      }
    } catch (err) {
      this.log.warn({ err }, 'command sweep failed; will retry');
    }
  }

  /** At shutdown the acks of commands in flight can no longer arrive: they become `timeout`. */
  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    const now = Date.now();
    for (const id of this.inFlight) {
      const c = await this.storage
        .updateCommand(id, ['sent'], { status: 'timeout', error: 'server stopped before the device acknowledged', updatedAt: now })
        .catch(() => null);
      if (c) this.changed(c);
    }
    this.inFlight.clear();
  }

  recent(deviceId: string, limit = 20): Promise<Command[]> {
    return this.storage.listCommands(deviceId, limit);
  }

  private changed(c: Command): void {
    if (c.status !== 'sent') this.counters[c.status as keyof typeof this.counters]++;
    this.broadcast.command(c);
    const detail = c.status === 'acked' ? ` (${JSON.stringify(c.result)})` : c.error ? ` (${c.error})` : '';
    this.broadcast.log(c.deviceId, c.status === 'acked' || c.status === 'sent' ? 'info' : 'warn', `${c.action} ${c.status}${detail}`);
  }
}

function failureText(result: unknown): string {
  if (typeof result === 'string') return result.slice(0, 200);
  if (result && typeof result === 'object' && typeof (result as { error?: unknown }).error === 'string') {
    return ((result as { error: string }).error).slice(0, 200);
  }
  return 'the device reported failure';
}
