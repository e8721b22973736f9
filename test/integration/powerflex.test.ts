import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Writable } from 'node:stream';
import winston from 'winston';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PowerFlexBackendConfig } from '../../src/config/schema.js';
import { PowerFlexArray } from '../../src/drivers/powerflex/array.js';
import { PowerFlexClient } from '../../src/drivers/powerflex/client.js';
import { powerflexDriver, powerflexName, subsystemNqnOf } from '../../src/drivers/powerflex/powerflex-driver.js';
import { snapshotPowerflexName } from '../../src/drivers/powerflex/snapshots.js';
import { VolumeAlreadyExists, type NewVolume } from '../../src/drivers/types.js';
import { BackendUnavailable, InvalidOption, InvalidRequest, LeaseHeld, SnapshotExists, SnapshotNotFound, VolumeInUse, VolumeNotFound } from '../../src/errors.js';
import { hostIoLimits } from '../../src/volumes/io-limits.js';
import { volumeView } from '../../src/volumes/volume-view.js';
import { managerFixture } from '../helpers/manager-fixture.js';
import type { NvmeTcpExport } from '../../src/export.js';
import { createLogger, silentLogger } from '../../src/log.js';
import { closedPort, FakeClock, LEASE_TIMING, leaseHost } from '../helpers/lease-host.js';
import { BallastProcess } from '../lab/ballast.js';
import { callOk, callPlugin } from '../helpers/plugin-client.js';
import { PowerFlexSim, type DataPlane, type SimVolume } from '../simulators/powerflex.js';

// The powerflex backend against the PowerFlex simulator (test/simulators/powerflex.ts) on
// loopback, with the records in a temporary metadata root: provisioning, the single mapping as
// the array's lock, takeover unmapping the former holder, both login styles, expired sessions,
// and every fault a clear error with nothing left behind. The NVMe/TCP data path behind the
// simulator is the VM lab's (vm/nvme-tcp.test.ts, with nvmet).

const GiB = 2 ** 30;
const timing = LEASE_TIMING;
const PASSWORD = 'pf-secret-7d1c';

const execFileAsync = promisify(execFile);
let sim: PowerFlexSim;
let root: string;
let images: string;

const MiB = 2 ** 20;
/** Where the snapshot tests write: the start, the middle, the last 64 KiB of an 8 GiB PowerFlex volume. */
const OFFSETS = [0, 3 * GiB + 12 * MiB, 8 * GiB - 64 * 1024];

/** The simulator's volumes as sparse files, a snapshot a copy of its source's (the VM lab's nvmet plane does the same). */
const filePlane = (): DataPlane => ({
  created: async (v) => {
    await writeFile(imageOf(v), '');
    await truncate(imageOf(v), v.sizeInKb * 1024);
  },
  snapshotted: async (source, snapshot) => void (await execFileAsync('cp', ['--sparse=always', imageOf(source), imageOf(snapshot)])),
  resized: (v) => truncate(imageOf(v), v.sizeInKb * 1024),
  removed: (v) => unlink(imageOf(v)),
  mapped: async () => undefined,
  unmapped: async () => undefined,
});
const imageOf = (v: SimVolume) => join(images, `${v.id}.img`);

const backendConfig = (overrides: Partial<PowerFlexBackendConfig> = {}): PowerFlexBackendConfig => ({
  url: sim.url,
  api_version: 4,
  user: 'admin',
  password_file: '/unused',
  protection_domain: 'pd1',
  storage_pool: 'pool1',
  provisioning: 'thin',
  metadata_root: root,
  timeout_seconds: 10,
  ...overrides,
});

function newDriver(overrides: Partial<PowerFlexBackendConfig> = {}, password = PASSWORD, log = silentLogger()): ReturnType<typeof powerflexDriver> {
  const backend = backendConfig(overrides);
  const client = new PowerFlexClient({ url: backend.url, apiVersion: backend.api_version, username: backend.user, password, timeoutMs: backend.timeout_seconds * 1000 }, log);
  return powerflexDriver(new PowerFlexArray(client), backend, new Map([['small', { protectionDomain: 'pd1', storagePool: 'small' }]]), log);
}

