import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DellScBackendConfig } from '../../src/config/schema.js';
import { DellScArray } from '../../src/drivers/dellsc/array.js';
import { DellScClient } from '../../src/drivers/dellsc/client.js';
import { dellscDriver, scName } from '../../src/drivers/dellsc/dellsc-driver.js';
import { VolumeAlreadyExists, type NewVolume } from '../../src/drivers/types.js';
import { BackendUnavailable, LeaseHeld, VolumeInUse } from '../../src/errors.js';
import type { IscsiExport } from '../../src/export.js';
import { silentLogger } from '../../src/log.js';
import { closedPort, FakeClock, LEASE_TIMING, leaseHost } from '../helpers/lease-host.js';
import { inquiry, readCapacity, requireTgtTools, Tgtd } from '../lab/tgtd.js';
import { DellScSim } from '../simulators/dellsc.js';
import { TgtScDataPlane } from '../simulators/sc-tgt-data-plane.js';

// The dellsc backend against the Dell Storage Manager simulator (test/simulators/dellsc.ts) on
// loopback, its volumes real LUNs of this test's own tgtd, checked the way a host sees them:
// libiscsi's iscsi-inq (a full login + INQUIRY) and iscsi-readcapacity16 as each host's IQN.
// Needs root and the tgt and libiscsi tools. The kernel attach of an iSCSI export (multipath,
// reservations) is the iscsi attacher's, tested in the VM lab.

const GiB = 2 ** 30;
const SSN = 64702;
const PASSWORD = 'sc-secret-4b2e';
const timing = LEASE_TIMING;

let sim: DellScSim;
let tgtd: Tgtd;
let root: string;

const backendConfig = (overrides: Partial<DellScBackendConfig> = {}): DellScBackendConfig => ({
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
  ...overrides,
});

function newDriver(overrides: Partial<DellScBackendConfig> = {}, password = PASSWORD, storageProfiles = new Map<string, string | undefined>()): ReturnType<typeof dellscDriver> {
  const backend = backendConfig(overrides);
  const client = new DellScClient({ url: backend.url, username: backend.user, password, apiVersion: backend.api_version, timeoutMs: backend.timeout_seconds * 1000 }, silentLogger());
  return dellscDriver(new DellScArray(client, backend.ssn, backend.folder), backend, storageProfiles, silentLogger());
}

