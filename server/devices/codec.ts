/** Encoding and decoding of the device line protocol (docs/protocol.md, "Framing"): base64(UTF-8 JSON) or plain JSON. */

export type Encoding = 'base64' | 'json';

export const MAX_LINE_BYTES = 16 * 1024;

export type DecodeError = 'bad_base64' | 'bad_json' | 'protocol';

export type Decoded =
  | { ok: true; encoding: Encoding; message: Record<string, unknown> }
  | { ok: false; encoding: Encoding; error: DecodeError; detail: string };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Keys that would reach Object.prototype if copied carelessly; refused at the door. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

const MAX_DEPTH = 32;

/**
 * Why a decoded value is refused, or null: a reserved key, nesting deeper than MAX_DEPTH, or a
 * number too large for a double (JSON.parse makes it Infinity, which would be stored as null).
 */
function refusal(v: unknown, depth = 0): string | null {
  if (typeof v === 'number') return Number.isFinite(v) ? null : 'message has a number out of range';
  if (v === null || typeof v !== 'object') return null;
  if (depth > MAX_DEPTH) return 'message is nested too deeply';
  if (Array.isArray(v)) {
    for (const x of v) {
      const why = refusal(x, depth + 1);
      if (why) return why;
    }
    return null;
  }
  // for…in rather than Object.keys: no array per object (a parsed message has no inherited
  // enumerable keys, so both see the same ones).
  for (const k in v) {
    if (FORBIDDEN_KEYS.has(k)) return 'message uses a reserved key';
    const why = refusal((v as Record<string, unknown>)[k], depth + 1);
    if (why) return why;
  }
  return null;
}

const BASE64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
/** Each byte's value in the base64 alphabet, or -1 (`=` too: padding is handled apart). */
const BASE64_VALUE = new Int8Array(256).fill(-1);
for (let i = 0; i < 64; i++) BASE64_VALUE[BASE64_ALPHABET.charCodeAt(i)] = i;

/** Where base64 lines are decoded: one buffer, reused (a line is decoded and parsed before the next). */
const scratch = Buffer.allocUnsafeSlow(Math.ceil(MAX_LINE_BYTES / 4) * 3);

/**
 * A base64 line's bytes, decoded into `scratch` (valid until the next call), or null when the line
 * is not strict base64: only the canonical alphabet, a length that is a multiple of 4, `=` only as
 * the last one or two characters, no whitespace. One pass and no intermediate string or buffer: a
 * busy fleet's every reading comes this way (bench/README.md).
 */
function decodeBase64(line: Buffer): Uint8Array | null {
  const n = line.length;
  if (n === 0 || (n & 3) !== 0) return null;
  // (A longer message than a line, a WebSocket frame or an MQTT payload, gets a buffer of its own.)
  const out = n <= MAX_LINE_BYTES ? scratch : Buffer.allocUnsafe((n / 4) * 3);
  const pad = line[n - 1] === 0x3d ? (line[n - 2] === 0x3d ? 2 : 1) : 0;
  const whole = n - (pad === 0 ? 0 : 4);
  const v = BASE64_VALUE;
  let o = 0;
  for (let i = 0; i < whole; i += 4) {
    const a = v[line[i]!]!;
    const b = v[line[i + 1]!]!;
    const c = v[line[i + 2]!]!;
    const d = v[line[i + 3]!]!;
    if ((a | b | c | d) < 0) return null;
    out[o++] = (a << 2) | (b >> 4);
    out[o++] = ((b & 15) << 4) | (c >> 2);
    out[o++] = ((c & 3) << 6) | d;
  }
  if (pad !== 0) {
    const a = v[line[whole]!]!;
    const b = v[line[whole + 1]!]!;
    const c = pad === 1 ? v[line[whole + 2]!]! : 0;
    if ((a | b | c) < 0) return null;
    out[o++] = (a << 2) | (b >> 4);
    if (pad === 1) out[o++] = ((b & 15) << 4) | (c >> 2);
  }
  return out.subarray(0, o);
}

/**
 * Decodes one line (without its line ending). Base64 is checked strictly: only the canonical
 * alphabet with correct padding, no whitespace.
 */
export function decodeLine(body: Buffer): Decoded {
  const encoding: Encoding = body[0] === 0x7b /* { */ ? 'json' : 'base64';
  let bytes: Uint8Array = body;
  if (encoding === 'base64') {
    const decoded = decodeBase64(body);
    if (decoded === null) return { ok: false, encoding, error: 'bad_base64', detail: 'line is not valid base64' };
    bytes = decoded;
  }
  let json: string;
  try {
    json = utf8.decode(bytes);
  } catch {
    return { ok: false, encoding, error: 'bad_json', detail: 'message is not valid UTF-8' };
  }
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return { ok: false, encoding, error: 'bad_json', detail: 'message is not valid JSON' };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, encoding, error: 'protocol', detail: 'message must be a JSON object' };
  }
  const why = refusal(value);
  if (why) return { ok: false, encoding, error: 'protocol', detail: why };
  return { ok: true, encoding, message: value as Record<string, unknown> };
}

/** Encodes one message as text in the given encoding (a WebSocket text frame, an MQTT payload). */
export function encodeText(message: object, encoding: Encoding): string {
  const json = JSON.stringify(message);
  return encoding === 'json' ? json : Buffer.from(json, 'utf8').toString('base64');
}

/** The alphabet's characters as bytes, for encoding. */
const BASE64_BYTES = Buffer.from(BASE64_ALPHABET, 'latin1');
const PAD = 0x3d; // '='

