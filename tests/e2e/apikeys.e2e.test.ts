/**
 * Browser end-to-end for the REST API's parts in the page (docs/api.md): API keys made, shown
 * once and revoked in Chromium; the device page's Download CSV; /api/docs under the strict CSP.
 * Run with `npm run test:e2e`.
 */
import fs from 'node:fs';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { createApiKey } from '../../server/api/keys';
import { addUser } from '../../server/auth/users';
import { addDevice, startServer, TestServer } from '../support/server';
import { eventually, launchBrowser, openPage, PageDiagnostics, snap, waitForPath } from './browser';

let browser: Browser;
let server: TestServer;

beforeAll(async () => {
  browser = await launchBrowser();
  server = await startServer();
  await addUser(server.app.storage, 'owner', 'correct horse battery', 'admin', 4);
  await addUser(server.app.storage, 'olga', 'correct horse battery', 'operator', 4);
}, 60_000);

afterAll(async () => {
  await server?.close();
  await browser?.close();
});

async function loggedIn(username: string): Promise<{ context: BrowserContext; page: Page; diag: PageDiagnostics }> {
  const opened = await openPage(browser);
  await opened.page.goto(server.baseUrl + '/login');
  await opened.page.getByLabel('Username').fill(username);
  await opened.page.getByLabel('Password').fill('correct horse battery');
  await opened.page.getByRole('button', { name: 'Sign in' }).click();
  await waitForPath(opened.page, '/');
  return opened;
}

const devices = (key: string) => fetch(server.baseUrl + '/api/v1/devices', { headers: { authorization: `Bearer ${key}` } }).then((r) => r.status);

describe('API keys in the page', () => {
  test('when an operator makes a key in the page, then it is shown once, works at once, is listed, and revoking it in the page stops it', async () => {
    const { context, page, diag } = await loggedIn('olga');
    try {
      await page.getByRole('link', { name: 'API keys' }).click();
      await waitForPath(page, '/api-keys');
      await page.getByRole('heading', { name: 'API keys' }).waitFor();
      // An operator cannot pick a role above their own.
      expect(await page.locator('#key-role option').allTextContents()).toEqual(['viewer', 'operator']);
      await page.getByLabel('Name').fill('home assistant');
      await page.getByLabel('Role').selectOption('operator');
      await page.getByRole('button', { name: 'Make key' }).click();
      await page.getByRole('heading', { name: /Key home assistant is ready/ }).waitFor();
      const key = ((await page.locator('#key-created-key').textContent()) ?? '').trim();
      expect(key).toMatch(/^spk_/);
      expect(await page.locator('#key-created-curl').textContent()).toContain(`Authorization: Bearer ${key}`);
      expect(await devices(key)).toBe(200);
      const row = page.locator('#keys-body tr', { hasText: 'home assistant' });
      await row.waitFor();
      expect(await row.textContent()).toContain('operator');
      await snap(page, 'apikeys-01-made');

      // Shown once: after a reload the key is nowhere on the page, but the row is.
      await page.reload();
      expect(await page.content()).not.toContain(key);
      await page.locator('#keys-body tr', { hasText: 'home assistant' }).waitFor();

      page.once('dialog', (d) => void d.accept());
      await page.locator('#keys-body tr', { hasText: 'home assistant' }).getByRole('button', { name: 'Revoke' }).click();
      await eventually('the row to go', async () => (await page.locator('#keys-body tr', { hasText: 'home assistant' }).count()) === 0);
      expect(await devices(key)).toBe(401);
      await page.getByText('No keys yet.').waitFor();
      await snap(page, 'apikeys-02-revoked');
      expect(diag.cspViolations()).toEqual([]);
      expect(diag.pageErrors).toEqual([]);
    } finally {
      await context.close();
    }
  });

  test('when an admin opens the page, then they see every user\'s keys and can revoke another user\'s key', async () => {
    const olga = (await server.app.storage.getUserByName('olga'))!;
    const { apiKey, key } = await createApiKey(server.app.storage, olga, 'olga cron', 'viewer');
    const { context, page, diag } = await loggedIn('owner');
    try {
      await page.goto(server.baseUrl + '/api-keys');
      const row = page.locator(`#keys-body tr[data-key-id="${apiKey.id}"]`);
      await row.waitFor();
      expect(await row.textContent()).toContain('olga');
      page.once('dialog', (d) => void d.accept());
      await row.getByRole('button', { name: 'Revoke' }).click();
      await eventually('the row to go', async () => (await row.count()) === 0);
      expect(await devices(key)).toBe(401);
      expect(diag.cspViolations()).toEqual([]);
    } finally {
      await context.close();
    }
  });
});

test('when a person clicks Download CSV on the device page, then the browser downloads the readings as CSV', async () => {
  const { id } = await addDevice(server, 'csv-e2e', 'CSV sensor');
  const now = Date.now();
  await server.app.storage.insertTelemetry([
    { deviceId: id, msgId: 'a', ts: now - 60_000, data: { temp: 20.5, note: 'first, quoted' } },
    { deviceId: id, msgId: 'b', ts: now - 30_000, data: { temp: 21 } },
  ]);
  const { context, page, diag } = await loggedIn('owner');
  try {
    await page.goto(`${server.baseUrl}/devices/${id}`);
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download CSV' }).click()]);
    expect(download.suggestedFilename()).toBe(`${id}-telemetry.csv`);
    const text = fs.readFileSync((await download.path())!, 'utf8');
    expect(text.split('\n')[0]).toBe('time,note,temp');
    expect(text).toContain('"first, quoted",20.5');
    expect(text.trimEnd().split('\n')).toHaveLength(3);
    expect(diag.cspViolations()).toEqual([]);
  } finally {
    await context.close();
  }
});

test('when a person opens /api/docs, then the document renders from the app itself with no CSP violation', async () => {
  const { context, page, diag } = await openPage(browser);
  try {
    await page.goto(server.baseUrl + '/api/docs');
    await page.getByText('sockpit REST API').first().waitFor();
    await page.getByText('/devices/{id}/telemetry').first().waitFor();
    await snap(page, 'apikeys-03-docs');
    expect(diag.cspViolations()).toEqual([]);
    expect(diag.pageErrors).toEqual([]);
  } finally {
    await context.close();
  }
});