const volume = (name: string, sizeBytes = GiB, profile = 'default'): NewVolume => ({ name, profile, sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
const unique = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;

async function host(index: number, clock = new FakeClock()) {
  const driver = newDriver();
  await driver.start();
  const identity = { hostId: `sc${index}`, bootId: 'b1', hostname: `sc-host-${index}` };
  const { keeper, lease } = await leaseHost(driver, identity, clock);
  return { driver, keeper, lease, initiator: { hostId: identity.hostId, iqn: `iqn.2026-12.dev.ballast:sc${index}` } };
}

const scVolume = (name: string) => {
  const found = sim.volumesNamed(scName(name));
  expect(found).toHaveLength(1);
  return found[0]!;
};

/** Whether `iqn` can log in to the export's target and see its LUN (iscsi-inq exits 0). */
const canReach = async (iqn: string, exp: IscsiExport) => (await inquiry(iqn, exp.portals[0]!, exp.iqn, exp.lun)).exitCode === 0;

beforeAll(async () => {
  requireTgtTools();
  tgtd = await Tgtd.start();
  root = await mkdtemp(join(tmpdir(), 'ballast-dellsc-'));
  const dataPlane = new TgtScDataPlane((args) => tgtd.tgtadm(args), root, { address: '127.0.0.1', port: tgtd.iscsiPort });
  sim = new DellScSim({ username: 'Admin', password: PASSWORD, ssn: SSN, apiVersion: '4.0', capacityGiB: 20, dataPlane });
  await sim.start();
});

afterAll(async () => {
  await sim?.stop();
  await tgtd?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

beforeEach(() => {
  sim.fault = 'none';
});

describe('dellsc backend against the Dell Storage Manager simulator and tgtd', () => {
  it('creates a volume in its folder (an asynchronous task) with the storage profile, grows and deletes it', async () => {
    const driver = newDriver({}, PASSWORD, new Map([['gold', 'High Priority (Tier 1)']]));
    await driver.start();
    const name = unique('sc');
    expect(await driver.create(volume(name, 1.5 * GiB, 'gold'))).toMatchObject({ name, profile: 'gold', ownership: { state: 'free' } });
    const made = scVolume(name);
    expect(made).toMatchObject({ sizeBytes: 2 * GiB, notes: `ballast volume ${name}`, storageProfile: sim.storageProfiles[1]!.instanceId });
    expect([...sim.folders.values()].find((f) => f.instanceId === made.folder)).toMatchObject({ name: 'ballast', kind: 'ScVolumeFolder' });
    await expect(driver.create(volume(name))).rejects.toBeInstanceOf(VolumeAlreadyExists);
    expect(sim.volumesNamed(scName(name))).toHaveLength(1); // the second create made nothing on the array
    await driver.grow(name, 3 * GiB);
    expect(scVolume(name).sizeBytes).toBe(3 * GiB);
    await driver.destroy(name);
    expect(sim.volumesNamed(scName(name))).toHaveLength(0);
    expect((await tgtd.targets()).map((t) => t.iqn)).not.toContain(`iqn.2002-03.com.compellent:5000d31000${made.index}`);
    expect(await driver.read(name)).toBeUndefined();
  });

  it("maps to the holder's server object only (made with its HBA on first use); the LUN answers that IQN and no other", async () => {
    const a = await host(1);
    const b = await host(2);
    const name = unique('map');
    await a.driver.create(volume(name));
    await a.lease.acquire(name);
    const exp = (await a.driver.export(name, a.initiator)) as IscsiExport;
    const made = scVolume(name);
    expect(exp).toEqual({ transport: 'iscsi', iqn: `iqn.2002-03.com.compellent:5000d31000${made.index}`, portals: [tgtd.portal], lun: 1, multipath: true, reservations: true });
    expect([...sim.servers.values()].find((s) => s.hbas.includes(a.initiator.iqn))).toMatchObject({ name: 'ballast-sc1' });
    expect(sim.mappedIqns(made.instanceId)).toEqual([a.initiator.iqn]);
    const inq = await inquiry(a.initiator.iqn, exp.portals[0]!, exp.iqn, exp.lun);
    expect(inq.stdout).toMatch(/Vendor:COMPELNT/);
    expect((await readCapacity(a.initiator.iqn, exp.portals[0]!, exp.iqn, exp.lun)).lastLba).toBe(GiB / 512 - 1);
    expect(await canReach(b.initiator.iqn, exp)).toBe(false);
    await expect(b.lease.acquire(name)).rejects.toBeInstanceOf(LeaseHeld);
    await expect(b.driver.export(name, b.initiator)).rejects.toThrow(`volume ${name} is not leased to host sc2`);
    await a.driver.export(name, a.initiator); // a remount: still one mapping
    expect(sim.mappedIqns(made.instanceId)).toEqual([a.initiator.iqn]);
    await expect(a.driver.destroy(name)).rejects.toBeInstanceOf(VolumeInUse);
    await a.driver.unexport(name, a.initiator);
    expect(sim.mappedIqns(made.instanceId)).toEqual([]);
    expect(await canReach(a.initiator.iqn, exp)).toBe(false);
    await a.lease.release(name);
    await a.driver.destroy(name);
  });

  it('takeover after the holder stops renewing unmaps the former holder, whose login is then refused', async () => {
    const clock = new FakeClock();
    const a = await host(3, clock);
    const b = await host(4, clock);
    const name = unique('take');
    await a.driver.create(volume(name));
    await a.lease.acquire(name);
    const expA = (await a.driver.export(name, a.initiator)) as IscsiExport;
    expect(await canReach(a.initiator.iqn, expA)).toBe(true);
    await b.keeper.renew();
    await expect(b.lease.acquire(name)).rejects.toBeInstanceOf(LeaseHeld);
    clock.now += timing.leaseSeconds + 1;
    expect(await b.lease.acquire(name)).toMatchObject({ state: 'held', generation: 2 });
    const expB = (await b.driver.export(name, b.initiator)) as IscsiExport;
    expect(sim.mappedIqns(scVolume(name).instanceId)).toEqual([b.initiator.iqn]);
    expect(await canReach(a.initiator.iqn, expA)).toBe(false);
    expect(await canReach(b.initiator.iqn, expB)).toBe(true);
    await b.driver.unexport(name, b.initiator);
    await b.lease.release(name);
    await b.driver.destroy(name);
  });

  it('asks again with the API version a refusal names, and logs in again once when the session expired', async () => {
    const old = new DellScSim({ username: 'Admin', password: PASSWORD, ssn: SSN, apiVersion: '3.5' });
    await old.start();
    try {
      const driver = newDriver({ url: old.url });
      await driver.checkHealth();
      expect(old.requests.filter((r) => r === 'POST /api/rest/ApiConnection/Login')).toHaveLength(2);
      old.expireSessions(); // the folder id is cached: create's first call meets the 401
      const name = unique('v35');
      await driver.create(volume(name));
      expect(old.requests.filter((r) => r === 'POST /api/rest/ApiConnection/Login')).toHaveLength(3);
      expect(old.volumesNamed(scName(name))).toHaveLength(1);
      await driver.destroy(name);
      expect(old.volumesNamed(scName(name))).toHaveLength(0);
    } finally {
      await old.stop();
    }
  });

  it('a failed asynchronous task, an unknown storage profile or wrong credentials: a clear error and nothing made', async () => {
    const name = unique('bad');
    await expect(newDriver().create(volume(name, 40 * GiB))).rejects.toThrow(/Not enough free space on the Storage Center.*; check the Storage Center's free space and the storage profile/);
    await expect(newDriver({ storage_profile: 'Platinum' }).create(volume(name))).rejects.toThrow(/has no storage profile "Platinum" \(it has: Recommended \(All Tiers\), High Priority \(Tier 1\)\); check storage_profile/);
    const refused = await newDriver({}, 'wrong-password').create(volume(name)).catch((e: unknown) => e);
    expect((refused as Error).message).toMatch(/refused user Admin: check backends.dellsc.user and its password_file/);
    expect((refused as Error).message).not.toContain('wrong-password');
    expect(sim.volumesNamed(scName(name))).toHaveLength(0);
    expect((await readdir(root, { recursive: true })).filter((e) => e.includes(name))).toEqual([]);
  });

  it('a Data Collector that is down, answers 503 or never answers: BackendUnavailable within the bound, nothing made', async () => {
    const port = await closedPort();
    const name = unique('down');
    await expect(newDriver({ url: `http://127.0.0.1:${port}` }).create(volume(name))).rejects.toThrow(/Dell Storage Manager at http:\/\/127.0.0.1:\d+ is unreachable, could not log in: .*ECONNREFUSED/);
    const driver = newDriver({ timeout_seconds: 1 });
    await driver.checkHealth();
    sim.fault = 'unavailable';
    await expect(driver.create(volume(name))).rejects.toThrow(/failed to create volume ballast-down-\w+ \(HTTP 503\)/);
    sim.fault = 'hang';
    const started = performance.now();
    const err = await driver.create(volume(name)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailable);
    expect((err as Error).message).toMatch(/no answer within 1 s/);
    expect(performance.now() - started).toBeLessThan(5_000);
    sim.fault = 'none';
    expect(sim.volumesNamed(scName(name))).toHaveLength(0);
    expect(await driver.read(name)).toBeUndefined();
  });
});
