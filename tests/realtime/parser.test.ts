/** The fleet feed's packet encoder (server/realtime/parser.ts): the same bytes as Socket.IO's own. */
import * as parser from 'socket.io-parser';
import { fleetReading, socketParser } from '../../server/realtime/parser';

const standard = new parser.Encoder();
const fleet = new socketParser.Encoder();

function packet(readings: unknown[], nsp = '/'): parser.Packet {
  return { type: parser.PacketType.EVENT, nsp, data: ['fleet:telemetry', readings] };
}

describe('fleet:telemetry packets', () => {
  const data = [
    { temp: 21.5, hum: 40.25 },
    { text: 'quote " backslash \\ newline \n tab \t', unicode: 'Δοκιμή ✓ \u2028 \u2029 😀', nested: { a: [1, 2, { b: null }], e: 1e21, n: -0.000001 } },
    {},
    { big: Number.MAX_SAFE_INTEGER, neg: -5, bool: false },
  ];

  test('when every reading carries its JSON text, then the packet is byte for byte what the standard encoder makes', () => {
    const readings = data.map((d, i) => fleetReading(`esp-${i}.a:b_c-d`, 1_700_000_000_000 + i, d, JSON.stringify(d)));
    const out = fleet.encode(packet(readings));
    expect(out).toEqual(standard.encode(packet(readings)));
    expect(JSON.parse((out[0] as string).slice(1))).toEqual(['fleet:telemetry', data.map((d, i) => ({ deviceId: `esp-${i}.a:b_c-d`, ts: 1_700_000_000_000 + i, data: d }))]);
  });

  test('when the namespace is not the main one, or the batch is empty, then it is still the standard packet', () => {
    const readings = [fleetReading('d1', 5, { x: 1 }, '{"x":1}')];
    expect(fleet.encode(packet(readings, '/admin'))).toEqual(standard.encode(packet(readings, '/admin')));
    expect(fleet.encode(packet([]))).toEqual(standard.encode(packet([])));
  });

  test('when a reading has no JSON text (it came from another instance), then the standard encoder makes the packet', () => {
    const readings = [fleetReading('d1', 5, { x: 1 }, '{"x":1}'), { deviceId: 'd2', ts: 6, data: { y: 2 } }];
    expect(fleet.encode(packet(readings))).toEqual(standard.encode(packet(readings)));
  });

  test('when the JSON text is kept on a reading, then JSON and structured clone leave it out', () => {
    const r = fleetReading('d1', 5, { x: 1 }, '{"x":1}');
    expect(JSON.parse(JSON.stringify(r))).toEqual({ deviceId: 'd1', ts: 5, data: { x: 1 } });
    expect(Object.getOwnPropertySymbols(structuredClone(r))).toEqual([]);
  });

  test('when another event or an ack is encoded, then the standard encoder makes it, binary included', () => {
    const other: parser.Packet = { type: parser.PacketType.EVENT, nsp: '/', data: ['device:status', { id: 'd1', online: true }] };
    expect(fleet.encode(other)).toEqual(standard.encode(other));
    const withAck: parser.Packet = { ...packet([fleetReading('d1', 5, {}, '{}')]), id: 7 };
    expect(fleet.encode(withAck)).toEqual(standard.encode(withAck));
    const binary: parser.Packet = { type: parser.PacketType.EVENT, nsp: '/', data: ['file', Buffer.from('abc')] };
    expect(fleet.encode(binary)).toEqual(standard.encode(binary));
  });
});
