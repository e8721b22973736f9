import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';

/**
 * What the array simulators share: an express app on 127.0.0.1 at a free port, every request
 * recorded, and two faults a test can switch on (never answer; a bare 503). Subclasses give the
 * routes and the shape of their error bodies.
 */
export abstract class LoopbackSim {
  /** Every call as "METHOD path", for tests that count round trips. */
  readonly requests: string[] = [];
  /** What the next calls do instead of answering: hang (never answer) or fail with a bare 503. */
  fault: 'none' | 'hang' | 'unavailable' = 'none';
  url = '';
  private server?: Server;
  private readonly hung = new Set<Response>();

  protected abstract routes(app: express.Express): void;
  /** Answers a route's thrown error in the API's own error shape. */
  protected abstract errorReply(err: unknown, res: Response): void;

  async start(): Promise<string> {
    const app = express();
    app.use(express.json());
    app.use((req, res, next) => {
      this.requests.push(`${req.method} ${req.path}`);
      if (this.fault === 'hang') return void this.hung.add(res);
      if (this.fault === 'unavailable') return void res.status(503).send('Service Unavailable');
      next();
    });
    this.routes(app);
    app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => this.errorReply(err, res));
    this.server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => this.server!.once('listening', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    for (const res of this.hung) res.destroy();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

/** A route handler: the function's value answered as JSON with `status`, a throw passed to the error reply. */
export const handler =
  (fn: (req: Request) => Promise<unknown> | unknown, status = 200) =>
  (req: Request, res: Response, next: NextFunction) => {
    Promise.resolve()
      .then(() => fn(req))
      .then((body) => (status === 204 ? res.status(204).end() : res.status(status).json(body ?? {})), next);
  };
