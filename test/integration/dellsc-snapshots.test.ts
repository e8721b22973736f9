import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DellScBackendConfig } from '../../src/config/schema.js';
import { DellScArray } from '../../src/drivers/dellsc/array.js';
import { DellScClient } from '../../src/drivers/dellsc/client.js';
import { dellscDriver, scName } from '../../src/drivers/dellsc/dellsc-driver.js';
import { VolumeAlreadyExists, type NewVolume } from '../../src/drivers/types.js';
import { BackendUnavailable, InvalidOption, SnapshotExists, SnapshotNotFound, VolumeNotFound } from '../../src/errors.js';
import type { IscsiExport } from '../../src/export.js';
import { silentLogger } from '../../src/log.js';
import { leaseHost } from '../helpers/lease-host.js';
import { managerFixture } from '../helpers/manager-fixture.js';
import { inquiry, readCapacity, requireTgtTools, Tgtd } from '../lab/tgtd.js';
import { DellScSim, type ScSimVolume } from '../simulators/dellsc.js';
import { TgtScDataPlane } from '../simulators/sc-tgt-data-plane.js';
import { samplesDigest, writeSamples } from '../helpers/sampled-data.js';
import { snapshotsThroughManager } from '../helpers/manager-snapshots.js';

// Snapshots and clones on the dellsc backend against the Dell Storage Manager simulator, whose
// volumes are files served by this test's own tgtd: a replay is a sparse copy of the volume's
// file taken when it is made, a view volume a new LUN whose file starts as its replay's. The
// bytes are read from those files (no libiscsi tool here reads blocks); each clone's LUN is
// checked as a host sees it (iscsi-inq, iscsi-readcapacity16). Needs root and the tgt and
// libiscsi tools.

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const SSN = 64702;
const PASSWORD = 'sc-snap-secret-71c0';
/** Where the test writes: the start, the middle, the last 64 KiB of a 1 GiB volume. */
const OFFSETS = [0, 300 * MiB, GiB - 64 * 1024];

let sim: DellScSim;
let plane: TgtScDataPlane;
let tgtd: Tgtd;
let root: string;

const backendConfig = (): DellScBackendConfig => ({
  url: sim.url,
  user: 'Admin',
  password_file: '/unused',
  ssn: SSN,
  folder: 'ballast',
  metadata_root: root,
  multipath: true,
  reservations: true,
  api_version: '4.0',
  timeout_seconds: 10,
});

function newDriver(): ReturnType<typeof dellscDriver> {
  const backend = backendConfig();
  const client = new DellScClient({ url: backend.url, username: backend.user, password: PASSWORD, apiVersion: backend.api_version, timeoutMs: backend.timeout_seconds * 1000 }, silentLogger());
  return dellscDriver(new DellScArray(client, backend.ssn, backend.folder), backend, new Map(), silentLogger());
}

