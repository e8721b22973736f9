import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RemoteFileStore } from '../../src/drivers/array-host/exec-file-store.js';
import { CommandRunner } from '../../src/exec.js';
import { silentLogger } from '../../src/log.js';
import type { BallastProcess } from '../lab/ballast.js';
import { SharedRootHosts } from '../lab/shared-root.js';
import { callOk, callPlugin } from '../helpers/plugin-client.js';
import { requireRootAndTools } from '../helpers/root.js';

// Backend failures on the loop backend, for real: `ballast serve` daemons sharing a root that is
// a small tmpfs (so it can really be filled: ENOSPC), with metadata files damaged by hand. Each
// fault must give an error naming the volume (or host) and the fix, lose no volume, and show in
// Get's status.health.
requireRootAndTools('losetup', 'mkfs.ext4', 'mount', 'dd');

/** Slow renewals: the faults below must not be hidden by this host fencing itself. */
const CALM = { seconds: 30, renew_every: 1, fence_after: 20, mount_wait: 20 };
/** Fast renewals, for the faults that are about renewing. */
const QUICK = { seconds: 4, renew_every: 0.5, fence_after: 2.5, mount_wait: 20 };

interface Status {
  health?: string;
  fenced?: string;
  lease?: { state?: string; holder?: string };
}

const META = 'meta.json';

