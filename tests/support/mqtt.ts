/**
 * MQTT devices for tests (docs/protocol.md, "MQTT"). `mqttDevice` is the `mqtt` npm client as a
 * firmware library would use it; RawMqtt is a bare TCP connection whose packets (built and parsed
 * by mqtt-packet) the test decides one by one: no CONNECT at all, a keepalive it then misses, a
 * packet header announcing megabytes, a socket that stops reading.
 */
import net from 'node:net';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import * as mqttPacket from 'mqtt-packet';
import type { TestServer } from './server';

export type { MqttClient };
export type MqttPacket = mqttPacket.Packet;

export const topics = {
  telemetry: (id: string) => `sockpit/${id}/telemetry`,
  ack: (id: string) => `sockpit/${id}/ack`,
  commands: (id: string) => `sockpit/${id}/commands`,
};

/** A connected `mqtt` client (MQTT 3.1.1, no reconnects): username = device id, password = token. */
export function mqttDevice(server: Pick<TestServer, 'mqttPort'>, id: string, token: string | null, opts: IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(`mqtt://127.0.0.1:${server.mqttPort}`, {
    protocolVersion: 4,
    clientId: `${id}-${Math.random().toString(36).slice(2, 8)}`,
    username: id,
    ...(token === null ? {} : { password: token }),
    reconnectPeriod: 0,
    connectTimeout: 8000,
    ...opts,
  });
}

/** Resolves when the client's connection is gone (the server closed it, or it ended). */
export function mqttClosed(client: MqttClient, timeoutMs = 8000): Promise<void> {
  if (client.disconnected || (!client.connected && !client.reconnecting && client.stream?.destroyed)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`MQTT connection still open after ${timeoutMs} ms`)), timeoutMs);
    client.once('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

/** Packets received and not yet taken, and the tests waiting for one. */
export class RawMqtt {
  readonly packets: MqttPacket[] = [];
  closed = false;
  /** Bytes written so far. */
  written = 0;
  private waiters: { match: (p: MqttPacket) => boolean; resolve: (p: MqttPacket) => void }[] = [];
  private closeWaiters: (() => void)[] = [];
  private nextId = 1;
  readonly parser = mqttPacket.parser({ protocolVersion: 4 });

  private constructor(readonly socket: net.Socket) {
    this.parser.on('packet', (p: MqttPacket) => {
      const w = this.waiters.findIndex((x) => x.match(p));
      if (w >= 0) this.waiters.splice(w, 1)[0]!.resolve(p);
      else this.packets.push(p);
    });
    this.parser.on('error', () => {});
    socket.on('data', (chunk: Buffer) => this.parser.parse(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.closeWaiters) w();
    });
  }

  /** A TCP connection to the MQTT port; nothing sent yet. */
  static open(port: number, host = '127.0.0.1'): Promise<RawMqtt> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host });
      s.once('connect', () => resolve(new RawMqtt(s)));
      s.once('error', reject);
    });
  }

  /** Opens, sends CONNECT and waits for the CONNACK (whatever its return code). */
  static async connect(port: number, c: { id: string; token?: string; clientId?: string; keepalive?: number; clean?: boolean }): Promise<{ raw: RawMqtt; returnCode: number }> {
    const raw = await RawMqtt.open(port);
    raw.send({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: c.clean ?? true,
      keepalive: c.keepalive ?? 60,
      clientId: c.clientId ?? `${c.id}-raw`,
      username: c.id,
      ...(c.token === undefined ? {} : { password: Buffer.from(c.token) }),
    });
    const connack = (await raw.next((p) => p.cmd === 'connack')) as mqttPacket.IConnackPacket;
    return { raw, returnCode: connack.returnCode ?? -1 };
  }

  send(packet: MqttPacket): boolean {
    const bytes = mqttPacket.generate(packet);
    this.written += bytes.length;
    return this.socket.write(bytes);
  }

  /** Bytes as they are. */
  write(bytes: Buffer): boolean {
    this.written += bytes.length;
    return this.socket.write(bytes);
  }

  publish(topic: string, payload: string | Buffer, qos: 0 | 1 = 1): number {
    const messageId = this.nextId++;
    this.send({ cmd: 'publish', topic, payload: typeof payload === 'string' ? Buffer.from(payload) : payload, qos, retain: false, dup: false, ...(qos > 0 ? { messageId } : {}) });
    return messageId;
  }

  subscribe(topic: string, qos: 0 | 1 = 1): number {
    const messageId = this.nextId++;
    this.send({ cmd: 'subscribe', messageId, subscriptions: [{ topic, qos }] });
    return messageId;
  }

  /** The next packet (already received or still to come) that matches. */
  next(match: (p: MqttPacket) => boolean = () => true, timeoutMs = 8000): Promise<MqttPacket> {
    const idx = this.packets.findIndex(match);
    if (idx >= 0) return Promise.resolve(this.packets.splice(idx, 1)[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no matching MQTT packet within ${timeoutMs} ms; got ${this.packets.map((p) => p.cmd).join(', ') || 'nothing'}${this.closed ? ' (closed)' : ''}`));
      }, timeoutMs);
      const w = {
        match,
        resolve: (p: MqttPacket) => {
          clearTimeout(timer);
          resolve(p);
        },
      };
      this.waiters.push(w);
    });
  }

  /** The PUBACK of a QoS 1 PUBLISH. */
  puback(messageId: number, timeoutMs = 8000): Promise<MqttPacket> {
    return this.next((p) => p.cmd === 'puback' && p.messageId === messageId, timeoutMs);
  }

  waitClosed(timeoutMs = 8000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`MQTT connection still open after ${timeoutMs} ms`)), timeoutMs);
      this.closeWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
