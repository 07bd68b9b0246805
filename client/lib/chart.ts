// Telemetry chart (uPlot): one series per numeric field, history first, then live points.
import uPlot from 'uplot';
import { formatNumber } from './format';
import type { TelemetryPoint } from './types';

const MAX_SERIES = 8;
const MAX_POINTS = 2000;
const PALETTE = ['#2563eb', '#db2777', '#059669', '#d97706', '#7c3aed', '#0891b2', '#dc2626', '#4b5563'];

/** Axis ticks: 1.5k, 24.16M, 3.2G so large counters fit next to the plot. */
function compactNumber(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e9) return `${Number((v / 1e9).toPrecision(4))}G`;
  if (a >= 1e6) return `${Number((v / 1e6).toPrecision(4))}M`;
  if (a >= 1e4) return `${Number((v / 1e3).toPrecision(4))}k`;
  return formatNumber(v);
}

/** The narrowest time window the chart shows, in seconds. */
export const MIN_WINDOW_S = 5 * 60;

/**
 * The time axis range for readings from `first` to `last` (unix seconds). A few readings would
 * leave uPlot guessing (it spreads a lone one over years); instead the chart shows at least the
 * last MIN_WINDOW_S, ending now while the readings are fresh, and grows with the data beyond that.
 */
export function timeWindow(first: number | null, last: number | null, now: number): uPlot.Range.MinMax {
  if (first === null || last === null || !Number.isFinite(first) || !Number.isFinite(last)) return [now - MIN_WINDOW_S, now];
  const fresh = now - last <= MIN_WINDOW_S;
  const hi = fresh ? Math.max(last, now) : last;
  return [Math.min(first, hi - MIN_WINDOW_S), hi];
}

