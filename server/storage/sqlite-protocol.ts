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
 * A batch of readings as it crosses to the thread: their ids in one flat array, their times and the
 * lengths of their data in one typed array, and all their data as one JSON text after another.
 * Copied between threads, one long string and a typed array cost a fraction of what four array
 * entries per reading did, and those a fraction of an object per reading (bench/README.md).
 */
export interface ThreadTelemetryBatch {
  /** Two entries per reading: the device id, the message id (or null). */
  ids: (string | null)[];
  /** Two entries per reading: the time, the length of its data's JSON text in `text`. */
  numbers: Float64Array;
  /** The readings' data as JSON text, one after another. */
  text: string;
}

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
