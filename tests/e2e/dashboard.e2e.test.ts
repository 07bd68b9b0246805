/**
 * Browser end-to-end (issue 2, item 10): a real Chromium against an in-process server.
 * Run with `npm run test:e2e` (it builds public/build/app.js first). Screenshots of each step go
 * to artifacts/e2e/ (gitignored).
 */
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { addUser } from '../../server/auth/users';
import { RawDevice } from '../support/device';
import { startServer, TestServer } from '../support/server';
import { eventually, launchBrowser, openPage, PageDiagnostics, snap, waitForPath, waitForText } from './browser';

const OWNER = { username: 'owner', password: 'correct horse battery' };
const DEVICE = { id: 'greenhouse-1', name: 'Greenhouse sensor' };

let browser: Browser;

beforeAll(async () => {
  browser = await launchBrowser();
}, 60_000);

afterAll(async () => {
  await browser?.close();
});

describe('the product path in a browser: setup, add a device, telemetry, Send Action to Node, log out', () => {
  let server: TestServer;
  let context: BrowserContext;
  let page: Page;
  let diag: PageDiagnostics;
  let token = '';
  let device: RawDevice | null = null;
  const sockets = () => server.app.io.of('/').sockets.size;

  beforeAll(async () => {
    server = await startServer();
    ({ context, page, diag } = await openPage(browser));
  }, 60_000);

  afterAll(async () => {
    device?.close();
    await context?.close();
    await server?.close();
  });

  test('when the first visitor opens the site, then they land on /setup and the owner account they create leads to the dashboard', async () => {
    await page.goto(server.baseUrl + '/');
    await waitForPath(page, '/setup');
    await page.getByRole('heading', { name: 'Create the owner account' }).waitFor();
    await snap(page, '01-setup');

    await page.getByLabel('Username').fill(OWNER.username);
    await page.getByLabel('Password', { exact: true }).fill(OWNER.password);
    await page.getByLabel('Repeat password').fill(OWNER.password);
    await page.getByRole('button', { name: 'Create owner account' }).click();

    await waitForPath(page, '/');
    await page.getByRole('heading', { name: 'Fleet' }).waitFor();
    await page.getByText('No devices yet').waitFor();
    // The dashboard's live connection is up with the owner's session.
    await waitForText(page.locator('#conn .conn__label'), 'Connected');
    expect(sockets()).toBe(1);
    await snap(page, '02-dashboard-empty');
  });

  test('when the admin adds a device in the page, then its token is shown once with a firmware snippet and a simulate line', async () => {
    await page.getByRole('link', { name: 'Add a device' }).click();
    await waitForPath(page, '/admin/devices');
    await page.getByLabel('Device ID').fill(DEVICE.id);
    await page.getByLabel(/^Name/).fill(DEVICE.name);
    await page.getByRole('button', { name: 'Add device' }).click();

    await page.getByRole('heading', { name: `Device ${DEVICE.name} is ready` }).waitFor();
    token = ((await page.locator('#created-token').textContent()) ?? '').trim();
    expect(token).toMatch(/^\S{16,}$/);
    expect(await page.locator('#created-snippet').textContent()).toContain(`#define DEVICE_TOKEN "${token}"`);
    expect(await page.locator('#created-simulate').textContent()).toContain(`npx sockpit simulate --id ${DEVICE.id} --token=${token}`);
    await snap(page, '03-device-added');

    // Shown once: reloading the list does not show the token again.
    await page.goto(server.baseUrl + '/admin/devices');
    await page.getByRole('link', { name: DEVICE.name }).waitFor();
    expect(await page.content()).not.toContain(token);
  });

  test('when a raw TCP device connects with that token and sends the thesis reading, then the dashboard shows it online with the value', async () => {
    await page.getByRole('link', { name: 'Dashboard' }).click();
    await waitForPath(page, '/');
    const card = page.locator(`.device-card[data-device-id="${DEVICE.id}"]`);
    await waitForText(card.locator('[data-field="status"]'), 'offline');
    await waitForText(page.locator('#conn .conn__label'), 'Connected');

    device = await RawDevice.hello(server.devicePort, DEVICE.id, token);
    await waitForText(card.locator('[data-field="status"]'), 'online');
    await waitForText(page.locator('#fleet-online'), '1');

    device.send({ sensor: 'gps', time: 1351824120 });
    const readings = card.locator('[data-field="readings"]');
    await readings.locator('.reading', { hasText: 'sensor' }).filter({ hasText: 'gps' }).waitFor();
    await readings.locator('.reading', { hasText: 'time' }).filter({ hasText: '1351824120' }).waitFor();
    await snap(page, '04-dashboard-telemetry');
  });

  test('when the device page is opened, then it shows the device online with the reading from storage', async () => {
    await page.getByRole('link', { name: DEVICE.name }).click();
    await waitForPath(page, `/devices/${DEVICE.id}`);
    await page.getByRole('heading', { name: DEVICE.name, level: 1 }).waitFor();
    await waitForText(page.locator('#device-status'), 'online');
    await waitForText(page.locator('#device-firmware'), 'test/1');
    const latest = page.locator('#latest-body');
    await waitForText(latest.locator('tr', { has: page.locator('th', { hasText: /^sensor$/ }) }).locator('td'), 'gps');
    await waitForText(latest.locator('tr', { has: page.locator('th', { hasText: /^time$/ }) }).locator('td'), '1351824120');
    // The chart draws the numeric field from the stored history.
    await page.locator('#telemetry-chart').waitFor({ state: 'visible' });
    await snap(page, '05-device-page');
  });

  test('when Send Action to Node is clicked, then the device gets togglerele as a base64 line, and its ack shows acked next to the button', async () => {
    const button = page.getByRole('button', { name: 'Send Action to Node', exact: true });
    await button.click(); // waits until the page has watched the device and enabled it

    const cmd = await device!.next((m) => m.type === 'fromservertonode');
    expect(cmd).toEqual({ type: 'fromservertonode', msg: 'action', action: 'togglerele', id: expect.any(String) });
    // The device spoke base64, so the server answered in base64 (SPEC §3).
    const line = device!.rawLines.find((l) => !l.startsWith('{') && Buffer.from(l, 'base64').toString('utf8').includes('"togglerele"'));
    expect(line).toBeDefined();
    expect(Buffer.from(line!, 'base64').toString('base64')).toBe(line);

    const status = page.locator('#action-status .status');
    await waitForText(status, /^(queued|sent)$/);
    device!.send({ type: 'ack', id: cmd.id, ok: true, result: { relay: true } });
    await waitForText(status, 'acked');
    await waitForText(page.locator('#action-status .cmd-detail'), /relay: true/);
    // The command also shows in the list of recent commands.
    const row = page.locator(`#command-list li[data-command-id="${String(cmd.id)}"]`);
    await waitForText(row.locator('.status'), 'acked');
    await snap(page, '06-action-acked');
  });

  test('when the owner logs out, then the page is on /login, the socket is gone and the dashboard needs a login again', async () => {
    expect(sockets()).toBe(1);
    await page.getByRole('button', { name: 'Log out' }).click();
    await waitForPath(page, '/login');
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await eventually('the server to have no Socket.IO connection', () => sockets() === 0);
    await snap(page, '07-logged-out');

    await page.goto(server.baseUrl + '/');
    await waitForPath(page, '/login');
    // Still no socket: the login page does not open one, and nothing reconnected.
    await new Promise((r) => setTimeout(r, 300));
    expect(sockets()).toBe(0);
  });

  test('when the pages above were visited, then the browser reported no CSP violation and no uncaught error', () => {
    expect(diag.cspViolations()).toEqual([]);
    expect(diag.pageErrors).toEqual([]);
  });
});

