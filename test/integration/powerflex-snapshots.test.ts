import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PowerFlexArray } from '../../src/drivers/powerflex/array.js';
import { PowerFlexClient } from '../../src/drivers/powerflex/client.js';
import { powerflexName } from '../../src/drivers/powerflex/powerflex-driver.js';
import { snapshotPowerflexName } from '../../src/drivers/powerflex/snapshots.js';
import { VolumeAlreadyExists, type NewVolume } from '../../src/drivers/types.js';
import { InvalidOption, InvalidRequest, LeaseHeld, SnapshotExists, SnapshotNotFound, VolumeNotFound } from '../../src/errors.js';
import { hostIoLimits } from '../../src/volumes/io-limits.js';
import { volumeView } from '../../src/volumes/volume-view.js';
import { managerFixture } from '../helpers/manager-fixture.js';
import type { NvmeTcpExport } from '../../src/export.js';
import { silentLogger } from '../../src/log.js';
import { FakeClock, LEASE_TIMING as timing } from '../helpers/lease-host.js';
import { GiB, host, imageOf, mappedNqns, MiB, newDriver, PASSWORD, root, sim, unique, usePowerFlexSim, volume } from '../helpers/powerflex-lab.js';
import type { SimVolume } from '../simulators/powerflex.js';
import { samplesDigest, writeSamples } from '../helpers/sampled-data.js';
import { snapshotsThroughManager } from '../helpers/manager-snapshots.js';

// The powerflex backend's snapshots and clones (snapshotVolumes, a snapshot's data a copy of its
// source's file in the simulator), through the driver and the volume manager, and its IO limits
// (setMappedSdcLimits on each mapping), against the PowerFlex simulator on loopback. Volumes,
// mappings, logins and faults are in powerflex.test.ts.

usePowerFlexSim();

/** Where the snapshot tests write: the start, the middle, the last 64 KiB of an 8 GiB PowerFlex volume. */
const OFFSETS = [0, 3 * GiB + 12 * MiB, 8 * GiB - 64 * 1024];

const simVolume = (pfName: string): SimVolume => {
  const found = sim.volumeByName(pfName);
  if (!found) throw new Error(`the simulator has no volume ${pfName}`);
  return found;
};

/** Fresh random bytes at each offset of the PowerFlex volume's file, as a host's writes land there. */
const writeData = (name: string) => writeSamples(imageOf(simVolume(powerflexName(name))), OFFSETS);
/** A hash of the 64 KiB at each offset of a simulator volume's file. */
const dataOf = (pfName: string) => samplesDigest(imageOf(simVolume(pfName)), OFFSETS);

const snapshotCalls = () => sim.requests.filter((r) => r.startsWith('POST /api/instances/System::') && r.endsWith('/action/snapshotVolumes')).length;

