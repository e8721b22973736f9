import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { BallastProcess, BALLAST_BIN } from '../lab/ballast.js';
import { cleanUpUnder } from '../helpers/cleanup.js';
import { freeTcpPort, tcpAccepts } from '../lab/net.js';
import { callOk, callPlugin } from '../helpers/plugin-client.js';
import { PrometheusProcess, PROMETHEUS_BIN } from '../lab/prometheus.js';
import { requireRootAndTools } from '../helpers/root.js';

// A real `ballast serve` (loop backend: real losetup, mkfs, mount) with its metrics listener on
// a loopback port, scraped every second by a real Prometheus; the test asks Prometheus, through
// its HTTP API, what it saw, and compares with the calls it made. Needs root; fails (never
// skips) without it or without Debian's prometheus.
requireRootAndTools('losetup', 'blkid', 'mkfs.ext4', 'fsck', 'mount', 'umount', PROMETHEUS_BIN);

describe('Prometheus metrics of a real daemon', () => {
  let daemon: BallastProcess | undefined;
  let prometheus: PrometheusProcess | undefined;
  let metricsPort = 0;

  beforeAll(async () => {
    metricsPort = await freeTcpPort();
    daemon = await BallastProcess.create({ config: { metrics: { listen: `127.0.0.1:${metricsPort}` } } });
    await daemon.start();
    prometheus = await PrometheusProcess.start([`127.0.0.1:${metricsPort}`]);
  });

  afterAll(async () => {
    await prometheus?.stop();
    await daemon?.stop();
    if (!daemon) return;
    const left = cleanUpUnder(daemon.dir);
    await daemon.removeDir();
    expect(left).toEqual({ mounts: [], loops: [] });
  });

  /** Waits for a scrape that began after everything done so far, then asks Prometheus. */
  async function scraped(): Promise<PrometheusProcess> {
    await prometheus!.waitForScrapeAfter(Date.now());
    return prometheus!;
  }

  const calls = (method: string, outcome: string) =>
    `ballast_protocol_call_duration_seconds_count{job="ballast",method="VolumeDriver.${method}",outcome="${outcome}"}`;

  it('shows what was done: calls by method and outcome, the lease while mounted, attach and mkfs, and a removed volume gone', async () => {
    const sock = daemon!.socket;
    await callOk(sock, 'VolumeDriver.Create', { Name: 'm1', Opts: { size: '32M' } });
    const failed = await callPlugin(sock, 'VolumeDriver.Create', { Name: 'm2', Opts: { size: 'huge' } });
    expect(failed.body.Err).toMatch(/size/);
    const lease = `ballast_volume_lease_state{job="ballast",volume="m1"}`;

    let p = await scraped();
    expect(await p.value(calls('Create', 'ok'))).toBe(1);
    expect(await p.value(calls('Create', 'err'))).toBe(1);
    expect((await p.query(lease)).map((s) => [s.metric.state, s.value])).toEqual([['free', 1]]);
    expect(await p.value('ballast_backend_up{job="ballast",profile="default",backend="loop"}')).toBe(1);

    await callOk(sock, 'VolumeDriver.Mount', { Name: 'm1', ID: 'c1' });
    p = await scraped();
    expect((await p.query(lease)).map((s) => [s.metric.state, s.value])).toEqual([['held_here', 1]]);
    expect(await p.value(calls('Mount', 'ok'))).toBe(1);
    expect(await p.value('ballast_attach_duration_seconds_count{job="ballast",transport="loop",outcome="ok"}')).toBe(1);
    expect(await p.value('ballast_filesystem_operation_duration_seconds_count{job="ballast",operation="mkfs",fstype="ext4",outcome="ok"}')).toBe(1);
    // The attach took real time, and the histogram's buckets hold it.
    expect(await p.value('ballast_attach_duration_seconds_sum{job="ballast",transport="loop",outcome="ok"}')).toBeGreaterThan(0);
    expect(await p.value('ballast_attach_duration_seconds_bucket{job="ballast",transport="loop",outcome="ok",le="+Inf"}')).toBe(1);

    await callOk(sock, 'VolumeDriver.Unmount', { Name: 'm1', ID: 'c1' });
    await callOk(sock, 'VolumeDriver.Remove', { Name: 'm1' });
    p = await scraped();
    expect(await p.value(calls('Unmount', 'ok'))).toBe(1);
    expect(await p.value(calls('Remove', 'ok'))).toBe(1);
    expect(await p.value('ballast_detach_duration_seconds_count{job="ballast",transport="loop",outcome="ok"}')).toBe(1);
    expect(await p.query(lease)).toEqual([]); // the removed volume's series is gone
    // PromQL over the whole run: 5 calls answered, 1 of them with an Err.
    expect(await p.value('sum(ballast_protocol_call_duration_seconds_count{job="ballast"})')).toBe(5);
    expect(await p.value('sum(ballast_protocol_call_duration_seconds_count{job="ballast",outcome="err"})')).toBe(1);
  });

  it('closes the metrics listener when the daemon stops, and exits 0', async () => {
    expect(await tcpAccepts('127.0.0.1', metricsPort)).toBe(true);
    await daemon!.stop();
    expect(daemon!.child!.exitCode).toBe(0);
    expect(await tcpAccepts('127.0.0.1', metricsPort)).toBe(false);
    await prometheus!.waitForScrapeAfter(Date.now(), 2_500).then(
      () => Promise.reject(new Error('Prometheus still scraped the stopped daemon successfully')),
      (err: Error) => expect(err.message).toMatch(/no successful scrape/),
    );
  });
});

describe('a metrics port already taken', () => {
  it('stops the daemon at start, non-zero, naming the address and metrics.listen, before it serves the socket', async () => {
    const port = await freeTcpPort();
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
    const daemon = await BallastProcess.create({ config: { metrics: { listen: `127.0.0.1:${port}` } } });
    const child = spawn(process.execPath, [BALLAST_BIN, '--config', daemon.configPath, 'serve'], { stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      let stderr = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const started = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([
        new Promise<number | null>((r) => child.once('close', (c) => r(c))),
        new Promise<'still running'>((r) => (timer = setTimeout(() => r('still running'), 10_000))),
      ]);
      clearTimeout(timer);
      const elapsedMs = Date.now() - started;
      process.stdout.write(`metrics port taken: ballast exited ${String(code)} after ${elapsedMs} ms\n`);
      expect(code).toBe(1);
      expect(elapsedMs).toBeLessThan(5_000);
      expect(stderr).toContain(`ballast: metrics.listen: cannot serve metrics on 127.0.0.1:${port}: the address is already in use`);
      expect(existsSync(daemon.socket)).toBe(false); // it never served the plugin protocol
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await new Promise((r) => blocker.close(r));
      await daemon.removeDir();
    }
  });
});
