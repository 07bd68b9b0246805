/** The simulator's readings look like an ESP32's (server/simulator/values.ts). */
import { HEAP_MAX, HEAP_MIN, RSSI_MAX, RSSI_MIN, SimulatedValues, TEMP_MAX, TEMP_MIN, TEMP_STEP } from '../../server/simulator/values';

/** A seeded generator (mulberry32), so that a failure can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('simulated ESP32 values', () => {
  test.each([1, 2, 3, 42, 2026])('when the simulator reports 5,000 readings (seed %i), then heap, RSSI and temperature stay in an ESP32’s range, the temperature drifts in small steps and uptime counts from boot', (seed) => {
    const boot = 1_700_000_000_000;
    const values = new SimulatedValues(boot, seeded(seed));
    const rs = Array.from({ length: 5000 }, (_, i) => values.next(i % 2 === 1, boot + (i + 1) * 5000));
    const heap = rs.map((r) => r.free_heap);
    const rssi = rs.map((r) => r.rssi);
    const temp = rs.map((r) => r.temp_c);
    expect(Math.min(...heap)).toBeGreaterThanOrEqual(HEAP_MIN);
    expect(Math.max(...heap)).toBeLessThanOrEqual(HEAP_MAX);
    expect(Math.min(...rssi)).toBeGreaterThanOrEqual(RSSI_MIN);
    expect(Math.max(...rssi)).toBeLessThanOrEqual(RSSI_MAX);
    expect(Math.min(...temp)).toBeGreaterThanOrEqual(TEMP_MIN);
    expect(Math.max(...temp)).toBeLessThanOrEqual(TEMP_MAX);
    expect([...heap, ...rssi].every(Number.isInteger)).toBe(true);
    // Drift: small steps (plus rounding to 0.1 °C), yet not one value repeated.
    const steps = temp.slice(1).map((t, i) => Math.abs(t - temp[i]!));
    expect(Math.max(...steps)).toBeLessThanOrEqual(TEMP_STEP + 0.1);
    expect(new Set(temp).size).toBeGreaterThan(10);
    expect(rs.map((r) => r.uptime_ms)).toEqual(rs.map((_, i) => (i + 1) * 5000));
    expect(rs.map((r) => r.relay)).toEqual(rs.map((_, i) => i % 2 === 1));
  });

  test('when the simulator starts, then free_heap is the ESP32’s (hundreds of KB), never the host’s free memory', () => {
    const r = new SimulatedValues().next(false);
    expect(r.free_heap).toBeLessThan(1024 * 1024);
    expect(Object.keys(r).sort()).toEqual(['free_heap', 'relay', 'rssi', 'temp_c', 'uptime_ms']);
  });
});
