/**
 * Browser end-to-end, devices on every transport (docs/protocol.md): a WebSocket device and an MQTT
 * device show online with how they are connected, on the dashboard and the device page, live; a
 * click on Send Action to Node reaches each and comes back `acked`. Run with `npm run test:e2e`.
 * Screenshots go to artifacts/e2e/.
 */
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { addUser } from '../../server/auth/users';
import { RawDevice } from '../support/device';
import { mqttDevice, topics, type MqttClient } from '../support/mqtt';
import { addDevice, db, startServer, TestServer } from '../support/server';
import { WsDevice } from '../support/ws';
import { launchBrowser, openPage, PageDiagnostics, snap, waitForPath, waitForText } from './browser';

const OWNER = { username: 'owner', password: 'correct horse battery' };
const WS = { id: 'ws-node', name: 'WebSocket node' };
const MQ = { id: 'mqtt-node', name: 'MQTT node' };

let browser: Browser;

beforeAll(async () => {
  browser = await launchBrowser();
}, 60_000);

afterAll(async () => {
  await browser?.close();
});

/** The commands an MQTT device receives on its commands topic. */
function commandsOf(client: MqttClient): { next(): Promise<{ id: string; action: string }> } {
  const got: { id: string; action: string }[] = [];
  const waiting: ((c: { id: string; action: string }) => void)[] = [];
  client.on('message', (_topic, payload) => {
    const c = JSON.parse(payload.toString()) as { id: string; action: string };
    const w = waiting.shift();
    if (w) w(c);
    else got.push(c);
  });
  return { next: () => (got.length ? Promise.resolve(got.shift()!) : new Promise((r) => waiting.push(r))) };
}

