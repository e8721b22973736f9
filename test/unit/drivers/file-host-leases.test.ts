import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileHostLeases } from '../../../src/drivers/file-host-leases.js';
import { LocalFileStore } from '../../../src/drivers/file-store.js';
import { beaconName } from '../../../src/drivers/host-beacons.js';
import { silentLogger } from '../../../src/log.js';
import { HostLeaseKeeper } from '../../../src/ownership/host-lease.js';
import { HostMonitor } from '../../../src/ownership/host-monitor.js';
import type { Holder, HostLease } from '../../../src/ownership/types.js';
import { countingFileStore } from '../../helpers/counting-file-store.js';
import { FakeClock, LEASE_TIMING } from '../../helpers/lease-host.js';

// Several daemons on one file root, each with its own FileHostLeases (as separate processes
// have), and an observer whose FileStore calls are counted.

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'ballast-host-leases-'));
});
afterEach(async () => rm(root, { recursive: true, force: true }));

const clock = new FakeClock();
const hostsDir = () => join(root, '.hosts');

async function host(hostId: string, bootId = `boot-${hostId}`) {
  const keeper = new HostLeaseKeeper(new FileHostLeases(root, new LocalFileStore(), root), { hostId, bootId, hostname: hostId }, LEASE_TIMING, silentLogger(), clock.read);
  await keeper.register();
  return keeper;
}

function observer() {
  const counted = countingFileStore();
  const store = new FileHostLeases(root, counted.files, root);
  const monitor = new HostMonitor(LEASE_TIMING.leaseSeconds, clock.read);
  /** One round as LeaseUpkeep.observeHosts does it; returns the calls it made and what it saw. */
  const round = async () => {
    counted.reset();
    const leases = await store.listHostLeases();
    for (const lease of leases) monitor.observe(lease.hostId, lease);
    const seen = new Map(leases.map((l) => [l.hostId, l]));
    return { calls: Object.fromEntries(counted.calls), seen };
  };
  return { store, monitor, round, counted };
}

/** What an older daemon writes: the record alone, no beacon. */
async function writeRecordOnly(lease: HostLease): Promise<void> {
  await writeFile(join(hostsDir(), `${lease.hostId}.json`), `${JSON.stringify(lease)}\n`);
}

const holderOf = (lease: HostLease): Holder => ({ hostId: lease.hostId, bootId: lease.bootId, hostname: lease.hostname, hostGeneration: lease.generation });

