// Login and first-run setup: small client-side checks; the server validates again.
import { $ } from '../lib/dom';

const utf8 = new TextEncoder();

function preventDoubleSubmit(form: HTMLFormElement): void {
  form.addEventListener('submit', (ev) => {
    if (ev.defaultPrevented) return;
    const btn = $<HTMLButtonElement>('button[type="submit"]', form);
    if (btn) {
      // Disable after the submit has been dispatched so the form still posts.
      window.setTimeout(() => {
        btn.disabled = true;
        btn.classList.add('is-loading');
      }, 0);
    }
  });
}

export function loginPage(): void {
  const form = $<HTMLFormElement>('#login-form');
  if (form) preventDoubleSubmit(form);
}

export function setupPage(): void {
  const form = $<HTMLFormElement>('#setup-form');
  const pw = $<HTMLInputElement>('#password');
  const pw2 = $<HTMLInputElement>('#password2');
  if (!form || !pw || !pw2) return;
  const check = () => {
    const bytes = utf8.encode(pw.value).length;
    pw.setCustomValidity(
      pw.value === '' || (bytes >= 8 && bytes <= 72) ? '' : 'The password must be 8 to 72 bytes long.',
    );
    pw2.setCustomValidity(pw2.value === '' || pw2.value === pw.value ? '' : 'The passwords do not match.');
  };
  pw.addEventListener('input', check);
  pw2.addEventListener('input', check);
  form.addEventListener('submit', (ev) => {
    check();
    if (!form.checkValidity()) {
      ev.preventDefault();
      form.reportValidity();
    }
  });
  preventDoubleSubmit(form);
}
