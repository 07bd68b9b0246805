// The few MQTT 3.1.1 packets the bench needs (QoS 0 only), built and parsed by hand so the
// Mosquitto load generator does the same per-message work as the line-protocol one: build a
// string, write it to a socket. See bench/README.md ("Why no MQTT library").

function remainingLength(n) {
  let s = '';
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    s += String.fromCharCode(byte);
  } while (n > 0);
  return s;
}

const str16 = (s) => String.fromCharCode(s.length >> 8, s.length & 0xff) + s;

/** CONNECT with a clean session and keep-alive off; latin1 string (ASCII ids only). */
export function connectPacket(clientId) {
  const body = str16('MQTT') + '\x04' + '\x02' + '\x00\x00' + str16(clientId);
  return '\x10' + remainingLength(body.length) + body;
}

/** SUBSCRIBE to one filter at QoS 0. */
export function subscribePacket(filter, packetId = 1) {
  const body = String.fromCharCode(packetId >> 8, packetId & 0xff) + str16(filter) + '\x00';
  return '\x82' + remainingLength(body.length) + body;
}

/** PUBLISH at QoS 0; topic and payload are ASCII strings. */
export function publishPacket(topic, payload) {
  const body = str16(topic) + payload;
  return '\x30' + remainingLength(body.length) + body;
}

export const DISCONNECT = '\xe0\x00';

/**
 * Incremental parser of a broker → client byte stream. Calls onPacket(type, flags, body) per
 * complete packet; body is a Buffer view.
 */
export class PacketReader {
  constructor(onPacket) {
    this.onPacket = onPacket;
    this.buf = null;
  }

  push(chunk) {
    let buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    let off = 0;
    for (;;) {
      if (buf.length - off < 2) break;
      let len = 0;
      let mul = 1;
      let i = off + 1;
      let complete = false;
      for (let k = 0; k < 4 && i < buf.length; k++, i++) {
        const b = buf[i];
        len += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) {
          complete = true;
          i++;
          break;
        }
      }
      if (!complete || buf.length - i < len) break;
      this.onPacket(buf[off] >> 4, buf[off] & 0x0f, buf.subarray(i, i + len));
      off = i + len;
    }
    this.buf = off < buf.length ? Buffer.from(buf.subarray(off)) : null;
  }
}

/** Topic and payload of a PUBLISH body (QoS 0: no packet id). */
export function parsePublish(flags, body) {
  const tlen = (body[0] << 8) | body[1];
  const qos = (flags >> 1) & 3;
  const start = 2 + tlen + (qos > 0 ? 2 : 0);
  return { topic: body.toString('latin1', 2, 2 + tlen), payload: body.subarray(start) };
}