describe('host leases on a file root, observed through beacons', () => {
  it('reads every record once, then only the listing: each renewal is seen within the round', async () => {
    const hosts = await Promise.all(['a', 'b', 'c'].map((id) => host(id)));
    const obs = observer();
    const first = await obs.round();
    expect(first.calls).toEqual({ readdir: 1, readFile: 3 });
    for (let r = 0; r < 3; r += 1) {
      for (const keeper of hosts) await keeper.renew();
      const { calls, seen } = await obs.round();
      expect(calls).toEqual({ readdir: 1 });
      for (const id of ['a', 'b', 'c']) expect(seen.get(id)).toMatchObject({ hostId: id, bootId: `boot-${id}`, generation: 1, renewSeq: 2 + r, leaseSeconds: 20 });
    }
  });

  it('keeps a renewing host alive and judges a silent one dead after lease.seconds on the observer clock', async () => {
    const [a, b] = await Promise.all([host('a'), host('b')]);
    const obs = observer();
    const { seen } = await obs.round();
    const [holderA, holderB] = [holderOf(seen.get('a')!), holderOf(seen.get('b')!)];
    for (let t = 0; t < 12; t += 1) {
      clock.now += 2;
      await a.renew(); // b has stopped
      await obs.round();
    }
    expect(obs.monitor.assess(holderA)).toMatchObject({ dead: false, quietSeconds: 0 });
    expect(obs.monitor.assess(holderB)).toMatchObject({ dead: true, quietSeconds: 24 });
    expect(b.generation).toBe(1);
  });

  it('reads the record of a host that joins, and of one that comes back with a new boot (new generation)', async () => {
    const a = await host('a');
    const obs = observer();
    await obs.round();
    await host('b');
    expect((await obs.round()).calls).toEqual({ readdir: 1, readFile: 1 });
    const rebooted = await host('a', 'boot-a-2');
    expect(rebooted.generation).toBe(2);
    const { calls, seen } = await obs.round();
    expect(calls).toEqual({ readdir: 1, readFile: 1 });
    expect(seen.get('a')).toMatchObject({ bootId: 'boot-a-2', generation: 2 });
    const previous = holderOf({ ...seen.get('a')!, bootId: 'boot-a', generation: 1 });
    expect(obs.monitor.assess(previous)).toMatchObject({ dead: true });
    expect((await obs.round()).calls).toEqual({ readdir: 1 });
    expect(a.generation).toBe(1);
  });

  it('falls back to the record for a host without a beacon (a daemon from before beacons), every round', async () => {
    await host('a');
    await writeRecordOnly({ hostId: 'old', bootId: 'boot-old', hostname: 'old', generation: 4, renewSeq: 10, leaseSeconds: 20, renewEverySeconds: 2, renewedAtWall: new Date().toISOString() });
    const obs = observer();
    await obs.round();
    for (let seq = 11; seq <= 13; seq += 1) {
      await writeRecordOnly({ hostId: 'old', bootId: 'boot-old', hostname: 'old', generation: 4, renewSeq: seq, leaseSeconds: 20, renewEverySeconds: 2, renewedAtWall: new Date().toISOString() });
      const { calls, seen } = await obs.round();
      expect(calls).toEqual({ readdir: 1, readFile: 1 });
      expect(seen.get('old')?.renewSeq).toBe(seq);
    }
  });

  it('reads the record again when a beacon falls behind it (a daemon downgraded since), and sees it move', async () => {
    const a = await host('a');
    const obs = observer();
    await obs.round();
    await a.renew(); // beacon and record at 2
    await obs.round();
    // The older daemon now renews only the record; the beacon stays at 2.
    const base = (await new FileHostLeases(root, new LocalFileStore(), root).readHostLease('a'))!;
    await writeRecordOnly({ ...base, renewSeq: 3 });
    // Until something reads the record, the beacon is all this observer sees; the holder's record is read before judging it.
    expect((await obs.round()).seen.get('a')?.renewSeq).toBe(2);
    expect((await obs.store.readHostLease('a'))?.renewSeq).toBe(3);
    await writeRecordOnly({ ...base, renewSeq: 4 });
    const { calls, seen } = await obs.round();
    expect(calls).toEqual({ readdir: 1, readFile: 1 });
    expect(seen.get('a')?.renewSeq).toBe(4);
  });

  it('a host that died between its beacon and its record never seems to move: listing and reading agree', async () => {
    const a = await host('a');
    const obs = observer();
    await obs.round();
    const holder = holderOf((await obs.store.readHostLease('a'))!);
    await a.renew(); // both at 2
    // The crash: the beacon moved to 3, the record stayed at 2.
    await rename(join(hostsDir(), beaconName('a', 1, 2)), join(hostsDir(), beaconName('a', 1, 3)));
    await obs.round();
    for (let t = 0; t < 11; t += 1) {
      clock.now += 2;
      // As OwnershipLease.assess does before judging a holder: the record itself, then the round.
      obs.monitor.observe('a', await obs.store.readHostLease('a'));
      await obs.round();
    }
    expect(obs.monitor.assess(holder)).toMatchObject({ dead: true, quietSeconds: 22 });
  });

  it('sees a host whose record was made afresh in the same boot move again within a round', async () => {
    const a = await host('a');
    for (let i = 0; i < 5; i += 1) await a.renew();
    const obs = observer();
    expect((await obs.round()).seen.get('a')?.renewSeq).toBe(6);
    await rm(join(hostsDir(), 'a.json'));
    const again = await host('a'); // same boot id: generation 1, renewSeq 1 again
    expect((await obs.round()).seen.get('a')).toMatchObject({ generation: 1, renewSeq: 1 });
    await again.renew();
    expect((await obs.round()).seen.get('a')?.renewSeq).toBe(2);
  });

  it('leaves out a damaged record it has not read before, and a host whose record is gone (its beacon alone is not a lease)', async () => {
    await host('a');
    await host('b');
    const obs = observer();
    await obs.round();
    await writeFile(join(hostsDir(), 'a.json'), '{"hostId": "a", "truncat');
    await rm(join(hostsDir(), 'b.json'));
    await writeFile(join(hostsDir(), beaconName('ghost', 1, 9)), '');
    // a's record was read intact before: its beacon still stands for it; b is gone.
    expect([...(await obs.round()).seen.keys()]).toEqual(['a']);
    expect([...(await observer().round()).seen.keys()]).toEqual([]);
    await expect(obs.store.readHostLease('a')).rejects.toThrow('is damaged');
    expect(await obs.store.readHostLease('b')).toBeUndefined();
  });

  it.each([
    ['the same boot (a daemon crash): its volumes stay its own', 'boot-a', false],
    ['a new boot: what the old boot held is dead', 'boot-a-2', true],
  ])('a host whose own record is damaged rewrites it when it registers, with the generation and past the renewSeq of its beacon; after %s', async (_case, bootId, oldHoldsDead) => {
    const a = await host('a');
    for (let i = 0; i < 3; i += 1) await a.renew();
    const obs = observer();
    const before = (await obs.round()).seen.get('a')!;
    await writeFile(join(hostsDir(), 'a.json'), '{"hostId":"a","bootId":"bo'); // a crash mid-write
    await rm(join(hostsDir(), beaconName('a', 1, 4)));
    await writeFile(join(hostsDir(), beaconName('a', 1, 6)), ''); // the beacon had got further than the record

    const again = await host('a', bootId);
    expect(again.generation).toBe(1);
    const record = await obs.store.readHostLease('a');
    expect(record).toMatchObject({ hostId: 'a', bootId, generation: 1, renewSeq: 7 });
    expect(await readdir(hostsDir())).toEqual(expect.arrayContaining([beaconName('a', 1, 7)]));
    obs.monitor.observe('a', record);
    expect(obs.monitor.assess(holderOf(before)).dead).toBe(oldHoldsDead);
  });

  it("refuses to guess a host's generation when its own record is damaged and no beacon is left, naming the file and the fix", async () => {
    await mkdir(hostsDir());
    await writeFile(join(hostsDir(), 'a.json'), ''); // left by a daemon from before beacons
    await expect(host('a')).rejects.toThrow(
      `this host's lease ${join(hostsDir(), 'a.json')} is damaged (empty) and nothing beside it tells the generation it had, so ballast does not rewrite it`,
    );
    await rm(join(hostsDir(), 'a.json')); // the fix
    expect((await host('a')).generation).toBe(1);
  });

  it('lists nothing, without failing, before any host registered', async () => {
    expect((await observer().round()).seen.size).toBe(0);
  });

  it('writes one beacon per host beside the records, the beacon first', async () => {
    const counted = countingFileStore();
    const keeper = new HostLeaseKeeper(new FileHostLeases(root, counted.files, root), { hostId: 'a', bootId: 'boot-a', hostname: 'a' }, LEASE_TIMING, silentLogger(), clock.read);
    await keeper.register();
    await keeper.renew();
    expect((await readdir(hostsDir())).sort()).toEqual([beaconName('a', 1, 2), 'a.json']);
    counted.reset();
    const order: string[] = [];
    const files = counted.files;
    const spy = new FileHostLeases(root, new Proxy(files, { get: (t, k, r) => { const v = Reflect.get(t, k, r) as unknown; return typeof v === 'function' ? (...args: unknown[]) => { order.push(String(k)); return (v as (...a: unknown[]) => unknown).apply(t, args); } : v; } }), root);
    await spy.writeHostLease({ ...(await spy.readHostLease('a'))!, renewSeq: 3 });
    expect(order.filter((k) => k === 'rename' || k === 'writeAtomic')).toEqual(['rename', 'writeAtomic']);
  });
});
