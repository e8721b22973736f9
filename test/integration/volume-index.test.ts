import type { BallastProcess } from '../lab/ballast.js';
import { SharedRootHosts } from '../lab/shared-root.js';
import { callOk, callPlugin } from '../helpers/plugin-client.js';
import { requireRootAndTools } from '../helpers/root.js';

// Three ballast daemons ("hosts" a, b, c; no dockerd) share one loop root. c answers Get and
// List from its in-memory volume index; whatever a or b change must reach c's answers within
// one lease renewal interval (renew_every), plus the time one refresh takes.
requireRootAndTools('losetup', 'mkfs.ext4', 'mount', 'xfs_io');

const LEASE = { seconds: 4, renew_every: 0.5, fence_after: 2.5, mount_wait: 20 };
/** renew_every, plus a margin for the refresh itself and the test's own polling. */
const BOUND_MS = LEASE.renew_every * 1000 + 400;

interface StatusOfGet {
  Volume?: { Name: string; Status?: { size?: string; lease?: { state?: string; holder?: string } } };
}

describe('the volume index across hosts sharing a loop root', () => {
  const hosts = new SharedRootHosts('ballast-index', LEASE);
  const host = (id: string) => hosts.host(id);
  beforeEach(() => hosts.reset());
  afterEach(() => hosts.teardown());

  /** Polls until `check` holds; returns how long it took. Fails past the bound. */
  async function seenWithin(what: string, check: () => Promise<boolean>): Promise<number> {
    const started = performance.now();
    for (;;) {
      if (await check()) return performance.now() - started;
      if (performance.now() - started > BOUND_MS) throw new Error(`c did not see ${what} within ${BOUND_MS} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  const getOn = async (d: BallastProcess, name: string) => (await callOk(d.socket, 'VolumeDriver.Get', { Name: name })) as StatusOfGet;
  const namesOn = async (d: BallastProcess) => ((await callOk(d.socket, 'VolumeDriver.List', {})).Volumes as { Name: string }[]).map((v) => v.Name).sort();

  it('c sees a volume created, grown and removed on a within one renewal interval', async () => {
    const a = await host('a');
    const c = await host('c');
    await callOk(a.socket, 'VolumeDriver.Create', { Name: 'keep', Opts: { size: '16M' } });
    expect(await namesOn(c)).toEqual(['keep']); // c's index is now built and in use

    await callOk(a.socket, 'VolumeDriver.Create', { Name: 'v', Opts: { size: '16M' } });
    // Absence is never cached: a Get of a name c has not indexed reads the backend at once.
    expect((await getOn(c, 'v')).Volume?.Name).toBe('v');
    await seenWithin('v in List', async () => (await namesOn(c)).includes('v'));

    await callOk(a.socket, 'Ballast.Grow', { Name: 'v', Size: '48M' });
    await seenWithin('v grown', async () => (await getOn(c, 'v')).Volume?.Status?.size === '48 MiB');

    await callOk(a.socket, 'VolumeDriver.Remove', { Name: 'v' });
    await seenWithin('v removed', async () => /does not exist/.test((await callPlugin(c.socket, 'VolumeDriver.Get', { Name: 'v' })).body.Err ?? '') && !(await namesOn(c)).includes('v'));
  });

  it('c sees a takeover: a killed while holding v, b mounts it, c names b as the holder', async () => {
    const a = await host('a');
    const b = await host('b');
    const c = await host('c');
    await callOk(a.socket, 'VolumeDriver.Create', { Name: 'v', Opts: { size: '16M' } });
    await callOk(a.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'on-a' });
    await seenWithin('a holding v', async () => /host a\b/.test((await getOn(c, 'v')).Volume?.Status?.lease?.holder ?? ''));

    await a.stop('SIGKILL');
    await a.stopWatchdog(); // a's watchdog would fence; the takeover below waits for a's lease either way
    await callOk(b.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'on-b' }); // waits for a's host lease to expire
    await seenWithin('b holding v', async () => /host b\b/.test((await getOn(c, 'v')).Volume?.Status?.lease?.holder ?? ''));
    await callOk(b.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'on-b' });
    await seenWithin('v free', async () => (await getOn(c, 'v')).Volume?.Status?.lease?.state === 'free');
  });
});
