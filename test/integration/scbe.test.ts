import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ScbeBackendConfig } from '../../src/config/schema.js';
import { ScbeClient } from '../../src/drivers/scbe/client.js';
import { scbeDriver, scbeName } from '../../src/drivers/scbe/scbe-driver.js';
import type { NewVolume } from '../../src/drivers/types.js';
import { BackendUnavailable, LeaseHeld } from '../../src/errors.js';
import type { IscsiExport } from '../../src/export.js';
import { silentLogger } from '../../src/log.js';
import { closedPort, FakeClock, LEASE_TIMING, leaseHost } from '../helpers/lease-host.js';
import { inquiry, requireTgtTools, Tgtd } from '../lab/tgtd.js';
import { ScbeSim } from '../simulators/scbe.js';
import { TgtScbeDataPlane } from '../simulators/scbe-tgt-data-plane.js';

// The scbe backend against the Spectrum Connect simulator (test/simulators/scbe.ts) on loopback,
// its storage system one target of this test's own tgtd, checked with libiscsi's iscsi-inq as
// each host's IQN. Needs root and the tgt and libiscsi tools.

const GiB = 2 ** 30;
const PASSWORD = 'scbe-secret-9f3a';
const TARGET = 'iqn.1986-03.com.ibm:2145.sim.node1';
const IQN = (i: number) => `iqn.2026-12.dev.ballast:scbe${i}`;
const timing = LEASE_TIMING;

let sim: ScbeSim;
let tgtd: Tgtd;
let root: string;

const backendConfig = (overrides: Partial<ScbeBackendConfig> = {}): ScbeBackendConfig => ({
  url: sim.url,
  user: 'ballast',
  password_file: '/unused',
  group: 'containers',
  service: 'gold',
  host_name: 'docker1',
  iscsi: { target: TARGET, portals: [tgtd.portal] },
  metadata_root: root,
  multipath: true,
  reservations: true,
  timeout_seconds: 10,
  ...overrides,
});

function newDriver(overrides: Partial<ScbeBackendConfig> = {}, password = PASSWORD): ReturnType<typeof scbeDriver> {
  const backend = backendConfig(overrides);
  const client = new ScbeClient({ url: backend.url, username: backend.user, password, group: backend.group, timeoutMs: backend.timeout_seconds * 1000 }, silentLogger());
  return scbeDriver(client, backend, new Map([['bronze', 'bronze']]), silentLogger());
}

