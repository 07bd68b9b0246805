// Dashboard: the fleet grid. First paint comes from the server; the socket keeps it live.
// Operators and admins get a "Send Action to Node" button on every card, with that command's live
// status beside it (one click listener for the grid, one `command:status` listener for the page).
import { setTime } from '../lib/clock';
import { newerCommand, renderCommandStatus } from '../lib/command';
import { $, $$, clear, flash, h, setText } from '../lib/dom';
import { entries, formatValue } from '../lib/format';
import { errorText, request, type AppSocket } from '../lib/socket';
import type { CommandView, DeviceView } from '../lib/types';

const MAX_READINGS = 6;

export function dashboardPage(socket: AppSocket): void {
  const grid = $('#device-grid');
  const template = $<HTMLTemplateElement>('#device-card-template');
  if (!grid || !template) return;
  const empty = $('#empty-state');
  const toolbar = $('#fleet-toolbar');
  const filter = $<HTMLInputElement>('#device-filter');
  const noMatch = $('#no-match');
  const devices = new Map<string, DeviceView>();
  // Cards by device id; the server-rendered ones first.
  const cards = new Map<string, HTMLElement>();
  for (const el of $$('.device-card', grid)) if (el.dataset.deviceId) cards.set(el.dataset.deviceId, el);
  const cardOf = (id: string): HTMLElement | undefined => cards.get(id);

  // Commands this page sent from a card: command id -> device id, and each card's current one.
  const commandDevice = new Map<string, string>();
  const cardCommand = new Map<string, CommandView>();
  // Status events can overtake the acknowledgement of `command:send`; while a send is in flight,
  // keep the events of commands not yet known, so the ack finds how far its command already got.
  let sending = 0;
  const early = new Map<string, CommandView>();

  let cardSerial = 0;
  function newCard(): HTMLElement {
    const frag = template!.content.cloneNode(true) as DocumentFragment;
    const el = frag.firstElementChild as HTMLElement;
    // The button is described by the device's name (screen readers: "Send Action to Node, Kitchen").
    const link = $('[data-field="name"]', el);
    const button = $('button[data-action]', el);
    if (link && button) {
      link.id = `card-name-new-${++cardSerial}`;
      button.setAttribute('aria-describedby', link.id);
    }
    return el;
  }

  function actionButton(card: HTMLElement): HTMLButtonElement | null {
    return $<HTMLButtonElement>('button[data-action="togglerele"]', card);
  }

  function updateButton(card: HTMLElement): void {
    const button = actionButton(card);
    if (button) button.disabled = !socket.connected || card.dataset.sending === 'true';
  }

  function renderCommand(card: HTMLElement, c: CommandView | null): void {
    const slot = $('[data-field="command"]', card);
    if (slot) renderCommandStatus(slot, c);
  }

  function showCommandError(card: HTMLElement, message: string | null): void {
    const el = $('[data-field="command-error"]', card);
    if (!el) return;
    setText(el, message ?? '');
    el.hidden = !message;
  }

  /** A status for a command this page sent: shown on its card if it is still the card's latest. */
  function onCommand(c: CommandView): void {
    const deviceId = commandDevice.get(c.id);
    if (deviceId === undefined) {
      if (sending > 0) early.set(c.id, newerCommand(early.get(c.id), c));
      return;
    }
    const current = cardCommand.get(deviceId);
    if (!current || current.id !== c.id) return;
    const kept = newerCommand(current, c);
    cardCommand.set(deviceId, kept);
    const card = cardOf(deviceId);
    if (card) renderCommand(card, kept);
  }

  async function sendAction(card: HTMLElement): Promise<void> {
    const deviceId = card.dataset.deviceId;
    if (!deviceId || card.dataset.sending === 'true') return;
    card.dataset.sending = 'true';
    sending++;
    updateButton(card);
    showCommandError(card, null);
    $('[data-field="command"]', card)?.setAttribute('aria-busy', 'true');
    try {
      const res = await request(socket, 'command:send', { deviceId, action: 'togglerele' });
      if (!res.ok) {
        showCommandError(card, errorText(res.error));
        $('[data-field="command"]', card)?.setAttribute('aria-busy', 'false');
        renderCommand(card, cardCommand.get(deviceId) ?? null);
        return;
      }
      const previous = cardCommand.get(deviceId);
      if (previous) commandDevice.delete(previous.id);
      const c = newerCommand(early.get(res.command.id), res.command);
      commandDevice.set(c.id, deviceId);
      cardCommand.set(deviceId, c);
      // The card may have been replaced while we waited (a fleet refresh keeps cards, a removal does not).
      const now = cardOf(deviceId);
      if (now) renderCommand(now, c);
    } finally {
      sending--;
      if (sending === 0) early.clear();
      delete card.dataset.sending;
      updateButton(card);
    }
  }

  function renderReadings(card: HTMLElement, d: DeviceView, fresh: boolean): void {
    const dl = $('[data-field="readings"]', card);
    const none = $('[data-field="readings-empty"]', card);
    if (!dl) return;
    const before = new Map<string, string>();
    for (const r of $$('.reading', dl)) before.set(r.firstElementChild?.textContent ?? '', r.lastElementChild?.textContent ?? '');
    const list = entries(d.latest);
    clear(dl);
    for (const [k, v] of list.slice(0, MAX_READINGS)) {
      const text = formatValue(v);
      const reading = h('div', { class: 'reading' }, h('dt', {}, k), h('dd', {}, text));
      if (fresh && before.get(k) !== text) flash(reading);
      dl.append(reading);
    }
    if (list.length > MAX_READINGS) {
      dl.append(h('div', { class: 'reading reading--more' }, h('dt', {}, `+${list.length - MAX_READINGS} more`)));
    }
    dl.hidden = list.length === 0;
    if (none) none.hidden = list.length > 0;
  }

  function fill(card: HTMLElement, d: DeviceView, fresh = false): void {
    card.dataset.deviceId = d.id;
    card.dataset.online = String(d.online);
    card.dataset.search = `${d.name} ${d.id}`.toLowerCase();
    const link = $<HTMLAnchorElement>('[data-field="name"]', card);
    if (link) {
      link.href = `/devices/${encodeURIComponent(d.id)}`;
      setText(link, d.name || d.id);
    }
    setText($('[data-field="id"]', card), d.id);
    const badge = $('[data-field="status"]', card);
    if (badge) {
      setText(badge, d.online ? 'online' : 'offline');
      badge.className = `badge badge--${d.online ? 'online' : 'offline'}`;
    }
    setTime($('[data-field="lastSeen"]', card), d.lastSeen);
    const fw = $('[data-field="firmware"]', card);
    if (fw) {
      setText(fw, d.firmware ? `fw ${d.firmware}` : '');
      fw.hidden = !d.firmware;
    }
    const transport = $('[data-field="transport"]', card);
    if (transport) {
      const how = d.online ? d.transport : null;
      setText($('[data-field="transport-name"]', transport), how ?? '');
      transport.hidden = !how;
    }
    renderReadings(card, d, fresh);
    updateButton(card);
  }

  function sortKey(d: DeviceView): string {
    return (d.name || d.id).toLowerCase();
  }

  function updateSummary(): void {
    const total = devices.size;
    const online = [...devices.values()].filter((d) => d.online).length;
    setText($('#fleet-total'), String(total));
    setText($('#fleet-online'), String(online));
    setText($('#fleet-offline'), String(total - online));
    if (empty) empty.hidden = total > 0;
    if (toolbar) toolbar.hidden = total === 0;
    grid!.hidden = total === 0;
    applyFilter();
  }

  function applyFilter(): void {
    const q = (filter?.value ?? '').trim().toLowerCase();
    let shown = 0;
    for (const card of $$('.device-card', grid!)) {
      const match = !q || (card.dataset.search ?? '').includes(q);
      card.hidden = !match;
      if (match) shown++;
    }
    if (noMatch) noMatch.hidden = shown > 0 || devices.size === 0;
  }

  function renderAll(list: DeviceView[]): void {
    devices.clear();
    const sorted = [...list].sort((a, b) => sortKey(a).localeCompare(sortKey(b)));
    const keep = new Set<HTMLElement>();
    for (const d of sorted) {
      devices.set(d.id, d);
      let card = cardOf(d.id);
      if (!card) {
        card = newCard();
        cards.set(d.id, card);
        const c = cardCommand.get(d.id);
        if (c) renderCommand(card, c);
      }
      fill(card, d);
      grid!.append(card); // moves existing cards into sorted order
      keep.add(card);
    }
    for (const card of $$('.device-card', grid!)) if (!keep.has(card)) card.remove();
    for (const [id, card] of cards) {
      if (keep.has(card)) continue;
      cards.delete(id);
      const c = cardCommand.get(id);
      if (c) commandDevice.delete(c.id);
      cardCommand.delete(id);
    }
    updateSummary();
  }

  async function refresh(): Promise<void> {
    lastRefresh = Date.now();
    const res = await request(socket, 'fleet:list', {});
    if (res.ok) renderAll(res.devices);
  }

  // An event for a device we do not know means the fleet changed: fetch the list again,
  // at most once every few seconds.
  let refreshTimer = 0;
  let lastRefresh = 0;
  function scheduleRefresh(): void {
    if (refreshTimer) return;
    const wait = Math.max(300, lastRefresh + 5000 - Date.now());
    refreshTimer = window.setTimeout(() => {
      refreshTimer = 0;
      void refresh();
    }, wait);
  }

  const updateButtons = () => {
    for (const card of cards.values()) updateButton(card);
  };
  socket.on('connect', () => {
    updateButtons();
    void refresh();
  });
  socket.on('disconnect', updateButtons);
  socket.on('command:status', onCommand);

  socket.on('device:status', (s) => {
    const d = devices.get(s.deviceId);
    if (!d) return scheduleRefresh();
    const changed = d.online !== s.online;
    d.online = s.online;
    d.lastSeen = s.lastSeen;
    d.transport = s.online ? (s.transport ?? d.transport) : null;
    const card = cardOf(d.id);
    if (!card) return scheduleRefresh();
    fill(card, d);
    if (changed) flash($('[data-field="status"]', card) ?? card);
    updateSummary();
    // A device that just came online may report new firmware in its hello.
    if (changed && s.online) scheduleRefresh();
  });

  // The readings of one server tick, oldest first: keep the newest per device, then redraw each
  // card once.
  socket.on('fleet:telemetry', (readings) => {
    const newest = new Map<string, (typeof readings)[number]>();
    for (const p of readings) newest.set(p.deviceId, p);
    for (const p of newest.values()) {
      const d = devices.get(p.deviceId);
      if (!d) {
        scheduleRefresh();
        continue;
      }
      d.latest = p.data;
      d.latestAt = p.ts;
      d.lastSeen = Math.max(d.lastSeen ?? 0, p.ts);
      const card = cardOf(d.id);
      if (!card) {
        scheduleRefresh();
        continue;
      }
      fill(card, d, true);
    }
  });

  filter?.addEventListener('input', applyFilter);

  // One listener for every card: its button sends the action; a click anywhere else on a card
  // opens the device, unless the user is selecting text. The action row itself never navigates
  // (a click just beside the button should not leave the page).
  grid.addEventListener('click', (ev) => {
    const target = ev.target as Element | null;
    if (!target) return;
    const button = target.closest<HTMLButtonElement>('button[data-action="togglerele"]');
    if (button) {
      const card = button.closest<HTMLElement>('.device-card');
      if (card && !button.disabled) void sendAction(card);
      return;
    }
    if (target.closest('a, button, input, select, textarea, .device-card__action')) return;
    const card = target.closest<HTMLElement>('.device-card');
    const link = card ? $<HTMLAnchorElement>('.device-card__link', card) : null;
    if (!link || (window.getSelection()?.toString() ?? '') !== '') return;
    if (ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button === 1) window.open(link.href, '_blank', 'noopener');
    else window.location.assign(link.href);
  });
}
