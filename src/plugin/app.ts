import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import { BallastError, errorMessage } from '../errors.js';
import { withLogContext, type Logger } from '../log.js';
import { metrics } from '../metrics/registry.js';
import type { VolumeManager } from '../volumes/manager.js';
import type { VolumeView } from '../volumes/volume-view.js';
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
  'VolumeDriver.List': async (m) => listReply(await m.list()),
  'VolumeDriver.Capabilities': async (m) => ({ Capabilities: { Scope: m.scope() } }),
};

/** A reply serialised once: the manager hands out the same views while nothing changed. */
class SerialisedReply {
  constructor(readonly text: string) {}
}
const listReplies = new WeakMap<VolumeView[], SerialisedReply>();

function listReply(views: VolumeView[]): SerialisedReply {
  let cached = listReplies.get(views);
  if (!cached) {
    cached = new SerialisedReply(JSON.stringify({ Volumes: views.map((v) => toWire(v, false)), Err: '' }));
    listReplies.set(views, cached);
  }
  return cached;
}

let nextRequestId = 1;
const BODY_LIMIT = 1 << 20;
const PROTOCOL_PATHS = new Set([ACTIVATE_PATH, ...Object.keys(handlers).map((m) => `/${m}`)]);

/**
 * Serves Docker's volume plugin protocol, knowing nothing of storage: it decodes, calls the
 * manager, and encodes results or {Err}. Protocol calls take a plain node:http path (dockerd
 * calls Get several times per container start: no router or middleware on it); the operator's
 * /Ballast.* calls and everything else go through express.
 */
export function createApp(manager: VolumeManager, log: Logger): RequestListener {
  const app = operatorApp(manager, log);
  return (req, res) => {
    if (req.method !== 'POST' || !PROTOCOL_PATHS.has(req.url ?? '')) return void app(req, res);
    readBody(req)
      .then((text) => (req.url === ACTIVATE_PATH ? activate(manager, log, res) : serve(req.url!.slice(1) as VolumeMethod, text, res, manager, log)))
      .catch((err: unknown) => reply(res, 400, { Err: `bad request: ${errorMessage(err)}` }));
  };
}

async function activate(manager: VolumeManager, log: Logger, res: ServerResponse): Promise<void> {
  log.info('request', { request: 'Plugin.Activate' });
  await manager.activate().catch((err) => log.error('reconcile after activation failed', { error: errorMessage(err) }));
  reply(res, 200, ActivateResponse);
}

/** The body as text, whatever the Content-Type (dockerd sends none); at most 1 MiB. */
function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > BODY_LIMIT) return void reject(new Error('request entity too large'));
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function reply(res: ServerResponse, status: number, body: object): void {
  if (res.headersSent || res.destroyed) return;
  const text = body instanceof SerialisedReply ? body.text : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/** The operator's calls, and 404 or 400 for anything that is neither theirs nor the protocol's. */
function operatorApp(manager: VolumeManager, log: Logger): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // dockerd never revalidates: an ETag would only hash every reply (List's is 450 KB at 10,000 volumes).
  app.set('etag', false);
  // dockerd sends no Content-Type; an empty body means {}.
  app.use(express.text({ type: () => true, limit: '1mb' }));

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

async function serve<M extends VolumeMethod>(method: M, text: string, res: ServerResponse, manager: VolumeManager, log: Logger): Promise<void> {
  const started = performance.now();
  const reqId = nextRequestId++;
  let body: unknown;
  let volume: string | undefined;
  let mountId: string | undefined;
  try {
    body = parseBody(text);
    if (body && typeof body === 'object') {
      const b = body as { Name?: unknown; ID?: unknown };
      if (typeof b.Name === 'string') volume = b.Name.slice(0, 200);
      if (typeof b.ID === 'string') mountId = b.ID;
    }
  } catch (err) {
    log.warn('request', { request: method, reqId, durationMs: 0, err: errorMessage(err) });
    metrics.observeCall(method, 'err', performance.now() - started);
    reply(res, 400, { Err: `${method}: ${errorMessage(err)}` });
    return;
  }
  await withLogContext({ request: method, volume, mountId, reqId }, async () => {
    let answer: object;
    let status = 200;
    let failure: unknown;
    try {
      const parsed = requestSchemas[method].safeParse(body);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new BadRequest(`${method}: ${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`);
      }
      answer = await handlers[method](manager, parsed.data as RequestOf<M>);
    } catch (err) {
      failure = err;
      // Docker reads Err from a 200 reply; a 400 is kept for bodies it could never have sent.
      status = err instanceof BadRequest ? 400 : 200;
      answer = { Err: errorMessage(err) };
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
    reply(res, status, answer);
  });
}

class BadRequest extends Error {}

/** Get of an unknown name is routine (dockerd probes every driver); a system failure is not. */
function levelFor(method: VolumeMethod, err: unknown): 'debug' | 'warn' | 'error' {
  if (!(err instanceof BallastError)) return 'error';
  if (err.kind === 'not-found' && method === 'VolumeDriver.Get') return 'debug';
  return err.kind === 'system' || err.kind === 'unavailable' ? 'error' : 'warn';
}
