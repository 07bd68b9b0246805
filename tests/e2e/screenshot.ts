/**
 * Makes the README's pictures:
 * - docs/screenshot.png, the dashboard: a small fleet live, and "Send Action to Node" clicked on
 *   one device's card, which the device acked (no need to open the device);
 * - docs/screenshot-device.png, the device page: a device online with a history of readings, the
 *   chart drawing them, and a "Send Action to Node" that the device acked.
 *
 * Run from the repository root (after `npm run build`, which makes public/build/app.js):
 *
 *   npx esbuild tests/e2e/screenshot.ts --bundle --platform=node --packages=external --outfile=artifacts/shot.js && node artifacts/shot.js
 *
 * The bundle must sit one folder below the repository root (artifacts/ is gitignored): its npm
 * packages are resolved from where it lies, and server/app.ts finds views/ and public/ at `..`
 * of the bundle. A bundle in /tmp finds neither.
 * Options: SCREENSHOT_OUT=path (default docs/screenshot.png), SCREENSHOT_DEVICE_OUT=path (default
 * docs/screenshot-device.png), CHROMIUM_PATH (default /usr/bin/chromium).
 * Not a test (the e2e suite matches *.test.ts only); it uses the same helpers.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { addUser } from '../../server/auth/users';
import { addDevice } from '../../server/devices/admin';
import type { TelemetryRow } from '../../server/storage';
import { RawDevice } from '../support/device';
import { startServer } from '../support/server';
import { launchBrowser, waitForPath, waitForText } from './browser';

const ROOT = process.cwd();
const OUT = path.resolve(ROOT, process.env.SCREENSHOT_OUT ?? 'docs/screenshot.png');
const DEVICE_OUT = path.resolve(ROOT, process.env.SCREENSHOT_DEVICE_OUT ?? 'docs/screenshot-device.png');
const DEVICE = { id: 'greenhouse-1', name: 'Greenhouse sensor', firmware: 'sockpit-esp32/1.0' };
/** The rest of the fleet on the dashboard picture. */
const FLEET = [
  { id: 'boiler-relay', name: 'Boiler relay', firmware: 'sockpit-esp32/1.0', data: { relay: false, power_w: 0, rssi: -58 } },
  { id: 'garage-door', name: 'Garage door', firmware: 'sockpit-esp32/1.0', data: { door: 'closed', rssi: -71 } },
];
const USER = { username: 'maria', password: 'greenhouse tomatoes' };
/** The image is 1280×800 pixels: the page as a browser at 75 % zoom shows it, so the chart fits. */
const ZOOM = 0.75;

/** A plausible afternoon in a greenhouse: warming, drying, a weak Wi-Fi link. */
function reading(i: number, n: number, relay: boolean): Record<string, unknown> {
  const t = i / n;
  const wobble = Math.sin(i * 1.7) * 0.15 + Math.sin(i * 0.45) * 0.25;
  return {
    temp_c: Math.round((21.2 + 2.6 * t + 0.5 * Math.sin(t * Math.PI * 2) + wobble) * 10) / 10,
    humidity: Math.round((58 - 9 * t - 2 * Math.sin(t * Math.PI * 3) + wobble * 2) * 10) / 10,
    rssi: Math.round(-64 + 3 * Math.sin(i * 0.11) + Math.sin(i * 0.7)),
    relay,
  };
}

