import type { Transport } from '../../devices/session';
import type { Redis } from './client';
import { CLAIM, HOLDERS, REAP, RELEASE, RENEW } from './scripts';

export interface LeasesOptions {
  cmd: Redis;
  /** Prefix of every key (namespace() in client.ts). */
  ns: string;
  instanceId: string;
  leaseMs: number;
}

export interface Holder {
  instance: string;
  transport: Transport | null;
}

const TRANSPORT_NAMES = new Set<string>(['tcp', 'websocket', 'mqtt']);

/**
 * Which instance holds each device's connection, as leases in Redis that the holder renews. Only
 * Redis operations; when to run them is the fabric's business.
 */
export class Leases {
  private readonly keys: string[];

  constructor(private readonly opts: LeasesOptions) {
    this.keys = [`${opts.ns}:holders`, `${opts.ns}:leases`, `${opts.ns}:transports`];
  }

  get instanceId(): string {
    return this.opts.instanceId;
  }

  /** Claims a device for this instance; returns the previous live holder, or ''. */
  async claim(deviceId: string, transport: Transport): Promise<string> {
    return String(await this.eval(CLAIM, [deviceId, this.opts.instanceId, String(this.opts.leaseMs), transport]));
  }

  /** Lets go of a device; returns another instance that holds it live, or ''. */
  async release(deviceId: string): Promise<string> {
    return String(await this.eval(RELEASE, [deviceId, this.opts.instanceId]));
  }

  /** Renews (or re-claims) the given devices: per device 0 renewed, 1 re-claimed, 2 held elsewhere now. */
  async renew(devices: [deviceId: string, transport: Transport][]): Promise<number[]> {
    const args = [this.opts.instanceId, String(this.opts.leaseMs), ...devices.flat()];
    const reply = await this.eval(RENEW, args);
    return Array.isArray(reply) ? reply.map((v) => Number(v)) : [];
  }

  /** Removes up to `limit` lapsed leases; returns their devices (each is reaped by exactly one caller). */
  async reap(limit: number): Promise<string[]> {
    const reply = await this.eval(REAP, [String(limit)]);
    return Array.isArray(reply) ? reply.map((v) => String(v)) : [];
  }

  /** The live holder of each device (null: none). */
  async holders(deviceIds: string[]): Promise<(Holder | null)[]> {
    if (deviceIds.length === 0) return [];
    const reply = await this.eval(HOLDERS, deviceIds);
    const flat = Array.isArray(reply) ? reply.map((v) => String(v)) : [];
    return deviceIds.map((_, i) => {
      const instance = flat[2 * i] ?? '';
      const t = flat[2 * i + 1] ?? '';
      return instance === '' ? null : { instance, transport: TRANSPORT_NAMES.has(t) ? (t as Transport) : null };
    });
  }

  private eval(script: string, args: string[]): Promise<unknown> {
    return this.opts.cmd.eval(script, { keys: this.keys, arguments: args });
  }
}
