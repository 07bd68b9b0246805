/** The messages between the main thread and the SQLite thread (sqlite-thread.ts, sqlite-worker.ts). */

export interface SqliteRunResult {
  rows: Record<string, unknown>[];
  changes?: number;
  lastInsertRowid?: number | bigint;
}

/** A reading as the worker stores it. */
export interface ThreadTelemetryRow {
  deviceId: string;
  msgId: string | null;
  ts: number;
  data: Record<string, unknown>;
  /** `data` as JSON text, when the caller already made it. */
  json?: string;
}

/**
 * A batch of readings as it crosses to the thread: one flat array, four entries per reading
 * (deviceId, msgId, ts, data as JSON text). Strings and numbers are copied far more cheaply
 * between threads than an object per reading with an object inside.
 */
export type ThreadTelemetryBatch = (string | number | null)[];

export type Request =
  | { id: number; op: 'query'; sql: string; params: readonly unknown[] }
  | { id: number; op: 'telemetry'; rows: ThreadTelemetryBatch }
  | { id: number; op: 'flush'; deviceId?: string }
  | { id: number; op: 'forget'; deviceId: string }
  | { id: number; op: 'close' };

/** A request before it gets its id. */
export type RequestBody = Request extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;

export interface Reply {
  id: number;
  result?: unknown;
  error?: { message: string; code?: string; name?: string };
}

/** What the SQLite thread is started with. */
export interface WorkerData {
  file: string;
  sliceMs: number;
  /** Group commit: a transaction waits this long after its oldest job for more rows… */
  groupMs: number;
  /** …or until this many rows are waiting. */
  groupRows: number;
  /** Staged readings are moved into `telemetry` this long after the first of them… */
  mergeMs: number;
  /** …or once this many are staged. */
  mergeRows: number;
  checkpointEveryMs: number;
  walResetFrames: number;
  /** The checkpointer's entry file (sqlite-checkpointer.ts, built). */
  checkpointerFile: string;
}

/** What the checkpointer thread is started with. */
export interface CheckpointerData {
  file: string;
  everyMs: number;
  resetFrames: number;
}

/** Checkpointer → SQLite thread: `hold` (stop telemetry so the WAL can be rewound), `release`. Back: `held`. */
export type CheckpointerSays = 'hold' | 'release';
