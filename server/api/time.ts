const UNIX_MS = /^\d{1,15}$/;
const DATE = /^\d{4}-\d{2}-\d{2}$/;
// A `+` in a query string arrives as a space when the client did not encode it (%2B); take it back.
const DATE_TIME = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)(Z|[+\- ]\d{2}:?\d{2})$/i;

/**
 * A point in time as the API takes it (docs/api.md): unix milliseconds, an ISO 8601 date (UTC
 * midnight) or an ISO 8601 date-time with a time zone. Null for anything else, including a
 * date-time without a zone, which would mean a different instant on every server.
 */
export function parseTime(text: string): number | null {
  const s = text.trim();
  if (UNIX_MS.test(s)) return Number(s);
  if (DATE.test(s)) return valid(Date.parse(`${s}T00:00:00Z`), s, s);
  const m = DATE_TIME.exec(s);
  if (!m) return null;
  let zone = m[3]!.toUpperCase();
  if (zone !== 'Z') {
    const sign = zone[0] === '-' ? '-' : '+';
    const digits = zone.slice(1).replace(':', '');
    zone = `${sign}${digits.slice(0, 2)}:${digits.slice(2)}`;
  }
  // Date.parse takes milliseconds at most; finer fractions are cut, not rounded.
  const clock = m[2]!.replace(/(\.\d{3})\d+$/, '$1');
  return valid(Date.parse(`${m[1]}T${clock}${zone}`), m[1]!, clock);
}

/** Date.parse rolls 2024-02-31 over to March; a calendar date or clock that does not exist is refused. */
function valid(ms: number, date: string, clock: string): number | null {
  if (!Number.isFinite(ms)) return null;
  const [y, mo, d] = date.split('-').map(Number) as [number, number, number];
  const probe = new Date(Date.UTC(y, mo - 1, d));
  if (probe.getUTCFullYear() !== y || probe.getUTCMonth() !== mo - 1 || probe.getUTCDate() !== d) return null;
  const [h, mi, sec] = clock.split(':').map(Number);
  if ((h ?? 0) > 23 || (mi ?? 0) > 59 || (sec ?? 0) >= 60) return null;
  return ms;
}
