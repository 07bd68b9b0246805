/**
 * Issue 10, "First five minutes", in a real Chromium: Send Action to Node from the dashboard's
 * card (and no button for a viewer), the chart with its first readings, and the firmware
 * snippet's host when the browser is at localhost. Screenshots go to artifacts/e2e/.
 */
import os from 'node:os';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { addUser } from '../../server/auth/users';
import type { Role } from '../../server/storage';
import { firstNetworkIPv4, HOST_PLACEHOLDER } from '../../server/web/device-host';
import { RawDevice } from '../support/device';
import { addDevice, startServer, TestServer } from '../support/server';
import { eventually, launchBrowser, openPage, PageDiagnostics, snap, waitForPath, waitForText } from './browser';

let browser: Browser;

beforeAll(async () => {
  browser = await launchBrowser();
}, 60_000);

afterAll(async () => {
  await browser?.close();
});

const USERS: Record<Role, { username: string; password: string }> = {
  admin: { username: 'owner', password: 'correct horse battery' },
  operator: { username: 'olga', password: 'operator password' },
  viewer: { username: 'victor', password: 'viewer password' },
};

async function signIn(page: Page, baseUrl: string, role: Role): Promise<void> {
  await page.goto(baseUrl + '/login');
  await page.getByLabel('Username').fill(USERS[role].username);
  await page.getByLabel('Password').fill(USERS[role].password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await waitForPath(page, '/');
  await waitForText(page.locator('#conn .conn__label'), 'Connected');
}

describe('Send Action to Node on the dashboard', () => {
  let server: TestServer;
  let context: BrowserContext;
  let page: Page;
  let diag: PageDiagnostics;
  const devices: RawDevice[] = [];

  beforeAll(async () => {
    server = await startServer();
    for (const role of ['admin', 'operator', 'viewer'] as const) await addUser(server.app.storage, USERS[role].username, USERS[role].password, role, 4);
    ({ context, page, diag } = await openPage(browser));
  }, 60_000);

  afterAll(async () => {
    for (const d of devices) d.close();
    await context?.close();
    await server?.close();
  });

  test('when an operator clicks Send Action to Node on a card, then the device gets togglerele and the card shows queued/sent, then acked, without leaving the dashboard', async () => {
    const kitchen = await addDevice(server, 'kitchen', 'Kitchen relay');
    const garage = await addDevice(server, 'garage', 'Garage door');
    const dKitchen = await RawDevice.hello(server.devicePort, kitchen.id, kitchen.token);
    const dGarage = await RawDevice.hello(server.devicePort, garage.id, garage.token);
    devices.push(dKitchen, dGarage);
    dKitchen.send({ type: 'telemetry', id: 'k1', data: { temp_c: 21.5, relay: false } });
    await dKitchen.next((m) => m.type === 'stored');

    await signIn(page, server.baseUrl, 'operator');
    const card = page.locator('.device-card[data-device-id="kitchen"]');
    const other = page.locator('.device-card[data-device-id="garage"]');
    await waitForText(card.locator('[data-field="status"]'), 'online');
    const button = card.getByRole('button', { name: 'Send Action to Node', exact: true });
    // A real button, described by the device's name; the card's name is still a link.
    expect(await button.evaluate((b) => b.tagName)).toBe('BUTTON');
    expect(await button.getAttribute('aria-describedby')).toBeTruthy();
    expect(await page.locator(`#${await button.getAttribute('aria-describedby')}`).textContent()).toBe('Kitchen relay');
    await snap(page, '11-dashboard-buttons');

    await button.click(); // waits until the socket is up and the button enabled
    const cmd = await dKitchen.next((m) => m.type === 'fromservertonode');
    expect(cmd).toEqual({ type: 'fromservertonode', msg: 'action', action: 'togglerele', id: expect.any(String) });
    const status = card.locator('[data-field="command"] .status');
    await waitForText(status, /^(queued|sent)$/);
    await snap(page, '12-dashboard-action-sent');

    dKitchen.send({ type: 'ack', id: cmd.id, ok: true, result: { relay: true } });
    await waitForText(status, 'acked');
    await waitForText(card.locator('[data-field="command"] .cmd-detail'), 'relay: true');
    // The same words and colours as on the device page (public/app.css .status--acked).
    expect(await status.getAttribute('class')).toBe('status status--acked');
    expect(await status.evaluate((el) => getComputedStyle(el).color)).toBe('rgb(6, 118, 71)');
    // Only that card changed, and the page did not move.
    expect(await other.locator('[data-field="command"] .status').isHidden()).toBe(true);
    expect(new URL(page.url()).pathname).toBe('/');
    expect(dGarage.received.filter((m) => m.type === 'fromservertonode')).toEqual([]);
    await snap(page, '13-dashboard-action-acked');

    // A second click is a new command, and its failure shows on the card.
    await button.click();
    const cmd2 = await dKitchen.next((m) => m.type === 'fromservertonode');
    expect(cmd2.id).not.toBe(cmd.id);
    dKitchen.send({ type: 'ack', id: cmd2.id, ok: false, result: { error: 'relay stuck' } });
    await waitForText(status, 'failed');
    await waitForText(card.locator('[data-field="command"] .cmd-detail'), /relay stuck/);
    expect(await status.evaluate((el) => getComputedStyle(el).color)).toBe('rgb(180, 35, 24)');
  });

  test('when the operator clicks the card anywhere else, then the device page opens', async () => {
    await page.locator('.device-card[data-device-id="kitchen"] .readings').click();
    await waitForPath(page, '/devices/kitchen');
    await page.getByRole('heading', { name: 'Kitchen relay', level: 1 }).waitFor();
    await page.goBack();
    await waitForPath(page, '/');
  });

  test('when a device appears while the dashboard is open, then its new card has the button too and it works', async () => {
    await waitForText(page.locator('#conn .conn__label'), 'Connected');
    const porch = await addDevice(server, 'porch', 'Porch light');
    const d = await RawDevice.hello(server.devicePort, porch.id, porch.token);
    devices.push(d);
    const card = page.locator('.device-card[data-device-id="porch"]');
    await waitForText(card.locator('[data-field="status"]'), 'online', 15_000);
    const button = card.getByRole('button', { name: 'Send Action to Node', exact: true });
    expect(await page.locator(`#${await button.getAttribute('aria-describedby')}`).textContent()).toBe('Porch light');
    await button.click();
    const cmd = await d.next((m) => m.type === 'fromservertonode');
    d.send({ type: 'ack', id: cmd.id, ok: true, result: { relay: false } });
    await waitForText(card.locator('[data-field="command"] .status'), 'acked');
  });

  test('when a viewer opens the dashboard, then no card has a button, server-rendered or added live', async () => {
    const viewer = await openPage(browser);
    try {
      await signIn(viewer.page, server.baseUrl, 'viewer');
      const cards = viewer.page.locator('.device-card');
      await eventually('the cards', async () => (await cards.count()) >= 3);
      expect(await viewer.page.locator('.device-card button').count()).toBe(0);
      expect(await viewer.page.getByRole('button', { name: 'Send Action to Node' }).count()).toBe(0);
      expect(await viewer.page.locator('.device-card [data-field="command"]').count()).toBe(0);
      expect(await viewer.page.locator('#device-card-template').evaluate((t) => (t as HTMLTemplateElement).content.querySelectorAll('button').length)).toBe(0);

      // A device added while the viewer watches gets a card from the template: no button either.
      const shed = await addDevice(server, 'shed', 'Shed');
      const d = await RawDevice.hello(server.devicePort, shed.id, shed.token);
      devices.push(d);
      await waitForText(viewer.page.locator('.device-card[data-device-id="shed"] [data-field="status"]'), 'online', 15_000);
      expect(await viewer.page.locator('.device-card button').count()).toBe(0);
      await snap(viewer.page, '14-dashboard-viewer');
      expect(viewer.diag.pageErrors).toEqual([]);
    } finally {
      await viewer.context.close();
    }
  });

  test('when the pages above were visited, then the browser reported no CSP violation and no uncaught error', () => {
    expect(diag.cspViolations()).toEqual([]);
    expect(diag.pageErrors).toEqual([]);
  });
});

describe('the chart with its first readings', () => {
  let server: TestServer;
  let context: BrowserContext;
  let page: Page;
  let diag: PageDiagnostics;

  beforeAll(async () => {
    server = await startServer();
    await addUser(server.app.storage, USERS.viewer.username, USERS.viewer.password, 'viewer', 4);
    ({ context, page, diag } = await openPage(browser));
    await signIn(page, server.baseUrl, 'viewer');
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    await server?.close();
  });

  /** Opens a device with these readings (seconds before now) and returns the chart's time range. */
  async function chartOf(id: string, agesS: number[]): Promise<{ min: number; max: number; now: number; labels: string }> {
    await addDevice(server, id);
    const now = Date.now();
    await server.app.storage.insertTelemetry(agesS.map((age, i) => ({ deviceId: id, msgId: `${id}-${i}`, ts: now - age * 1000, data: { temp_c: 20 + i, rssi: -60 - i } })));
    await page.goto(`${server.baseUrl}/devices/${id}`);
    const chart = page.locator('#telemetry-chart');
    await chart.locator('canvas').waitFor({ state: 'visible' });
    const range = await eventually('the chart to have a time range', () =>
      chart.evaluate((el) => (el.dataset.xMin && el.dataset.xMax ? { min: Number(el.dataset.xMin), max: Number(el.dataset.xMax), now: Date.now() / 1000 } : false)),
    );
    // The time under the legend's first row reads like a time of day, not a date years away.
    const labels = (await page.locator('.u-legend').textContent()) ?? '';
    await snap(page, `15-chart-${id}`);
    return { ...range, labels };
  }

  test.each([
    ['one', [30]],
    ['two', [90, 30]],
    ['three', [150, 90, 30]],
  ])('when a device has %s reading(s) a minute apart, then the time axis is the last 5 minutes, ending now', async (name, ages) => {
    const { min, max, now } = await chartOf(`few-${name}`, ages);
    expect(max - min).toBeCloseTo(300, 0);
    expect(Math.abs(max - now)).toBeLessThan(15);
    // Every reading is inside the window.
    for (const age of ages) {
      expect(now - age).toBeGreaterThanOrEqual(min - 1);
      expect(now - age).toBeLessThanOrEqual(max + 1);
    }
  });

  test('when the readings span more than 5 minutes, then the window grows with them', async () => {
    const { min, max, now } = await chartOf('span-ten', [600, 300, 10]);
    expect(min).toBeCloseTo(now - 600, -1);
    expect(Math.abs(max - now)).toBeLessThan(15);
  });

  test('when a person drags to zoom, then the chart keeps that range, and a double-click brings the window back', async () => {
    const { min, max } = await chartOf('zoom', [600, 450, 300, 150, 10]);
    const over = page.locator('#telemetry-chart .u-over');
    await over.scrollIntoViewIfNeeded();
    const box = (await over.boundingBox())!;
    const y = box.y + box.height / 2;
    await page.mouse.move(box.x + box.width * 0.3, y);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.6, y, { steps: 5 });
    await page.mouse.up();
    const range = () => page.locator('#telemetry-chart').evaluate((el) => ({ min: Number(el.dataset.xMin), max: Number(el.dataset.xMax) }));
    const zoomed = await eventually('the zoom', async () => {
      const r = await range();
      return r.max - r.min < (max - min) / 2 ? r : false;
    });
    expect(zoomed.min).toBeGreaterThan(min);
    expect(zoomed.max).toBeLessThan(max);
    await snap(page, '15-chart-zoomed');
    await over.dblclick();
    await eventually('the full window again', async () => {
      const r = await range();
      return Math.abs(r.max - r.min - (max - min)) < 15;
    });
  });

  test('when a live reading arrives, then the window still ends now', async () => {
    const dev = await addDevice(server, 'live-one');
    await page.goto(`${server.baseUrl}/devices/live-one`);
    await page.getByText('No numeric telemetry yet.').waitFor();
    const d = await RawDevice.hello(server.devicePort, dev.id, dev.token);
    try {
      d.send({ type: 'telemetry', id: 'l1', data: { temp_c: 22.1 } });
      const chart = page.locator('#telemetry-chart');
      await chart.locator('canvas').waitFor({ state: 'visible' });
      const r = await eventually('the chart range', () => chart.evaluate((el) => (el.dataset.xMax ? { min: Number(el.dataset.xMin), max: Number(el.dataset.xMax), now: Date.now() / 1000 } : false)));
      expect(r.max - r.min).toBeCloseTo(300, 0);
      expect(Math.abs(r.max - r.now)).toBeLessThan(15);
    } finally {
      d.close();
    }
  });

  test('when the pages above were visited, then the browser reported no CSP violation and no uncaught error', () => {
    expect(diag.cspViolations()).toEqual([]);
    expect(diag.pageErrors).toEqual([]);
  });
});

