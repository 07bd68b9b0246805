import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { stringify } from 'csv-stringify';
import type { Request, Response } from 'express';
import type { Logger } from 'pino';
import type { Storage, TelemetryPoint, TelemetryRange } from '../storage';
import { ProblemError } from './problem';
import { LIMITS } from './schemas';

const iso = (ts: number) => new Date(ts).toISOString();

/**
 * CSV columns for the keys of a range: `time` first, then one per key. A data key that would
 * take a name already used (a reading's own `time`, as the thesis's GPS sends) is prefixed
 * `data.` (docs/api.md).
 */
export function csvColumns(keys: string[]): { header: string[]; keys: string[] } {
  const taken = new Set(['time']);
  const header = ['time'];
  for (const k of keys) {
    let col = taken.has(k) ? `data.${k}` : k;
    while (taken.has(col)) col += '_';
    taken.add(col);
    header.push(col);
  }
  return { header, keys };
}

/** One CSV cell: text and numbers as they are, booleans as true/false, nested values as JSON text, nothing for missing or null. */
export function csvCell(v: unknown): string | number {
  if (v === undefined || v === null) return '';
  if (typeof v === 'number') return Number.isFinite(v) ? v : '';
  if (typeof v === 'string') return v;
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  return JSON.stringify(v);
}

async function* pages(storage: Storage, deviceId: string, range: TelemetryRange): AsyncGenerator<TelemetryPoint[]> {
  yield* storage.telemetryRange(deviceId, range);
}

/**
 * Writes a device's readings as JSON or CSV while they are read page by page from storage. The
 * pipeline honours backpressure (a slow client slows the reading down) and stops the reading
 * when the client goes away. A failure after the first byte cuts the response short (the socket
 * is destroyed), so a client never takes a partial export for a whole one.
 */
export async function streamTelemetry(
  deps: { storage: Storage; log: Logger; req: Request; res: Response },
  deviceId: string,
  range: TelemetryRange,
  format: 'json' | 'csv',
): Promise<void> {
  const { storage, res } = deps;
  let stages: NodeJS.ReadWriteStream[] = [];
  let source: Readable;
  if (format === 'csv') {
    // The header needs every key before the first row: a first pass over the range in SQL that
    // returns only the distinct keys (docs/api.md, "CSV").
    const keys = await storage.telemetryKeys(deviceId, range, LIMITS.csvMaxKeys);
    if (keys === null) {
      throw new ProblemError(400, `The readings in this range have more than ${LIMITS.csvMaxKeys} different keys; ask for format=json or a shorter range.`);
    }
    const { header } = csvColumns(keys);
    res.status(200);
    res.setHeader('Content-Type', 'text/csv; charset=utf-8');
    res.setHeader('Content-Disposition', `attachment; filename="${deviceId.replace(/[^A-Za-z0-9_.-]/g, '_')}-telemetry.csv"`);
    source = Readable.from(
      (async function* () {
        yield header;
        for await (const page of pages(storage, deviceId, range)) {
          for (const p of page) yield [iso(p.ts), ...keys.map((k) => csvCell(p.data[k]))];
        }
      })(),
    );
    // Device text starting with = + - @ is prefixed with ' so a spreadsheet shows it as text
    // instead of running it as a formula.
    stages = [stringify({ escape_formulas: true, record_delimiter: 'unix' })];
  } else {
    res.status(200);
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    source = Readable.from(
      (async function* () {
        yield `{"deviceId":${JSON.stringify(deviceId)},"from":${range.from},"to":${range.to},"readings":[`;
        let count = 0;
        for await (const page of pages(storage, deviceId, range)) {
          // One chunk per page; a reading's data is JSON already, as stored.
          yield page.map((p) => `${count++ === 0 ? '' : ','}{"ts":${p.ts},"time":"${iso(p.ts)}","data":${JSON.stringify(p.data)}}`).join('');
        }
        yield `],"count":${count}}\n`;
      })(),
    );
  }
  try {
    await pipeline([source, ...stages, res]);
  } catch (err) {
    if (deps.req.destroyed || (err as { code?: string }).code === 'ERR_STREAM_PREMATURE_CLOSE') return; // the client left
    deps.log.warn({ err, device: deviceId }, 'telemetry export failed midway');
    res.destroy();
  }
}