const volume = (name: string, sizeBytes = GiB, profile = 'default'): NewVolume => ({ name, profile, sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
const unique = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;

async function host(index: number, clock = new FakeClock()) {
  const driver = newDriver({ host_name: `docker${index}` });
  await driver.start();
  const identity = { hostId: `scbe${index}`, bootId: 'b1', hostname: `docker${index}` };
  const { keeper, lease } = await leaseHost(driver, identity, clock);
  return { driver, keeper, lease, initiator: { hostId: identity.hostId, iqn: IQN(index) } };
}

const canReach = async (iqn: string, exp: IscsiExport) => (await inquiry(iqn, exp.portals[0]!, exp.iqn, exp.lun)).exitCode === 0;

beforeAll(async () => {
  requireTgtTools();
  tgtd = await Tgtd.start();
  root = await mkdtemp(join(tmpdir(), 'ballast-scbe-'));
  const dataPlane = new TgtScbeDataPlane((args) => tgtd.tgtadm(args), root, 1, TARGET);
  await dataPlane.start();
  sim = new ScbeSim({ username: 'ballast', password: PASSWORD, services: { gold: 16, bronze: 4 }, hosts: { docker1: IQN(1), docker2: IQN(2), docker3: IQN(3), docker4: IQN(4) }, dataPlane });
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

describe('scbe backend against the Spectrum Connect simulator and tgtd', () => {
  it("creates a volume in the profile's storage service; grow is refused with what to do, the record unchanged; deletes it", async () => {
    const driver = newDriver();
    await driver.start();
    const name = unique('sv');
    await driver.create(volume(name, 1.5 * GiB, 'bronze'));
    const made = sim.volumeNamed(scbeName(name))!;
    expect(made).toMatchObject({ sizeGiB: 2, service: sim.services.find((s) => s.name === 'bronze')!.id });
    await expect(driver.grow(name, 3 * GiB)).rejects.toThrow(`Spectrum Connect offers no call to extend volume ${scbeName(name)} in any public client; extend it on the storage system`);
    expect((await driver.read(name))!.value.sizeBytes).toBe(1.5 * GiB);
    await driver.destroy(name);
    expect(sim.volumeNamed(scbeName(name))).toBeUndefined();
  });

  it('maps to the holder only, at the LUN SCBE gives, on the configured target; the LUN answers that IQN and no other', async () => {
    const a = await host(1);
    const b = await host(2);
    const name = unique('map');
    await a.driver.create(volume(name));
    await a.lease.acquire(name);
    const exp = (await a.driver.export(name, a.initiator)) as IscsiExport;
    const made = sim.volumeNamed(scbeName(name))!;
    expect(exp).toEqual({ transport: 'iscsi', iqn: TARGET, portals: [tgtd.portal], lun: made.index, multipath: true, reservations: true });
    expect(sim.mappedHostNames(made.wwn)).toEqual(['docker1']);
    expect((await inquiry(a.initiator.iqn, exp.portals[0]!, exp.iqn, exp.lun)).stdout).toMatch(/Vendor:IBM/);
    expect(await canReach(b.initiator.iqn, exp)).toBe(false);
    await expect(b.lease.acquire(name)).rejects.toBeInstanceOf(LeaseHeld);
    await a.driver.unexport(name, a.initiator);
    expect(sim.mappedHostNames(made.wwn)).toEqual([]);
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
    await b.lease.acquire(name);
    const expB = (await b.driver.export(name, b.initiator)) as IscsiExport;
    expect(sim.mappedHostNames(sim.volumeNamed(scbeName(name))!.wwn)).toEqual(['docker4']);
    expect(await canReach(a.initiator.iqn, expA)).toBe(false);
    expect(await canReach(b.initiator.iqn, expB)).toBe(true);
    await b.driver.unexport(name, b.initiator);
    await b.lease.release(name);
    await b.driver.destroy(name);
  });

  it('an expired token: one login again, and the call succeeds', async () => {
    const driver = newDriver();
    await driver.checkHealth();
    const logins = () => sim.requests.filter((r) => r === 'POST /api/v1/users/get-auth-token').length;
    const before = logins();
    sim.expireTokens();
    const name = unique('tok');
    await driver.create(volume(name));
    expect(logins()).toBe(before + 1);
    await driver.destroy(name);
  });

  it('a host not defined on the storage system, an unknown service, a size beyond the service or wrong credentials: a clear error and nothing made', async () => {
    const name = unique('bad');
    const stranger = newDriver({ host_name: 'nobody' });
    await stranger.create(volume(name));
    const record = await stranger.read(name);
    await stranger.writeOwnership(name, record!.revision, { state: 'held', holder: { hostId: 'x', bootId: 'b', hostname: 'nobody', hostGeneration: 0 }, generation: 1, updatedAt: new Date().toISOString() });
    await expect(stranger.export(name, { hostId: 'x', iqn: IQN(9) })).rejects.toThrow('the storage system behind Spectrum Connect has no host "nobody" (for x): define it there with this host\'s IQN, or set backends.scbe.host_name');
    expect(sim.mappedHostNames(sim.volumeNamed(scbeName(name))!.wwn)).toEqual([]);
    await stranger.writeOwnership(name, record!.revision + 1, { state: 'free', generation: 1, updatedAt: new Date().toISOString() });
    await stranger.destroy(name);
    const other = unique('bad');
    await expect(newDriver({ service: 'platinum' }).create(volume(other))).rejects.toThrow('Spectrum Connect has no storage service "platinum" for this user; check service');
    await expect(newDriver().create(volume(other, 40 * GiB))).rejects.toThrow(/Not enough free space in service gold; check the free space of storage service gold/);
    const refused = await newDriver({}, 'wrong-password').create(volume(other)).catch((e: unknown) => e);
    expect((refused as Error).message).toMatch(/refused user ballast \(group containers\): check backends.scbe.user, group and the password_file/);
    expect((refused as Error).message).not.toContain('wrong-password');
    expect(sim.volumeNamed(scbeName(other))).toBeUndefined();
    expect((await readdir(root, { recursive: true })).filter((e) => e.includes(other))).toEqual([]);
  });

  it('Spectrum Connect down, answering 503 or never answering: BackendUnavailable within the bound, nothing made', async () => {
    const port = await closedPort();
    const name = unique('down');
    await expect(newDriver({ url: `http://127.0.0.1:${port}` }).create(volume(name))).rejects.toThrow(/Spectrum Connect at http:\/\/127.0.0.1:\d+ is unreachable, could not log in: .*ECONNREFUSED/);
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
    expect(sim.volumeNamed(scbeName(name))).toBeUndefined();
    expect(await driver.read(name)).toBeUndefined();
  });
});