const volume = (name: string, sizeBytes = GiB): NewVolume => ({ name, profile: 'default', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
const unique = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;

/** One ballast host: its own gateway session and driver, host lease and ownership lease. */
async function host(index: number, clock = new FakeClock()) {
  const driver = newDriver();
  const identity = { hostId: `h${index}`, bootId: 'b1', hostname: `host-${index}` };
  const { keeper, lease } = await leaseHost(driver, identity, clock);
  return { driver, keeper, lease, clock, initiator: { hostId: identity.hostId, nqn: `nqn.2014-08.org.nvmexpress:uuid:0000000${index}-0000-4000-8000-000000000000` } };
}

/** The simulator's host ids the volume is mapped to, as host NQNs. */
const mappedNqns = (name: string) => (sim.volumeByName(powerflexName(name))?.mappedHosts ?? []).map((id) => sim.hosts.get(id)?.nqn);

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'ballast-powerflex-'));
  images = join(root, 'images');
  await mkdir(images);
  sim = new PowerFlexSim({ apiVersion: 4, username: 'admin', password: PASSWORD, domains: { pd1: { pool1: 64, small: 8 } }, sdtIps: ['127.0.0.1', '127.0.0.2'], dataPlane: filePlane() });
  await sim.start();
});

afterAll(async () => {
  await sim.stop();
  await rm(root, { recursive: true, force: true });
});

beforeEach(() => {
  sim.fault = 'none';
  sim.refuseNext = undefined;
});

