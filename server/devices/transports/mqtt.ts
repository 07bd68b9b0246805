import net from 'node:net';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import type { Logger } from 'pino';
import { Encoding, MAX_LINE_BYTES } from '../codec';
import type { Admission, DeviceCore } from '../core';
import { DEVICE_ID_RE } from '../messages';
import type { CommandMessage, ServerMessage } from '../outbound';
import type { DeviceLink, DeviceSession, Done } from '../session';
import type { TlsMaterial } from '../../tls/material';
import { listenOn, remoteAddressOf } from './net';
import { secureServer } from './secure';

/** The topics of one device (docs/protocol.md, "MQTT"). */
export const topics = {
  telemetry: (id: string) => `sockpit/${id}/telemetry`,
  ack: (id: string) => `sockpit/${id}/ack`,
  commands: (id: string) => `sockpit/${id}/commands`,
};

/** A device's own publishing topics: what is published there is consumed in authorizePublish. */
const DEVICE_PUBLISH_TOPIC = /^sockpit\/[^/]+\/(?:telemetry|ack)$/;

type PublishWithClient = (packet: Parameters<Aedes['publish']>[0], client: Client | null, done: (err?: Error | null) => void) => void;

/**
 * A device's telemetry and acks are used where they are authorized (authorizePublish) and end
 * with their PUBACK. Nobody may subscribe to those topics (authorizeSubscribe), yet aedes went on
 * to route each one: a look-up of subscriptions for offline delivery, its emitter, the `publish`
 * event, and a retained copy kept for ever when the device set the flag. Under load that found
 * no one and cost about an eighth of the main thread at 15,000 readings/s (bench/README.md), so for those topics
 * aedes's publish step does nothing. Everything else (commands, $SYS, wills elsewhere) is routed.
 */
function consumeDevicePublishes(broker: Aedes): void {
  const publish = broker.publish.bind(broker) as unknown as PublishWithClient;
  (broker as unknown as { publish: PublishWithClient }).publish = (packet, client, done) => {
    if (client && typeof done === 'function' && DEVICE_PUBLISH_TOPIC.test(packet.topic)) return done(null);
    return publish(packet, client, done);
  };
}

/** A QoS 1 PUBLISH whose PUBACK waits until it is handled. */
interface PendingPuback {
  messageId: number;
  ready: boolean;
}

type PublishPacket = Parameters<NonNullable<ConstructorParameters<typeof Aedes>[0]>['authorizePublish'] & {}>[1];

/** aedes's clients keep their active subscriptions by topic. */
type SubscribedClient = Client & { subscriptions: Record<string, unknown> };

/** Room for the topic and packet ids around a 16 KiB payload. */
const MAX_PACKET_BYTES = MAX_LINE_BYTES + 1024;
/** Bytes a device may leave unread before it counts as not reading. */
const STALL_BYTES = 16 * 1024;
/** How long a device has to send CONNECT (docs/protocol.md). */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * Reads along with aedes (which parses only whole packets, of any size) and says when a packet
 * announces more than `max` bytes, so the connection is cut before the packet is buffered.
 */
export class PacketSizeGuard {
  private state: 'header' | 'length' | 'body' = 'header';
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;
  private remaining = 0;

  constructor(private readonly max: number) {}

  /** False once a packet is too large (or its length is malformed). */
  scan(chunk: Buffer): boolean {
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'header') {
        i++;
        this.state = 'length';
        this.length = 0;
        this.multiplier = 1;
        this.lengthBytes = 0;
      } else if (this.state === 'length') {
        const b = chunk[i++]!;
        this.length += (b & 0x7f) * this.multiplier;
        this.multiplier *= 128;
        if (++this.lengthBytes > 4) return false;
        if (b & 0x80) continue;
        if (this.length > this.max) return false;
        this.remaining = this.length;
        this.state = this.remaining > 0 ? 'body' : 'header';
      } else {
        const take = Math.min(this.remaining, chunk.length - i);
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.state = 'header';
      }
    }
    return true;
  }
}

/** One device's MQTT client: commands out as PUBLISH to its commands topic; the other replies have no MQTT form. */
class MqttLink implements DeviceLink {
  readonly transport = 'mqtt' as const;
  readonly ownKeepalive = true;
  session: DeviceSession | null = null;
  private subscribed = false;
  private stalledAt = 0;
  private readonly pubacks: PendingPuback[] = [];
  private pubackFlush: NodeJS.Immediate | null = null;
  private paused = false;
  private heldAnswers: (() => void)[] = [];
  /** Packet ids of the QoS 2 PUBLISHes this connection handled. */
  private readonly qos2Ids = new Set<number>();

  constructor(
    readonly client: Client,
    readonly remoteAddress: string,
    readonly deviceId: string,
    private readonly maxOutQueueBytes: number,
  ) {}

