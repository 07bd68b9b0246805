// Admin pages are plain server-rendered forms. This only adds copy buttons and confirmations.
import { $, $$, setText } from '../lib/dom';

async function copyText(text: string): Promise<boolean> {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall through to the selection fallback
  }
  const ta = document.createElement('textarea');
  ta.value = text;
  ta.setAttribute('readonly', '');
  ta.className = 'visually-hidden';
  document.body.append(ta);
  ta.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  ta.remove();
  return ok;
}

function selectContents(el: HTMLElement): void {
  const range = document.createRange();
  range.selectNodeContents(el);
  const sel = window.getSelection();
  sel?.removeAllRanges();
  sel?.addRange(range);
}

/** <button data-copy="element-id">Copy</button> copies that element's text. */
export function enhanceCopyButtons(root: ParentNode = document): void {
  for (const btn of $$<HTMLButtonElement>('button[data-copy]', root)) {
    btn.hidden = false;
    const label = btn.textContent ?? 'Copy';
    let timer = 0;
    btn.addEventListener('click', async () => {
      const target = document.getElementById(btn.dataset.copy ?? '');
      if (!target) return;
      const ok = await copyText(target.textContent ?? '');
      if (!ok) selectContents(target);
      btn.classList.toggle('is-copied', ok);
      setText(btn, ok ? 'Copied' : 'Press Ctrl+C');
      window.clearTimeout(timer);
      timer = window.setTimeout(() => {
        btn.classList.remove('is-copied');
        setText(btn, label);
      }, 1800);
    });
  }
}

/** <form data-confirm="Question?"> asks before submitting. */
export function enhanceConfirmForms(root: ParentNode = document): void {
  for (const form of $$<HTMLFormElement>('form[data-confirm]', root)) {
    form.addEventListener('submit', (ev) => {
      if (!window.confirm(form.dataset.confirm ?? 'Are you sure?')) ev.preventDefault();
    });
  }
}

export function adminDevicesPage(): void {
  enhanceCopyButtons();
  enhanceConfirmForms();
  // Move focus to the one-time token panel so keyboard and screen-reader users land on it.
  $('#created-panel')?.focus({ preventScroll: true });
}

export function adminUsersPage(): void {
  enhanceConfirmForms();
  // A role change only needs its Save button once the select differs from the current role.
  for (const form of $$<HTMLFormElement>('form.role-form')) {
    const select = $<HTMLSelectElement>('select', form);
    const save = $<HTMLButtonElement>('button[type="submit"]', form);
    if (!select || !save) continue;
    const initial = select.value;
    const sync = () => {
      save.disabled = select.value === initial;
    };
    select.addEventListener('change', sync);
    sync();
  }
}
