// Device page: header, "Send Action to Node", changesetting, commands, live log, chart, latest reading.
import { TelemetryChart } from '../lib/chart';
import { setTime } from '../lib/clock';
import { commandDetail, newerCommand, renderCommandStatus, statusPill } from '../lib/command';
import { $, clear, flash, h, setText } from '../lib/dom';
import { clockTime, absTime, entries, formatValue } from '../lib/format';
import { errorText, request, type AppSocket } from '../lib/socket';
import type { CommandView, DeviceView, LogEntry, SettingValue, TelemetryPoint } from '../lib/types';

const MAX_LOG = 200;
const MAX_COMMANDS = 50;
const HISTORY_LIMIT = 2000;

/** Parse a setting value: numbers when numeric, true/false as booleans, otherwise the string. */
export function parseSettingValue(raw: string): SettingValue {
  const t = raw.trim();
  if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(t)) {
    const n = Number(t);
    if (Number.isFinite(n)) return n;
  }
  if (t === 'true') return true;
  if (t === 'false') return false;
  return raw;
}

function paramsText(params: Record<string, unknown> | null): string {
  if (!params) return '';
  return entries(params)
    .map(([k, v]) => `${k} = ${formatValue(v)}`)
    .join(', ');
}

function showError(el: HTMLElement | null, message: string | null): void {
  if (!el) return;
  setText(el, message ?? '');
  el.hidden = !message;
}