  get bufferedOut(): number {
    return (this.client.conn as net.Socket).writableLength ?? 0;
  }

  get stalledSince(): number {
    if (this.bufferedOut <= STALL_BYTES) this.stalledAt = 0;
    else if (this.stalledAt === 0) this.stalledAt = Date.now();
    return this.stalledAt;
  }

  send(message: ServerMessage, _encoding: Encoding): 'ok' | 'closed' | 'overflow' {
    if (this.client.closed) return 'closed';
    // welcome is the CONNACK, stored the PUBACK, pong the PINGRESP; errors end up in the device's
    // log and, when they close the connection, as its reason.
    if (message.type !== 'fromservertonode') return 'ok';
    // aedes writes whatever it is given: a device that does not read gets the same bounded queue as
    // on the other transports (docs/protocol.md, "Errors and limits").
    if (this.bufferedOut > STALL_BYTES + this.maxOutQueueBytes) return 'overflow';
    this.publish(message);
    return 'ok';
  }

  /** Commands wait (queued, in storage) until the device subscribes to its commands topic. */
  get acceptsCommands(): boolean {
    return this.subscribed;
  }

  sendBatch(messages: ServerMessage[], encoding: Encoding): void {
    for (const m of messages) this.send(m, encoding);
  }

  /**
   * Whether a QoS 2 PUBLISH is new: a resend (DUP set) of a packet id this connection already
   * handled is the same message. (aedes's own duplicate check runs after authorizePublish, where
   * the message is used.) A packet id comes back without DUP only once its exchange is over.
   */
  firstQos2(messageId: number, dup: boolean): boolean {
    if (dup && this.qos2Ids.has(messageId)) return false;
    this.qos2Ids.add(messageId);
    return true;
  }

  /** A QoS 1 PUBLISH whose PUBACK this link sends (see MqttTransport.authorizePublish); in arrival order. */
  expectPuback(messageId: number): PendingPuback {
    const p = { messageId, ready: false };
    this.pubacks.push(p);
    return p;
  }

  /**
   * The PUBLISH is handled: its PUBACK leaves once those of the PUBLISHes before it have (MQTT
   * sends them in order), together with the others that became ready in this turn of the event
   * loop (a commit answers many readings at once), in one write.
   */
  pubackWhenReady(p: PendingPuback): void {
    p.ready = true;
    if (!this.pubackFlush) this.pubackFlush = setImmediate(() => this.flushPubacks());
  }

  /** Writes the PUBACKs that are due (also at once, before the connection is closed for a refused message). */
  flushPubacks(): void {
    if (this.pubackFlush) clearImmediate(this.pubackFlush);
    this.pubackFlush = null;
    let n = 0;
    while (n < this.pubacks.length && this.pubacks[n]!.ready) n++;
    if (n === 0 || this.client.closed) return;
    const out = Buffer.allocUnsafe(4 * n);
    for (let k = 0; k < n; k++) {
      const id = this.pubacks[k]!.messageId;
      out[4 * k] = 0x40; // PUBACK
      out[4 * k + 1] = 2;
      out[4 * k + 2] = id >> 8;
      out[4 * k + 3] = id & 0xff;
    }
    this.pubacks.splice(0, n);
    (this.client.conn as net.Socket).write(out);
  }

  /** The device subscribed to its commands topic: the commands queued for it go out now. */
  onSubscribed(): void {
    if (this.subscribed) return;
    this.subscribed = true;
    this.session?.commandsWanted();
  }

  /** The device unsubscribed from its commands topic: commands wait again. */
  onUnsubscribed(): void {
    this.subscribed = false;
  }

  /**
   * Stops reading: aedes reads a connection's next packets only once it was told that every packet
   * of the last read is handled (authorizePublish's callback), so those answers are held until
   * resume. (aedes's own pause loses count when packets are answered while it is paused, and the
   * connection was then never read again.)
   */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    const held = this.heldAnswers;
    this.heldAnswers = [];
    if (!this.client.closed) for (const go of held) go();
  }

  /** Lets aedes go on with a handled packet, now or (paused) at resume. */
  proceed(go: () => void): void {
    if (this.paused) this.heldAnswers.push(go);
    else go();
  }

  end(_reason: string): void {
    this.client.close();
  }

  destroy(): void {
    this.client.close();
  }

  private publish(message: CommandMessage): void {
    this.client.publish(
      { cmd: 'publish', topic: topics.commands(this.deviceId), payload: Buffer.from(JSON.stringify(message)), qos: 1, retain: false, dup: false },
      () => {},
    );
  }
}

export interface MqttTransportOptions {
  /** Device connections allowed in total on this listener. */
  maxConnections: number;
  /** How long a device may leave its receive window full before it is dropped. */
  drainTimeoutMs: number;
}

type Identity = { deviceId: string; credential: string };

