/**
 * Readings that look like an ESP32's: free heap between 150 and 300 KB, a temperature that drifts
 * slowly, Wi-Fi RSSI between -80 and -40 dBm, and the time since boot. Each value takes a small
 * random step from the last one, so the first chart a person sees looks like a device, not noise.
 */
export type SimulatedReading = {
  uptime_ms: number;
  free_heap: number;
  rssi: number;
  temp_c: number;
  relay: boolean;
};

export const HEAP_MIN = 150_000;
export const HEAP_MAX = 300_000;
export const RSSI_MIN = -80;
export const RSSI_MAX = -40;
export const TEMP_MIN = 15;
export const TEMP_MAX = 35;
/** The most the temperature moves between two readings, in °C. */
export const TEMP_STEP = 0.2;

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

export class SimulatedValues {
  private heap: number;
  private rssi: number;
  private temp: number;

  constructor(
    private readonly bootAt = Date.now(),
    private readonly random: () => number = Math.random,
  ) {
    this.heap = 200_000 + Math.round(this.random() * 60_000);
    this.rssi = -70 + Math.round(this.random() * 20);
    this.temp = 21 + this.random() * 4;
  }

  /** The next reading; `now` is the clock (tests pass their own). */
  next(relay: boolean, now = Date.now()): SimulatedReading {
    const step = () => this.random() * 2 - 1; // -1 … 1
    // The heap wanders by up to 4 KB a reading, as allocations come and go.
    this.heap = clamp(Math.round(this.heap + step() * 4096), HEAP_MIN, HEAP_MAX);
    this.rssi = clamp(Math.round(this.rssi + step() * 2), RSSI_MIN, RSSI_MAX);
    this.temp = clamp(this.temp + step() * TEMP_STEP, TEMP_MIN, TEMP_MAX);
    return {
      uptime_ms: Math.max(0, now - this.bootAt),
      free_heap: this.heap,
      rssi: this.rssi,
      temp_c: Math.round(this.temp * 10) / 10,
      relay,
    };
  }
}