describe('devices on WebSocket and MQTT in a browser: online with their transport, Send Action to Node acked', () => {
  let server: TestServer;
  let context: BrowserContext;
  let page: Page;
  let diag: PageDiagnostics;
  let tokens: Record<string, string> = {};
  let ws: WsDevice | null = null;
  let mq: MqttClient | null = null;
  let tcp: RawDevice | null = null;

  beforeAll(async () => {
    server = await startServer();
    await addUser(db(server), OWNER.username, OWNER.password, 'admin', 4);
    tokens = { [WS.id]: (await addDevice(server, WS.id, WS.name)).token, [MQ.id]: (await addDevice(server, MQ.id, MQ.name)).token };
    ({ context, page, diag } = await openPage(browser));
  }, 60_000);

  afterAll(async () => {
    ws?.close();
    tcp?.close();
    await mq?.endAsync().catch(() => {});
    await context?.close();
    await server?.close();
  });

  const card = (id: string) => page.locator(`.device-card[data-device-id="${id}"]`);

  test('when a WebSocket device and an MQTT device connect while the dashboard is open, then their cards turn online and say websocket and mqtt', async () => {
    await page.goto(server.baseUrl + '/login');
    await page.getByLabel('Username').fill(OWNER.username);
    await page.getByLabel('Password').fill(OWNER.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await waitForPath(page, '/');
    await waitForText(page.locator('#conn .conn__label'), 'Connected');
    for (const id of [WS.id, MQ.id]) {
      await waitForText(card(id).locator('[data-field="status"]'), 'offline');
      expect(await card(id).locator('[data-field="transport"]').isHidden()).toBe(true);
    }

    ws = await WsDevice.bearer(server.wsUrl, WS.id, tokens[WS.id]!);
    mq = await mqttDevice(server, MQ.id, tokens[MQ.id]!);
    await mq.subscribeAsync(topics.commands(MQ.id), { qos: 1 });

    for (const [id, transport] of [[WS.id, 'websocket'], [MQ.id, 'mqtt']] as const) {
      await waitForText(card(id).locator('[data-field="status"]'), 'online');
      const tag = card(id).locator('[data-field="transport"]');
      await tag.waitFor({ state: 'visible' });
      // Screen readers hear "connected over websocket"; the eye sees the transport's name.
      await waitForText(tag, `connected over ${transport}`);
      await waitForText(tag.locator('[data-field="transport-name"]'), transport);
    }
    await waitForText(page.locator('#fleet-online'), '2');

    // Readings over each transport reach the cards.
    ws.send({ type: 'telemetry', id: 'w-1', data: { via: 'websocket' } });
    await mq.publishAsync(topics.telemetry(MQ.id), JSON.stringify({ type: 'telemetry', id: 'm-1', data: { via: 'mqtt' } }), { qos: 1 });
    await card(WS.id).locator('.reading', { hasText: 'via' }).filter({ hasText: 'websocket' }).waitFor();
    await card(MQ.id).locator('.reading', { hasText: 'via' }).filter({ hasText: 'mqtt' }).waitFor();
    await snap(page, 'transports-01-dashboard');

    // The server-rendered page says the same.
    await page.reload();
    await waitForText(card(WS.id).locator('[data-field="transport-name"]'), 'websocket');
    await waitForText(card(MQ.id).locator('[data-field="transport-name"]'), 'mqtt');
  });

  test('when Send Action to Node is clicked on each card, then the WebSocket device and the MQTT device get togglerele, and their acks show acked on the cards', async () => {
    await waitForText(page.locator('#conn .conn__label'), 'Connected');
    const mqCommands = commandsOf(mq!);

    await card(WS.id).getByRole('button', { name: 'Send Action to Node', exact: true }).click();
    const wsCmd = await ws!.next((m) => m.type === 'fromservertonode');
    expect(wsCmd).toMatchObject({ msg: 'action', action: 'togglerele' });
    ws!.send({ type: 'ack', id: wsCmd.id, ok: true, result: { relay: 'on' } });
    await waitForText(card(WS.id).locator('[data-field="command"] .status'), 'acked');

    await card(MQ.id).getByRole('button', { name: 'Send Action to Node', exact: true }).click();
    const mqCmd = await mqCommands.next();
    expect(mqCmd).toMatchObject({ action: 'togglerele' });
    await mq!.publishAsync(topics.ack(MQ.id), JSON.stringify({ id: mqCmd.id, ok: true, result: { relay: 'on' } }), { qos: 1 });
    await waitForText(card(MQ.id).locator('[data-field="command"] .status'), 'acked');
    expect((await db(server).getCommand(wsCmd.id as string))!.status).toBe('acked');
    expect((await db(server).getCommand(mqCmd.id))!.status).toBe('acked');
    await snap(page, 'transports-02-acked-on-cards');
  });

  test('when the MQTT device page is opened, then it says connected over mqtt, and Send Action to Node there comes back acked', async () => {
    await card(MQ.id).locator('[data-field="name"]').click();
    await waitForPath(page, `/devices/${MQ.id}`);
    await waitForText(page.locator('#device-status'), 'online');
    await waitForText(page.locator('#device-transport'), 'mqtt');
    const mqCommands = commandsOf(mq!);
    await page.getByRole('button', { name: 'Send Action to Node', exact: true }).click();
    const cmd = await mqCommands.next();
    await mq!.publishAsync(topics.ack(MQ.id), JSON.stringify({ id: cmd.id, ok: true }), { qos: 1 });
    await waitForText(page.locator('#action-status .status'), 'acked');
    await snap(page, 'transports-03-mqtt-device-page');
  });

  test('when the device moves to another transport and then goes away, then the device page follows live: tcp, then not connected', async () => {
    // The same device over TCP replaces its MQTT connection (docs/protocol.md): it stays online.
    tcp = await RawDevice.hello(server.devicePort, MQ.id, tokens[MQ.id]!);
    await waitForText(page.locator('#device-transport'), 'tcp');
    await waitForText(page.locator('#device-status'), 'online');
    tcp.close();
    await waitForText(page.locator('#device-status'), 'offline');
    await waitForText(page.locator('#device-transport'), 'not connected');
  });

  test('when the WebSocket device page is opened, then Send Action to Node there reaches it and comes back acked', async () => {
    await page.goto(`${server.baseUrl}/devices/${WS.id}`);
    await waitForText(page.locator('#device-transport'), 'websocket');
    await page.getByRole('button', { name: 'Send Action to Node', exact: true }).click();
    const cmd = await ws!.next((m) => m.type === 'fromservertonode');
    ws!.send({ type: 'ack', id: cmd.id, ok: true });
    await waitForText(page.locator('#action-status .status'), 'acked');
    await snap(page, 'transports-04-websocket-device-page');
  });

  test('when the pages above were visited, then the browser reported no CSP violation and no uncaught error', () => {
    expect(diag.cspViolations()).toEqual([]);
    expect(diag.pageErrors).toEqual([]);
  });
});
