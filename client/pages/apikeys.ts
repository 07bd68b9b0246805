// API keys page (/api-keys): makes and revokes keys through the REST API (docs/api.md) with the
// session cookie and the page's CSRF token.
import { $, $$, h, setText } from '../lib/dom';
import { enhanceCopyButtons } from './admin';

interface ApiKeyView {
  id: string;
  name: string;
  role: string;
  username: string | null;
  createdAt: number;
  lastUsedAt: number | null;
}

/** The problem document's detail (docs/api.md, "Errors"), or a generic line. */
async function problemText(res: Response): Promise<string> {
  try {
    const p = (await res.json()) as { detail?: unknown };
    if (typeof p.detail === 'string') return p.detail;
  } catch {
    // not JSON
  }
  return `The server answered ${res.status}.`;
}

function timeCell(ts: number | null): HTMLElement {
  if (ts === null) return h('time', {}, 'never');
  return h('time', { 'data-ts': ts, datetime: new Date(ts).toISOString(), title: new Date(ts).toISOString().replace('T', ' ').slice(0, 19) + ' UTC' }, 'just now');
}

export function apiKeysPage(): void {
  const csrf = document.body.dataset.csrf ?? '';
  const isAdmin = document.body.dataset.role === 'admin';
  const form = $<HTMLFormElement>('#key-form');
  const fields = $<HTMLFieldSetElement>('#key-fields');
  const nameInput = $<HTMLInputElement>('#key-name');
  const roleSelect = $<HTMLSelectElement>('#key-role');
  const alert = $('#keys-alert');
  const body = $('#keys-body');
  const created = $('#key-created');
  if (!form || !fields || !nameInput || !roleSelect || !body || !created) return;

  const showError = (text: string | null) => {
    if (!alert) return;
    setText(alert, text ?? '');
    alert.hidden = !text;
  };
  const syncCount = () => {
    const n = $$('tr[data-key-id]', body).length;
    setText($('#keys-count'), String(n));
    const empty = $('#keys-empty');
    const wrap = $('#keys-wrap');
    if (empty) empty.hidden = n > 0;
    if (wrap) wrap.hidden = n === 0;
  };

  const revoke = async (btn: HTMLButtonElement) => {
    const id = btn.dataset.revoke ?? '';
    if (!window.confirm(`Revoke the key "${btn.dataset.name ?? id}"? Scripts using it stop working at once.`)) return;
    btn.disabled = true;
    showError(null);
    try {
      const res = await fetch(`/api/v1/keys/${encodeURIComponent(id)}`, { method: 'DELETE', headers: { 'X-CSRF-Token': csrf }, credentials: 'same-origin' });
      if (res.status !== 204 && res.status !== 404) throw new Error(await problemText(res));
      btn.closest('tr')?.remove();
      syncCount();
    } catch (err) {
      showError((err as Error).message);
      btn.disabled = false;
    }
  };
  const wire = (btn: HTMLButtonElement) => {
    btn.disabled = false;
    btn.addEventListener('click', () => void revoke(btn));
  };
  for (const btn of $$<HTMLButtonElement>('button[data-revoke]', body)) wire(btn);

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError(null);
    fields.disabled = true;
    try {
      const res = await fetch('/api/v1/keys', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
        credentials: 'same-origin',
        body: JSON.stringify({ name: nameInput.value, role: roleSelect.value }),
      });
      if (res.status !== 201) throw new Error(await problemText(res));
      const k = (await res.json()) as ApiKeyView & { key: string };
      setText($('#key-created-name'), k.name);
      setText($('#key-created-key'), k.key);
      setText($('#key-created-curl'), `curl -H "Authorization: Bearer ${k.key}" ${location.origin}/api/v1/devices`);
      created.hidden = false;
      created.focus({ preventScroll: false });
      const btn = h('button', { class: 'btn btn--danger btn--sm', type: 'button', 'data-revoke': k.id, 'data-name': k.name }, 'Revoke');
      body.prepend(
        h(
          'tr',
          { 'data-key-id': k.id },
          h('td', { 'data-label': 'Name' }, h('span', { class: 'table__primary' }, k.name), h('span', { class: 'table__secondary mono' }, k.id)),
          isAdmin ? h('td', { 'data-label': 'User' }, k.username ?? '(removed user)') : null,
          h('td', { 'data-label': 'Role' }, h('span', { class: `role role--${k.role}` }, k.role)),
          h('td', { 'data-label': 'Created' }, timeCell(k.createdAt)),
          h('td', { 'data-label': 'Last used' }, timeCell(k.lastUsedAt)),
          h('td', { class: 'table__actions' }, btn),
        ),
      );
      wire(btn);
      syncCount();
      form.reset();
    } catch (err) {
      showError((err as Error).message);
    } finally {
      fields.disabled = false;
    }
  });

  enhanceCopyButtons(created);
  fields.disabled = false;
}
