// Dashboard: the fleet grid. First paint comes from the server; the socket keeps it live.
import { setTime } from '../lib/clock';
import { $, $$, clear, flash, h, setText } from '../lib/dom';
import { entries, formatValue } from '../lib/format';
import { request, type AppSocket } from '../lib/socket';
import type { DeviceView } from '../lib/types';

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

  const cardOf = (id: string): HTMLElement | undefined =>
    $$('.device-card', grid).find((el) => el.dataset.deviceId === id);

  function newCard(): HTMLElement {
    const frag = template!.content.cloneNode(true) as DocumentFragment;
    const el = frag.firstElementChild as HTMLElement;
    return el;
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
    renderReadings(card, d, fresh);
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
      const card = cardOf(d.id) ?? newCard();
      fill(card, d);
      grid!.append(card); // moves existing cards into sorted order
      keep.add(card);
    }
    for (const card of $$('.device-card', grid!)) if (!keep.has(card)) card.remove();
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

  socket.on('connect', () => void refresh());

  socket.on('device:status', (s) => {
    const d = devices.get(s.deviceId);
    if (!d) return scheduleRefresh();
    const changed = d.online !== s.online;
    d.online = s.online;
    d.lastSeen = s.lastSeen;
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

  // A click anywhere on a card opens the device, unless the user is selecting text.
  grid.addEventListener('click', (ev) => {
    const target = ev.target as Element | null;
    if (!target || target.closest('a, button, input, select, textarea')) return;
    const card = target.closest<HTMLElement>('.device-card');
    const link = card ? $<HTMLAnchorElement>('.device-card__link', card) : null;
    if (!link || (window.getSelection()?.toString() ?? '') !== '') return;
    if (ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button === 1) window.open(link.href, '_blank', 'noopener');
    else window.location.assign(link.href);
  });
}
