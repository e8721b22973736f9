import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LoopDriver } from '../../../src/drivers/loop-driver.js';
import { silentLogger } from '../../../src/log.js';
import { HostLeaseKeeper } from '../../../src/ownership/host-lease.js';
import { HostMonitor } from '../../../src/ownership/host-monitor.js';
import { OwnershipLease } from '../../../src/ownership/lease.js';
import { managerFixture, type ManagerFixture } from '../../helpers/manager-fixture.js';
import { freezeWaitFor } from '../../../src/volumes/lease-upkeep.js';
import { FenceFiles } from '../../../src/volumes/fence-files.js';
import { jest } from '@jest/globals';

// A shared loop root with a very short lease, so that real time (not a fake clock) passes it.
const LEASE = { seconds: 1.4, renew_every: 0.05, fence_after: 0.3, mount_wait: 0 };
const sharedConfig = (dir: string) => ({ backends: { loop: { root: join(dir, 'loop'), shared: true } }, lease: LEASE });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('how long a fence waits for its freeze', () => {
  const loop = { device: '/dev/loop3', mountpoint: '/m/v', export: { transport: 'loop' as const, file: '/i' }, refs: {}, staleIds: [], generation: 1 };
  const iscsi = (reservations: boolean) => ({ ...loop, export: { transport: 'iscsi' as const, iqn: 'iqn.x', portals: ['p:3260'], lun: 1, multipath: true, reservations } });

  it('until a second before other hosts may take the volume, at least 2 s', () => {
    expect(freezeWaitFor(loop, 12, 6.2)).toBe(4_800); // fenced at 6 s of a 12 s lease
    expect(freezeWaitFor(iscsi(false), 20, 12.5)).toBe(6_500);
    expect(freezeWaitFor(loop, 2, 1.1)).toBe(2_000); // a lease too short to wait longer: the default
    expect(freezeWaitFor(loop, 12, Infinity)).toBe(2_000); // taken over already
  });

  it('past the lease when the array fences (reservations): a path failing over may hold the freeze longer', () => {
    expect(freezeWaitFor(iscsi(true), 12, 6.2)).toBe(30_000);
    expect(freezeWaitFor(iscsi(true), 12, Infinity)).toBe(30_000);
  });
});