async function main(): Promise<void> {
  if (!fs.existsSync(path.resolve(__dirname, '..', 'views', 'device.ejs'))) {
    throw new Error(`bundle this script to artifacts/shot.js, not ${__filename} (see the top of tests/e2e/screenshot.ts)`);
  }
  if (!fs.existsSync(path.join(ROOT, 'public/build/app.js'))) throw new Error('run `npm run build` first (public/build/app.js is missing)');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-shot-'));
  const server = await startServer({ dataDir, logLevel: 'silent' });
  const browser = await launchBrowser();
  const devices: RawDevice[] = [];
  try {
    await addUser(server.app.storage, USER.username, USER.password, 'admin', 4);
    const { token } = await addDevice(server.app.storage, DEVICE.id, DEVICE.name);

    // History from storage: a reading every 30 s for the last 45 minutes.
    const n = 90;
    const now = Date.now();
    const rows: TelemetryRow[] = [];
    for (let i = 0; i < n; i++) rows.push({ deviceId: DEVICE.id, msgId: `b1-${i + 1}`, ts: now - (n - i) * 30_000, data: reading(i, n + 4, false) });
    await server.app.storage.insertTelemetry(rows);

    // The devices connect and report live; a fourth one has been offline for two hours.
    const connect = async (id: string, tok: string, firmware: string, data: Record<string, unknown>, msgId: string): Promise<RawDevice> => {
      const d = await RawDevice.connect(server.devicePort);
      devices.push(d);
      d.send({ type: 'hello', device: id, token: tok, firmware });
      await d.next((m) => m.type === 'welcome');
      d.send({ type: 'telemetry', id: msgId, data });
      await d.next((m) => m.type === 'stored');
      return d;
    };
    const device = await connect(DEVICE.id, token, DEVICE.firmware, reading(n, n + 4, false), `b1-${n + 1}`);
    const fleet: RawDevice[] = [];
    for (const f of FLEET) {
      const added = await addDevice(server.app.storage, f.id, f.name);
      fleet.push(await connect(f.id, added.token, f.firmware, f.data, `${f.id}-1`));
    }
    await addDevice(server.app.storage, 'cellar-pump', 'Cellar pump');
    const twoHoursAgo = now - 2 * 3600_000;
    await server.app.storage.insertTelemetry([{ deviceId: 'cellar-pump', msgId: 'c-1', ts: twoHoursAgo, data: { pump: false, water_cm: 3.5 } }]);
    await server.app.storage.markDeviceSeen('cellar-pump', twoHoursAgo, 'sockpit-esp32/0.9');

    const context = await browser.newContext({ viewport: { width: Math.round(1280 / ZOOM), height: Math.round(800 / ZOOM) }, deviceScaleFactor: ZOOM });
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);
    await page.goto(server.baseUrl + '/login');
    await page.getByLabel('Username').fill(USER.username);
    await page.getByLabel('Password').fill(USER.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await waitForPath(page, '/');
    await waitForText(page.locator('#conn .conn__label'), 'Connected');

    // The dashboard: Send Action to Node on the boiler relay's card; it switches on and acks.
    const kitchen = fleet[0]!;
    const card = page.locator(`.device-card[data-device-id="${FLEET[0]!.id}"]`);
    await waitForText(card.locator('[data-field="status"]'), 'online');
    await card.getByRole('button', { name: 'Send Action to Node', exact: true }).click();
    const kcmd = await kitchen.next((m) => m.type === 'fromservertonode');
    await new Promise((r) => setTimeout(r, 180));
    kitchen.send({ type: 'ack', id: kcmd.id, ok: true, result: { relay: true } });
    await waitForText(card.locator('[data-field="command"] .status'), 'acked');
    kitchen.send({ type: 'telemetry', id: `${FLEET[0]!.id}-2`, data: { ...FLEET[0]!.data, relay: true, power_w: 1840 } });
    await kitchen.next((m) => m.type === 'stored');
    await waitForText(card.locator('.reading', { hasText: 'power_w' }).locator('dd'), '1840');
    await page.mouse.move(5, 5);
    await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
    await new Promise((r) => setTimeout(r, 2500));
    fs.mkdirSync(path.dirname(OUT), { recursive: true });
    await page.screenshot({ path: OUT });
    console.log(`wrote ${path.relative(ROOT, OUT)}`);

    // The device page.
    await page.goto(`${server.baseUrl}/devices/${DEVICE.id}`);
    await waitForText(page.locator('#conn .conn__label'), 'Connected');
    await waitForText(page.locator('#device-status'), 'online');
    await page.locator('#telemetry-chart canvas').waitFor({ state: 'visible' });

    // Send Action to Node: the device switches its relay on, acks and reports.
    await page.getByRole('button', { name: 'Send Action to Node', exact: true }).click();
    const cmd = await device.next((m) => m.type === 'fromservertonode');
    await new Promise((r) => setTimeout(r, 180));
    device.send({ type: 'ack', id: cmd.id, ok: true, result: { relay: true } });
    await waitForText(page.locator('#action-status .status'), 'acked');
    device.send({ type: 'telemetry', id: `b1-${n + 2}`, data: reading(n + 1, n + 4, true) });
    await device.next((m) => m.type === 'stored');
    await waitForText(page.locator('#latest-body tr', { has: page.locator('th', { hasText: /^relay$/ }) }).locator('td'), 'true');

    // Let the highlight of fresh values fade, move the mouse off the chart, then take the picture.
    await page.mouse.move(5, 5);
    await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
    await new Promise((r) => setTimeout(r, 2500));
    fs.mkdirSync(path.dirname(DEVICE_OUT), { recursive: true });
    await page.screenshot({ path: DEVICE_OUT });
    console.log(`wrote ${path.relative(ROOT, DEVICE_OUT)}`);
    await context.close();
  } finally {
    for (const d of devices) d.close();
    await browser.close();
    await server.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  console.error(`screenshot failed: ${err.message}`);
  process.exit(1);
});
