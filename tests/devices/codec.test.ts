/** Framing and encoding of device lines (server/devices/codec.ts), property-tested. */
import fc from 'fast-check';
import { decodeLine, encodeLine, encodeLines, LineSplitter, MAX_LINE_BYTES } from '../../server/devices/codec';

const jsonObject = fc.dictionary(fc.string({ maxLength: 8 }).filter((k) => !['__proto__', 'constructor', 'prototype'].includes(k)), fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.constant(null)), { maxKeys: 6 });

function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(buf.subarray(prev, p));
    prev = p;
  }
  out.push(buf.subarray(prev));
  return out;
}

describe('framing and codec', () => {
  test('any chunking of a stream of valid lines yields the same messages', () => {
    fc.assert(
      fc.property(fc.array(jsonObject, { minLength: 1, maxLength: 20 }), fc.array(fc.nat(), { maxLength: 30 }), fc.boolean(), (msgs, cuts, crlf) => {
        const stream = Buffer.concat(
          msgs.map((m, i) => {
            const line = encodeLine(m, i % 3 === 0 ? 'json' : 'base64');
            return crlf ? Buffer.concat([line.subarray(0, line.length - 1), Buffer.from('\r\n')]) : line;
          }),
        );
        const splitter = new LineSplitter();
        const got: unknown[] = [];
        for (const chunk of splitAt(stream, cuts)) {
          expect(splitter.push(chunk, (line) => {
            const d = decodeLine(line);
            if (!d.ok) throw new Error(d.detail);
            got.push(d.message);
          })).toBe(true);
        }
        expect(got).toEqual(msgs);
      }),
    );
  });

  test('invalid base64 is rejected, never silently skipped', () => {
    fc.assert(
      fc.property(jsonObject, fc.integer({ min: 0, max: 200 }), fc.constantFrom('*', ' ', '\t', '-', '_', '=', '.', 'é'), (m, pos, bad) => {
        const good = Buffer.from(JSON.stringify(m)).toString('base64');
        const i = pos % (good.length + 1);
        const corrupted = good.slice(0, i) + bad + good.slice(i);
        const d = decodeLine(Buffer.from(corrupted, 'utf8'));
        expect(d.ok).toBe(false);
        if (!d.ok) expect(['bad_base64', 'bad_json', 'protocol']).toContain(d.error);
        if (!d.ok && !corrupted.startsWith('{')) expect(d.error).toBe('bad_base64');
      }),
    );
  });

  test('when a line is made of base64 characters in any arrangement, then exactly the strict base64 ones are decoded, to what Node decodes', () => {
    const STRICT = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
    const chars = fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/='.split(''));
    const bodies = fc.oneof(
      fc.array(chars, { maxLength: 24 }).map((a) => a.join('')),
      fc.uint8Array({ maxLength: 60 }).map((b) => Buffer.from(b).toString('base64')),
      jsonObject.map((m) => Buffer.from(JSON.stringify(m)).toString('base64')),
    );
    fc.assert(
      fc.property(bodies, (text) => {
        fc.pre(text.length > 0 && text[0] !== '{');
        const d = decodeLine(Buffer.from(text, 'latin1'));
        if (!STRICT.test(text)) {
          expect(d).toMatchObject({ ok: false, error: 'bad_base64' });
          return;
        }
        // Strict base64: the message is what Node's own decoder makes of the same line.
        let expected: unknown;
        try {
          expected = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(text, 'base64')));
        } catch {
          expected = undefined;
        }
        if (expected !== null && typeof expected === 'object' && !Array.isArray(expected)) {
          // (A JSON object the protocol refuses, a reserved key say, is a protocol error.)
          if (d.ok) expect(d.message).toEqual(expected);
          else expect(d.error).toBe('protocol');
        } else {
          expect(d.ok).toBe(false);
          if (!d.ok) expect(d.error).not.toBe('bad_base64');
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('when a line decodes to something that is not a JSON object, then it is a protocol error', () => {
    for (const v of ['[1]', '42', '"x"', 'null']) {
      const d = decodeLine(Buffer.from(Buffer.from(v).toString('base64')));
      expect(d).toMatchObject({ ok: false, error: 'protocol' });
    }
    expect(decodeLine(Buffer.from(Buffer.from('{"__proto__":{"x":1}}').toString('base64')))).toMatchObject({ ok: false, error: 'protocol' });
    expect(decodeLine(Buffer.from(Buffer.from([0xff, 0xfe]).toString('base64')))).toMatchObject({ ok: false, error: 'bad_json' });
  });

  test('when a line exceeds 16 KiB, then the splitter reports overflow without buffering it', () => {
    const s = new LineSplitter();
    expect(s.push(Buffer.alloc(MAX_LINE_BYTES, 0x41), () => {})).toBe(true);
    expect(s.push(Buffer.alloc(10, 0x41), () => {})).toBe(false);
    expect(s.buffered).toBe(0);
    const t = new LineSplitter();
    const lines: Buffer[] = [];
    expect(t.push(Buffer.concat([Buffer.alloc(MAX_LINE_BYTES, 0x41), Buffer.from('\r')]), (l) => lines.push(l))).toBe(true);
    expect(t.push(Buffer.from('\n'), (l) => lines.push(l))).toBe(true);
    expect(lines[0]!.length).toBe(MAX_LINE_BYTES);
  });

  test('when replies are encoded together, then each line is what Node makes of its message, whatever its length or characters', () => {
    // Lengths 0–2 mod 3 (padding), any Unicode, batches small and large (past the encoder's scratch: the long way).
    const message = fc.oneof(
      fc.record({ type: fc.constant('stored'), id: fc.string({ maxLength: 70, unit: 'binary' }) }),
      fc.record({ type: fc.constant('stored'), id: fc.string({ maxLength: 70, unit: 'grapheme' }) }),
      jsonObject,
    );
    const lineOf = (m: object) => Buffer.from(JSON.stringify(m)).toString('base64') + '\n';
    fc.assert(
      fc.property(fc.array(message, { minLength: 1, maxLength: 40 }), (messages) => {
        expect(encodeLines(messages, 'base64').toString('latin1')).toBe(messages.map(lineOf).join(''));
        expect(encodeLines(messages, 'json').toString('utf8')).toBe(messages.map((m) => JSON.stringify(m) + '\n').join(''));
      }),
      { numRuns: 2000 },
    );
    const many = Array.from({ length: 1500 }, (_, i) => ({ type: 'stored', id: `m-${i}` }));
    const big = Array.from({ length: 4 }, (_, i) => ({ type: 'stored', id: 'é'.repeat(10_000 + i) }));
    // Fits the scratch by its characters, not by its UTF-8 bytes.
    const nearly = [...big.slice(0, 3), { type: 'stored', id: 'é'.repeat(3_000) }];
    for (const batch of [many, big, nearly]) expect(encodeLines(batch, 'base64').toString('latin1')).toBe(batch.map(lineOf).join(''));
  });

  test('replies are encoded in the device’s own encoding', () => {
    expect(encodeLine({ type: 'pong' }, 'json').toString()).toBe('{"type":"pong"}\n');
    expect(encodeLine({ type: 'pong' }, 'base64').toString()).toBe(Buffer.from('{"type":"pong"}').toString('base64') + '\n');
  });
});
