/**
 * Shared helpers of the browser suite (tests/e2e/*.test.ts) and tests/e2e/screenshot.ts:
 * Debian's Chromium driven by playwright-core, page diagnostics and polling.
 */
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Screenshots of every step land here (gitignored: `artifacts/`). */
export const ARTIFACTS = path.resolve(__dirname, '../../artifacts/e2e');

export function launchBrowser(): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM_PATH`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** What a page reported while the test drove it: console errors, CSP violations, uncaught exceptions. */
/** A fresh browser context and page at the screenshot size, with its console diagnostics. */
export async function openPage(browser: Browser): Promise<{ context: BrowserContext; page: Page; diag: PageDiagnostics }> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  return { context, page, diag: new PageDiagnostics(page) };
}

export class PageDiagnostics {
  readonly consoleErrors: string[] = [];
  readonly pageErrors: string[] = [];

  constructor(page: Page) {
    page.on('console', (msg) => {
      if (msg.type() === 'error') this.consoleErrors.push(`${page.url()}: ${msg.text()}`);
    });
    page.on('pageerror', (err) => this.pageErrors.push(`${page.url()}: ${err.message}`));
  }

  /** Console errors Chromium prints for a Content-Security-Policy violation. */
  cspViolations(): string[] {
    return this.consoleErrors.filter((t) => /content security policy|refused to (load|execute|apply|connect|frame)/i.test(t));
  }
}

/** Saves a full-page screenshot as artifacts/e2e/<name>.png. */
export async function snap(page: Page, name: string): Promise<void> {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** Polls `fn` until it returns something other than undefined/false; fails with the last value. */
export async function eventually<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 10_000, everyMs = 50): Promise<Exclude<T, false | undefined>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      last = await fn();
      if (last !== undefined && last !== false) return last as Exclude<T, false | undefined>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${String(last)}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Waits until the locator's (trimmed) text equals `expected`, or matches it when it is a RegExp. */
export async function waitForText(locator: Locator, expected: string | RegExp, timeoutMs = 10_000): Promise<string> {
  let last = '';
  try {
    return await eventually(
      `text ${String(expected)}`,
      async () => {
        last = ((await locator.textContent({ timeout: 1000 })) ?? '').trim();
        return (typeof expected === 'string' ? last === expected : expected.test(last)) ? last : false;
      },
      timeoutMs,
    );
  } catch {
    throw new Error(`${locator.toString()} did not show ${String(expected)} within ${timeoutMs} ms (it shows "${last}")`);
  }
}

/** Waits for the page's URL path (and query) to be `pathname`. */
export async function waitForPath(page: Page, pathname: string, timeoutMs = 10_000): Promise<void> {
  await page.waitForURL((u) => u.pathname + u.search === pathname, { timeout: timeoutMs });
}
