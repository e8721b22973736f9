import { createServer, type Server } from 'node:http';
import { ConfigError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { metrics as daemonMetrics, type MetricsRegistry } from './registry.js';

export interface MetricsListen {
  host: string;
  port: number;
}

export interface MetricsServer {
  server: Server;
  /** HOST:PORT as the user wrote it in metrics.listen (IPv6 in brackets). */
  address: string;
  close(): Promise<void>;
}

export function formatListen({ host, port }: MetricsListen): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Why listening failed, in the user's terms: which address, which key to change. */
function listenError(address: string, err: NodeJS.ErrnoException): ConfigError {
  const why =
    err.code === 'EADDRINUSE'
      ? 'the address is already in use (another program listens there)'
      : err.code === 'EADDRNOTAVAIL'
        ? 'no interface of this host has that address'
        : err.code === 'EACCES'
          ? 'permission denied for that port'
          : errorMessage(err);
  return new ConfigError(`metrics.listen: cannot serve metrics on ${address}: ${why}; free it or set metrics.listen to another address`);
}

/** Serves GET /metrics (Prometheus text format) on `listen` until closed; throws ConfigError if it cannot listen. */
export async function startMetricsServer(listen: MetricsListen, log: Logger, registry: MetricsRegistry = daemonMetrics): Promise<MetricsServer> {
  const address = formatListen(listen);
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('ballast serves only GET /metrics here\n');
      return;
    }
    registry.scrape().then(
      ({ contentType, body }) => res.writeHead(200, { 'Content-Type': contentType }).end(req.method === 'HEAD' ? undefined : body),
      (err: unknown) => {
        log.error('metrics scrape failed', { error: errorMessage(err) });
        res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`${errorMessage(err)}\n`);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(listenError(address, err)));
    server.listen(listen.port, listen.host, () => resolve());
  });
  server.on('error', (err) => log.error('metrics listener error', { address, error: errorMessage(err) }));
  log.info('serving Prometheus metrics', { address, path: '/metrics' });
  return {
    server,
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections(); // a scraper's keep-alive connection would hold close() open
      }),
  };
}