function cssVar(name: string, fallback: string): string {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

export class TelemetryChart {
  private keys: string[] = [];
  private overflow = false;
  private xs: number[] = [];
  private cols = new Map<string, Array<number | null>>();
  private plot: uPlot | null = null;
  private readonly observer: ResizeObserver;

  constructor(
    private readonly container: HTMLElement,
    private readonly emptyEl: HTMLElement | null,
    private readonly noteEl: HTMLElement | null,
  ) {
    this.observer = new ResizeObserver(() => this.resize());
    this.observer.observe(container);
  }

  /** Replace everything with these points (oldest first). */
  setHistory(points: TelemetryPoint[]): void {
    this.keys = [];
    this.overflow = false;
    this.xs = [];
    this.cols = new Map();
    const sorted = [...points].sort((a, b) => a.ts - b.ts).slice(-MAX_POINTS);
    for (const p of sorted) this.push(p);
    this.rebuild();
  }

  /** Add one live point. Returns false if it was older than what we have (ignored). */
  append(p: TelemetryPoint): boolean {
    const last = this.xs[this.xs.length - 1];
    if (last !== undefined && p.ts / 1000 < last) return false;
    const before = this.keys.length;
    this.push(p);
    while (this.xs.length > MAX_POINTS) {
      this.xs.shift();
      for (const col of this.cols.values()) col.shift();
    }
    if (this.noteEl) this.noteEl.hidden = !this.overflow;
    if (this.keys.length !== before || !this.plot) this.rebuild();
    else this.plot.setData(this.data());
    return true;
  }

  get lastTs(): number | null {
    const last = this.xs[this.xs.length - 1];
    return last === undefined ? null : last * 1000;
  }

  private push(p: TelemetryPoint): void {
    const data = p.data && typeof p.data === 'object' ? p.data : {};
    for (const [k, v] of Object.entries(data)) {
      if (typeof v !== 'number' || !Number.isFinite(v)) continue;
      if (!this.cols.has(k)) {
        if (this.keys.length >= MAX_SERIES) {
          this.overflow = true;
          continue;
        }
        this.keys.push(k);
        this.cols.set(k, new Array<number | null>(this.xs.length).fill(null));
      }
    }
    this.xs.push(p.ts / 1000);
    for (const k of this.keys) {
      const v = data[k];
      this.cols.get(k)!.push(typeof v === 'number' && Number.isFinite(v) ? v : null);
    }
  }

  private data(): uPlot.AlignedData {
    return [this.xs, ...this.keys.map((k) => this.cols.get(k)!)] as uPlot.AlignedData;
  }

  private size(): { width: number; height: number } {
    const width = Math.max(240, Math.floor(this.container.clientWidth));
    const height = window.matchMedia('(max-width: 640px)').matches ? 220 : 300;
    return { width, height };
  }

  private resize(): void {
    if (!this.plot) return;
    const { width, height } = this.size();
    if (width !== this.plot.width || height !== this.plot.height) this.plot.setSize({ width, height });
  }

  private rebuild(): void {
    this.plot?.destroy();
    this.plot = null;
    const hasData = this.keys.length > 0 && this.xs.length > 0;
    if (this.emptyEl) this.emptyEl.hidden = hasData;
    this.container.hidden = !hasData;
    if (this.noteEl) this.noteEl.hidden = !this.overflow;
    if (!hasData) return;

    const axisColor = cssVar('--text-muted', '#566074');
    const gridColor = cssVar('--border', '#e2e7ef');
    const font = '12px system-ui, sans-serif';
    const labelFont = '600 12px ui-monospace, Menlo, Consolas, monospace';
    const fmtTicks = (_u: uPlot, splits: number[]) => splits.map((v) => compactNumber(v));
    // Room for the longest tick label (about 7 px a character at 12 px) plus the tick marks.
    const axisSize = (_u: uPlot, values: string[] | null) =>
      Math.ceil(Math.max(3, ...(values ?? []).map((v) => (v ?? '').length)) * 7.2 + 16);
    const color = (i: number) => PALETTE[i % PALETTE.length]!;
    // Every field gets its own y scale, so a counter in the thousands does not flatten a
    // temperature. The first two fields get an axis (left, right) in their colour; the legend
    // shows every value under the cursor, or the latest one when the cursor is elsewhere.
    const axes: uPlot.Axis[] = [
      { stroke: axisColor, grid: { stroke: gridColor, width: 1 }, ticks: { stroke: gridColor, width: 1 }, font },
    ];
    this.keys.slice(0, 2).forEach((k, i) => {
      axes.push({
        scale: `f${i}`,
        side: i === 0 ? 3 : 1,
        stroke: color(i),
        font,
        label: k,
        labelFont,
        labelSize: 22,
        size: axisSize,
        values: fmtTicks,
        grid: { show: i === 0, stroke: gridColor, width: 1 },
        ticks: { stroke: gridColor, width: 1 },
      });
    });
    // uPlot stretches a lone reading over 1000 days; whenever the requested range holds all the
    // readings (first draw, new data, double-click) the chart picks the window itself. A range
    // inside the data is a drag-to-zoom and stays as it is.
    const xRange = (_u: uPlot, min: number | null, max: number | null): uPlot.Range.MinMax => {
      const first = this.xs[0];
      const last = this.xs[this.xs.length - 1];
      if (first === undefined || last === undefined) return timeWindow(null, null, Date.now() / 1000);
      if (min === null || max === null || (min <= first && max >= last)) return timeWindow(first, last, Date.now() / 1000);
      return [min, max];
    };
    const scales: uPlot.Scales = { x: { time: true, range: xRange } };
    this.keys.forEach((_k, i) => {
      scales[`f${i}`] = { auto: true };
    });
    const latest = (col: Array<number | null>): number | null => {
      for (let i = col.length - 1; i >= 0; i--) if (col[i] !== null && col[i] !== undefined) return col[i]!;
      return null;
    };
    const opts: uPlot.Options = {
      ...this.size(),
      class: 'telemetry-plot',
      cursor: { drag: { x: true, y: false }, points: { size: 7 } },
      scales,
      legend: { live: true },
      axes,
      series: [
        {
          label: 'received',
          value: (_u: uPlot, v: number | null, _s: number, idx: number | null) =>
            idx === null || v === null ? 'latest' : new Date(v * 1000).toLocaleTimeString(),
        },
        ...this.keys.map((k, i) => ({
          label: k,
          scale: `f${i}`,
          stroke: color(i),
          width: 2,
          spanGaps: true,
          value: (_u: uPlot, v: number | null, _s: number, idx: number | null) => {
            const shown = idx === null ? latest(this.cols.get(k) ?? []) : v;
            return shown === null || shown === undefined ? '—' : formatNumber(shown);
          },
        })),
      ],
    };
    // The shown time range, for people reading the page's source and for the browser tests.
    opts.hooks = {
      setScale: [
        (u: uPlot, key: string) => {
          if (key !== 'x') return;
          this.container.dataset.xMin = String(u.scales.x!.min);
          this.container.dataset.xMax = String(u.scales.x!.max);
        },
      ],
    };
    this.plot = new uPlot(opts, this.data(), this.container);
  }
}
