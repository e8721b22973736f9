import { createServer, type Server } from 'node:net';
import { ConfigError } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';
import { MetricsRegistry } from '../../../src/metrics/registry.js';
import { formatListen, startMetricsServer, type MetricsServer } from '../../../src/metrics/server.js';
import { freeTcpPort } from '../../lab/net.js';

describe('startMetricsServer', () => {
  let server: MetricsServer | undefined;
  let blocker: Server | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
    await new Promise((r) => (blocker ? blocker.close(r) : r(undefined)));
    blocker = undefined;
  });

  it('serves GET /metrics in the Prometheus text format, with what was recorded', async () => {
    const registry = new MetricsRegistry();
    registry.observeCall('VolumeDriver.Create', 'ok', 20);
    const port = await freeTcpPort();
    server = await startMetricsServer({ host: '127.0.0.1', port }, silentLogger(), registry);
    expect(server.address).toBe(`127.0.0.1:${port}`);
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const body = await res.text();
    expect(body).toContain('# TYPE ballast_protocol_call_duration_seconds histogram');
    expect(body).toContain('ballast_protocol_call_duration_seconds_count{method="VolumeDriver.Create",outcome="ok"} 1');
    expect(body).toContain('ballast_protocol_call_duration_seconds_bucket{le="0.025",method="VolumeDriver.Create",outcome="ok"} 1');
    expect(body).toContain('# TYPE ballast_volume_lease_state gauge');
  });

  it('answers 404 on any other path or method', async () => {
    const port = await freeTcpPort();
    server = await startMetricsServer({ host: '127.0.0.1', port }, silentLogger(), new MetricsRegistry());
    expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status).toBe(404);
  });

  it('refuses a port already taken with a ConfigError naming the address and metrics.listen', async () => {
    const port = await freeTcpPort();
    blocker = createServer();
    await new Promise<void>((r) => blocker!.listen(port, '127.0.0.1', r));
    const started = startMetricsServer({ host: '127.0.0.1', port }, silentLogger(), new MetricsRegistry());
    await expect(started).rejects.toThrow(ConfigError);
    await expect(started).rejects.toThrow(`metrics.listen: cannot serve metrics on 127.0.0.1:${port}: the address is already in use`);
  });

  it('closes: the port is free again', async () => {
    const port = await freeTcpPort();
    server = await startMetricsServer({ host: '127.0.0.1', port }, silentLogger(), new MetricsRegistry());
    await fetch(`http://127.0.0.1:${port}/metrics`); // leaves a keep-alive connection open
    await server.close();
    server = await startMetricsServer({ host: '127.0.0.1', port }, silentLogger(), new MetricsRegistry());
  });

  it('writes an IPv6 host in brackets', () => {
    expect(formatListen({ host: '::1', port: 9464 })).toBe('[::1]:9464');
    expect(formatListen({ host: '127.0.0.1', port: 9464 })).toBe('127.0.0.1:9464');
  });
});
