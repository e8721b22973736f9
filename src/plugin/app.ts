import express, { type NextFunction, type Request, type Response } from 'express';
import { BallastError, errorMessage } from '../errors.js';
import { withLogContext, type Logger } from '../log.js';
import { metrics } from '../metrics/registry.js';
import type { VolumeManager, VolumeView } from '../volumes/manager.js';
import { ACTIVATE_PATH, ActivateResponse, requestSchemas, type RequestOf, type VolumeMethod, type WireVolume } from './protocol.js';
import { adminRoutes } from './admin.js';

type Handler<M extends VolumeMethod> = (manager: VolumeManager, request: RequestOf<M>) => Promise<object>;

function toWire(view: VolumeView, withStatus: boolean): WireVolume {
  return {
    Name: view.name,
    Mountpoint: view.mountpoint,
    ...(withStatus ? { CreatedAt: view.createdAt, Status: view.status } : {}),
  };
}

/** Each protocol method: decode is done by the table's schema, the manager does the work. */
const handlers: { [M in VolumeMethod]: Handler<M> } = {
  'VolumeDriver.Create': async (m, r) => (await m.create(r.Name, r.Opts), { Err: '' }),
  'VolumeDriver.Remove': async (m, r) => (await m.remove(r.Name), { Err: '' }),
  'VolumeDriver.Mount': async (m, r) => ({ Mountpoint: await m.mount(r.Name, r.ID), Err: '' }),
  'VolumeDriver.Unmount': async (m, r) => (await m.unmount(r.Name, r.ID), { Err: '' }),
  'VolumeDriver.Path': async (m, r) => ({ Mountpoint: await m.path(r.Name), Err: '' }),
  'VolumeDriver.Get': async (m, r) => ({ Volume: toWire(await m.get(r.Name), true), Err: '' }),
  'VolumeDriver.List': async (m) => ({ Volumes: (await m.list()).map((v) => toWire(v, false)), Err: '' }),
  'VolumeDriver.Capabilities': async (m) => ({ Capabilities: { Scope: m.scope() } }),
};

let nextRequestId = 1;

/**
 * The express app serving Docker's volume plugin protocol. Knows nothing of storage: it
 * decodes, calls the manager, and encodes results or {Err}.
 */
export function createApp(manager: VolumeManager, log: Logger): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // dockerd never revalidates: an ETag would only hash every reply (List's is 450 KB at 10,000 volumes).
  app.set('etag', false);
  // dockerd sends no Content-Type; an empty body means {}.
  app.use(express.text({ type: () => true, limit: '1mb' }));

  app.post(ACTIVATE_PATH, async (_req, res) => {
    log.info('request', { request: 'Plugin.Activate' });
    await manager.activate().catch((err) => log.error('reconcile after activation failed', { error: errorMessage(err) }));
    res.json(ActivateResponse);
  });

  for (const method of Object.keys(handlers) as VolumeMethod[]) {
    app.post(`/${method}`, (req, res) => serve(method, req, res, manager, log));
  }
  app.use(adminRoutes(manager, log));

  app.use((req: Request, res: Response) => {
    res.status(404).json({ Err: `ballast does not implement ${req.method} ${req.path}` });
  });
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    res.status(400).json({ Err: `bad request: ${errorMessage(err)}` });
  });
  return app;
}

/** Parses a body that may be empty or lack a Content-Type; throws a user-facing message. */
export function parseBody(text: unknown): unknown {
  const raw = typeof text === 'string' ? text.trim() : '';
  if (!raw) return {};
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw new Error(`the request body is not valid JSON: ${errorMessage(err)}`);
  }
}

async function serve<M extends VolumeMethod>(method: M, req: Request, res: Response, manager: VolumeManager, log: Logger): Promise<void> {
  const started = performance.now();
  const reqId = nextRequestId++;
  let body: unknown;
  let volume: string | undefined;
  let mountId: string | undefined;
  try {
    body = parseBody(req.body);
    if (body && typeof body === 'object') {
      const b = body as { Name?: unknown; ID?: unknown };
      if (typeof b.Name === 'string') volume = b.Name.slice(0, 200);
      if (typeof b.ID === 'string') mountId = b.ID;
    }
  } catch (err) {
    log.warn('request', { request: method, reqId, durationMs: 0, err: errorMessage(err) });
    metrics.observeCall(method, 'err', performance.now() - started);
    res.status(400).json({ Err: `${method}: ${errorMessage(err)}` });
    return;
  }
  await withLogContext({ request: method, volume, mountId, reqId }, async () => {
    let reply: object;
    let status = 200;
    let failure: unknown;
    try {
      const parsed = requestSchemas[method].safeParse(body);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new BadRequest(`${method}: ${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`);
      }
      reply = await handlers[method](manager, parsed.data as RequestOf<M>);
    } catch (err) {
      failure = err;
      // Docker reads Err from a 200 reply; a 400 is kept for bodies it could never have sent.
      status = err instanceof BadRequest ? 400 : 200;
      reply = { Err: errorMessage(err) };
    }
    const durationMs = Math.round(performance.now() - started);
    metrics.observeCall(method, failure || res.destroyed ? 'err' : 'ok', performance.now() - started);
    // winston formats a line before its transport drops it by level: skip that work for Get at info.
    const level = failure ? levelFor(method, failure) : method === 'VolumeDriver.Get' ? 'debug' : 'info';
    if (log.isLevelEnabled(level)) log.log(level, 'request', failure ? { durationMs, err: errorMessage(failure) } : { durationMs });
    if (method === 'VolumeDriver.Mount' && !failure && res.destroyed) {
      // dockerd gave up (its 2-minute timeout) and will never send Unmount for this ID:
      // undo the reference ourselves so nothing stays mounted for nobody.
      const { Name, ID } = (body ?? {}) as { Name: string; ID: string };
      log.warn('dockerd disconnected before the Mount reply; rolling the mount back', { durationMs });
      await manager.unmount(Name, ID).catch((err) => log.error('rollback of an abandoned Mount failed', { err: errorMessage(err) }));
      return;
    }
    res.status(status).json(reply);
  });
}

class BadRequest extends Error {}

/** Get of an unknown name is routine (dockerd probes every driver); a system failure is not. */
function levelFor(method: VolumeMethod, err: unknown): 'debug' | 'warn' | 'error' {
  if (!(err instanceof BallastError)) return 'error';
  if (err.kind === 'not-found' && method === 'VolumeDriver.Get') return 'debug';
  return err.kind === 'system' || err.kind === 'unavailable' ? 'error' : 'warn';
}