describe('backend failures on a shared loop root', () => {
  const calm = new SharedRootHosts('ballast-faults', CALM);
  const quick = new SharedRootHosts('ballast-faults-quick', QUICK);
  let hosts = calm;
  const root = () => hosts.root;
  const fill = () => join(root(), '.fill');

  /** The shared root becomes a 64 MiB tmpfs; teardown unmounts it with everything under the test's dir. */
  async function useRoot(which: SharedRootHosts): Promise<void> {
    hosts = which;
    await hosts.reset();
    await mkdir(root(), { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'tmpfs', root()]);
  }
  afterEach(async () => {
    // Only the hosts this test used: teardown cleans up under their dir, and an unset dir is ''.
    if (hosts.dir) await hosts.teardown();
    hosts.dir = '';
  });

  /** Writes zeros until the tmpfs answers ENOSPC: not one free block is left. */
  async function fillRoot(): Promise<void> {
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${fill()}`, 'bs=64k'], { stdio: 'ignore' });
    } catch {
      // dd exits 1 at ENOSPC: that is the point
    }
    expect((await statfs(root())).bavail).toBe(0);
  }
  const freeRoot = () => rm(fill(), { force: true });

  const create = (d: BallastProcess, name: string) => callOk(d.socket, 'VolumeDriver.Create', { Name: name, Opts: { size: '16M' } });
  const errOf = async (d: BallastProcess, method: string, body: object) => (await callPlugin(d.socket, method, body)).body.Err ?? '';
  const statusOf = async (d: BallastProcess, name: string) =>
    ((await callOk(d.socket, 'VolumeDriver.Get', { Name: name })).Volume as { Status: Status }).Status;
  const listed = async (d: BallastProcess) =>
    Object.fromEntries(((await callOk(d.socket, 'VolumeDriver.List', {})).Volumes as { Name: string }[]).map((v) => [v.Name, true]));
  const sidecar = (name: string) => readFile(join(root(), name, META), 'utf8');
  /** Temp files, guards and staging directories: what a failed write must not leave behind. */
  async function leftovers(): Promise<string[]> {
    const found: string[] = [];
    for (const dir of ['', '.hosts', ...(await readdir(root())).filter((e) => !e.startsWith('.'))]) {
      for (const entry of (await readdir(join(root(), dir)).catch(() => [])) as string[]) {
        if (/\.tmp$|^meta\.lock$|^\.creating-|^\.deleting-/.test(entry)) found.push(join(dir, entry));
      }
    }
    return found;
  }

  async function within<T>(boundMs: number, what: string, attempt: () => Promise<T | undefined>): Promise<{ value: T; ms: number }> {
    const started = performance.now();
    for (;;) {
      const value = await attempt();
      const ms = performance.now() - started;
      if (value !== undefined) return { value, ms };
      if (ms > boundMs) throw new Error(`${what} not seen within ${boundMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it('ENOSPC at Create (root full): Err names the volume and the fix; no staging dir or temp file left; other volumes still listed and ok; Create works once space is freed', async () => {
    await useRoot(calm);
    const a = await hosts.host('a');
    await create(a, 'keep');
    await fillRoot();

    const err = await errOf(a, 'VolumeDriver.Create', { Name: 'fresh', Opts: { size: '16M' } });
    expect(err).toMatch(/^create fresh: cannot create volume fresh under .* \(nothing was created\): .* is full \(ENOSPC.*\): free space there, then retry$/);
    expect((await readdir(root())).filter((e) => !e.startsWith('.'))).toEqual(['keep']);
    expect(await leftovers()).toEqual([]);
    expect(await listed(a)).toEqual({ keep: true });
    expect((await statusOf(a, 'keep')).health).toBe('ok');

    await freeRoot();
    await create(a, 'fresh');
    expect(await listed(a)).toEqual({ fresh: true, keep: true });
  });

  it("ENOSPC at Mount's lease write (root full): Err names the volume and the fix within 5 s; the record unchanged, no guard or temp file left; Mount works at once when space is freed", async () => {
    await useRoot(calm);
    const a = await hosts.host('a');
    await create(a, 'v');
    const before = await sidecar('v');
    await fillRoot();

    const started = performance.now();
    const err = await errOf(a, 'VolumeDriver.Mount', { Name: 'v', ID: 'm1' });
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(err).toMatch(/^mount v: .*volume v.* is full \(ENOSPC.*\): free space there, then retry$/);
    expect(await sidecar('v')).toBe(before); // the ownership record was not touched, let alone half-written
    expect(await leftovers()).toEqual([]); // an empty meta.lock here would lock v for GUARD_STALE_MS
    expect((await readdir(join(root(), 'v'))).sort()).toEqual(['disk.img', META]);
    expect((await statusOf(a, 'v')).lease?.state).toBe('free');

    await freeRoot();
    const again = performance.now();
    await callOk(a.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'm1' });
    expect(performance.now() - again).toBeLessThan(5_000); // no stale guard to wait out
    expect(JSON.parse(await sidecar('v')).volume.ownership.state).toBe('held');
    await callOk(a.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'm1' });
  });

  it('ENOSPC at host lease renewal (root full): logged with the fix within 2 renewals, new mounts refused and the mounted volume fenced after fence_after, host lease and records intact, no temp file; renewals and mounts resume when space is freed', async () => {
    await useRoot(quick);
    const a = await hosts.host('a');
    await create(a, 'v');
    await create(a, 'w');
    await callOk(a.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'm1' });
    await fillRoot();

    const failed = await within(2 * QUICK.renew_every * 1000 + 500, 'a failed renewal in the log', async () =>
      (await a.logs()).find((l) => l.message === 'cannot renew the host lease'),
    );
    expect(failed.value.error).toMatch(/^cannot write the host lease of a under .*: .* is full \(ENOSPC.*\): free space there, then retry$/);
    const refused = await within((QUICK.fence_after + 2 * QUICK.renew_every) * 1000 + 500, 'Mount refused', async () => {
      const err = await errOf(a, 'VolumeDriver.Mount', { Name: 'w', ID: 'm2' });
      return /has not renewed its lease/.test(err) ? err : undefined;
    });
    expect(refused.value).toMatch(/^mount w: this host has not renewed its lease for \d+ s .*refusing to mount w until it can$/);
    // The self-fence: v, mounted here, is cut off before another host may take it (lease.seconds).
    const fenced = await within((QUICK.fence_after + 2 * QUICK.renew_every) * 1000 + 1_000, 'v fenced', async () => (await statusOf(a, 'v')).fenced);
    // By the daemon ("could not renew") or by its watchdog, which sees no beat for as long: both
    // fall due at fence_after, and under load either comes first (the watchdog did in one CI run).
    expect(fenced.value).toMatch(/could not renew its lease|the daemon renewed no lease/);
    expect(JSON.parse(await readFile(join(root(), '.hosts', 'a.json'), 'utf8')).hostId).toBe('a');
    expect(JSON.parse(await sidecar('v')).volume.ownership.holder.hostId).toBe('a'); // nothing lost: v is still a's
    expect(JSON.parse(await sidecar('w')).volume.ownership.state).toBe('free');
    expect(await leftovers()).toEqual([]);

    await freeRoot();
    await callOk(a.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'm1' }); // a fenced volume is let go of as usual
    expect(JSON.parse(await sidecar('v')).volume.ownership.state).toBe('free');
    await within(5_000, 'Mount of w after space was freed', async () =>
      (await callPlugin(a.socket, 'VolumeDriver.Mount', { Name: 'w', ID: 'm2' })).body.Err ? undefined : true,
    );
    await callOk(a.socket, 'VolumeDriver.Unmount', { Name: 'w', ID: 'm2' });
  });

  it.each([
    ['truncated to 0 bytes', '', /is empty \(0 bytes: truncated\)/],
    ['garbage JSON', '{"v":1,"revision":3,"vol', /is not valid JSON \(.*\)/],
    ['valid JSON of the wrong shape', '{"v":1,"revision":3,"volume":{"name":"bad"}}\n', /is not a volume record \(volume\.\w+: .*\)/],
  ])(
    'a sidecar %s: Remove and Mount refused naming the file and the fix, then Get says damaged and List still lists every volume, nothing deleted or rewritten; the same after a restart',
    async (_fault, content, problem) => {
      await useRoot(calm);
      const a = await hosts.host('a');
      await create(a, 'keep');
      await create(a, 'bad');
      expect((await statusOf(a, 'bad')).health).toBe('ok');
      const file = join(root(), 'bad', META);
      await writeFile(file, content);

      const damaged = new RegExp(`^damaged: ${file} ${problem.source}; ballast changed nothing: restore that file from a backup .*move ${join(root(), 'bad')} out of the root`);
      const checkAll = async (d: BallastProcess) => {
        // The index re-reads a record when its change marker moves, and a hand-made change moves
        // none: the first read of the file afresh (this Remove) is what finds the damage.
        for (const [method, op] of [['VolumeDriver.Remove', 'remove'], ['VolumeDriver.Mount', 'mount']]) {
          expect(await errOf(d, method!, { Name: 'bad', ID: 'm1' })).toMatch(new RegExp(`^${op} bad: volume bad is damaged: ${file} ${problem.source}; ballast changed nothing: `));
        }
        expect((await statusOf(d, 'bad')).health).toMatch(damaged);
        expect(await listed(d)).toEqual({ bad: true, keep: true });
        expect((await statusOf(d, 'keep')).health).toBe('ok');
        expect(await readFile(file, 'utf8')).toBe(content);
        expect((await readdir(join(root(), 'bad'))).sort()).toEqual(['disk.img', META]);
      };
      await checkAll(a);

      await a.stop();
      await a.start(); // a fresh index has never read a good record of bad: List and Get before anything else
      expect(await listed(a)).toEqual({ bad: true, keep: true });
      expect((await statusOf(a, 'bad')).health).toMatch(damaged);
      await checkAll(a);
    },
  );

  it("another host's lease file unreadable (a directory, then garbage): takeover of its volume refused past its lease time with an Err naming the file and the fix; removing the file (the fix) lets the takeover through", async () => {
    await useRoot(quick);
    const a = await hosts.host('a');
    const b = await hosts.host('b');
    await create(a, 'v');
    await callOk(b.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'on-b' });
    await b.stop('SIGKILL');
    await b.stopWatchdog();
    const lease = join(root(), '.hosts', 'b.json');
    await rm(lease);
    await mkdir(lease);
    await new Promise((r) => setTimeout(r, (QUICK.seconds + 1) * 1000)); // b's lease would have run out by now

    const refusal = (problem: string) =>
      new RegExp(`^mount v: the host lease of b \\(${lease}\\) ${problem}, so b counts as alive and none of its volumes is taken over: .*if b is down for good, remove ${lease}`);
    expect(await errOf(a, 'VolumeDriver.Mount', { Name: 'v', ID: 'on-a' })).toMatch(refusal('cannot be read \\(EISDIR.*\\)'));
    await rm(lease, { recursive: true });
    await writeFile(lease, 'garbage');
    expect(await errOf(a, 'VolumeDriver.Mount', { Name: 'v', ID: 'on-a' })).toMatch(refusal('is damaged \\(not a host lease\\)'));
    expect(JSON.parse(await sidecar('v')).volume.ownership.holder.hostId).toBe('b'); // still b's, not lost

    await rm(lease);
    const taken = await within((QUICK.seconds + 2) * 1000, 'the takeover by a', async () =>
      (await callPlugin(a.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'on-a' })).body.Err ? undefined : true,
    );
    expect(taken.ms).toBeLessThan((QUICK.seconds + 2) * 1000);
    expect(JSON.parse(await sidecar('v')).volume.ownership.holder.hostId).toBe('a');
    await callOk(a.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'on-a' });
  });

  it.each([
    ['truncated to 0 bytes', ''],
    ['cut off mid-write', '{"hostId":"a","bootId":"'],
  ])(
    "this host's own lease file %s when its daemon starts (a crash on a full disk): rewritten with a warning naming the file, same boot and generation, so a volume still mounted here stays its own; Mount works at once",
    async (_fault, content) => {
      await useRoot(calm);
      const a = await hosts.host('a');
      const b = await hosts.host('b');
      await create(a, 'v');
      await create(a, 'w');
      await callOk(a.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'm1' });
      const lease = join(root(), '.hosts', 'a.json');
      const before = JSON.parse(await readFile(lease, 'utf8')) as { bootId: string; generation: number };
      await a.stop('SIGKILL'); // v stays mounted: the daemon comes back in the same boot
      await writeFile(lease, content);
      await a.start();

      const started = performance.now();
      await callOk(a.socket, 'VolumeDriver.Mount', { Name: 'w', ID: 'm2' });
      expect(performance.now() - started).toBeLessThan(5_000);
      const warning = (await a.logs()).find((l) => l.message === "rewriting this host's damaged lease record");
      expect(warning?.level).toBe('warn');
      expect(warning?.damaged).toMatch(new RegExp(`^${lease} is damaged \\((empty|not a host lease)\\)$`));
      expect(JSON.parse(await readFile(lease, 'utf8'))).toMatchObject({ hostId: 'a', bootId: before.bootId, generation: before.generation });
      // b judges a alive (a new generation would make v b's to take at once), and a has not fenced v.
      const held = (await errOf(b, 'VolumeDriver.Remove', { Name: 'v' })).match(/^remove v: volume v is in use on host a .*; it moves when a releases it or (\d+) s after a stops renewing$/);
      expect(Number(held?.[1])).toBeGreaterThan(CALM.seconds - 5);
      expect((await statusOf(a, 'v')).fenced).toBeUndefined();
      await callOk(a.socket, 'VolumeDriver.Unmount', { Name: 'w', ID: 'm2' });
      await callOk(a.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'm1' });
      expect(JSON.parse(await sidecar('v')).volume.ownership.state).toBe('free');
    },
  );

  it('a metadata guard left by a crashed writer on another host: Remove refused within 6 s naming that host and the fix; Mount gets through by breaking it within 30 s + 5 s of the first sighting; record and data intact', async () => {
    await useRoot(calm);
    const a = await hosts.host('a');
    await create(a, 'v');
    const guard = join(root(), 'v', 'meta.lock');
    const before = await sidecar('v');
    await writeFile(guard, JSON.stringify({ host: 'node-x', boot: 'another-boot', pidns: 'pid:[4026531836]', pid: 4242, token: '00112233' }));

    const firstSeen = performance.now();
    const err = await errOf(a, 'VolumeDriver.Remove', { Name: 'v' });
    expect(performance.now() - firstSeen).toBeLessThan(6_000);
    expect(err).toMatch(
      new RegExp(`^remove v: the metadata of volume v stayed locked for 5 s by host node-x \\(pid 4242\\) \\(guard file ${guard}\\); .*retry in \\d+ s, or delete the guard file now if no ballast on that host is running$`),
    );
    expect(await sidecar('v')).toBe(before);
    expect((await readdir(join(root(), 'v'))).sort()).toEqual(['disk.img', META, 'meta.lock']);

    await callOk(a.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'm1' }); // retries the compare-and-swap until the guard is judged stale
    expect(performance.now() - firstSeen).toBeLessThan(35_000 + 2_000);
    expect((await readdir(join(root(), 'v'))).sort()).toEqual(['disk.img', META]);
    expect(JSON.parse(await sidecar('v')).volume.ownership.holder.hostId).toBe('a');
    expect((await a.logs()).some((l) => l.message === 'breaking a stale metadata guard left by a dead writer' && l.volume === 'v')).toBe(true);
    await callOk(a.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'm1' });
  }, 60_000);
});