describe('fencing on a shared root (real loop driver, FakeHost commands)', () => {
  let f: ManagerFixture;
  const root = () => join(f.dir, 'loop');
  beforeEach(async () => (f = await managerFixture(sharedConfig)));
  afterEach(() => f.cleanup());

  /** Another host, node-b, whose clock we run by hand. */
  function hostB() {
    const store = new LoopDriver({ root: root(), shared: true }, silentLogger());
    const clock = { now: 0 };
    const me = { hostId: 'node-b', bootId: 'b', hostname: 'b' };
    const keeper = new HostLeaseKeeper(store, me, { leaseSeconds: LEASE.seconds, renewEverySeconds: LEASE.renew_every }, silentLogger(), () => clock.now);
    const lease = new OwnershipLease(store, me, silentLogger(), { store, keeper, monitor: new HostMonitor(LEASE.seconds, () => clock.now) });
    return { lease, keeper, clock };
  }

  it('reports Scope global and keeps renewing this host\'s lease', async () => {
    expect(f.manager.scope()).toBe('global');
    const before = (await new LoopDriver({ root: root(), shared: true }, silentLogger()).readHostLease('node-a'))!.renewSeq;
    await sleep(600);
    const after = (await new LoopDriver({ root: root(), shared: true }, silentLogger()).readHostLease('node-a'))!.renewSeq;
    expect(after).toBeGreaterThan(before + 2);
  });

  it('shuts down the filesystem of a volume another host took over, refuses new mounts, and never frees the new holder\'s lease', async () => {
    await f.manager.create('v', {});
    const mp = await f.manager.mount('v', 'c1');
    // node-a stops renewing as far as node-b can tell: simulate by stopping node-a's upkeep
    // before node-b first looks, so no renewal lands between node-b's two observations.
    await f.manager.stop();
    const b = hostB();
    await expect(b.lease.acquire('v')).rejects.toThrow(/in use on host node-a/);
    b.clock.now += LEASE.seconds + 0.1;
    await b.lease.acquire('v');
    await f.manager.upkeep.tick(); // node-a's next round notices
    expect([...f.host.shutDown]).toEqual([mp]);
    expect(f.host.calls).toContain(`xfs_io -x -c shutdown ${mp}`);
    await expect(f.manager.mount('v', 'c2')).rejects.toThrow(/volume v was fenced on this host \(the volume was taken over by host node-b \(b\)\)/);
    expect((await f.manager.get('v')).status.fenced).toMatch(/taken over by host node-b/);
    await f.manager.unmount('v', 'c1'); // Docker stops the container: clean up locally
    expect(f.host.mountPoints).toEqual([]);
    expect(f.host.attachedDevices).toEqual([]);
    expect((await b.lease.acquire('v')).state).toBe('held'); // still node-b's
  });

  it('does not fence a volume whose record reads free (its own Unmount in progress), nor over a stale watchdog entry', async () => {
    await f.manager.create('v', {});
    const store = new LoopDriver({ root: root(), shared: true }, silentLogger());
    // A watchdog entry left from an earlier mount of v on this host.
    await writeFile(join(f.dir, 'state', 'fenced.json'), JSON.stringify({ v: { at: 'earlier', reason: 'old' } }));
    await f.manager.mount('v', 'c1');
    const current = (await store.readOwnership('v'))!;
    await store.writeOwnership('v', current.revision, { state: 'free', generation: current.value.generation, updatedAt: 'x' });
    await f.manager.upkeep.tick();
    expect(f.host.shutDown.size).toBe(0);
    expect((await f.manager.get('v')).status.fenced).toBeUndefined();
  });

  /**
   * Replaces the host-lease directory with a file: renewals fail from then on. Moved aside and
   * replaced by rename, since the upkeep's renewal (every 50 ms) may write into it or recreate it
   * meanwhile (an rm -r of it failed with ENOTEMPTY in CI).
   */
  async function breakHostLeases(): Promise<void> {
    const hosts = join(root(), '.hosts');
    for (let attempt = 0; attempt < 20; attempt++) {
      await rename(hosts, `${hosts}-away-${attempt}`).catch(() => undefined);
      await writeFile(`${hosts}-file`, 'not a directory');
      if (await rename(`${hosts}-file`, hosts).then(() => true, () => false)) return;
    }
    throw new Error(`${hosts} kept coming back as a directory`);
  }

  it('fences its own volumes and refuses mounts when it cannot renew for fence_after', async () => {
    await f.manager.create('v', {});
    const mp = await f.manager.mount('v', 'c1');
    await f.manager.create('w', {});
    // Break the host-lease directory: renewals now fail.
    await breakHostLeases();
    await sleep(LEASE.fence_after * 1000 + 200);
    await f.manager.upkeep.tick();
    expect(f.host.shutDown.has(mp)).toBe(true);
    await expect(f.manager.mount('w', 'x')).rejects.toThrow(/this host has not renewed its lease for \d+ s .*refusing to mount w/);
    // The backend comes back: new mounts work again, once a round renews. A round the upkeep's
    // timer started while it was broken may still be running (a loaded CI machine): tick() then
    // starts none, so tick and try again, for up to 5 s.
    await rm(join(root(), '.hosts'));
    await mkdir(join(root(), '.hosts'), { recursive: true }); // a renewal may have made it already
    const deadline = Date.now() + 5_000;
    for (let mounted = false; !mounted; ) {
      await f.manager.upkeep.tick();
      mounted = await f.manager.mount('w', 'x').then(
        () => true,
        (err: unknown) => {
          if (Date.now() > deadline) throw err;
          return false;
        },
      );
      if (!mounted) await sleep(50);
    }
  });

  it('fences all its volumes at once: a slow storage does not make the last fence late', async () => {
    await f.manager.create('v', {});
    await f.manager.create('w', {});
    const mounts = [await f.manager.mount('v', 'c1'), await f.manager.mount('w', 'c2')];
    f.host.delays.push({ prefix: 'fsfreeze --freeze', ms: 500 });
    f.host.calls.length = 0;
    await breakHostLeases();
    await sleep(LEASE.fence_after * 1000 + 200);
    await f.manager.upkeep.tick();
    expect(mounts.filter((mp) => f.host.shutDown.has(mp))).toEqual(mounts);
    // Both freezes were asked for before either shutdown: one after the other, each waits on the last.
    const fence = f.host.calls.filter((c) => /^(fsfreeze|xfs_io)/.test(c)).map((c) => c.split(' ').slice(0, -1).join(' '));
    expect(fence.slice(0, 2)).toEqual(['fsfreeze --freeze', 'fsfreeze --freeze']);
    await rm(join(root(), '.hosts'));
    await mkdir(join(root(), '.hosts'), { recursive: true });
  });

  it('starts one fence of a volume while its freeze is still waited for, however many rounds ask', async () => {
    await f.manager.create('v', {});
    const mp = await f.manager.mount('v', 'c1');
    f.host.delays.push({ prefix: 'fsfreeze --freeze', ms: 600 });
    await breakHostLeases();
    await sleep(LEASE.fence_after * 1000 + 200);
    // Rounds overlap as they do while a renewal hangs on the storage: each one looks for volumes to fence.
    await Promise.all([f.manager.upkeep.tick(), f.manager.upkeep.tick(), f.manager.upkeep.tick()]);
    expect(f.host.shutDown.has(mp)).toBe(true);
    expect(f.host.calls.filter((c) => c === `fsfreeze --freeze ${mp}`)).toHaveLength(1);
    expect(f.host.calls.filter((c) => c === `xfs_io -x -c shutdown ${mp}`)).toHaveLength(1);
    await rm(join(root(), '.hosts'));
    await mkdir(join(root(), '.hosts'), { recursive: true });
  });

  it("beats the watchdog's heartbeat after each renewal, also when a renewal takes longer than renew_every", async () => {
    const files = new FenceFiles(f.config.state_dir);
    const write = LoopDriver.prototype.writeHostLease;
    const slow = jest.spyOn(LoopDriver.prototype, 'writeHostLease').mockImplementation(async function (this: LoopDriver, lease) {
      await sleep(LEASE.renew_every * 1000 * 3);
      return write.call(this, lease);
    });
    try {
      await sleep(300); // a renewal under way when the spy came is done by now
      const before = (await files.readBeat())!;
      await sleep(600);
      const after = (await files.readBeat())!;
      expect(after.seq).toBeGreaterThan(before.seq + 1);
      // The watchdog counts from the renewal's start: at most one renewal and a round back.
      expect(after.renewedAt).toBeGreaterThan(before.renewedAt! + 0.3);
    } finally {
      slow.mockRestore();
    }
  });

  /** Volume v, held by node-b, which keeps renewing until the returned timer is cleared. */
  async function heldByLiveB() {
    await f.manager.create('v', {});
    const b = hostB();
    await b.keeper.register();
    await b.lease.acquire('v');
    return { b, renewing: setInterval(() => void b.keeper.renew(), 50) };
  }

  it('waits for a live holder to release, within lease.mount_wait', async () => {
    await f.cleanup();
    f = await managerFixture((dir) => ({ ...sharedConfig(dir), lease: { ...LEASE, mount_wait: 5 } }));
    const { b, renewing } = await heldByLiveB();
    try {
      const mounting = f.manager.mount('v', 'c1');
      await sleep(300);
      await b.lease.release('v');
      expect(await mounting).toBe(join(f.dir, 'mounts', 'v'));
    } finally {
      clearInterval(renewing);
    }
  });

  it('gives up after mount_wait with the holder named', async () => {
    const { renewing } = await heldByLiveB();
    try {
      await expect(f.manager.mount('v', 'c1')).rejects.toThrow(/mount v: volume v is in use on host node-b \(b\) \(lease renewed \d s ago\); it moves when node-b releases it/);
      expect(f.host.calls).toEqual([]);
    } finally {
      clearInterval(renewing);
    }
  });
});
