// A command's status as the page shows it (docs/realtime.md: `queued` → `sent` → `acked` |
// `failed` | `timeout` | `expired`). Shared by the device page and the dashboard's cards, so the
// words and colours are the same everywhere (the `.status--<status>` classes in public/app.css).
import { $, h, setText } from './dom';
import { absTime, formatResult } from './format';
import type { CommandView } from './types';

export const FINAL_STATUSES: ReadonlySet<string> = new Set(['acked', 'failed', 'timeout', 'expired']);

function rank(c: CommandView): number {
  return c.status === 'queued' ? 0 : c.status === 'sent' ? 1 : 2;
}

/**
 * Of two views of the same command, the one to keep: events and acknowledgements can arrive out
 * of order, and a later status never goes back to an earlier one.
 */
export function newerCommand(prev: CommandView | undefined, next: CommandView): CommandView {
  if (prev && (rank(prev) > rank(next) || (rank(prev) === rank(next) && prev.updatedAt > next.updatedAt))) return prev;
  return next;
}

/** What to show beside the status: the device's result when acked, else the error (or result). */
export function commandDetail(c: CommandView): string {
  return c.status === 'acked' ? formatResult(c.result) : c.error || formatResult(c.result);
}

/** A status pill, for lists. */
export function statusPill(status: string): HTMLElement {
  return h('span', { class: `status status--${status}`, 'data-status': status }, status);
}

/**
 * Fills a status slot (`.cmd-slot` holding a `.status` pill and a `.cmd-detail`) for one command,
 * or hides it for none.
 */
export function renderCommandStatus(slot: HTMLElement, c: CommandView | null): void {
  const pill = $('.status', slot);
  const detail = $('.cmd-detail', slot);
  if (!pill) return;
  if (!c) {
    pill.hidden = true;
    if (detail) detail.hidden = true;
    return;
  }
  pill.hidden = false;
  pill.className = `status status--${c.status}`;
  pill.dataset.status = c.status;
  setText(pill, c.status);
  slot.setAttribute('aria-busy', FINAL_STATUSES.has(c.status) ? 'false' : 'true');
  if (detail) {
    const text = commandDetail(c);
    setText(detail, text);
    detail.title = `${c.action} · ${absTime(c.updatedAt)}`;
    detail.hidden = text === '';
  }
}
