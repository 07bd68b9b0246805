// Formatting for values, times and command results. All output is plain text.

/** "just now", "12 s ago", "5 min ago", "3 h ago", "2 d ago"; "never" for null. */
export function relTime(ts: number | null | undefined, now = Date.now()): string {
  if (ts === null || ts === undefined || !Number.isFinite(ts)) return 'never';
  const s = Math.round((now - ts) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  const d = Math.floor(h / 24);
  if (d < 60) return `${d} d ago`;
  return new Date(ts).toLocaleDateString();
}

export function absTime(ts: number | null | undefined): string {
  if (ts === null || ts === undefined || !Number.isFinite(ts)) return '';
  return new Date(ts).toLocaleString();
}

/** HH:MM:SS in local time, for log lines and command rows. */
export function clockTime(ts: number): string {
  const d = new Date(ts);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** Compact number: integers as they are, fractions with a sensible number of decimals. */
export function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Number.isInteger(n)) return String(n);
  const a = Math.abs(n);
  const digits = a >= 1000 ? 0 : a >= 100 ? 1 : a >= 1 ? 2 : 4;
  return String(Number(n.toFixed(digits)));
}

const MAX_TEXT = 200;

function clip(s: string, max = MAX_TEXT): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** A telemetry value as display text. */
export function formatValue(v: unknown): string {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number') return formatNumber(v);
  if (typeof v === 'string') return clip(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  try {
    return clip(JSON.stringify(v));
  } catch {
    return clip(String(v));
  }
}

/** `{relay: true}` -> "relay: true"; primitives as text; null/undefined -> "". */
export function formatResult(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object' && !Array.isArray(v)) {
    return clip(
      Object.entries(v as Record<string, unknown>)
        .map(([k, val]) => `${k}: ${formatValue(val)}`)
        .join(', '),
    );
  }
  return formatValue(v);
}

export function entries(obj: Record<string, unknown> | null | undefined): Array<[string, unknown]> {
  if (!obj || typeof obj !== 'object') return [];
  return Object.entries(obj);
}