describe('powerflex backend against the PowerFlex simulator', () => {
  it('creates a volume of whole 8 GiB steps under a name of at most 31 characters, lists, grows and deletes it', async () => {
    const driver = newDriver();
    await driver.checkHealth();
    const name = unique('pf');
    const record = await driver.create(volume(name, 3 * GiB));
    expect(record).toMatchObject({ name, sizeBytes: 3 * GiB, ownership: { state: 'free' } });
    expect(sim.volumeByName(`bl-${name}`)).toMatchObject({ sizeInKb: 8 * 1024 * 1024, volumeType: 'ThinProvisioned', mappedHosts: [] });
    expect((await driver.list()).map((v) => v.name)).toContain(name);
    await expect(driver.create(volume(name))).rejects.toBeInstanceOf(VolumeAlreadyExists);
    await driver.grow(name, 10 * GiB);
    expect(sim.volumeByName(`bl-${name}`)!.sizeInKb).toBe(16 * 1024 * 1024);
    expect((await driver.read(name))!.value.sizeBytes).toBe(10 * GiB);
    await driver.destroy(name);
    expect(sim.volumeByName(`bl-${name}`)).toBeUndefined();
    expect(await driver.read(name)).toBeUndefined();
    await driver.destroy(name); // a missing volume: nothing to do
  });

  it('gives long names distinct PowerFlex names of 31 characters', async () => {
    const driver = newDriver();
    const long = `${'x'.repeat(40)}-${randomBytes(2).toString('hex')}`;
    const names = [`${long}-one`, `${long}-two`];
    for (const name of names) await driver.create(volume(name));
    const pf = names.map(powerflexName);
    expect(pf.map((n) => n.length)).toEqual([31, 31]);
    expect(pf[0]).not.toBe(pf[1]);
    for (const name of names) expect(sim.volumeByName(powerflexName(name))).toBeDefined();
    for (const name of names) await driver.destroy(name);
  });

  it('exports to the holder only: one mapping at a time, the NVMe namespace named by volume and system id, portals from the SDTs', async () => {
    const a = await host(1);
    const b = await host(2, a.clock);
    const name = unique('map');
    await a.driver.create(volume(name));
    await a.lease.acquire(name);
    const exp = (await a.driver.export(name, a.initiator)) as NvmeTcpExport;
    const id = sim.volumeByName(powerflexName(name))!.id;
    expect(exp).toEqual({ transport: 'nvme-tcp', subsystemNqn: subsystemNqnOf(sim.systemId), portals: ['127.0.0.1:4420', '127.0.0.2:4420'], nguid: `${id}${sim.systemId}` });
    expect(mappedNqns(name)).toEqual([a.initiator.nqn]);
    expect(sim.hosts.size).toBeGreaterThanOrEqual(1);
    // A second host: refused by the lease, and by the array itself (error 306) were it to try.
    await expect(b.lease.acquire(name)).rejects.toBeInstanceOf(LeaseHeld);
    await expect(b.driver.export(name, b.initiator)).rejects.toThrow(`volume ${name} is not leased to host h2`);
    const bArray = new PowerFlexArray(new PowerFlexClient({ url: sim.url, apiVersion: 4, username: 'admin', password: PASSWORD, timeoutMs: 10_000 }, silentLogger()));
    expect(await bArray.mapOnly(id, powerflexName(name), await bArray.hostFor(b.initiator.nqn, 'bl-h2'))).toBe(false);
    expect(mappedNqns(name)).toEqual([a.initiator.nqn]);
    // Export again (a remount): still one mapping. Then unexport and release.
    await a.driver.export(name, a.initiator);
    expect(mappedNqns(name)).toEqual([a.initiator.nqn]);
    await expect(a.driver.destroy(name)).rejects.toBeInstanceOf(VolumeInUse);
    await a.driver.unexport(name, a.initiator);
    expect(mappedNqns(name)).toEqual([]);
    await a.lease.release(name);
    await a.driver.destroy(name);
    expect(sim.volumeByName(powerflexName(name))).toBeUndefined();
  });

  it('takeover after the holder stops renewing unmaps the former holder at the array before mapping the new one', async () => {
    const clock = new FakeClock();
    const a = await host(3, clock);
    const b = await host(4, clock);
    const name = unique('take');
    await a.driver.create(volume(name));
    await a.lease.acquire(name);
    await a.driver.export(name, a.initiator);
    await b.keeper.renew();
    await expect(b.lease.acquire(name)).rejects.toBeInstanceOf(LeaseHeld); // first sight of a's lease
    clock.now += timing.leaseSeconds + 1; // a never renews again
    expect(await b.lease.acquire(name)).toMatchObject({ state: 'held', generation: 2 });
    expect(mappedNqns(name)).toEqual([a.initiator.nqn]); // the record moved; the array not yet
    await b.driver.export(name, b.initiator);
    expect(mappedNqns(name)).toEqual([b.initiator.nqn]);
    await b.driver.unexport(name, b.initiator);
    await b.lease.release(name);
    await b.driver.destroy(name);
  });

  it('logs in the 3.x way (GET /api/login, Basic user:token), and again once when the gateway expired the session', async () => {
    const v3 = new PowerFlexSim({ apiVersion: 3, username: 'admin', password: PASSWORD });
    await v3.start();
    try {
      const driver = newDriver({ url: v3.url, api_version: 3 });
      const name = unique('v3');
      await driver.create(volume(name));
      v3.expireSessions();
      await driver.grow(name, 9 * GiB);
      expect(v3.requests.filter((r) => r === 'GET /api/login')).toHaveLength(2);
      expect(v3.volumeByName(powerflexName(name))!.sizeInKb).toBe(16 * 1024 * 1024);
      await driver.destroy(name);
      // A 4.x configuration against this 3.x gateway: its login is not there.
      await expect(newDriver({ url: v3.url, api_version: 4 }).create(volume(unique('wrong')))).rejects.toThrow(/did not issue a token \(HTTP 404 from \/rest\/auth\/login\); is backends.powerflex.api_version \(4\) the gateway's\?/);
    } finally {
      await v3.stop();
    }
  });

  it('an expired 4.x session: one login again, and the call succeeds', async () => {
    const driver = newDriver();
    await driver.checkHealth();
    const logins = () => sim.requests.filter((r) => r === 'POST /rest/auth/login').length;
    const before = logins();
    sim.expireSessions();
    await driver.checkHealth(); // cached pool ids: the next call to the array is create's
    const name = unique('exp');
    await driver.create(volume(name));
    expect(logins()).toBe(before + 1);
    await driver.destroy(name);
  });

  it('wrong credentials, an unknown pool or domain, or a size beyond the pool: a clear error and nothing made', async () => {
    const name = unique('bad');
    const log: string[] = [];
    const capture = createLogger('debug').clear().add(new winston.transports.Stream({ stream: new Writable({ write: (chunk: Buffer, _enc, done) => void (log.push(chunk.toString()), done()) }) }));
    await newDriver({}, PASSWORD, capture).checkHealth();
    const refused = await newDriver({}, 'wrong-password', capture).create(volume(name)).catch((e: unknown) => e);
    expect((refused as Error).message).toMatch(/refused user admin: check backends.powerflex.user and its password_file$/);
    await expect(newDriver({ storage_pool: 'nope' }).create(volume(name))).rejects.toThrow('PowerFlex has no storage pool nope in protection domain pd1 (Could not find the storage pool nope); check storage_pool');
    await expect(newDriver({ protection_domain: 'nopd' }).checkHealth()).rejects.toThrow('PowerFlex has no protection domain nopd');
    await expect(newDriver({ storage_pool: 'small' }).create(volume(name, 9 * GiB))).rejects.toThrow(/Not enough free capacity in the storage pool; check the free space of storage pool small in protection domain pd1/);
    expect(sim.volumeByName(powerflexName(name))).toBeUndefined();
    expect((await readdir(root, { recursive: true })).filter((e) => e.includes(name))).toEqual([]);
    expect(log.join('\n')).toContain('"level":"info"'); // the logger did capture the driver's lines
    expect(log.join('\n')).not.toMatch(/wrong-password|pf-secret/);
  });

  it('a gateway that is down, answers 503 or never answers: BackendUnavailable within the bound, nothing made', async () => {
    const port = await closedPort();
    const name = unique('down');
    await expect(newDriver({ url: `http://127.0.0.1:${port}` }).create(volume(name))).rejects.toThrow(/the PowerFlex gateway at http:\/\/127.0.0.1:\d+ is unreachable, could not log in: .*ECONNREFUSED/);
    const driver = newDriver({ timeout_seconds: 1 });
    await driver.checkHealth();
    sim.fault = 'unavailable';
    await expect(driver.create(volume(name))).rejects.toThrow(/failed to create volume bl-down-\w+ \(HTTP 503\)/);
    sim.fault = 'hang';
    const started = performance.now();
    const err = await driver.create(volume(name)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailable);
    expect((err as Error).message).toMatch(/no answer within 1 s/);
    expect(performance.now() - started).toBeLessThan(5_000);
    sim.fault = 'none';
    expect(sim.volumeByName(powerflexName(name))).toBeUndefined();
    expect(await driver.read(name)).toBeUndefined();
  });

  it('through the daemon: Create, Get, List and Remove on the protocol with the password from its file; a Mount on a host without NVMe/TCP fails clearly and leaves the volume free and unmapped', async () => {
    const daemon = await BallastProcess.create({
      config: {
        host: { id: 'pf-daemon' },
        backends: { powerflex: { url: sim.url, user: 'admin', password_file: '', protection_domain: 'pd1', storage_pool: 'pool1', metadata_root: join(root, 'daemon'), timeout_seconds: 10 } },
        profiles: { default: { backend: 'powerflex' }, small: { backend: 'powerflex', storage_pool: 'small' } },
      },
    });
    const passwordFile = join(daemon.dir, 'powerflex.password');
    await writeFile(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
    const config = (await readFile(daemon.configPath, 'utf8')).replace("password_file: ''", `password_file: ${passwordFile}`);
    await writeFile(daemon.configPath, config);
    const name = unique('proto');
    try {
      await daemon.start(60_000);
      await callOk(daemon.socket, 'VolumeDriver.Create', { Name: name, Opts: { size: '2G', profile: 'small' } });
      expect(sim.volumeByName(powerflexName(name))).toMatchObject({ sizeInKb: 8 * 1024 * 1024 });
      expect((await callOk(daemon.socket, 'VolumeDriver.Get', { Name: name })).Volume).toMatchObject({ Name: name, Status: expect.objectContaining({ profile: 'small' }) });
      const listed = (await callOk(daemon.socket, 'VolumeDriver.List')) as { Volumes: { Name: string }[] };
      expect(listed.Volumes.map((v) => v.Name)).toContain(name);
      const mounted = await callPlugin(daemon.socket, 'VolumeDriver.Mount', { Name: name, ID: 'c1' });
      console.log(`Mount without NVMe/TCP on this host: ${mounted.body.Err}`);
      expect(String(mounted.body.Err)).toMatch(/nvme|NVMe/);
      expect(mappedNqns(name)).toEqual([]);
      expect((await callOk(daemon.socket, 'VolumeDriver.Get', { Name: name })).Volume).toMatchObject({ Status: { lease: { state: 'free' }, attachment: 'detached' } });
      await callOk(daemon.socket, 'VolumeDriver.Remove', { Name: name });
      expect(sim.volumeByName(powerflexName(name))).toBeUndefined();
    } finally {
      await daemon.stop();
    }
    expect(JSON.stringify(await daemon.logs())).not.toContain(PASSWORD);
  });
});

const simVolume = (pfName: string): SimVolume => {
  const found = sim.volumeByName(pfName);
  if (!found) throw new Error(`the simulator has no volume ${pfName}`);
  return found;
};

/** Writes 64 KiB of fresh random bytes at each offset of the PowerFlex volume's file, as a host's writes land there. */
async function writeData(name: string): Promise<void> {
  const file = await open(imageOf(simVolume(powerflexName(name))), 'r+');
  try {
    for (const offset of OFFSETS) await file.write(randomBytes(64 * 1024), 0, 64 * 1024, offset);
  } finally {
    await file.close();
  }
}

/** A hash of the 64 KiB at each offset of a simulator volume's file. */
async function dataOf(pfName: string): Promise<string> {
  const file = await open(imageOf(simVolume(pfName)), 'r');
  const hash = createHash('sha256');
  try {
    for (const offset of OFFSETS) {
      const buffer = Buffer.alloc(64 * 1024);
      await file.read(buffer, 0, buffer.length, offset);
      hash.update(buffer);
    }
  } finally {
    await file.close();
  }
  return hash.digest('hex');
}

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
      const { manager } = fixture;
      const name = unique('mgr');
      await manager.create(name, { profile: 'pf', size: '1G' });
      await writeData(name);
      const data = await dataOf(powerflexName(name));
      await manager.snapshots.create(name, 'before');
      expect((await manager.snapshots.list(name)).map((s) => s.name)).toEqual(['before']);
      const clone = unique('mgr-c');
      await manager.create(clone, { from: `${name}@before` });
      expect(await dataOf(powerflexName(clone))).toBe(data);
      await expect(manager.remove(name)).rejects.toThrow(/has 1 snapshot\(s\) \(before\)/);
      expect(sim.volumeByName(powerflexName(name))).toBeDefined();
      await manager.remove(name, true);
      expect(sim.volumeByName(powerflexName(name))).toBeUndefined();
      expect(sim.volumeByName(snapshotPowerflexName(name, 'before'))).toBeUndefined();
      expect(await dataOf(powerflexName(clone))).toBe(data); // the clone outlives its source and snapshot
      await manager.remove(clone);
      expect(sim.volumeByName(powerflexName(clone))).toBeUndefined();
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
