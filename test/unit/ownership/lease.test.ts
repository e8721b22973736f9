import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LoopDriver } from '../../../src/drivers/loop-driver.js';
import { LeaseHeld } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';
import { OwnershipLease } from '../../../src/ownership/lease.js';
import type { HostIdentity } from '../../../src/ownership/types.js';

const host = (id: string, boot = 'boot-1'): HostIdentity => ({ hostId: id, bootId: boot, hostname: `${id}.local` });

describe('OwnershipLease over the loop sidecar', () => {
  let root: string;
  const driver = () => new LoopDriver({ root, shared: true }, silentLogger());
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'ballast-lease-'));
    await driver().create({ name: 'v', profile: 'default', sizeBytes: 1 << 24, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  it('lets exactly one of many concurrent acquirers win; the others are told who holds it', async () => {
    const contenders = Array.from({ length: 12 }, (_, i) => new OwnershipLease(driver(), host(`node-${i}`), silentLogger()));
    const results = await Promise.allSettled(contenders.map((lease) => lease.acquire('v')));
    const winners = results.filter((r) => r.status === 'fulfilled');
    expect(winners).toHaveLength(1);
    const record = (await driver().readOwnership('v'))!.value;
    expect(record).toMatchObject({ state: 'held', generation: 1 });
    for (const r of results) {
      if (r.status === 'rejected') {
        expect(r.reason).toBeInstanceOf(LeaseHeld);
        expect(String(r.reason.message)).toContain(record.state === 'held' ? record.holder.hostId : '?');
      }
    }
  });

  it('is re-entrant for its holder and raises the generation on every new acquisition', async () => {
    const a = new OwnershipLease(driver(), host('a'), silentLogger());
    const b = new OwnershipLease(driver(), host('b'), silentLogger());
    expect((await a.acquire('v')).generation).toBe(1);
    expect((await a.acquire('v')).generation).toBe(1);
    await expect(b.acquire('v')).rejects.toThrow(/volume v is in use on host a \(a\.local\)/);
    await a.release('v');
    expect((await b.acquire('v')).generation).toBe(2);
  });

  it('does not release a volume held by another host', async () => {
    const a = new OwnershipLease(driver(), host('a'), silentLogger());
    const b = new OwnershipLease(driver(), host('b'), silentLogger());
    await a.acquire('v');
    await b.release('v');
    expect((await driver().readOwnership('v'))!.value).toMatchObject({ state: 'held', holder: { hostId: 'a' } });
    await expect(b.assertNotHeldElsewhere('v')).rejects.toThrow(LeaseHeld);
    await a.assertNotHeldElsewhere('v');
  });

  it('re-acquires with a new generation after its own host rebooted (new boot id)', async () => {
    await new OwnershipLease(driver(), host('a', 'boot-1'), silentLogger()).acquire('v');
    const afterReboot = new OwnershipLease(driver(), host('a', 'boot-2'), silentLogger());
    const record = await afterReboot.acquire('v');
    expect(record).toMatchObject({ generation: 2, holder: { bootId: 'boot-2' } });
  });

  it('rejects a write from a stale revision, so an old writer cannot undo a newer acquisition', async () => {
    const store = driver();
    const before = (await store.readOwnership('v'))!;
    await new OwnershipLease(store, host('a'), silentLogger()).acquire('v');
    await expect(store.writeOwnership('v', before.revision, { state: 'free', generation: 0, updatedAt: 'x' })).rejects.toThrow(/changed/);
  });
});