describe('device text in the browser (anonymous devices allowed)', () => {
  const EVIL = '<img src=x onerror=window.__xss=1>';
  let server: TestServer;
  let context: BrowserContext;
  let page: Page;
  let diag: PageDiagnostics;
  let device: RawDevice | null = null;

  beforeAll(async () => {
    server = await startServer({ allowAnonymousDevices: true });
    await addUser(server.app.storage, OWNER.username, OWNER.password, 'admin', 4);
    ({ context, page, diag } = await openPage(browser));
  }, 60_000);

  afterAll(async () => {
    device?.close();
    await context?.close();
    await server?.close();
  });

  const xss = () => page.evaluate(() => (window as unknown as { __xss?: unknown }).__xss);

  test('when a device uses HTML as its id and in its telemetry, then every page shows it as text and no script runs', async () => {
    await page.goto(server.baseUrl + '/login');
    await page.getByLabel('Username').fill(OWNER.username);
    await page.getByLabel('Password').fill(OWNER.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await waitForPath(page, '/');
    await waitForText(page.locator('#conn .conn__label'), 'Connected');

    // Thesis firmware style: no hello, the first line is telemetry naming the device.
    device = await RawDevice.connect(server.devicePort);
    device.send({ device: EVIL, note: EVIL });
    await device.next((m) => m.type === 'welcome');

    // Dashboard, live: the unknown device arrives through the socket (the page refetches the
    // fleet list for a device it does not know, at most every 5 s).
    const card = page.locator('.device-card', { has: page.locator('[data-field="id"]', { hasText: EVIL }) });
    await waitForText(card.locator('[data-field="name"]'), EVIL, 15_000);
    await card.locator('.reading', { hasText: 'note' }).filter({ hasText: EVIL }).waitFor();
    await snap(page, '08-xss-dashboard-live');

    // Dashboard, server-rendered.
    await page.reload();
    await waitForText(card.locator('[data-field="name"]'), EVIL);
    await card.locator('.reading', { hasText: 'note' }).filter({ hasText: EVIL }).waitFor();

    // Device page: the heading, the facts and the latest reading.
    await card.locator('[data-field="name"]').click();
    await waitForPath(page, `/devices/${encodeURIComponent(EVIL)}`);
    await waitForText(page.getByRole('heading', { level: 1 }), EVIL);
    await waitForText(page.locator('#device-id'), EVIL);
    await waitForText(page.locator('#latest-body tr', { has: page.locator('th', { hasText: /^note$/ }) }).locator('td'), EVIL);
    // A live reading too.
    device.send({ device: EVIL, note: `${EVIL} again` });
    await waitForText(page.locator('#latest-body tr', { has: page.locator('th', { hasText: /^note$/ }) }).locator('td'), `${EVIL} again`);
    await snap(page, '09-xss-device-page');

    // Admin device list.
    await page.goto(server.baseUrl + '/admin/devices');
    await page.locator('.table__secondary', { hasText: EVIL }).waitFor();
    await snap(page, '10-xss-admin-devices');

    expect(await page.locator('img[src="x"]').count()).toBe(0);
    expect(await xss()).toBeUndefined();
  });

  test('when the pages above were visited, then the browser reported no CSP violation and no uncaught error', async () => {
    // Give any late onerror handler a moment, then check once more.
    await new Promise((r) => setTimeout(r, 200));
    expect(await xss()).toBeUndefined();
    expect(diag.cspViolations()).toEqual([]);
    expect(diag.pageErrors).toEqual([]);
  });
});
