import type { Logger } from 'pino';
import type { Server, Socket } from 'socket.io';
import { commandView } from '../commands/view';
import type { Command } from '../storage';
import {
  ClientToServerEvents,
  DeviceStatus,
  FleetReading,
  InterServerEvents,
  LogEntry,
  rooms,
  ServerToClientEvents,
  SocketData,
  wantsBatchedTelemetry,
} from './events';
import { fleetReading } from './parser';
import { drained, dropSocket, pendingBytes } from './queue';

export type IO = Server<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;
type AppSocket = Socket<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;

const LOG_KEEP = 100;

/** Most readings in one `fleet:telemetry` packet; a full batch leaves at once. */
export const FLEET_BATCH_MAX = 1000;

/** When a batched dashboard is slowed down (conflated) and when it is given up (docs/realtime.md). */
export interface ConflationLimits {
  /** Bytes held for a batched socket above which it lags: it stops getting every reading. */
  lagBytes: number;
  /** How often this instance's batched sockets are checked (lagging, caught up, stuck). */
  checkMs: number;
  /** A lagging socket that drains nothing for this long is disconnected. */
  stuckMs: number;
}

export const DEFAULT_CONFLATION: ConflationLimits = { lagBytes: 256 * 1024, checkMs: 50, stuckMs: 30_000 };

/**
 * How often, at most, the fleet's live readings leave (the app's setting): once per turn of the
 * event loop was nearly once per reading under load, each a Socket.IO packet encoded and written
 * to every dashboard; at most once per 10 ms a busy fleet costs a hundred packets a second. A
 * reading after a quiet spell still leaves at the end of its turn (bench/README.md).
 */
export const FLEET_FLUSH_MS = 10;

export interface BroadcasterOptions {
  /** Live readings leave at most once per this many ms (0: at the end of every event-loop turn, the default). */
  flushMs?: number;
  /**
   * True when other instances share the Socket.IO adapter (Redis): each tick's readings are sent
   * to them once (`fleet:readings`), and every instance delivers them to its own sockets.
   */
  clustered?: boolean;
  conflation?: Partial<ConflationLimits>;
  log?: Logger;
}

/** A batched socket on this instance that fell behind (it is in `fleet:lagging`). */
interface Lagging {
  socket: AppSocket;
  /** `seq` when it started lagging: it has missed every reading numbered after this. */
  since: number;
  /** Bytes held for it at the last check, and when that last went down (it read something). */
  lastPending: number;
  progressAt: number;
}

/**
 * Everything the server tells browsers, in one place. Status, command and log events go through
 * the Socket.IO adapter, so with Redis they reach browsers on every instance. Live telemetry is
 * collected per event-loop turn, sent to the other instances once per turn, and delivered by each
 * instance to its own sockets.
 */
export class Broadcaster {
  private readonly logs = new Map<string, LogEntry[]>();
  /** Readings waiting for this tick's `fleet:telemetry` packet. */
  private batch: FleetReading[] = [];
  private flushQueued: NodeJS.Immediate | NodeJS.Timeout | null = null;
  /** Whether flushQueued is a timer (else an immediate): each is cleared its own way. */
  private flushIsTimer = false;
  private lastFlushAt = -Infinity;
  private readonly flushMs: number;
  /** Sockets on this instance that did not ask for batches (they get one `device:telemetry` per reading). */
  private perReadingSockets = 0;
  /** Sockets on this instance in `fleet:batch`. */
  private readonly batched = new Set<AppSocket>();
  /** Those of them that lag behind, by socket id. */
  private readonly lagging = new Map<string, Lagging>();
  /**
   * While any socket lags: the newest reading of each device delivered meanwhile, numbered, in
   * the order they were delivered (an update moves its device to the end). At most one entry per
   * device, whatever the number of lagging sockets; emptied when none lags.
   */
  private readonly latest = new Map<string, { reading: FleetReading; seq: number }>();
  /** Readings delivered while some socket lagged. */
  private seq = 0;
  private checkTimer: NodeJS.Timeout | null = null;
  private readonly clustered: boolean;
  private readonly logger: Logger | undefined;
  /** Conflation thresholds; tests may change them on a running server. */
  readonly limits: ConflationLimits;
  /** Counter for /metrics. */
  emitted = 0;
  /** Counters for /metrics. */
  readonly counters = {
    /** Times a batched socket started lagging. */
    lagged: 0,
    /** Readings lagging sockets skipped because their conflated batch carried a newer one of the same device. */
    conflated: 0,
    /** Sockets disconnected for holding more than MAX_QUEUED_BYTES (io.ts). */
    droppedQueueFull: 0,
    /** Lagging sockets disconnected for draining nothing during `stuckMs`. */
    droppedStuck: 0,
  };

