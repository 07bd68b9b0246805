import type http from 'node:http';
import type { Logger } from 'pino';
import type { Config } from '../config';
import type { Lifecycle } from '../lifecycle';
import type { TlsMaterial } from '../tls/material';
import type { DeviceCore } from './core';
import { DEFAULT_LIMITS } from './session';
import { MqttTransport } from './transports/mqtt';
import { TcpTransport } from './transports/tcp';
import { DEVICE_WS_PATH, WebSocketTransport } from './transports/websocket';

/** A listener's state: its port, or why it is not running (off, or its port was taken). */
export type ListenerStatus = { state: 'listening'; port: number } | { state: 'off' } | { state: 'port in use'; port: number };

/** Where devices connect, once listening (docs/protocol.md). */
export interface DevicePorts {
  tcp: ListenerStatus;
  tcpTls: ListenerStatus;
  /** The WebSocket path on the HTTP (and HTTPS) port. */
  wsPath: string;
  /** Plain ws:// devices are accepted (DEVICE_PLAINTEXT). */
  wsPlain: boolean;
  mqtt: ListenerStatus;
  mqttTls: ListenerStatus;
}

export interface DeviceListeners {
  readonly tcp: TcpTransport | null;
  readonly tcpTls: TcpTransport | null;
  readonly websocket: WebSocketTransport;
  readonly mqtt: MqttTransport | null;
  /** Binds every device port. A taken MQTT port is one warning and no MQTT; anything else fails start-up. */
  listen(): Promise<DevicePorts>;
  readonly ports: DevicePorts;
}

export interface DeviceListenerDeps {
  core: DeviceCore;
  config: Config;
  log: Logger;
  parts: Lifecycle;
  /** The certificate of the TLS listeners; null when none is on. */
  tls: TlsMaterial | null;
  httpServer: http.Server;
  httpsServer: http.Server | null;
}

const off: ListenerStatus = { state: 'off' };

/**
 * Every way devices reach this instance (docs/protocol.md): TCP lines, WebSocket on the HTTP
 * port, MQTT, each in plain text (unless DEVICE_PLAINTEXT=false) and over TLS, all into one core.
 */
export async function createDeviceListeners(deps: DeviceListenerDeps): Promise<DeviceListeners> {
  const { core, config, log, parts, tls } = deps;
  const plain = config.devicePlaintext;
  const maxConnections = config.deviceMaxConnections;
  const tcp = plain ? parts.add('tcp listener', new TcpTransport(core, log, { maxConnections }), (t) => t.close()) : null;
  const tcpTls = tls && config.deviceTlsPort !== null ? parts.add('tcp tls listener', new TcpTransport(core, log, { maxConnections, tls }), (t) => t.close()) : null;
  const websocket = parts.add('websocket listener', new WebSocketTransport(core, log, { trustProxy: config.trustProxy, plaintext: plain }), (w) => w.close());
  websocket.attach(deps.httpServer, false);
  if (deps.httpsServer) websocket.attach(deps.httpsServer, true);
  const wantMqtt = (plain && config.mqttPort !== null) || (tls !== null && config.mqttTlsPort !== null);
  const mqtt = wantMqtt ? parts.add('mqtt listener', await MqttTransport.create(core, log, { maxConnections, drainTimeoutMs: DEFAULT_LIMITS.drainTimeoutMs }), (m) => m.close()) : null;

  const ports: DevicePorts = { tcp: off, tcpTls: off, wsPath: DEVICE_WS_PATH, wsPlain: plain, mqtt: off, mqttTls: off };

  /** MQTT's usual ports are often another broker's (Mosquitto, Home Assistant's): then sockpit runs without it. */
  async function mqttOn(port: number, setting: string, secure: boolean): Promise<ListenerStatus> {
    try {
      return { state: 'listening', port: await mqtt!.listen(port, config.host, secure ? tls : null) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
      log.warn({ port }, `MQTT${secure ? ' over TLS' : ''}: port ${port} is already in use (another broker?); running without it. Set ${setting} to another port, or ${setting}=off`);
      return { state: 'port in use', port };
    }
  }

  return {
    tcp,
    tcpTls,
    websocket,
    mqtt,
    ports,
    async listen() {
      if (tcp) ports.tcp = { state: 'listening', port: await tcp.listen(config.devicePort, config.host) };
      if (tcpTls) ports.tcpTls = { state: 'listening', port: await tcpTls.listen(config.deviceTlsPort!, config.host) };
      if (mqtt && plain && config.mqttPort !== null) ports.mqtt = await mqttOn(config.mqttPort, 'MQTT_PORT', false);
      if (mqtt && tls && config.mqttTlsPort !== null) ports.mqttTls = await mqttOn(config.mqttTlsPort, 'MQTT_TLS_PORT', true);
      return ports;
    },
  };
}
