import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dump } from 'js-yaml';
import { freeTcpPort } from './net.js';

// A real Prometheus (Debian's /usr/bin/prometheus) for integration tests: its own temp dir for
// config, TSDB and log, listening on a free 127.0.0.1 port, scraping the given targets every
// second. Started and stopped by its PID; nothing else is ever signalled.

export const PROMETHEUS_BIN = '/usr/bin/prometheus';

export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

export class PrometheusProcess {
  private constructor(
    readonly dir: string,
    readonly url: string,
    private readonly child: ChildProcess,
    readonly job: string,
  ) {}

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Starts Prometheus scraping `targets` (HOST:PORT, path /metrics) every second; resolves once /-/ready answers 200. */
  static async start(targets: string[], options: { job?: string; readyTimeoutMs?: number } = {}): Promise<PrometheusProcess> {
    if (!existsSync(PROMETHEUS_BIN)) throw new Error(`${PROMETHEUS_BIN} is missing: apt-get install prometheus (scripts/install-deps.sh does)`);
    const job = options.job ?? 'ballast';
    const dir = await mkdtemp(join(tmpdir(), 'ballast-prometheus-'));
    const port = await freeTcpPort();
    const config = {
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      scrape_configs: [{ job_name: job, metrics_path: '/metrics', static_configs: [{ targets }] }],
    };
    await writeFile(join(dir, 'prometheus.yml'), dump(config));
    const logFd = openSync(join(dir, 'prometheus.log'), 'a');
    const child = spawn(
      PROMETHEUS_BIN,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', logFd, logFd] },
    );
    closeSync(logFd);
    const prometheus = new PrometheusProcess(dir, `http://127.0.0.1:${port}`, child, job);
    try {
      await prometheus.waitReady(options.readyTimeoutMs ?? 30_000);
    } catch (err) {
      await prometheus.stop();
      throw err;
    }
    return prometheus;
  }

  private async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`prometheus exited (${this.child.exitCode ?? this.child.signalCode}) before it was ready: ${await this.log()}`);
      }
      try {
        if ((await fetch(`${this.url}/-/ready`, { signal: AbortSignal.timeout(1_000) })).status === 200) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`prometheus not ready within ${timeoutMs} ms: ${await this.log()}`);
  }

  /** The tail of Prometheus's own log, for error messages. */
  async log(): Promise<string> {
    return (await readFile(join(this.dir, 'prometheus.log'), 'utf8').catch(() => '')).slice(-2_000);
  }

  /** An instant query through the HTTP API; throws on anything but a vector or scalar answer. */
  async query(promql: string): Promise<PromSample[]> {
    const res = await fetch(`${this.url}/api/v1/query?${new URLSearchParams({ query: promql })}`, { signal: AbortSignal.timeout(5_000) });
    const body = (await res.json()) as {
      status: string;
      error?: string;
      data?: { resultType: string; result: unknown };
    };
    if (body.status !== 'success' || !body.data) throw new Error(`query ${promql}: ${body.error ?? res.status}`);
    if (body.data.resultType === 'scalar') return [{ metric: {}, value: Number((body.data.result as [number, string])[1]) }];
    if (body.data.resultType !== 'vector') throw new Error(`query ${promql}: a ${body.data.resultType}, not a vector`);
    return (body.data.result as { metric: Record<string, string>; value: [number, string] }[]).map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  }

  /** The single value of `promql`, or undefined when the answer is empty; throws when it has several series. */
  async value(promql: string): Promise<number | undefined> {
    const result = await this.query(promql);
    if (result.length > 1) throw new Error(`query ${promql}: ${result.length} series, expected one: ${JSON.stringify(result)}`);
    return result[0]?.value;
  }

  /**
   * Waits until the job's target was scraped at or after `sinceMs` (epoch ms) and came back up:
   * from then on, queries see the state at that moment.
   */
  async waitForScrapeAfter(sinceMs: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last: PromSample[] = [];
    while (Date.now() < deadline) {
      // timestamp() of a bare selector is the scrape's own time (of an expression, the query's).
      last = await this.query(`timestamp(up{job="${this.job}"})`);
      const fresh = last.length > 0 && last.every((s) => s.value * 1000 >= sinceMs);
      if (fresh && (await this.query(`up{job="${this.job}"} == 0`)).length === 0) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`no successful scrape of job ${this.job} after ${new Date(sinceMs).toISOString()} within ${timeoutMs} ms (last: ${JSON.stringify(last)}); targets: ${await this.targets()}`);
  }

  /** The scrape targets' health as Prometheus reports it, for error messages. */
  async targets(): Promise<string> {
    try {
      const body = (await (await fetch(`${this.url}/api/v1/targets`)).json()) as { data: { activeTargets: { scrapeUrl: string; health: string; lastError: string }[] } };
      return JSON.stringify(body.data.activeTargets.map((t) => ({ url: t.scrapeUrl, health: t.health, error: t.lastError })));
    } catch (err) {
      return `unknown (${String(err)})`;
    }
  }

  /** SIGTERM by PID, SIGKILL after 10 s, then removes its temp dir. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 10_000)))]);
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}