describe('powerflex snapshots and clones (snapshotVolumes) against the simulator', () => {
  it('snapshots a volume as a PowerFlex snapshot named by a hash, its name in a record; its data frozen when taken; lists and removes it', async () => {
    const driver = newDriver();
    const name = unique('snap');
    const record = await driver.create(volume(name));
    await writeData(name);
    const before = await dataOf(powerflexName(name));
    const made = await driver.snapshots!.createSnapshot(record, 's1');
    expect(made).toMatchObject({ volume: name, name: 's1', sizeBytes: GiB, fstype: 'ext4', method: 'array', writtenBytes: 0 });
    const pf = snapshotPowerflexName(name, 's1');
    expect(pf).toMatch(/^bs-[0-9a-f]{28}$/);
    expect(simVolume(pf)).toMatchObject({ ancestorVolumeId: simVolume(powerflexName(name)).id, sizeInKb: 8 * 1024 * 1024, mappedHosts: [] });
    const recorded = JSON.parse(await readFile(join(root, 'powerflex', name, 'snapshots', 's1.json'), 'utf8')) as Record<string, unknown>;
    expect(recorded).toMatchObject({ volume: name, name: 's1', id: simVolume(pf).id, powerflexName: pf });
    await writeData(name); // the volume moves on; the snapshot keeps its data
    expect(await dataOf(powerflexName(name))).not.toBe(before);
    expect(await dataOf(pf)).toBe(before);

    const calls = snapshotCalls();
    await expect(driver.snapshots!.createSnapshot(record, 's1')).rejects.toBeInstanceOf(SnapshotExists);
    expect(snapshotCalls()).toBe(calls); // known from the record: the array is not asked
    await driver.snapshots!.createSnapshot(record, 's2');
    expect((await driver.snapshots!.listSnapshots(name)).map((s) => s.name)).toEqual(['s1', 's2']);
    expect((await driver.snapshots!.listSnapshots()).filter((s) => s.volume === name).map((s) => s.name)).toEqual(['s1', 's2']);
    // Another host sees them: the records are in the shared metadata root.
    expect((await newDriver().snapshots!.listSnapshots(name)).map((s) => s.name)).toEqual(['s1', 's2']);

    await driver.snapshots!.removeSnapshot(name, 's1');
    expect(sim.volumeByName(pf)).toBeUndefined();
    expect((await driver.snapshots!.listSnapshots(name)).map((s) => s.name)).toEqual(['s2']);
    await expect(driver.snapshots!.removeSnapshot(name, 's1')).rejects.toBeInstanceOf(SnapshotNotFound);
    await driver.snapshots!.removeSnapshot(name, 's2');
    await driver.destroy(name);
    expect([...sim.volumes.values()].filter((v) => [powerflexName(name), pf, snapshotPowerflexName(name, 's2')].includes(v.name))).toEqual([]);
  });

  it('clones from a snapshot and from the live volume: snapshots of those that become volumes, grown when asked larger, each exported on its own', async () => {
    const a = await host(5);
    const name = unique('src');
    const record = await a.driver.create(volume(name));
    await writeData(name);
    const atSnapshot = await dataOf(powerflexName(name));
    await a.driver.snapshots!.createSnapshot(record, 's1');
    await writeData(name);
    const live = await dataOf(powerflexName(name));

    const fromSnap = unique('c-snap');
    const fromLive = unique('c-live');
    expect(await a.driver.snapshots!.createFrom(volume(fromSnap), { volume: name, snapshot: 's1' })).toMatchObject({ name: fromSnap, method: 'array', ownership: { state: 'free' } });
    expect(await a.driver.snapshots!.createFrom(volume(fromLive, 10 * GiB), { volume: name })).toMatchObject({ name: fromLive, sizeBytes: 10 * GiB });
    await writeData(name); // later writes to the source reach neither clone
    expect(await dataOf(powerflexName(fromSnap))).toBe(atSnapshot);
    expect(await dataOf(powerflexName(fromLive))).toBe(live);
    expect(simVolume(powerflexName(fromSnap))).toMatchObject({ ancestorVolumeId: simVolume(snapshotPowerflexName(name, 's1')).id, sizeInKb: 8 * 1024 * 1024 });
    expect(simVolume(powerflexName(fromLive))).toMatchObject({ ancestorVolumeId: simVolume(powerflexName(name)).id, sizeInKb: 16 * 1024 * 1024 }); // grown to 10 GiB: two steps

    for (const clone of [fromSnap, fromLive]) {
      await a.lease.acquire(clone);
      const exp = (await a.driver.export(clone, a.initiator)) as NvmeTcpExport;
      expect(exp.nguid).toBe(`${simVolume(powerflexName(clone)).id}${sim.systemId}`);
      expect(mappedNqns(clone)).toEqual([a.initiator.nqn]);
      await a.driver.unexport(clone, a.initiator);
      await a.lease.release(clone);
    }
    // Removing the snapshot removes only it (ONLY_ME): its clone stays, with its data.
    await a.driver.snapshots!.removeSnapshot(name, 's1');
    expect(await dataOf(powerflexName(fromSnap))).toBe(atSnapshot);
    for (const n of [fromSnap, fromLive, name]) await a.driver.destroy(n);
    expect([...sim.volumes.values()].filter((v) => [name, fromSnap, fromLive].some((n) => v.name === powerflexName(n)))).toEqual([]);
  });

  it('hostile names, a missing source, a taken name or a refusal: a clear error, refused names before any call, nothing left behind', async () => {
    const driver = newDriver();
    const name = unique('bad');
    const record = await driver.create(volume(name));
    await driver.snapshots!.createSnapshot(record, 's1');
    const volumesBefore = sim.volumes.size;
    const requestsBefore = sim.requests.length;
    for (const hostile of ['../x', '', '-x', 'a/b', 'x'.repeat(129), 'a b', 's1.json/..']) {
      await expect(driver.snapshots!.createSnapshot(record, hostile)).rejects.toBeInstanceOf(InvalidOption);
      await expect(driver.snapshots!.removeSnapshot(name, hostile)).rejects.toBeInstanceOf(InvalidOption);
      await expect(driver.snapshots!.createFrom(volume(unique('c')), { volume: name, snapshot: hostile })).rejects.toBeInstanceOf(InvalidOption);
    }
    expect(sim.requests.length).toBe(requestsBefore);

    await expect(driver.snapshots!.createFrom(volume(unique('c')), { volume: name, snapshot: 'nope' })).rejects.toBeInstanceOf(SnapshotNotFound);
    await expect(driver.snapshots!.createFrom(volume(unique('c')), { volume: unique('missing') })).rejects.toBeInstanceOf(VolumeNotFound);
    await expect(driver.snapshots!.createSnapshot({ ...record, name: unique('missing') }, 's1')).rejects.toBeInstanceOf(VolumeNotFound);
    await expect(driver.snapshots!.createFrom(volume(name), { volume: name })).rejects.toBeInstanceOf(VolumeAlreadyExists);
    await expect(driver.snapshots!.createFrom(volume(name), { volume: name, snapshot: 's1' })).rejects.toBeInstanceOf(VolumeAlreadyExists);
    expect(sim.volumes.size).toBe(volumesBefore);

    // A refused snapshot: the gateway's words and the fix; no record.
    sim.refuseNext = { action: 'snapshotVolumes', message: 'The vTree has reached its snapshot limit' };
    const refused = await driver.snapshots!.createSnapshot(record, 's2').catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(InvalidRequest);
    expect((refused as Error).message).toMatch(/PowerFlex refused to snapshot volume bad-\w+ as bs-\w+ \(HTTP 500, error 16\): The vTree has reached its snapshot limit; check .*at most 126/);
    expect((await driver.snapshots!.listSnapshots(name)).map((s) => s.name)).toEqual(['s1']);
    // A clone whose growth is refused: its PowerFlex volume is deleted again, and no record is left.
    const big = unique('big');
    sim.refuseNext = { action: 'setVolumeSize', message: 'Not enough free capacity in the storage pool' };
    await expect(driver.snapshots!.createFrom(volume(big, 20 * GiB), { volume: name, snapshot: 's1' })).rejects.toThrow(/Not enough free capacity/);
    expect(sim.volumeByName(powerflexName(big))).toBeUndefined();
    expect(await driver.read(big)).toBeUndefined();
    expect((await readdir(join(root, 'powerflex'))).filter((e) => e.includes(big))).toEqual([]);
    // A PowerFlex volume with the snapshot's name but no record (a snapshot interrupted before its record): named, not adopted.
    const leftover = await new PowerFlexArray(new PowerFlexClient({ url: sim.url, apiVersion: 4, username: 'admin', password: PASSWORD, timeoutMs: 10_000 }, silentLogger())).snapshot(simVolume(powerflexName(name)).id, snapshotPowerflexName(name, 's3'), 'leave a leftover');
    await expect(driver.snapshots!.createSnapshot(record, 's3')).rejects.toThrow(`PowerFlex already has a volume ${snapshotPowerflexName(name, 's3')}, the name of snapshot s3 of volume ${name}, but ballast has no record of it`);
    expect(sim.volumes.size).toBe(volumesBefore + 1);
    await new PowerFlexArray(new PowerFlexClient({ url: sim.url, apiVersion: 4, username: 'admin', password: PASSWORD, timeoutMs: 10_000 }, silentLogger())).removeVolume(leftover!, 'leftover');

    await driver.snapshots!.removeSnapshot(name, 's1');
    await driver.destroy(name);
  });

  it('through the volume manager: Remove refuses a volume with snapshots; a clone from VOLUME@SNAPSHOT; --with-snapshots takes them with it', async () => {
    const passwordFile = join(root, 'pf.password');
    await writeFile(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
    const fixture = await managerFixture({
      backends: { powerflex: { url: sim.url, user: 'admin', password_file: passwordFile, protection_domain: 'pd1', storage_pool: 'pool1', metadata_root: join(root, 'mgr'), timeout_seconds: 10 } },
      profiles: { default: { backend: 'loop' }, pf: { backend: 'powerflex' } },
    });
    try {
      await snapshotsThroughManager(fixture.manager, unique, {
        profile: 'pf',
        writeData,
        dataOf: (name) => dataOf(powerflexName(name)),
        onArray: (name) => sim.volumeByName(powerflexName(name)) !== undefined,
        afterRemoveWithSnapshots: async (name, clone, data) => {
          expect(sim.volumeByName(snapshotPowerflexName(name, 'before'))).toBeUndefined();
          expect(await dataOf(powerflexName(clone))).toBe(data); // the clone outlives its source and snapshot
        },
      });
    } finally {
      await fixture.cleanup();
    }
  });
});

describe('powerflex IO limits: PowerFlex setMappedSdcLimits on each mapping, not the host throttle', () => {
  const limited = (name: string): NewVolume => ({ ...volume(name), ioLimits: { readIops: 500, writeIops: 500, readBps: 50 * MiB, writeBps: 50 * MiB } });
  const limitCalls = () => sim.requests.filter((r) => r.endsWith('/action/setMappedSdcLimits')).length;

  it('sets the limits on each new mapping, the holder after a takeover too; inspect says PowerFlex enforces them, and the host throttle leaves the volume alone', async () => {
    const clock = new FakeClock();
    const a = await host(6, clock);
    const b = await host(7, clock);
    const name = unique('lim');
    const record = await a.driver.create(limited(name));
    await a.lease.acquire(name);
    const calls = limitCalls();
    await a.driver.export(name, a.initiator);
    const pf = simVolume(powerflexName(name));
    const hostA = pf.mappedHosts[0]!;
    expect(Object.fromEntries(pf.limits)).toEqual({ [hostA]: { iopsLimit: 500, bandwidthLimitInKbps: 50 * 1024 } });
    expect((await a.driver.export(name, a.initiator), limitCalls())).toBe(calls + 1); // mapped already: its limits stand
    await a.driver.unexport(name, a.initiator);
    expect(pf.limits.size).toBe(0); // gone with the mapping
    await a.driver.export(name, a.initiator);
    expect(pf.limits.get(hostA)).toEqual({ iopsLimit: 500, bandwidthLimitInKbps: 51200 });
    expect(limitCalls()).toBe(calls + 2);
    // Another host takes the volume over: its new mapping gets the limits.
    await b.keeper.renew();
    await expect(b.lease.acquire(name)).rejects.toBeInstanceOf(LeaseHeld);
    clock.now += timing.leaseSeconds + 1;
    await b.lease.acquire(name);
    await b.driver.export(name, b.initiator);
    expect(mappedNqns(name)).toEqual([b.initiator.nqn]);
    expect([...pf.limits.entries()]).toEqual([[pf.mappedHosts[0], { iopsLimit: 500, bandwidthLimitInKbps: 51200 }]]);

    expect(a.driver.ioLimitsBy).toBe('PowerFlex setMappedSdcLimits, per mapping');
    const here = { hostId: 'h6', local: undefined, mountpoint: '', leaseAge: () => ({}), unhealthy: undefined };
    expect(volumeView(a.driver, record, here).status).toMatchObject({ ioLimits: 'read_iops=500,write_iops=500,read_bps=50 MiB,write_bps=50 MiB', ioLimitsBy: 'PowerFlex setMappedSdcLimits, per mapping' });
    expect(hostIoLimits({ driver: a.driver, record })).toBeUndefined();
    expect(hostIoLimits({ driver: { ...a.driver, ioLimitsBy: undefined } as never, record })).toEqual(record.ioLimits); // a backend without its own QoS: the host throttles

    await b.driver.unexport(name, b.initiator);
    await b.lease.release(name);
    await b.driver.destroy(name);
  });

  it('a volume without limits maps without setMappedSdcLimits; a refused setMappedSdcLimits leaves no mapping', async () => {
    const a = await host(8);
    const plain = unique('plain');
    await a.driver.create(volume(plain));
    await a.lease.acquire(plain);
    const calls = limitCalls();
    await a.driver.export(plain, a.initiator);
    expect(limitCalls()).toBe(calls);
    await a.driver.unexport(plain, a.initiator);
    await a.lease.release(plain);
    await a.driver.destroy(plain);

    const name = unique('lim-refused');
    await a.driver.create(limited(name));
    await a.lease.acquire(name);
    sim.refuseNext = { action: 'setMappedSdcLimits', message: 'QoS is not supported for this host' };
    await expect(a.driver.export(name, a.initiator)).rejects.toThrow(/PowerFlex refused to limit the IO of volume bl-lim-refused-\w+ on host \w+ \(HTTP 500, error 16\): QoS is not supported for this host/);
    expect(mappedNqns(name)).toEqual([]); // never mapped unthrottled
    await a.lease.release(name);
    await a.driver.destroy(name);
  });

  it.each([
    [{ readIops: 500 }, 'options read_iops=500, write_iops=unset: PowerFlex limits a mapping\'s IOPS for reads and writes together; give read_iops and write_iops the same value'],
    [{ readBps: 10 * MiB, writeBps: 20 * MiB }, `options read_bps=${10 * MiB}, write_bps=${20 * MiB}: PowerFlex limits a mapping's bandwidth for reads and writes together`],
    [{ readIops: 10, writeIops: 10 }, 'options read_iops, write_iops = 10: PowerFlex limits IOPS to more than 10'],
    [{ readBps: 1_500_000, writeBps: 1_500_000 }, 'options read_bps, write_bps = 1500000: PowerFlex limits bandwidth in whole MiB/s'],
  ])('refuses limits PowerFlex cannot apply (%j) before any call to the array', async (ioLimits, message) => {
    const driver = newDriver();
    await driver.checkHealth();
    const before = sim.requests.length;
    const name = unique('split');
    const err = await driver.create({ ...volume(name), ioLimits }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidOption);
    expect((err as Error).message).toContain(message);
    expect(sim.requests.length).toBe(before);
    expect(await driver.read(name)).toBeUndefined();
  });
});