/**
 * The embedded MQTT listener (docs/protocol.md, "MQTT"), on aedes: CONNECT with the device id and
 * token, each device on its own topics only, QoS 1 telemetry PUBACKed once committed, commands
 * published to the device's commands topic once it subscribes. It only frames; the core does the rest.
 */
export class MqttTransport {
  private readonly servers: net.Server[] = [];
  private readonly identities = new WeakMap<Client, Identity>();
  private readonly links = new WeakMap<Client, MqttLink>();
  private readonly admissions = new Map<Client, Admission>();
  /** The client id each CONNECT gave (aedes makes one up for an empty id before authenticate sees it). */
  private readonly givenClientIds = new WeakMap<Client, string>();

  private constructor(
    private readonly core: DeviceCore,
    private readonly log: Logger,
    private readonly broker: Aedes,
    private readonly opts: MqttTransportOptions,
  ) {
    broker.on('client', (client) => this.opened(client));
    broker.on('subscribe', (subs, client) => {
      const link = this.links.get(client);
      if (link && subs.some((s) => s.topic === topics.commands(link.deviceId))) link.onSubscribed();
    });
    broker.on('unsubscribe', (unsubs, client) => {
      const link = client ? this.links.get(client) : undefined;
      if (link && unsubs.includes(topics.commands(link.deviceId))) link.onUnsubscribed();
    });
    // A persistent session (clean session off) comes back with its subscription restored, and sends no SUBSCRIBE.
    broker.on('connackSent', (_packet, client) => {
      const link = this.links.get(client);
      if (link && (client as SubscribedClient).subscriptions[topics.commands(link.deviceId)]) link.onSubscribed();
    });
    broker.on('ping', (_packet, client) => this.links.get(client)?.session?.alive());
    broker.on('clientError', (client, err) => this.log.debug({ err, device: this.links.get(client)?.deviceId }, 'mqtt client error'));
  }

  static async create(core: DeviceCore, log: Logger, opts: MqttTransportOptions): Promise<MqttTransport> {
    const mlog = log.child({ component: 'mqtt' });
    let transport: MqttTransport | null = null;
    const broker = await Aedes.createBroker({
      connectTimeout: CONNECT_TIMEOUT_MS,
      drainTimeout: opts.drainTimeoutMs,
      preConnect: (client, packet, cb) => {
        transport!.givenClientIds.set(client, packet.clientId ?? '');
        cb(null, true);
      },
      authenticate: (client, username, password, cb) => void transport!.authenticate(client, username, password, cb),
      authorizePublish: (client, packet, cb) => transport!.authorizePublish(client, packet, cb),
      authorizeSubscribe: (client, sub, cb) => {
        // By identity, not link: a persistent session's subscriptions are restored before the link exists.
        const id = transport!.identities.get(client)?.deviceId;
        if (id !== undefined && sub.topic === topics.commands(id)) cb(null, { ...sub, qos: Math.min(sub.qos, 1) as 0 | 1 });
        else cb(null, null);
      },
    });
    consumeDevicePublishes(broker);
    transport = new MqttTransport(core, mlog, broker, opts);
    return transport;
  }

  /** Listens on a port, in plain text or (with `tls`) over TLS; resolves with the port bound. */
  async listen(port: number, host: string, tls: TlsMaterial | null = null): Promise<number> {
    const server = tls
      ? secureServer(tls, this.core, this.log, (socket, admission) => this.accept(socket, admission))
      : net.createServer({ noDelay: true }, (socket) => {
          socket.on('error', () => {});
          const admission = this.core.admit(remoteAddressOf(socket));
          if (admission) this.accept(socket, admission);
          else socket.destroy();
        });
    server.maxConnections = this.opts.maxConnections;
    const bound = await listenOn(server, port, host);
    server.on('error', (err) => this.log.error({ err }, 'mqtt listener error'));
    this.servers.push(server);
    return bound;
  }

  /** Stops accepting and ends the broker (MQTT 3.1.1 has no goodbye for a server to send). */
  async close(): Promise<void> {
    for (const s of this.servers) s.close();
    await new Promise<void>((resolve) => this.broker.close(() => resolve()));
  }

  private accept(socket: net.Socket, admission: Admission): void {
    socket.on('error', () => {});
    const client = this.broker.handle(socket);
    // Until CONNECT is through, the connection holds its place; then its session does.
    this.admissions.set(client, admission);
    socket.once('close', () => {
      if (this.admissions.delete(client)) admission.release();
    });
    // Watches what aedes reads (a 'data' listener beside aedes's 'readable' one does not change how it reads).
    const guard = new PacketSizeGuard(MAX_PACKET_BYTES);
    socket.on('data', (chunk: Buffer) => {
      if (guard.scan(chunk)) return;
      const link = this.links.get(client);
      if (link?.session) this.core.log(link.session, 'warn', `an MQTT packet over ${MAX_LINE_BYTES} bytes; disconnected`);
      socket.destroy();
    });
  }