describe('the firmware snippet when the browser is at localhost', () => {
  let server: TestServer;
  let context: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    server = await startServer();
    await addUser(server.app.storage, USERS.admin.username, USERS.admin.password, 'admin', 4);
    ({ context, page } = await openPage(browser));
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    await server?.close();
  });

  test('when an admin at http://localhost adds a device, then the snippet names this machine\'s network address, not 127.0.0.1 or localhost', async () => {
    const local = server.baseUrl.replace('127.0.0.1', 'localhost');
    await signIn(page, local, 'admin');
    await page.goto(local + '/admin/devices');
    await page.getByLabel('Device ID').fill('esp-1');
    await page.getByRole('button', { name: 'Add device' }).click();
    await page.getByRole('heading', { name: /Device esp-1 is ready/ }).waitFor();

    const snippet = (await page.locator('#created-snippet').textContent()) ?? '';
    const expected = firstNetworkIPv4(os.networkInterfaces()) ?? HOST_PLACEHOLDER;
    expect(snippet).toContain(`#define SERVER_HOST "${expected}"`);
    expect(snippet).not.toMatch(/"(127\.0\.0\.1|localhost)"/);
    if (expected === HOST_PLACEHOLDER) await page.locator('#created-host-warning').waitFor();
    else await waitForText(page.locator('#created-host-hint'), new RegExp(`network address, ${expected.replace(/\./g, '\\.')}`));
    // The simulator runs on this machine, beside the browser: it keeps localhost.
    expect(await page.locator('#created-simulate').textContent()).toContain('--host localhost');
    await snap(page, '16-snippet-host');
  });
});