  constructor(
    private readonly io: IO,
    opts: BroadcasterOptions = {},
  ) {
    this.clustered = opts.clustered ?? false;
    this.flushMs = opts.flushMs ?? 0;
    this.logger = opts.log;
    this.limits = { ...DEFAULT_CONFLATION, ...opts.conflation };
    // Every socket is in `fleet` (io.ts); those that asked for batches in the handshake are in
    // `fleet:batch` too and get `fleet:telemetry` instead of `device:telemetry`.
    io.on('connection', (socket) => {
      if (wantsBatchedTelemetry(socket.handshake.auth)) {
        void socket.join(rooms.fleetBatch);
        this.batched.add(socket);
        this.startChecks();
        socket.once('disconnect', () => {
          this.batched.delete(socket);
          this.stopLagging(socket.id);
          if (this.batched.size === 0) this.stopChecks();
        });
        return;
      }
      this.perReadingSockets++;
      socket.once('disconnect', () => this.perReadingSockets--);
    });
    // Readings another instance received, once per tick of that instance (docs/realtime.md).
    io.on('fleet:readings', (readings) => {
      if (Array.isArray(readings) && readings.length > 0) this.deliver(readings);
    });
  }

  /** The one place `device:status` is sent from (presence, and the cluster's corrections). */
  deviceStatus(status: DeviceStatus): void {
    this.emitted++;
    this.io.to(rooms.fleet).emit('device:status', status);
  }

  /**
   * A reading for the fleet. It leaves at the end of this event-loop turn with the others of the
   * turn: batching sockets get them as one `fleet:telemetry` packet (one WebSocket frame per
   * socket per turn instead of one per reading), other sockets one `device:telemetry` each.
   * `dataJson`: `data` as JSON text, when the caller has it (the packet is then made from it: parser.ts).
   */
  telemetry(deviceId: string, ts: number, data: Record<string, unknown>, dataJson?: string): void {
    this.batch.push(fleetReading(deviceId, ts, data, dataJson));
    if (this.batch.length >= FLEET_BATCH_MAX) this.flushTelemetry();
    else if (!this.flushQueued) {
      // The first reading after a quiet spell leaves at the end of this turn; under load readings
      // gather until flushMs after the last flush.
      const wait = this.lastFlushAt + this.flushMs - performance.now();
      this.flushIsTimer = wait >= 1;
      this.flushQueued = this.flushIsTimer ? setTimeout(() => this.flushTelemetry(), wait) : setImmediate(() => this.flushTelemetry());
    }
  }

  /**
   * Sends the readings collected so far: once to the other instances (one Redis PUBLISH per tick,
   * whatever the number of readings and sockets), then to this instance's sockets.
   */
  flushTelemetry(): void {
    // Each clear for its own kind: clearImmediate on a Timeout corrupts Node's count of immediates,
    // and process.getActiveResourcesInfo() (prom-client's default metrics, so /metrics) then aborts the process.
    if (this.flushQueued && this.flushIsTimer) clearTimeout(this.flushQueued as NodeJS.Timeout);
    else if (this.flushQueued) clearImmediate(this.flushQueued as NodeJS.Immediate);
    this.flushQueued = null;
    if (this.batch.length === 0) return;
    this.lastFlushAt = performance.now();
    const readings = this.batch;
    this.batch = [];
    // serverSideEmit does not come back to this instance, so each socket gets each reading once.
    if (this.clustered) this.io.serverSideEmit('fleet:readings', readings);
    this.deliver(readings);
  }

  /** Delivers one tick's readings (of this instance or another) to this instance's sockets. */
  private deliver(readings: FleetReading[]): void {
    const local = this.io.local;
    if (this.perReadingSockets > 0) {
      const to = local.to(rooms.fleet).except(rooms.fleetBatch);
      for (const r of readings) to.emit('device:telemetry', r);
      this.emitted += readings.length;
    }
    if (this.batched.size === 0) return;
    this.emitted++;
    if (this.lagging.size === 0) {
      local.to(rooms.fleetBatch).emit('fleet:telemetry', readings);
      return;
    }
    // Lagging sockets get only the newest reading of each device, once they have drained.
    for (const r of readings) {
      this.latest.delete(r.deviceId);
      this.latest.set(r.deviceId, { reading: r, seq: ++this.seq });
    }
    local.to(rooms.fleetBatch).except(rooms.fleetLagging).emit('fleet:telemetry', readings);
  }

