import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PowerFlexBackendConfig } from '../../src/config/schema.js';
import { PowerFlexArray } from '../../src/drivers/powerflex/array.js';
import { PowerFlexClient } from '../../src/drivers/powerflex/client.js';
import { powerflexDriver, powerflexName } from '../../src/drivers/powerflex/powerflex-driver.js';
import type { NewVolume } from '../../src/drivers/types.js';
import { silentLogger } from '../../src/log.js';
import { FakeClock, leaseHost } from './lease-host.js';
import { PowerFlexSim, type DataPlane, type SimVolume } from '../simulators/powerflex.js';

// What the powerflex integration suites (powerflex.test.ts, powerflex-snapshots.test.ts) share:
// one PowerFlex simulator on loopback per test file, its volumes as sparse files, records in a
// temporary metadata root, and drivers and lease-holding hosts built against it. `sim` and
// `root` are live bindings, set by usePowerFlexSim's beforeAll.

export const GiB = 2 ** 30;
export const MiB = 2 ** 20;
export const PASSWORD = 'pf-secret-7d1c';

const execFileAsync = promisify(execFile);
export let sim: PowerFlexSim;
export let root: string;
let images: string;

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
export const imageOf = (v: SimVolume) => join(images, `${v.id}.img`);

/** Starts the simulator (pools pool1 of 64 GiB and small of 8 GiB in pd1) before the file's tests, clears faults before each. */
export function usePowerFlexSim(): void {
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
}

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

export function newDriver(overrides: Partial<PowerFlexBackendConfig> = {}, password = PASSWORD, log = silentLogger()): ReturnType<typeof powerflexDriver> {
  const backend = backendConfig(overrides);
  const client = new PowerFlexClient({ url: backend.url, apiVersion: backend.api_version, username: backend.user, password, timeoutMs: backend.timeout_seconds * 1000 }, log);
  return powerflexDriver(new PowerFlexArray(client), backend, new Map([['small', { protectionDomain: 'pd1', storagePool: 'small' }]]), log);
}

export const volume = (name: string, sizeBytes = GiB): NewVolume => ({ name, profile: 'default', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
export const unique = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;

/** One ballast host: its own gateway session and driver, host lease and ownership lease. */
export async function host(index: number, clock = new FakeClock()) {
  const driver = newDriver();
  const identity = { hostId: `h${index}`, bootId: 'b1', hostname: `host-${index}` };
  const { keeper, lease } = await leaseHost(driver, identity, clock);
  return { driver, keeper, lease, clock, initiator: { hostId: identity.hostId, nqn: `nqn.2014-08.org.nvmexpress:uuid:0000000${index}-0000-4000-8000-000000000000` } };
}

/** The simulator's host ids the volume is mapped to, as host NQNs. */
export const mappedNqns = (name: string) => (sim.volumeByName(powerflexName(name))?.mappedHosts ?? []).map((id) => sim.hosts.get(id)?.nqn);