// The array host's file store runs the same shell commands here, through the real Exec, as it
// does over SSH: on a 64 KiB tmpfs, really full.
describe('RemoteFileStore guard files on a full filesystem, through the real Exec', () => {
  const files = new RemoteFileStore(Object.assign(new CommandRunner(silentLogger()), { settings: { username: 'root', host: 'localhost' }, target: 'this host' }));
  let dir = '';
  const guard = () => join(dir, 'meta.lock');
  const fill = () => join(dir, 'fill');
  const GUARD = `${JSON.stringify({ host: 'a', pid: 1 })}${' '.repeat(32 * 1024)}`; // larger than what is left

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ballast-exec-files-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', dir]);
  });
  afterAll(async () => {
    if (!dir) return;
    execFileSync('umount', [dir]);
    await rm(dir, { recursive: true, force: true });
  });
  afterEach(async () => {
    for (const entry of await readdir(dir)) await rm(join(dir, entry), { force: true });
  });

  /** Fills the tmpfs, then frees `bytes` of it. */
  async function fillLeaving(bytes: number): Promise<void> {
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${fill()}`, 'bs=4k'], { stdio: 'ignore' });
    } catch {
      // dd exits 1 at ENOSPC: that is the point
    }
    if (bytes > 0) execFileSync('truncate', ['-s', `-${bytes}`, fill()]);
    expect((await statfs(dir)).bavail * 4096).toBe(bytes);
  }

  it.each([
    ['full (the guard would be empty)', 0],
    ['8 KiB short (the guard would be partial)', 8192],
  ])('writeNew on a filesystem %s: ENOSPC, and the guard it created is gone; it is written once space is freed', async (_case, left) => {
    await fillLeaving(left);
    await expect(files.writeNew(guard(), GUARD)).rejects.toMatchObject({ code: 'ENOSPC', path: guard() });
    expect(await readdir(dir)).toEqual(['fill']);

    await rm(fill());
    await files.writeNew(guard(), GUARD);
    expect(await readFile(guard(), 'utf8')).toBe(GUARD);
  });

  it("writeNew onto another writer's guard on a full filesystem: EEXIST, and that guard is left whole", async () => {
    await files.writeNew(guard(), 'the other writer');
    await fillLeaving(0);
    await expect(files.writeNew(guard(), GUARD)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await readFile(guard(), 'utf8')).toBe('the other writer');
  });
});