const volume = (name: string, sizeBytes = GiB): NewVolume => ({ name, profile: 'default', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
const unique = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;

const scVolume = (name: string): ScSimVolume => {
  const found = sim.volumesNamed(scName(name));
  expect(found).toHaveLength(1);
  return found[0]!;
};

/** Fresh random bytes at each offset of the volume's file, as a host's writes land there. */
const writeData = (name: string) => writeSamples(plane.file(scVolume(name)), OFFSETS);
const dataOf = (name: string) => samplesDigest(plane.file(scVolume(name)), OFFSETS);
const liveReplays = (name: string) => sim.liveReplays(scVolume(name).instanceId);

beforeAll(async () => {
  requireTgtTools();
  tgtd = await Tgtd.start();
  root = await mkdtemp(join(tmpdir(), 'ballast-dellsc-snap-'));
  plane = new TgtScDataPlane((args) => tgtd.tgtadm(args), root, { address: '127.0.0.1', port: tgtd.iscsiPort });
  sim = new DellScSim({ username: 'Admin', password: PASSWORD, ssn: SSN, apiVersion: '4.0', capacityGiB: 12, dataPlane: plane });
  await sim.start();
});

afterAll(async () => {
  await sim?.stop();
  await tgtd?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('dellsc snapshots (replays) and clones (view volumes) against the simulator and tgtd', () => {
  it('creates, lists and removes a snapshot as a replay named in its description, its data frozen when taken', async () => {
    const driver = newDriver();
    await driver.start();
    const name = unique('snap');
    const record = await driver.create(volume(name));
    await writeData(name);
    const before = await dataOf(name);
    const made = await driver.snapshots!.createSnapshot(record, 's1');
    expect(made).toMatchObject({ volume: name, name: 's1', sizeBytes: GiB, fstype: 'ext4', method: 'array' });
    const [replay] = liveReplays(name);
    expect(liveReplays(name)).toHaveLength(1);
    expect(replay).toMatchObject({ description: 'ballast snapshot s1', expireTime: 0 });
    await writeData(name); // the volume moves on; the replay keeps its data
    expect(await dataOf(name)).not.toBe(before);
    expect(await samplesDigest(plane.replayFile(replay!), OFFSETS)).toBe(before);
    expect((await stat(plane.replayFile(replay!))).blocks * 512).toBeLessThan(4 * MiB); // a sparse copy

    await expect(driver.snapshots!.createSnapshot(record, 's1')).rejects.toBeInstanceOf(SnapshotExists);
    expect(liveReplays(name)).toHaveLength(1);
    await driver.snapshots!.createSnapshot(record, 's2');
    expect((await driver.snapshots!.listSnapshots(name)).map((s) => s.name)).toEqual(['s1', 's2']);
    expect((await driver.snapshots!.listSnapshots()).filter((s) => s.volume === name).map((s) => s.name)).toEqual(['s1', 's2']);

    await driver.snapshots!.removeSnapshot(name, 's1');
    expect(liveReplays(name).map((r) => r.description)).toEqual(['ballast snapshot s2']);
    expect(sim.replays.get(replay!.instanceId)).toMatchObject({ markedForExpiration: true }); // still listed by SC, not by ballast
    expect((await driver.snapshots!.listSnapshots(name)).map((s) => s.name)).toEqual(['s2']);
    await expect(driver.snapshots!.removeSnapshot(name, 's1')).rejects.toBeInstanceOf(SnapshotNotFound);
    await driver.snapshots!.removeSnapshot(name, 's2');
    await driver.destroy(name);
    expect(sim.volumesNamed(scName(name))).toHaveLength(0);
  });

  it('clones from a snapshot and from the live volume: view volumes with the data of that moment, each its own LUN', async () => {
    const driver = newDriver();
    await driver.start();
    const { lease } = await leaseHost(driver, { hostId: 'sc1', bootId: 'b1', hostname: 'sc-host-1' });
    const initiator = { hostId: 'sc1', iqn: 'iqn.2026-12.dev.ballast:snap1' };
    const name = unique('src');
    const record = await driver.create(volume(name));
    await writeData(name);
    const atSnapshot = await dataOf(name);
    await driver.snapshots!.createSnapshot(record, 's1');
    await writeData(name);
    const live = await dataOf(name);

    const fromSnap = unique('c-snap');
    const fromLive = unique('c-live');
    expect(await driver.snapshots!.createFrom(volume(fromSnap), { volume: name, snapshot: 's1' })).toMatchObject({ name: fromSnap, method: 'array', ownership: { state: 'free' } });
    expect(await driver.snapshots!.createFrom(volume(fromLive, 2 * GiB), { volume: name })).toMatchObject({ name: fromLive, sizeBytes: 2 * GiB });
    await writeData(name); // later writes to the source reach neither clone
    expect(await dataOf(fromSnap)).toBe(atSnapshot);
    expect(await dataOf(fromLive)).toBe(live);
    expect(scVolume(fromSnap)).toMatchObject({ notes: `ballast volume ${fromSnap}`, sizeBytes: GiB });
    expect(scVolume(fromLive).sizeBytes).toBe(2 * GiB); // the view grown to the clone's size
    expect(liveReplays(name).map((r) => r.description)).toEqual(['ballast snapshot s1']); // the temporary replay was expired

    const targets = new Set<string>();
    for (const clone of [fromSnap, fromLive]) {
      await lease.acquire(clone);
      const exp = (await driver.export(clone, initiator)) as IscsiExport;
      targets.add(exp.iqn);
      expect(exp.iqn).toBe(`iqn.2002-03.com.compellent:5000d31000${scVolume(clone).index}`);
      expect((await inquiry(initiator.iqn, exp.portals[0]!, exp.iqn, exp.lun)).stdout).toMatch(/Vendor:COMPELNT/);
      expect((await readCapacity(initiator.iqn, exp.portals[0]!, exp.iqn, exp.lun)).lastLba).toBe(scVolume(clone).sizeBytes / 512 - 1);
      await driver.unexport(clone, initiator);
      await lease.release(clone);
    }
    expect(targets.size).toBe(2);

    await driver.destroy(fromSnap);
    await driver.destroy(fromLive);
    await driver.snapshots!.removeSnapshot(name, 's1');
    await driver.destroy(name);
    expect([...sim.volumes.values()].filter((v) => [name, fromSnap, fromLive].some((n) => v.name === scName(n)))).toEqual([]);
  });

  it('bad input, a missing source or a refused view: a clear error and nothing left on the array', async () => {
    const driver = newDriver();
    await driver.start();
    const name = unique('bad');
    const record = await driver.create(volume(name));
    await driver.snapshots!.createSnapshot(record, 's1');
    const volumesBefore = sim.volumes.size;
    const requestsBefore = sim.requests.length;
    for (const hostile of ['../x', '', '-x', 'a/b', 'x'.repeat(129)]) {
      await expect(driver.snapshots!.createSnapshot(record, hostile)).rejects.toBeInstanceOf(InvalidOption);
      await expect(driver.snapshots!.removeSnapshot(name, hostile)).rejects.toBeInstanceOf(InvalidOption);
      await expect(driver.snapshots!.createFrom(volume(unique('c')), { volume: name, snapshot: hostile })).rejects.toBeInstanceOf(InvalidOption);
    }
    expect(sim.requests.length).toBe(requestsBefore); // refused before any call

    await expect(driver.snapshots!.createFrom(volume(unique('c')), { volume: name, snapshot: 'nope' })).rejects.toBeInstanceOf(SnapshotNotFound);
    await expect(driver.snapshots!.createFrom(volume(unique('c')), { volume: unique('missing') })).rejects.toBeInstanceOf(VolumeNotFound);
    await expect(driver.snapshots!.createSnapshot({ ...record, name: unique('missing') }, 's1')).rejects.toBeInstanceOf(VolumeNotFound);
    await expect(driver.snapshots!.createFrom(volume(name), { volume: name })).rejects.toBeInstanceOf(VolumeAlreadyExists);
    await expect(driver.snapshots!.createFrom(volume(name), { volume: name, snapshot: 's1' })).rejects.toBeInstanceOf(VolumeAlreadyExists);
    expect(sim.volumes.size).toBe(volumesBefore);
    expect(liveReplays(name)).toHaveLength(1);

    // 12 GiB of capacity, 1 + 1 used: a 20 GiB clone's view is made, then refused its growth.
    const big = unique('big');
    await expect(driver.snapshots!.createFrom(volume(big, 20 * GiB), { volume: name, snapshot: 's1' })).rejects.toThrow(/Not enough free space/);
    await expect(driver.snapshots!.createFrom(volume(big, 20 * GiB), { volume: name })).rejects.toThrow(/Not enough free space/);
    // A view refused outright (no room for even 1 GiB), from the live volume: the temporary replay goes too.
    const filler = unique('fill');
    await driver.create(volume(filler, 11 * GiB));
    await expect(driver.snapshots!.createFrom(volume(big), { volume: name })).rejects.toThrow(/Not enough free space/);
    await driver.destroy(filler);
    expect(sim.volumes.size).toBe(volumesBefore);
    expect(sim.volumesNamed(scName(big))).toEqual([]);
    expect(liveReplays(name).map((r) => r.description)).toEqual(['ballast snapshot s1']);
    const temporary = [...sim.replays.values()].filter((r) => r.volume === scVolume(name).instanceId && r.description === `ballast clone ${big} of ${name}`);
    expect(temporary.map((r) => [r.expireTime, r.markedForExpiration])).toEqual([[60, true], [60, true]]); // made, then expired
    expect(await driver.read(big)).toBeUndefined();
    expect((await readdir(root)).filter((e) => e.includes(big))).toEqual([]);
    expect((await readdir(join(root, `sc-${SSN}`))).filter((e) => e.includes(big))).toEqual([]);

    await driver.snapshots!.removeSnapshot(name, 's1');
    await driver.destroy(name);
  });

  it('through the volume manager: Remove refuses a volume with snapshots, and --with-snapshots takes them with it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ballast-dellsc-mgr-'));
    const passwordFile = join(dir, 'dsm.password');
    await writeFile(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
    const fixture = await managerFixture({
      backends: { dellsc: { url: sim.url, user: 'Admin', password_file: passwordFile, ssn: SSN, metadata_root: root, timeout_seconds: 10 } },
      profiles: { default: { backend: 'loop' }, sc: { backend: 'dellsc' } },
    });
    try {
      await snapshotsThroughManager(fixture.manager, unique, {
        profile: 'sc',
        writeData,
        dataOf,
        onArray: (name) => sim.volumesNamed(scName(name)).length === 1,
        afterRemoveWithSnapshots: () => {
          expect([...sim.replays.values()].filter((r) => r.description === 'ballast snapshot before' && !r.markedForExpiration && !sim.volumes.has(r.volume))).toEqual([]);
        },
      });
    } finally {
      await fixture.cleanup();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a volume deleted on the array behind ballast: a clear error naming it', async () => {
    const driver = newDriver();
    await driver.start();
    const name = unique('gone');
    const record = await driver.create(volume(name));
    sim.volumes.delete(scVolume(name).instanceId); // deleted on the array behind ballast's back
    const err = await driver.snapshots!.createSnapshot(record, 's1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailable);
    expect((err as Error).message).toMatch(/refused to list the replays of volume ballast-gone-\w+ \(HTTP 404\): no volume [\d.]+; Storage Center 64702 has no volume [\d.]+: it was deleted on the array, outside ballast/);
  });
});
