import { nextLookMs, quietSeconds } from '../../../src/cli/watchdog.js';

describe('the fence watchdog\'s clock', () => {
  it('counts from the renewal\'s own start, not from when it saw the beat (up to a poll later)', () => {
    // The renewal started at 100 s; the watchdog saw its beat at 100.45 s; now is 102.6 s.
    expect(quietSeconds({ seq: 7, renewedAt: 100 }, 100.45, 102.6)).toBeCloseTo(2.6);
  });

  it('falls back to when it saw the beat for a beat without a start, or one from another boot', () => {
    expect(quietSeconds({ seq: 7 }, 100.45, 102.6)).toBeCloseTo(2.15);
    expect(quietSeconds({ seq: 7, renewedAt: 5_000 }, 100.45, 102.6)).toBeCloseTo(2.15);
    expect(quietSeconds(undefined, 100.45, 102.6)).toBeCloseTo(2.15);
  });

  it('looks again when the fence falls due, not a whole poll later', () => {
    const due = nextLookMs(2.3, 2.5); // 200 ms to go
    expect(due).toBeGreaterThanOrEqual(200);
    expect(due).toBeLessThan(220);
    expect(nextLookMs(0, 2.5)).toBe(500);
    expect(nextLookMs(3, 2.5)).toBe(20);
  });
});