  private startChecks(): void {
    if (this.checkTimer) return;
    this.checkTimer = setInterval(() => this.checkBatched(), this.limits.checkMs);
    this.checkTimer.unref();
  }

  private stopChecks(): void {
    if (this.checkTimer) clearInterval(this.checkTimer);
    this.checkTimer = null;
  }

  /**
   * Every `checkMs`: a batched socket holding more than `lagBytes` starts lagging (it leaves the
   * full feed); a lagging one that has drained gets the newest reading of each device it missed
   * and goes back to the full feed; one that drained nothing for `stuckMs` is disconnected.
   * A few property reads per socket; nothing per reading.
   */
  checkBatched(now = Date.now()): void {
    for (const socket of this.batched) {
      const lag = this.lagging.get(socket.id);
      if (!lag) {
        const pending = pendingBytes(socket);
        if (pending > this.limits.lagBytes) this.startLagging(socket, pending, now);
        continue;
      }
      if (drained(socket)) {
        this.catchUp(lag);
        continue;
      }
      const pending = pendingBytes(socket);
      if (pending < lag.lastPending) lag.progressAt = now;
      lag.lastPending = pending;
      if (now - lag.progressAt >= this.limits.stuckMs) {
        this.counters.droppedStuck++;
        this.logger?.warn({ user: socket.data.username, queued: pending }, 'dashboard lagging and not reading; disconnected');
        this.stopLagging(socket.id);
        dropSocket(socket);
      }
    }
  }

  private startLagging(socket: AppSocket, pending: number, now: number): void {
    this.counters.lagged++;
    this.lagging.set(socket.id, { socket, since: this.seq, lastPending: pending, progressAt: now });
    void socket.join(rooms.fleetLagging);
  }

  private stopLagging(socketId: string): Lagging | undefined {
    const lag = this.lagging.get(socketId);
    if (!lag) return undefined;
    this.lagging.delete(socketId);
    void lag.socket.leave(rooms.fleetLagging);
    if (this.lagging.size === 0) this.latest.clear();
    return lag;
  }

  /** Sends a socket that has drained the newest reading of each device it missed, then the full feed again. */
  private catchUp(lag: Lagging): void {
    const missed: FleetReading[] = [];
    // Entries are in delivery order, so those it missed are the last ones, oldest first.
    for (const { reading, seq } of this.latest.values()) if (seq > lag.since) missed.push(reading);
    this.counters.conflated += this.seq - lag.since - missed.length;
    this.stopLagging(lag.socket.id);
    for (let i = 0; i < missed.length; i += FLEET_BATCH_MAX) lag.socket.emit('fleet:telemetry', missed.slice(i, i + FLEET_BATCH_MAX));
    // Readings still waiting for this tick's flush reach it with the full feed, after these.
  }

  /** Batched sockets on this instance that are lagging now (for /metrics and tests). */
  get laggingCount(): number {
    return this.lagging.size;
  }

  /** Whether this socket is lagging now (tests). */
  isLagging(socketId: string): boolean {
    return this.lagging.has(socketId);
  }

  command(c: Command): void {
    this.emitted++;
    const view = commandView(c);
    const to = this.io.to(rooms.device(c.deviceId));
    (c.sentByUserId !== null ? to.to(rooms.user(c.sentByUserId)) : to).emit('command:status', view);
  }

  log(deviceId: string, level: LogEntry['level'], text: string): void {
    const entry: LogEntry = { ts: Date.now(), level, text };
    let list = this.logs.get(deviceId);
    if (!list) this.logs.set(deviceId, (list = []));
    list.push(entry);
    if (list.length > LOG_KEEP) list.shift();
    this.emitted++;
    this.io.to(rooms.device(deviceId)).emit('device:log', { ...entry, deviceId });
  }

  /** This instance's recent log lines for a device, oldest first. */
  recentLog(deviceId: string): LogEntry[] {
    return this.logs.get(deviceId) ?? [];
  }

  /** Frees the log lines of devices that no longer exist (removed in the page, the API or the CLI). */
  retainLogs(existing: ReadonlySet<string>): void {
    for (const id of this.logs.keys()) if (!existing.has(id)) this.logs.delete(id);
  }

  /** Sends what is pending and stops the lag checks (the server is closing). */
  close(): void {
    this.flushTelemetry();
    this.stopChecks();
  }
}
