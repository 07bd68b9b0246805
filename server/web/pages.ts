import os from 'node:os';
import { Request, Router } from 'express';
import type { Config } from '../config';
import type { Fabric } from '../cluster/fabric';
import { addDevice, InputError, removeDevice, rotateDeviceToken } from '../devices/admin';
import { firmwareSnippet, simulateLine } from '../devices/snippet';
import { addUser, removeUser, setRole } from '../auth/users';
import { csrfToken, requireLogin, requireRole, roleAtLeast } from '../auth/session';
import type { LiveDevices } from '../devices/core';
import { fleetViews } from '../devices/views';
import type { Storage } from '../storage';
import type { CaInfo } from '../tls/material';
import { chooseDeviceHost, DeviceHostChoice } from './device-host';

export interface PageDeps {
  config: Config;
  storage: Storage;
  fabric: Fabric;
  /** Closes the connection of a device whose token was rotated or which was removed. */
  devices: LiveDevices;
  /** Where devices connect, as bound (the firmware snippet and the simulator line name them). */
  endpoints: () => DeviceEndpoints;
  /** Disconnects a removed user's sockets at once (they would otherwise go at the next re-check). */
  endUser: (userId: number) => void;
}

/** The ports devices dial and the CA they trust, for the page. */
export interface DeviceEndpoints {
  /** The plain TCP port; null when off (DEVICE_PLAINTEXT=false). */
  tcp: number | null;
  /** The TLS port for lines; null when off. */
  tcpTls: number | null;
  /** sockpit's own CA (null with TLS_CERT, or no TLS). */
  ca: CaInfo | null;
}

/** The host the browser used to reach this page (without brackets), or null. */
function browserHost(req: Request): string | null {
  return req.hostname ? req.hostname.replace(/^\[(.*)\]$/, '$1') : null;
}

/** The address a real device should dial (server/web/device-host.ts). */
function deviceHost(req: Request, config: Config): DeviceHostChoice {
  return chooseDeviceHost({ configured: config.devicePublicHost, browserHost: browserHost(req), interfaces: os.networkInterfaces() });
}

