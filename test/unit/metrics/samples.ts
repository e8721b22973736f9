import type { MetricsRegistry } from '../../../src/metrics/registry.js';

export interface Sample {
  labels: Record<string, string | number>;
  value: number;
}

/**
 * The samples of one metric; for a histogram, those of `suffix` (_count, _sum), without the
 * le label. Sorted as prom-client keeps them (insertion order).
 */
export async function seriesOf(m: MetricsRegistry, name: string, suffix = ''): Promise<Sample[]> {
  const metric = m.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  return values
    .filter((v) => (suffix ? (v as { metricName?: string }).metricName === `${name}${suffix}` : true))
    .map((v) => ({ labels: { ...v.labels } as Record<string, string | number>, value: v.value }));
}

/** The value of the sample with exactly `labels`, or undefined when there is none. */
export async function valueOf(m: MetricsRegistry, name: string, labels: Record<string, string>, suffix = ''): Promise<number | undefined> {
  const want = JSON.stringify(Object.entries(labels).sort());
  const found = (await seriesOf(m, name, suffix)).find((s) => JSON.stringify(Object.entries(s.labels).sort()) === want);
  return found?.value;
}