  private async authenticate(client: Client, username: string | undefined, password: Buffer | undefined, cb: (err: AuthenticateError | null, ok: boolean | null) => void): Promise<void> {
    const refuse = (code: 2 | 3 | 4 | 5, text: string) => cb(Object.assign(new Error(text), { returnCode: code }) as AuthenticateError, false);
    const token = password && password.length > 0 ? password.toString('utf8') : null;
    let deviceId: string | undefined;
    if (token !== null) deviceId = username;
    else if (this.core.allowAnonymous) deviceId = username || this.givenClientIds.get(client);
    else return refuse(5, 'not authorized');
    // The id names the device's topics, so it must be a valid topic level.
    if (!deviceId || !DEVICE_ID_RE.test(deviceId)) return token === null ? refuse(2, 'identifier rejected') : refuse(5, 'not authorized');
    const check = await this.core.checkHandshake(deviceId, token);
    if (!check.ok) return check.code === 'unavailable' ? refuse(3, 'server unavailable') : refuse(5, 'not authorized');
    this.identities.set(client, { deviceId, credential: check.credential });
    // aedes keys a session, its takeover and its queued messages by client id alone. Each device's
    // client ids are its own (docs/protocol.md, "MQTT"): two devices flashed with the same client
    // id do not push each other off, and none gets another's persistent session or its commands.
    (client as { id: string }).id = `${deviceId}/${client.id}`;
    cb(null, true);
  }

  /** A client passed CONNECT: its session, ready at once. */
  private opened(client: Client): void {
    const identity = this.identities.get(client);
    const admission = this.admissions.get(client);
    if (!identity || !admission) return;
    this.admissions.delete(client);
    const link = new MqttLink(client, admission.remoteAddress, identity.deviceId, this.core.limits.maxOutQueueBytes);
    this.links.set(client, link);
    const session = this.core.open(link, admission);
    link.session = session;
    client.conn.once('close', () => session.linkClosed());
    void session.openAs({ deviceId: identity.deviceId, firmware: null }, identity.credential);
  }

  /**
   * A device's PUBLISH, handed to its session. What the session refuses at once goes back to aedes
   * as an error (it closes the connection: MQTT 3.1.1 has no error reply). Anything else is let
   * through at once, so that aedes reads the device's next packets while this one is being
   * stored: it handles a connection's packets a read at a time, and waiting for the commit here
   * held every MQTT device's reading for up to a commit (bench/README.md). The PUBACK of a QoS 1
   * PUBLISH is then the link's to send (pubackWhenReady), once the session is done with it (a
   * reading: committed), so aedes is told QoS 0 and sends none.
   */
  private authorizePublish(client: Client | null, packet: PublishPacket, cb: (err?: Error | null) => void): void {
    const link = client ? this.links.get(client) : undefined;
    const session = link?.session;
    if (!link || !session) return cb(new Error('not connected'));
    // QoS 2 is exactly once: a resent copy goes on to aedes's own flow (PUBREC) without being used again.
    if (packet.qos === 2 && packet.messageId !== undefined && !link.firstQos2(packet.messageId, packet.dup === true)) return cb(null);
    const { topic, payload } = packet;
    const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
    // QoS 2 (not documented for devices) keeps aedes's own flow: PUBREC once the message is handled.
    const own = packet.qos !== 2;
    const puback = packet.qos === 1 && packet.messageId !== undefined ? link.expectPuback(packet.messageId) : null;
    let sync = true;
    let refused = false;
    let answered = false;
    const done: Done = (err) => {
      if (answered) return;
      answered = true;
      if (!own) return err ? cb(err) : link.proceed(() => cb(null));
      if (err) {
        refused = true;
        // The PUBACKs already due leave before aedes closes the connection.
        link.flushPubacks();
        if (sync) cb(err);
        else link.end(err.message); // refused later (the server is stopping): no PUBACK, the connection ends
      } else if (puback) link.pubackWhenReady(puback);
    };
    if (body.length > MAX_LINE_BYTES) {
      session.reject('line_too_long', `messages are limited to ${MAX_LINE_BYTES} bytes`, done);
    } else if (topic === topics.telemetry(link.deviceId)) {
      session.receive(body, done);
    } else if (topic === topics.ack(link.deviceId)) {
      session.receive(body, done, 'ack');
    } else {
      session.reject('protocol', `publishing to "${topic.slice(0, 100)}" is not allowed; use ${topics.telemetry(link.deviceId)} or ${topics.ack(link.deviceId)}`, done);
    }
    sync = false;
    if (refused || !own) return;
    if (puback) packet.qos = 0;
    link.proceed(() => cb(null));
  }

}

