import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LoopDriver } from '../../../src/drivers/loop-driver.js';
import { LeaseHeld, TakeoverNeedsOperator } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';
import { HostLeaseKeeper } from '../../../src/ownership/host-lease.js';
import { HostMonitor } from '../../../src/ownership/host-monitor.js';
import { OwnershipLease } from '../../../src/ownership/lease.js';
import type { HostIdentity } from '../../../src/ownership/types.js';

/** A clock per host, each running at its own offset and pace: the lease must not care. */
class FakeClock {
  constructor(public now = 0) {}
  read = () => this.now;
}

const timing = { leaseSeconds: 20, renewEverySeconds: 2 };
const host = (id: string, boot = 'b1'): HostIdentity => ({ hostId: id, bootId: boot, hostname: id });

describe('host leases and takeover over a shared loop root', () => {
  let root: string;
  const store = () => new LoopDriver({ root, shared: true }, silentLogger());

  function node(id: string, clock: FakeClock, boot = 'b1', automaticTakeover = true) {
    const s = store();
    const keeper = new HostLeaseKeeper(s, host(id, boot), timing, silentLogger(), clock.read);
    const monitor = new HostMonitor(timing.leaseSeconds, clock.read);
    const lease = new OwnershipLease(s, host(id, boot), silentLogger(), { store: s, keeper, monitor, automaticTakeover: () => automaticTakeover });
    return { keeper, monitor, lease, clock };
  }

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'ballast-liveness-'));
    await store().create({ name: 'v', profile: 'default', sizeBytes: 1 << 24, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  it('registers with generation 1, keeps it across a daemon restart, raises it after a reboot', async () => {
    const clock = new FakeClock();
    expect((await node('a', clock).keeper.register()).generation).toBe(1);
    expect((await node('a', clock).keeper.register()).generation).toBe(1); // same boot: a daemon restart
    expect((await node('a', clock, 'b2').keeper.register()).generation).toBe(2); // new boot id
    expect((await store().readHostLease('a'))?.renewSeq).toBe(3);
  });

  it('refuses to take a volume from a holder that keeps renewing, naming it and the time left', async () => {
    const a = node('a', new FakeClock(1000));
    const b = node('b', new FakeClock(5));
    await a.keeper.register();
    await a.lease.acquire('v');
    for (let t = 0; t < 60; t += 2) {
      a.clock.now += 2;
      b.clock.now += 2;
      await a.keeper.renew();
      await expect(b.lease.acquire('v')).rejects.toThrow(LeaseHeld);
    }
    await expect(b.lease.acquire('v')).rejects.toThrow(/volume v is in use on host a \(a\) \(lease renewed 0 s ago\); it moves when a releases it or 20 s after a stops renewing/);
  });

  it('takes over only once the holder has been silent for the lease time on the observer\'s own clock', async () => {
    const a = node('a', new FakeClock(0));
    const b = node('b', new FakeClock(-123_456)); // a wildly different clock: never compared with a's
    await a.keeper.register();
    const before = await a.lease.acquire('v');
    await expect(b.lease.acquire('v')).rejects.toThrow(LeaseHeld); // b starts watching a now
    b.clock.now += 19.9;
    await expect(b.lease.acquire('v')).rejects.toThrow(/0\.1|1 s after/);
    b.clock.now += 0.2;
    const taken = await b.lease.acquire('v');
    expect(taken).toMatchObject({ state: 'held', holder: { hostId: 'b' }, generation: before.generation + 1 });
  });

  it('restarts the observer\'s count whenever the holder renews', async () => {
    const a = node('a', new FakeClock(0));
    const b = node('b', new FakeClock(0));
    await a.keeper.register();
    await a.lease.acquire('v');
    await expect(b.lease.acquire('v')).rejects.toThrow(LeaseHeld);
    b.clock.now += 15;
    await a.keeper.renew(); // a renews late but in time
    await expect(b.lease.acquire('v')).rejects.toThrow(LeaseHeld);
    b.clock.now += 15; // 30 s since b first looked, only 15 s since a's renewal
    await expect(b.lease.acquire('v')).rejects.toThrow(LeaseHeld);
    b.clock.now += 5.1;
    expect(await b.lease.acquire('v')).toMatchObject({ holder: { hostId: 'b' } });
  });

  it('takes over at once from a holder that rebooted (new boot id, new host generation)', async () => {
    const a = node('a', new FakeClock(0));
    const b = node('b', new FakeClock(0));
    await a.keeper.register();
    await a.lease.acquire('v');
    await node('a', new FakeClock(0), 'b2').keeper.register(); // a came back after a reboot
    expect(await b.lease.acquire('v')).toMatchObject({ holder: { hostId: 'b' } });
  });

  it('treats a holder without any host lease as dead only after the lease time', async () => {
    const a = node('a', new FakeClock(0));
    const b = node('b', new FakeClock(0));
    await a.lease.acquire('v'); // a never registered (or its record was lost)
    await expect(b.lease.acquire('v')).rejects.toThrow(LeaseHeld);
    b.clock.now += 21;
    expect(await b.lease.acquire('v')).toMatchObject({ holder: { hostId: 'b' } });
  });

  it('lets exactly one of several hosts take over a dead holder\'s volume', async () => {
    const a = node('a', new FakeClock(0));
    await a.keeper.register();
    await a.lease.acquire('v');
    const others = ['b', 'c', 'd', 'e'].map((id) => node(id, new FakeClock(0)));
    for (const o of others) await expect(o.lease.acquire('v')).rejects.toThrow(LeaseHeld);
    for (const o of others) o.clock.now += 25;
    const results = await Promise.allSettled(others.map((o) => o.lease.acquire('v')));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect((await store().readOwnership('v'))?.value.generation).toBe(2);
  });

  it('refuses a forced release while the holder renews, and allows it once it is dead', async () => {
    const a = node('a', new FakeClock(0));
    const b = node('b', new FakeClock(0));
    await a.keeper.register();
    await a.lease.acquire('v');
    await expect(b.lease.forceRelease('v')).rejects.toThrow(LeaseHeld);
    b.clock.now += 21;
    expect(await b.lease.forceRelease('v')).toMatchObject({ state: 'free', generation: 2 });
  });

  it("without a fence (manual takeover), a dead holder's volume waits for the operator: the error names the command", async () => {
    const a = node('a', new FakeClock(0));
    const b = node('b', new FakeClock(0), 'b1', false);
    await a.keeper.register();
    await a.lease.acquire('v');
    await expect(b.lease.acquire('v')).rejects.toThrow(LeaseHeld); // alive: the usual wait
    b.clock.now += 21;
    const refused = b.lease.acquire('v');
    await expect(refused).rejects.toThrow(TakeoverNeedsOperator);
    await expect(b.lease.acquire('v')).rejects.toThrow(/looks dead \(host a stopped renewing its lease 21 s ago\).*ballast volume release v --force/);
    expect((await store().readOwnership('v'))?.value).toMatchObject({ state: 'held', holder: { hostId: 'a' }, generation: 1 });
    await b.lease.forceRelease('v'); // the operator's step
    expect(await b.lease.acquire('v')).toMatchObject({ holder: { hostId: 'b' }, generation: 3 });
  });

  it('a host counts its lease from when a renewal write started, not from when a slow one returned', async () => {
    // Another host may see the write land at once and count from there: a self-fence counted
    // from the write's return would come that much later than the others' takeover.
    const clock = new FakeClock(100);
    const s = store();
    const slowWrites = Object.assign(Object.create(s) as typeof s, {
      writeHostLease: async (lease: Parameters<typeof s.writeHostLease>[0]) => {
        await s.writeHostLease(lease);
        clock.now += 5; // the write returns 5 s after it landed
      },
    });
    const keeper = new HostLeaseKeeper(slowWrites, host('a'), timing, silentLogger(), clock.read);
    await keeper.register();
    expect(keeper.lastRenewed).toBe(100);
    expect(keeper.secondsSinceRenewal()).toBe(5);
    clock.now += 1;
    expect(await keeper.renew()).toBe(true);
    expect(keeper.lastRenewed).toBe(106);
    expect(keeper.secondsSinceRenewal()).toBe(5);
  });
});
