/**
 * The login's idle timeout rolls with HTTP requests, and a dashboard works over its socket: while
 * someone clicks or types on the page, it tells the server at most once a minute, so that a person
 * using the page is not logged out as idle (docs/security.md).
 */
const EVERY_MS = 60_000;

export function keepSessionWhileActive(): void {
  let last = Date.now();
  const active = (): void => {
    const now = Date.now();
    if (now - last < EVERY_MS) return;
    last = now;
    void fetch('/session/alive', { credentials: 'same-origin', cache: 'no-store' }).catch(() => {});
  };
  for (const type of ['pointerdown', 'keydown'] as const) document.addEventListener(type, active, { passive: true, capture: true });
}