/** The dashboard, the device page and the admin pages (README, "First steps"). */
export function pageRoutes(deps: PageDeps): Router {
  const { config, storage, fabric } = deps;
  const r = Router();
  const base = (req: Request, title: string) => ({ title, user: req.user ?? null, csrfToken: csrfToken(req) });

  r.get('/', requireLogin, async (req, res) => {
    res.render('dashboard', { ...base(req, 'Devices'), devices: await fleetViews(storage, fabric), canAct: roleAtLeast(req.user!.role, 'operator') });
  });

  r.get('/devices/:id', requireLogin, async (req, res, next) => {
    const [device] = await fleetViews(storage, fabric, [String(req.params.id)]);
    if (!device) return next();
    res.render('device', { ...base(req, device.name), device, canAct: roleAtLeast(req.user!.role, 'operator') });
  });

  const renderDevices = async (req: Request, extra: { error?: string | null; created?: unknown } = {}) => ({
    ...base(req, 'Devices'),
    devices: await fleetViews(storage, fabric),
    error: extra.error ?? null,
    created: extra.created ?? null,
  });
  const created = (req: Request, id: string, name: string, token: string) => {
    const device = deviceHost(req, config);
    const ends = deps.endpoints();
    // With sockpit's own CA and its TLS port, the firmware config uses TLS: the token never
    // crosses the network in clear text. The plain port stays for firmware without TLS.
    const tls = ends.ca && ends.tcpTls !== null ? { ca: ends.ca, tlsPort: ends.tcpTls } : null;
    const plainPort = ends.tcp ?? config.devicePort;
    // The simulator runs where the person is, so it dials the address their browser just used
    // (loopback included); DEVICE_PUBLIC_HOST wins when set, as for any device.
    const simHost = config.devicePublicHost ?? browserHost(req) ?? device.host;
    const hostHint =
      device.source === 'network'
        ? `This browser reaches sockpit as ${browserHost(req) ?? 'localhost'}, which a device cannot use, so the config names this computer's network address, ${device.host}. If devices reach it by another address, set DEVICE_PUBLIC_HOST.`
        : null;
    return {
      id,
      name,
      token,
      host: device.host,
      hostWarning: device.warning,
      hostHint,
      snippet: firmwareSnippet({ id, token, host: device.host, port: plainPort, hostNote: device.warning, ...(tls ?? {}) }),
      // With the plain port off (DEVICE_PLAINTEXT=false) the simulator speaks TLS to the TLS port.
      simulate: ends.tcp === null && tls ? `${simulateLine(id, token, simHost, tls.tlsPort)} --tls` : simulateLine(id, token, simHost, ends.tcp ?? plainPort),
      ca: tls?.ca ?? null,
      tlsPort: tls?.tlsPort ?? null,
      plainPort: ends.tcp,
    };
  };

  r.get('/admin/devices', requireRole('admin'), async (req, res) => {
    res.render('admin-devices', await renderDevices(req));
  });

  r.post('/admin/devices', requireRole('admin'), async (req, res) => {
    const body = req.body as Record<string, unknown>;
    const id = typeof body.id === 'string' ? body.id.trim() : '';
    const name = typeof body.name === 'string' ? body.name : '';
    try {
      const { device, token } = await addDevice(storage, id, name);
      res.status(201).render('admin-devices', await renderDevices(req, { created: created(req, device.id, device.name, token) }));
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      res.status(400).render('admin-devices', await renderDevices(req, { error: err.message }));
    }
  });

  r.post('/admin/devices/:id/token', requireRole('admin'), async (req, res) => {
    const id = String(req.params.id);
    try {
      const token = await rotateDeviceToken(storage, id);
      deps.devices.tokenRotated(id);
      const device = await storage.getDevice(id);
      res.render('admin-devices', await renderDevices(req, { created: created(req, id, device?.name ?? id, token) }));
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      res.status(404).render('admin-devices', await renderDevices(req, { error: err.message }));
    }
  });

  r.post('/admin/devices/:id/remove', requireRole('admin'), async (req, res) => {
    const id = String(req.params.id);
    try {
      await removeDevice(storage, id);
      deps.devices.removed(id);
      res.redirect(303, '/admin/devices');
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      res.status(404).render('admin-devices', await renderDevices(req, { error: err.message }));
    }
  });

  const renderUsers = async (req: Request, error: string | null = null, notice: string | null = null) => ({
    ...base(req, 'Users'),
    users: (await storage.listUsers()).map((u) => ({ id: u.id, username: u.username, role: u.role, createdAt: u.createdAt })),
    error,
    notice,
  });

  r.get('/admin/users', requireRole('admin'), async (req, res) => {
    res.render('admin-users', await renderUsers(req));
  });

  const userAction = (fn: (req: Request) => Promise<string>) =>
    async (req: Request, res: import('express').Response) => {
      try {
        const notice = await fn(req);
        res.render('admin-users', await renderUsers(req, null, notice));
      } catch (err) {
        if (!(err instanceof InputError)) throw err;
        res.status(400).render('admin-users', await renderUsers(req, err.message));
      }
    };
  const str = (req: Request, k: string) => {
    const v = (req.body as Record<string, unknown>)[k];
    return typeof v === 'string' ? v.slice(0, 1024) : '';
  };
  const target = async (req: Request) => {
    const u = await storage.getUserById(Number(req.params.id));
    if (!u) throw new InputError('No such user.');
    return u;
  };

  r.post('/admin/users', requireRole('admin'), userAction(async (req) => {
    const u = await addUser(storage, str(req, 'username').trim(), str(req, 'password'), str(req, 'role'), config.bcryptRounds);
    return `User ${u.username} added as ${u.role}.`;
  }));

  r.post('/admin/users/:id/role', requireRole('admin'), userAction(async (req) => {
    const u = await target(req);
    await setRole(storage, u, str(req, 'role'));
    return `${u.username} is now ${str(req, 'role')}.`;
  }));

  r.post('/admin/users/:id/remove', requireRole('admin'), userAction(async (req) => {
    const u = await target(req);
    if (u.id === req.user!.id) throw new InputError('You cannot remove yourself.');
    await removeUser(storage, u);
    deps.endUser(u.id);
    return `User ${u.username} removed.`;
  }));

  return r;
}
