// What the array benchmarks (cinder, powerflex) measure per operation: wall time and API round
// trips, read from a client's per-call counters, and the table of ballast beside by hand.
import { median, ms, ratio, table } from './stats.js';

export interface Sample {
  ms: number;
  calls: number;
}

const total = (calls: ReadonlyMap<string, number>) => [...calls.values()].reduce((a, b) => a + b, 0);

/** Runs `body`, counting the round trips a client (its `calls` map) made meanwhile. */
export async function measure(calls: ReadonlyMap<string, number>, body: () => Promise<unknown>): Promise<Sample> {
  const before = total(calls);
  const started = performance.now();
  await body();
  return { ms: performance.now() - started, calls: total(calls) - before };
}

/** One row per operation: medians of ballast and by hand, in ms and round trips, with ratios. */
export function comparison<Op extends string>(ops: readonly Op[], ballast: Record<Op, Sample[]>, hand: Record<Op, Sample[]>): string {
  const rows = ops.map((op) => {
    const [bm, hm] = [median(ballast[op].map((s) => s.ms)), median(hand[op].map((s) => s.ms))];
    const [bc, hc] = [median(ballast[op].map((s) => s.calls)), median(hand[op].map((s) => s.calls))];
    return [op, ms(bm), ms(hm), ratio(bm, hm), String(bc), String(hc), ratio(bc, hc)];
  });
  return table(['op', 'ballast ms', 'by hand ms', 'ratio', 'ballast calls', 'by hand calls', 'ratio'], rows);
}
