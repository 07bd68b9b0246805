import * as parser from 'socket.io-parser';
import type { FleetReading } from './events';

/**
 * A reading's `data` as JSON text, kept on the reading by the device core, which made that text
 * for storage anyway. A symbol key: JSON, MessagePack (the Redis adapter) and structured clone
 * all leave it out, so readings that cross to another instance are plain again.
 */
export const DATA_JSON = Symbol('sockpit.dataJson');

type WithJson = FleetReading & { [DATA_JSON]?: string };

/** A live reading for the fleet feed, carrying the JSON text of its data when there is one. */
export function fleetReading(deviceId: string, ts: number, data: Record<string, unknown>, dataJson?: string): FleetReading {
  const r: WithJson = { deviceId, ts, data };
  if (dataJson !== undefined) r[DATA_JSON] = dataJson;
  return r;
}

/** The batch as JSON text when every reading carries its data's text, else null. */
function readingsJson(readings: readonly WithJson[]): string | null {
  let out = '[';
  for (let i = 0; i < readings.length; i++) {
    const r = readings[i]!;
    const data = r[DATA_JSON];
    if (data === undefined || typeof r.ts !== 'number') return null;
    // The same text JSON.stringify makes of {deviceId, ts, data}, in that key order.
    out += `${i === 0 ? '' : ','}{"deviceId":${JSON.stringify(r.deviceId)},"ts":${JSON.stringify(r.ts)},"data":${data}}`;
  }
  return `${out}]`;
}

/**
 * Socket.IO's own packet encoder, except for `fleet:telemetry`: its packet is put together from
 * the readings' JSON text instead of stringifying every reading again and walking each one for
 * binary data (about a tenth of the event loop's time under a busy fleet went to that packet;
 * bench/README.md). The bytes on the wire are the same; browsers use the standard parser.
 */
class FleetEncoder extends parser.Encoder {
  override encode(obj: parser.Packet): (string | Buffer | ArrayBuffer)[] {
    const data = obj.data as unknown[] | undefined;
    if (obj.type === parser.PacketType.EVENT && obj.id === undefined && Array.isArray(data) && data.length === 2 && data[0] === 'fleet:telemetry' && Array.isArray(data[1])) {
      const readings = readingsJson(data[1] as WithJson[]);
      if (readings !== null) return [`${parser.PacketType.EVENT}${obj.nsp && obj.nsp !== '/' ? `${obj.nsp},` : ''}["fleet:telemetry",${readings}]`];
    }
    return super.encode(obj);
  }
}

/** The Socket.IO `parser` option: the standard one with FleetEncoder. */
export const socketParser = { ...parser, Encoder: FleetEncoder };