/** Where encodeLines puts the messages' UTF-8 JSON before encoding it, and where each ends. */
const encodeScratch = Buffer.allocUnsafeSlow(64 * 1024);
const encodeEnds = new Int32Array(1024);

/**
 * Encodes several messages as lines in one buffer (one write for a device's held replies). In
 * base64, each message's JSON is written as UTF-8 into a reused buffer and encoded from there
 * straight into the result: no buffer and no base64 string per message, where a busy fleet's
 * `stored` replies had made about a sixth of the event loop's garbage (bench/README.md).
 */
export function encodeLines(messages: readonly object[], encoding: Encoding): Buffer {
  let text = '';
  if (encoding === 'json') {
    for (const m of messages) text += JSON.stringify(m) + '\n';
    return Buffer.from(text, 'utf8');
  }
  if (messages.length > encodeEnds.length) return encodeLinesByString(messages);
  let used = 0;
  let size = 0;
  for (let i = 0; i < messages.length; i++) {
    const json = JSON.stringify(messages[i]);
    // At most 3 bytes of UTF-8 per UTF-16 unit: too much for what is left, done the long way.
    if (used + 3 * json.length > encodeScratch.length) return encodeLinesByString(messages);
    const n = encodeScratch.write(json, used, 'utf8');
    used += n;
    encodeEnds[i] = used;
    size += 4 * Math.ceil(n / 3) + 1;
  }
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  let start = 0;
  for (let m = 0; m < messages.length; m++) {
    const end = encodeEnds[m]!;
    let i = start;
    for (; i + 2 < end; i += 3) {
      const v = (encodeScratch[i]! << 16) | (encodeScratch[i + 1]! << 8) | encodeScratch[i + 2]!;
      out[o++] = BASE64_BYTES[v >> 18]!;
      out[o++] = BASE64_BYTES[(v >> 12) & 63]!;
      out[o++] = BASE64_BYTES[(v >> 6) & 63]!;
      out[o++] = BASE64_BYTES[v & 63]!;
    }
    if (i < end) {
      const two = i + 1 < end;
      const v = (encodeScratch[i]! << 16) | (two ? encodeScratch[i + 1]! << 8 : 0);
      out[o++] = BASE64_BYTES[v >> 18]!;
      out[o++] = BASE64_BYTES[(v >> 12) & 63]!;
      out[o++] = two ? BASE64_BYTES[(v >> 6) & 63]! : PAD;
      out[o++] = PAD;
    }
    out[o++] = 0x0a;
    start = end;
  }
  return out;
}

/** encodeLines in base64 through Node's encoder, a string per message (what does not fit the scratch). */
function encodeLinesByString(messages: readonly object[]): Buffer {
  let text = '';
  for (const m of messages) text += Buffer.from(JSON.stringify(m), 'utf8').toString('base64') + '\n';
  return Buffer.from(text, 'latin1');
}

/** Encodes one message as a line in the given encoding, `\n` included. */
export function encodeLine(message: object, encoding: Encoding): Buffer {
  const json = JSON.stringify(message);
  return encoding === 'json'
    ? Buffer.from(json + '\n', 'utf8')
    : Buffer.from(Buffer.from(json, 'utf8').toString('base64') + '\n', 'latin1');
}

/**
 * Splits a byte stream into lines with bounded memory: a line longer than `maxLine` bytes is
 * reported once (as `overflow`) instead of being buffered.
 */
export class LineSplitter {
  /**
   * The unfinished line, copied out of the chunks it came in. Keeping views of the chunks instead
   * would pin each chunk's memory: a device trickling one byte per packet would cost the server
   * hundreds of bytes per byte sent.
   */
  private buf: Buffer | null = null;
  private pending = 0;

  constructor(private readonly maxLine = MAX_LINE_BYTES) {}

  /** Feeds a chunk; calls `onLine` per complete line. Returns false once a line overflowed. */
  push(chunk: Buffer, onLine: (line: Buffer) => void): boolean {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl === -1 ? chunk.length : nl;
      // One byte of slack: it may be the CR of a CRLF whose LF is still on its way.
      if (this.pending + (end - start) > this.maxLine + 1) return this.overflow();
      if (nl === -1) {
        if (end > start) this.append(chunk, start, end);
        return true;
      }
      let line: Buffer;
      if (this.pending === 0) {
        line = chunk.subarray(start, nl);
      } else {
        this.append(chunk, start, nl);
        // The line takes the buffer with it (a caller may keep it); the next line starts a new one.
        line = this.buf!.subarray(0, this.pending);
        this.buf = null;
        this.pending = 0;
      }
      // A CR before the LF is not part of the line (Arduino println), so it is dropped here.
      if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
      if (line.length > this.maxLine) return this.overflow();
      if (line.length > 0) onLine(line);
      start = nl + 1;
    }
  }

  /** Bytes held for an unfinished line. */
  get buffered(): number {
    return this.pending;
  }

  private append(chunk: Buffer, from: number, to: number): void {
    const need = this.pending + (to - from);
    if (this.buf === null || need > this.buf.length) {
      const size = Math.min(Math.max(need, 2 * (this.buf?.length ?? 128)), this.maxLine + 1);
      const grown = Buffer.allocUnsafeSlow(size);
      if (this.buf !== null) this.buf.copy(grown, 0, 0, this.pending);
      this.buf = grown;
    }
    chunk.copy(this.buf, this.pending, from, to);
    this.pending = need;
  }

  private overflow(): false {
    this.buf = null;
    this.pending = 0;
    return false;
  }
}
