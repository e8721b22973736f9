import express, { type Request, type Response } from 'express';
import { z } from 'zod';
import { errorMessage } from '../errors.js';
import { parseSize, SIZE_SYNTAX } from '../config/size.js';
import { withLogContext, type Logger } from '../log.js';
import type { VolumeManager } from '../volumes/manager.js';

// Operator calls for the `ballast` command, on the same socket under /Ballast.*. They are
// not part of Docker's protocol and dockerd never sends them.

const growRequest = z.object({ Name: z.string(), Size: z.string() });
const snapshotRequest = z.object({ Volume: z.string(), Name: z.string() });
/** How often a long copy reports its progress to the operator command. */
const PROGRESS_EVERY_MS = 250;

/** Mounted here by the operator command; every reply is JSON with Err on failure. */
export function adminRoutes(manager: VolumeManager, log: Logger): express.Router {
  const router = express.Router();
  const reply = (op: string, fn: (body: unknown) => Promise<object>) => async (req: Request, res: Response) => {
    try {
      const body = typeof req.body === 'string' && req.body.trim() ? JSON.parse(req.body) : {};
      res.json(await withLogContext({ request: `Ballast.${op}` }, () => fn(body)));
    } catch (err) {
      log.warn('request', { request: `Ballast.${op}`, err: errorMessage(err) });
      res.json({ Err: errorMessage(err) });
    }
  };

  router.post('/Ballast.Volumes', reply('Volumes', async () => {
    const mounted = Object.fromEntries(manager.mountedVolumes());
    return { Volumes: await manager.list(false), Mounted: mounted, Hosts: await manager.hosts(), Err: '' };
  }));
  router.post('/Ballast.Grow', reply('Grow', async (body) => {
    const { Name, Size } = growRequest.parse(body);
    const bytes = parseSize(Size);
    if (bytes === undefined) throw new Error(`size ${Size}: expected ${SIZE_SYNTAX}`);
    return { Volume: await manager.grow(Name, bytes), Err: '' };
  }));
  router.post('/Ballast.Release', reply('Release', async (body) => {
    const { Name } = z.object({ Name: z.string() }).parse(body);
    return { Volume: await manager.forceRelease(Name), Err: '' };
  }));
  router.post('/Ballast.Remove', reply('Remove', async (body) => {
    const { Name, WithSnapshots } = z.object({ Name: z.string(), WithSnapshots: z.boolean().default(false) }).parse(body);
    await manager.remove(Name, WithSnapshots);
    return { Err: '' };
  }));
  router.post('/Ballast.Snapshots', reply('Snapshots', async (body) => {
    const { Volume } = z.object({ Volume: z.string().optional() }).parse(body);
    return { Snapshots: await manager.snapshots.list(Volume), Err: '' };
  }));
  router.post('/Ballast.SnapshotRemove', reply('SnapshotRemove', async (body) => {
    const { Volume, Name } = snapshotRequest.parse(body);
    await manager.snapshots.remove(Volume, Name);
    return { Err: '' };
  }));
  // A copy may take a while: its progress goes out as JSON lines ({Progress}) before the reply line.
  router.post('/Ballast.SnapshotCreate', async (req: Request, res: Response) => {
    res.setHeader('Content-Type', 'application/x-ndjson');
    let last = 0;
    const line = (o: object) => res.write(`${JSON.stringify(o)}\n`);
    try {
      const { Volume, Name } = snapshotRequest.parse(typeof req.body === 'string' && req.body.trim() ? JSON.parse(req.body) : {});
      const snapshot = await withLogContext({ request: 'Ballast.SnapshotCreate', volume: Volume }, () =>
        manager.snapshots.create(Volume, Name, (p) => {
          if (performance.now() - last < PROGRESS_EVERY_MS) return;
          last = performance.now();
          line({ Progress: p });
        }),
      );
      res.end(`${JSON.stringify({ Snapshot: snapshot, Err: '' })}\n`);
    } catch (err) {
      log.warn('request', { request: 'Ballast.SnapshotCreate', err: errorMessage(err) });
      res.end(`${JSON.stringify({ Err: errorMessage(err) })}\n`);
    }
  });
  return router;
}
