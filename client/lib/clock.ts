// One ticker for every relative time on the page: <time data-ts="unix ms">.
import { $$, setText } from './dom';
import { absTime, relTime } from './format';

export function setTime(el: HTMLElement | null, ts: number | null): void {
  if (!el) return;
  if (ts === null || !Number.isFinite(ts)) {
    delete el.dataset.ts;
    el.removeAttribute('datetime');
    el.removeAttribute('title');
  } else {
    el.dataset.ts = String(ts);
    el.setAttribute('datetime', new Date(ts).toISOString());
    el.title = absTime(ts);
  }
  setText(el, relTime(ts));
}

function tick(): void {
  const now = Date.now();
  for (const el of $$('time[data-ts]')) {
    const ts = Number(el.dataset.ts);
    if (Number.isFinite(ts)) setText(el, relTime(ts, now));
  }
}

let started = false;
export function startClock(): void {
  if (started) return;
  started = true;
  tick();
  window.setInterval(tick, 1000);
}