export function devicePage(socket: AppSocket): void {
  const deviceId = document.body.dataset.deviceId ?? '';
  if (!deviceId) return;
  const canAct = document.body.dataset.canAct === 'true';

  const actionBtn = $<HTMLButtonElement>('#send-action');
  const actionSlot = $('#action-status');
  const actionError = $('#action-error');
  const settingForm = $<HTMLFormElement>('#setting-form');
  const settingKey = $<HTMLInputElement>('#setting-key');
  const settingValue = $<HTMLInputElement>('#setting-value');
  const settingSlot = $('#setting-status');
  const settingError = $('#setting-error');
  const settingFields = $<HTMLFieldSetElement>('#setting-fields');
  const commandList = $('#command-list');
  const commandsEmpty = $('#commands-empty');
  const logList = $('#device-log');
  const logEmpty = $('#log-empty');
  const latestBody = $<HTMLTableSectionElement>('#latest-body');
  const latestEmpty = $('#latest-empty');
  const latestTable = $('#latest-table');
  const alertBox = $('#device-alert');
  const chartEl = $('#telemetry-chart');

  const chart = chartEl ? new TelemetryChart(chartEl, $('#chart-empty'), $('#chart-note')) : null;
  const commands = new Map<string, CommandView>();
  let device: DeviceView | null = null;
  let toggleId: string | null = null; // the togglerele command whose status sits next to the button
  let toggleMine = false; // once this page sent one, we stick to our own
  let settingId: string | null = null;
  let settingMine = false;
  let busy = false;
  let historyLoaded = false;
  let pending: TelemetryPoint[] = [];

  // ---- header + latest reading -------------------------------------------------------------
  function renderHeader(): void {
    if (!device) return;
    setText($('#device-name'), device.name || device.id);
    const badge = $('#device-status');
    if (badge) {
      badge.className = `badge badge--${device.online ? 'online' : 'offline'}`;
      setText(badge, device.online ? 'online' : 'offline');
    }
    setTime($('#device-last-seen'), device.lastSeen);
    setText($('#device-firmware'), device.firmware ?? 'unknown');
    setText($('#device-transport'), device.online && device.transport ? device.transport : 'not connected');
  }

  function renderLatest(fresh = false): void {
    if (!latestBody || !device) return;
    const before = new Map<string, string>();
    for (const tr of Array.from(latestBody.rows)) before.set(tr.cells[0]?.textContent ?? '', tr.cells[1]?.textContent ?? '');
    const list = entries(device.latest);
    clear(latestBody);
    for (const [k, v] of list) {
      const text = formatValue(v);
      const td = h('td', {}, text);
      if (fresh && before.get(k) !== text) flash(td);
      latestBody.append(h('tr', {}, h('th', { scope: 'row' }, k), td));
    }
    if (latestTable) latestTable.hidden = list.length === 0;
    if (latestEmpty) latestEmpty.hidden = list.length > 0;
    setTime($('#latest-at'), device.latestAt);
  }

  // ---- commands -----------------------------------------------------------------------------
  function mergeCommand(c: CommandView): CommandView {
    const kept = newerCommand(commands.get(c.id), c);
    commands.set(c.id, kept);
    return kept;
  }

  function renderCommands(): void {
    if (!commandList) return;
    const list = [...commands.values()].sort((a, b) => b.createdAt - a.createdAt).slice(0, MAX_COMMANDS);
    for (const c of commands.values()) if (!list.includes(c)) commands.delete(c.id);
    clear(commandList);
    for (const c of list) {
      const detail = commandDetail(c);
      const params = paramsText(c.params);
      commandList.append(
        h(
          'li',
          { class: 'cmd', 'data-command-id': c.id },
          h(
            'div',
            { class: 'cmd__main' },
            h('span', { class: 'cmd__action mono' }, c.action),
            params ? h('span', { class: 'cmd__params mono' }, params) : null,
          ),
          h(
            'div',
            { class: 'cmd__state' },
            statusPill(c.status),
            detail ? h('span', { class: 'cmd__result' }, detail) : null,
          ),
          h(
            'div',
            { class: 'cmd__meta' },
            h('time', { datetime: new Date(c.createdAt).toISOString(), title: absTime(c.createdAt) }, clockTime(c.createdAt)),
            c.sentBy ? ` · ${c.sentBy}` : null,
          ),
        ),
      );
    }
    if (commandsEmpty) commandsEmpty.hidden = list.length > 0;
    commandList.hidden = list.length === 0;
  }

  function latestOf(action: string): CommandView | null {
    let best: CommandView | null = null;
    for (const c of commands.values()) if (c.action === action && (!best || c.createdAt > best.createdAt)) best = c;
    return best;
  }

  function renderSlots(): void {
    if (!toggleMine) toggleId = latestOf('togglerele')?.id ?? null;
    if (!settingMine) settingId = latestOf('changesetting')?.id ?? null;
    if (actionSlot) renderCommandStatus(actionSlot, toggleId ? (commands.get(toggleId) ?? null) : null);
    if (settingSlot) renderCommandStatus(settingSlot, settingId ? (commands.get(settingId) ?? null) : null);
  }

  function onCommand(c: CommandView): void {
    if (c.deviceId !== deviceId) return;
    mergeCommand(c);
    renderCommands();
    renderSlots();
  }

  // ---- log ----------------------------------------------------------------------------------
  function logItem(e: LogEntry): HTMLElement {
    const level = e.level === 'warn' || e.level === 'error' ? e.level : 'info';
    return h(
      'li',
      { class: `log__line log__line--${level}` },
      h('time', { class: 'log__time', datetime: new Date(e.ts).toISOString(), title: absTime(e.ts) }, clockTime(e.ts)),
      h('span', { class: 'log__level' }, level),
      h('span', { class: 'log__text' }, String(e.text ?? '')),
    );
  }

  function updateLogEmpty(): void {
    const n = logList?.childElementCount ?? 0;
    if (logEmpty) logEmpty.hidden = n > 0;
    if (logList) logList.hidden = n === 0;
  }

  function setLog(entriesIn: LogEntry[]): void {
    if (!logList) return;
    clear(logList);
    const sorted = [...entriesIn].sort((a, b) => b.ts - a.ts).slice(0, MAX_LOG);
    for (const e of sorted) logList.append(logItem(e));
    updateLogEmpty();
  }

  function addLog(e: LogEntry): void {
    if (!logList) return;
    logList.prepend(logItem(e));
    while (logList.childElementCount > MAX_LOG) logList.lastElementChild?.remove();
    updateLogEmpty();
  }

  // ---- telemetry ----------------------------------------------------------------------------
  async function loadHistory(): Promise<void> {
    historyLoaded = false;
    pending = [];
    const res = await request(socket, 'telemetry:history', { deviceId, limit: HISTORY_LIMIT }, 15000);
    if (!chart) return;
    if (res.ok) chart.setHistory(res.points);
    historyLoaded = true;
    const last = chart.lastTs ?? -Infinity;
    for (const p of pending) if (p.ts > last) chart.append(p);
    pending = [];
  }

  // ---- actions ------------------------------------------------------------------------------
  function updateControls(): void {
    const enabled = canAct && socket.connected && device !== null;
    if (actionBtn) actionBtn.disabled = !enabled || busy;
    if (settingFields) settingFields.disabled = !enabled;
  }

  async function send(
    action: 'togglerele' | 'changesetting',
    params: Record<string, SettingValue> | undefined,
    errorEl: HTMLElement | null,
  ): Promise<CommandView | null> {
    showError(errorEl, null);
    const res = await request(socket, 'command:send', params ? { deviceId, action, params } : { deviceId, action });
    if (!res.ok) {
      showError(errorEl, errorText(res.error));
      return null;
    }
    return mergeCommand(res.command);
  }

  actionBtn?.addEventListener('click', async () => {
    if (busy) return;
    busy = true;
    updateControls();
    actionSlot?.setAttribute('aria-busy', 'true');
    try {
      const c = await send('togglerele', undefined, actionError);
      if (c) {
        toggleId = c.id;
        toggleMine = true;
      }
      renderCommands();
      renderSlots();
    } finally {
      busy = false;
      updateControls();
    }
  });

  settingForm?.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!settingKey || !settingValue) return;
    const key = settingKey.value.trim();
    if (!key) {
      settingKey.focus();
      return;
    }
    const submit = $<HTMLButtonElement>('button[type="submit"]', settingForm);
    if (submit) submit.disabled = true;
    try {
      const c = await send('changesetting', { [key]: parseSettingValue(settingValue.value) }, settingError);
      if (c) {
        settingId = c.id;
        settingMine = true;
      }
      renderCommands();
      renderSlots();
    } finally {
      if (submit) submit.disabled = false;
    }
  });

  $('#log-clear')?.addEventListener('click', () => {
    if (logList) clear(logList);
    updateLogEmpty();
  });

  // ---- socket -------------------------------------------------------------------------------
  async function watch(): Promise<void> {
    const res = await request(socket, 'device:watch', { deviceId });
    if (!res.ok) {
      showError(alertBox, errorText(res.error));
      updateControls();
      return;
    }
    showError(alertBox, null);
    device = res.device;
    commands.clear();
    for (const c of res.commands) mergeCommand(c);
    renderHeader();
    renderLatest();
    renderCommands();
    renderSlots();
    setLog(res.log);
    updateControls();
    await loadHistory();
  }

  socket.on('connect', () => void watch());
  socket.on('disconnect', () => updateControls());

  socket.on('device:status', (s) => {
    if (s.deviceId !== deviceId || !device) return;
    const changed = device.online !== s.online;
    device.online = s.online;
    device.lastSeen = s.lastSeen;
    device.transport = s.online ? (s.transport ?? device.transport) : null;
    renderHeader();
    if (changed) {
      const badge = $('#device-status');
      if (badge) flash(badge);
    }
  });

  // The fleet's readings of one server tick, oldest first; this page keeps its device's.
  socket.on('fleet:telemetry', (readings) => {
    let last: TelemetryPoint | null = null;
    for (const p of readings) {
      if (p.deviceId !== deviceId) continue;
      const point: TelemetryPoint = { ts: p.ts, data: p.data };
      last = point;
      if (!chart) continue;
      if (historyLoaded) chart.append(point);
      else pending.push(point);
    }
    if (last && device) {
      device.latest = last.data;
      device.latestAt = last.ts;
      device.lastSeen = Math.max(device.lastSeen ?? 0, last.ts);
      renderHeader();
      renderLatest(true);
    }
  });

  socket.on('device:log', (e) => {
    if (e.deviceId === deviceId) addLog(e);
  });

  socket.on('command:status', onCommand);

  window.addEventListener('pagehide', () => {
    if (socket.connected) socket.emit('device:unwatch', { deviceId }, () => undefined);
  });

  updateControls();
  csvExport();
}

/** The Download CSV form (docs/api.md): `from` is the chosen range back from now, read at the click. */
function csvExport(): void {
  const form = $<HTMLFormElement>('#csv-export');
  const range = $<HTMLSelectElement>('#csv-range');
  const from = $<HTMLInputElement>('#csv-from');
  if (!form || !range || !from) return;
  form.addEventListener('submit', () => {
    from.value = range.value === 'all' ? '0' : String(Date.now() - Number(range.value));
  });
}
