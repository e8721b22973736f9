import type { Server } from 'node:http';
import { createServer } from 'node:http';
import type { Logger } from '../log.js';
import type { VolumeManager } from '../volumes/manager.js';
import { createApp } from './app.js';
import { listenOnSocket } from './listen.js';

export interface PluginServer {
  server: Server;
  /** Stops accepting calls, lets in-flight ones finish (bounded), and resolves. Never unmounts. */
  close(graceMs?: number): Promise<void>;
}

/** Serves the protocol on `socketPath` until closed. */
export async function startPluginServer(manager: VolumeManager, socketPath: string, log: Logger): Promise<PluginServer> {
  const app = createApp(manager, log);
  // Go's client keeps idle connections forever; Node drops them after 5 s, which can race a
  // reused connection. Closing after every reply avoids that race entirely. The header is set
  // before the app runs: set after a reply already sent (a bodyless 404) it threw, uncaught,
  // and the daemon exited (found by test/integration/protocol-fuzz.test.ts).
  const server = createServer((req, res) => {
    res.setHeader('Connection', 'close');
    app(req, res);
  });
  server.keepAliveTimeout = 0;
  await listenOnSocket(server, socketPath);
  log.info('serving the Docker volume plugin protocol', { socket: socketPath });
  return {
    server,
    close: (graceMs = 9_000) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          log.warn('in-flight requests still running at shutdown; closing their connections');
          server.closeAllConnections();
        }, graceMs);
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}
