import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { VmdkBackendConfig } from '../../../src/config/schema.js';
import { VolumeAlreadyExists, type NewVolume } from '../../../src/drivers/types.js';
import { VsphereClient } from '../../../src/drivers/vsphere/client.js';
import { Inventory } from '../../../src/drivers/vsphere/inventory.js';
import { moref } from '../../../src/drivers/vsphere/soap.js';
import { VmDisks, type AttachedDisk } from '../../../src/drivers/vsphere/vm-disks.js';
import { VmdkDriver, type Vsphere } from '../../../src/drivers/vsphere/vmdk-driver.js';
import { BackendUnavailable, LeaseHeld, VolumeInUse } from '../../../src/errors.js';
import type { Initiator, VmdkExport } from '../../../src/export.js';
import { silentLogger } from '../../../src/log.js';
import { HostLeaseKeeper } from '../../../src/ownership/host-lease.js';
import { HostMonitor } from '../../../src/ownership/host-monitor.js';
import { OwnershipLease } from '../../../src/ownership/lease.js';
import { startVcsim, type Vcsim } from '../../lab/vcsim.js';

// The vmdk backend against vcsim (govmomi's vCenter simulator, built from Debian's sources):
// disks, metadata and host leases on its datastores, attachments through ReconfigVM_Task,
// checked from outside through a separate session (what vCenter says each VM has) and
// through vcsim's datastore directories on this machine.

const MiB = 1024 ** 2;
const T = 60_000;
const timing = { leaseSeconds: 20, renewEverySeconds: 2 };

let sim: Vcsim;
let observer: Vsphere;

function connect(overrides: { url?: string; password?: string; timeoutMs?: number } = {}): Vsphere {
  const client = new VsphereClient(
    { url: overrides.url ?? sim.url, username: sim.username, password: overrides.password ?? sim.password, timeoutMs: overrides.timeoutMs ?? 20_000 },
    silentLogger(),
  );
  return { client, inventory: new Inventory(client), disks: new VmDisks(client, silentLogger()) };
}

function config(folder: string, datastore = sim.datastores[0]!.name): VmdkBackendConfig {
  return { vcenter: { url: sim.url, user: sim.username, password_file: '/dev/null', timeout_seconds: 20 }, datastore, folder, provisioning: 'thin' };
}

function newDriver(folder: string, options: { datastore?: string; vsphere?: Vsphere } = {}): VmdkDriver {
  const datastore = options.datastore ?? sim.datastores[0]!.name;
  return new VmdkDriver(options.vsphere ?? connect(), datastore, config(folder, datastore), silentLogger());
}

const volume = (name: string, sizeBytes = 64 * MiB): NewVolume => ({ name, profile: 'default', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
const hostOn = (index: number): Initiator => ({ hostId: `h${index}`, vmUuid: sim.vms[index]!.uuid });
const newFolder = () => `ballast-${randomBytes(3).toString('hex')}`;

/** What vCenter says a VM has attached of `file` (read through the observer's own session). */
async function attachedTo(index: number, file: string): Promise<AttachedDisk[]> {
  return observer.disks.find([moref('VirtualMachine', sim.vms[index]!.moid)], file);
}

class FakeClock {
  constructor(public now = 0) {}
  read = () => this.now;
}

/** One ballast host: its driver (own vCenter session), host lease and ownership lease. */
function host(index: number, folder: string, clock = new FakeClock()) {
  const driver = newDriver(folder);
  const identity = { hostId: `h${index}`, bootId: 'b1', hostname: `h${index}` };
  const keeper = new HostLeaseKeeper(driver, identity, timing, silentLogger(), clock.read);
  const monitor = new HostMonitor(timing.leaseSeconds, clock.read);
  const lease = new OwnershipLease(driver, identity, silentLogger(), { store: driver, keeper, monitor });
  return { driver, keeper, monitor, lease, clock, initiator: hostOn(index) };
}

/** Host 0 with a new volume it holds the lease of (not yet exported). */
async function heldByHost0(name: string, sizeBytes?: number) {
  const folder = newFolder();
  const a = host(0, folder);
  await a.driver.create(volume(name, sizeBytes));
  await a.keeper.register();
  await a.lease.acquire(name);
  return { ...a, folder };
}

beforeAll(async () => {
  sim = await startVcsim({ vms: 2, datastores: 2 });
  observer = connect();
}, T);

afterAll(async () => {
  await observer?.client.logout();
  await sim?.stop();
});

describe('vmdk backend against vcsim', () => {
  it('creates the volume on the profile\'s datastore: disk.vmdk and meta.json in <folder>/<name>; list and read show it', async () => {
    const folder = newFolder();
    const second = sim.datastores[1]!;
    const driver = newDriver(folder, { datastore: second.name });
    const record = await driver.create(volume('pg-data', 96 * MiB));
    expect(record.sizeBytes).toBe(96 * MiB);
    expect(existsSync(join(second.dir, folder, 'pg-data', 'disk.vmdk'))).toBe(true);
    expect(existsSync(join(second.dir, folder, 'pg-data', 'meta.json'))).toBe(true);
    expect(existsSync(join(sim.datastores[0]!.dir, folder))).toBe(false);
    expect(driver.imagePath('pg-data')).toBe(`[${second.name}] ${folder}/pg-data/disk.vmdk`);
    // Another host (own session, own driver) sees it: docker volume ls / inspect elsewhere.
    const elsewhere = newDriver(folder, { datastore: second.name });
    expect((await elsewhere.list()).map((v) => v.name)).toEqual(['pg-data']);
    const read = await elsewhere.read('pg-data');
    expect(read?.value).toMatchObject({ name: 'pg-data', sizeBytes: 96 * MiB, ownership: { state: 'free' } });
    // Scratch files of the metadata writes are gone.
    expect(readdirSync(join(second.dir, folder, '.tmp'))).toEqual([]);
  }, T);

  it('attaches to VM 1 for its lease holder, refuses VM 2 while VM 1 holds it, detaches keeping the file, then moves to VM 2', async () => {
    const folder = newFolder();
    const a = host(0, folder);
    const b = host(1, folder);
    await a.driver.create(volume('move-me'));
    await a.keeper.register();
    await b.keeper.register();
    const file = a.driver.imagePath('move-me');

    await a.lease.acquire('move-me');
    const exp = (await a.driver.export('move-me', a.initiator)) as VmdkExport;
    expect(exp).toMatchObject({ transport: 'vmdk', file });
    expect(exp.diskUuid).toMatch(/^[0-9a-f]{32}$/);
    const onVm1 = await attachedTo(0, file);
    expect(onVm1).toHaveLength(1);
    // vcsim reports no capacity for an existing disk it attaches; the file was made at 64 MiB,
    // as the record notes, so no grow was sent (the grow test covers the catch-up).
    expect(onVm1[0]!.fileName).toBe(file);
    // Exporting again changes nothing (a second container on the same host).
    expect(await a.driver.export('move-me', a.initiator)).toEqual(exp);
    expect(await attachedTo(0, file)).toEqual(onVm1);

    // VM 2's host: the lease says no, and the driver will not take the disk without it.
    await expect(b.lease.acquire('move-me')).rejects.toThrow(/volume move-me is in use on host h0/);
    await expect(b.driver.export('move-me', b.initiator)).rejects.toThrow(LeaseHeld);
    expect(await attachedTo(1, file)).toEqual([]);
    expect(await attachedTo(0, file)).toHaveLength(1);

    await a.driver.unexport('move-me', a.initiator);
    await a.lease.release('move-me');
    expect(await attachedTo(0, file)).toEqual([]);
    expect(existsSync(join(sim.datastores[0]!.dir, folder, 'move-me', 'disk.vmdk'))).toBe(true);

    await b.lease.acquire('move-me');
    const moved = (await b.driver.export('move-me', b.initiator)) as VmdkExport;
    expect(moved.diskUuid).toBe(exp.diskUuid);
    expect(await attachedTo(1, file)).toHaveLength(1);
    expect(await attachedTo(0, file)).toEqual([]);
    await b.driver.unexport('move-me', b.initiator);
  }, T);

  it('takeover: after VM 1\'s host stops renewing for the lease time, VM 2\'s host takes the lease and the disk is detached from VM 1', async () => {
    const folder = newFolder();
    const a = host(0, folder, new FakeClock(500));
    const b = host(1, folder, new FakeClock(7));
    await a.driver.create(volume('orphan'));
    await a.keeper.register();
    await b.keeper.register();
    await a.lease.acquire('orphan');
    await a.driver.export('orphan', a.initiator);
    const file = a.driver.imagePath('orphan');

    // Still renewing: refused, however long b waits.
    for (let t = 0; t < 30; t += 2) {
      a.clock.now += 2;
      b.clock.now += 2;
      await a.keeper.renew();
      await b.driver.listHostLeases().then((leases) => leases.forEach((l) => b.monitor.observe(l.hostId, l)));
    }
    await expect(b.lease.acquire('orphan')).rejects.toThrow(LeaseHeld);

    // a dies: its lease stops moving; b sees it unchanged for 21 s of its own clock.
    b.monitor.observe('h0', await b.driver.readHostLease('h0'));
    b.clock.now += 21;
    const taken = await b.lease.acquire('orphan');
    expect(taken).toMatchObject({ state: 'held', holder: { hostId: 'h1' }, generation: 2 });
    await b.driver.export('orphan', b.initiator);
    expect(await attachedTo(0, file)).toEqual([]);
    expect(await attachedTo(1, file)).toHaveLength(1);
    await b.driver.unexport('orphan', b.initiator);
  }, T);

  it('vCenter is the authority: a disk attached by hand to another VM (no note of ballast\'s) is found through the datastore and taken from it', async () => {
    const folder = newFolder();
    const a = host(0, folder);
    await a.driver.create(volume('by-hand'));
    const file = a.driver.imagePath('by-hand');
    await observer.disks.attach(moref('VirtualMachine', sim.vms[1]!.moid), file);
    expect(await attachedTo(1, file)).toHaveLength(1);
    await a.keeper.register();
    await a.lease.acquire('by-hand');
    await a.driver.export('by-hand', a.initiator);
    expect(await attachedTo(1, file)).toEqual([]);
    expect(await attachedTo(0, file)).toHaveLength(1);
    await a.driver.unexport('by-hand', a.initiator);
  }, T);

  it('grows an attached disk through its VM at once, and a detached one when it is next attached', async () => {
    const a = await heldByHost0('grow-me', 64 * MiB);
    await a.driver.export('grow-me', a.initiator);
    const file = a.driver.imagePath('grow-me');
    await a.driver.grow('grow-me', 128 * MiB);
    expect((await attachedTo(0, file))[0]!.capacityKb).toBe(128 * 1024);

    await a.driver.unexport('grow-me', a.initiator);
    await a.driver.grow('grow-me', 200 * MiB);
    expect((await a.driver.read('grow-me'))?.value.sizeBytes).toBe(200 * MiB);
    await a.driver.export('grow-me', a.initiator);
    expect((await attachedTo(0, file))[0]!.capacityKb).toBe(200 * 1024);
    await expect(a.driver.grow('grow-me', 100 * MiB)).rejects.toThrow(/can grow but not shrink/);
    await a.driver.unexport('grow-me', a.initiator);
  }, T);

  it('destroy: refused while the lease is held; afterwards the directory with disk and metadata is gone', async () => {
    const a = await heldByHost0('doomed');
    await a.driver.export('doomed', a.initiator);
    await expect(a.driver.destroy('doomed')).rejects.toThrow(VolumeInUse);
    await a.driver.unexport('doomed', a.initiator);
    await a.lease.release('doomed');
    await a.driver.destroy('doomed');
    expect(await a.driver.read('doomed')).toBeUndefined();
    expect(readdirSync(join(sim.datastores[0]!.dir, a.folder)).filter((e) => !e.startsWith('.'))).toEqual([]);
    await a.driver.destroy('doomed'); // a missing volume is destroyed already
  }, T);

  it('concurrent creates of one name from 6 hosts (own sessions): one disk, one winner, the rest see the same volume', async () => {
    const folder = newFolder();
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => newDriver(folder).create(volume('contested'))));
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost.map((r) => r.reason)).toEqual(lost.map(() => expect.any(VolumeAlreadyExists)));
    const dir = join(sim.datastores[0]!.dir, folder);
    expect(readdirSync(dir).filter((e) => !e.startsWith('.'))).toEqual(['contested']);
    expect(readdirSync(dir).filter((e) => e.startsWith('.creating'))).toEqual([]);
    expect(readdirSync(join(dir, 'contested')).sort()).toEqual([expect.stringMatching(/^\.claims-[0-9a-f]{8}-0$/), 'disk-flat.vmdk', 'disk.vmdk', 'meta.json']);
  }, T);

  it('fills the VM\'s SCSI slots, then adds a paravirtual controller; every disk gets its own slot', async () => {
    const folder = newFolder();
    const a = host(0, folder);
    await a.keeper.register();
    const names = Array.from({ length: 16 }, (_, i) => `many-${i}`);
    for (const name of names) {
      await a.driver.create(volume(name));
      await a.lease.acquire(name);
      await a.driver.export(name, a.initiator);
    }
    const disks = (await Promise.all(names.map((n) => attachedTo(0, a.driver.imagePath(n))))).flat();
    expect(disks).toHaveLength(16);
    expect(new Set(disks.map((d) => `${d.controllerKey}:${d.unitNumber}`)).size).toBe(16);
    expect(disks.every((d) => d.unitNumber !== 7)).toBe(true);
    expect(new Set(disks.map((d) => d.controllerKey)).size).toBeGreaterThanOrEqual(2);
    for (const name of names) {
      await a.driver.unexport(name, a.initiator);
      await a.lease.release(name);
    }
  }, 2 * T);
});

describe('vmdk backend: bad input and faults give a clear error within the bound, nothing half-attached', () => {
  it('vCenter unreachable: create fails with BackendUnavailable naming the URL', async () => {
    const driver = newDriver(newFolder(), { vsphere: connect({ url: 'http://127.0.0.1:9/sdk', timeoutMs: 3_000 }) });
    const started = Date.now();
    await expect(driver.create(volume('x'))).rejects.toThrow(/vCenter http:\/\/127\.0\.0\.1:9\/sdk is unreachable/);
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('wrong credentials: the error names the user and the config keys', async () => {
    const driver = newDriver(newFolder(), { vsphere: connect({ password: 'wrong' }) });
    await expect(driver.checkHealth()).rejects.toThrow(`refused the login of user ${sim.username}: wrong user name or password`);
  });

  it('datastore missing: names it and lists the datastores that exist', async () => {
    const driver = newDriver(newFolder(), { datastore: 'no-such-ds' });
    await expect(driver.create(volume('x'))).rejects.toThrow(new RegExp(`datastore no-such-ds does not exist in datacenter ${sim.datacenter} \\(datastores there: .*${sim.datastores[0]!.name}`));
  });

  it('datastore full: a volume larger than the free space is refused before anything is made', async () => {
    const folder = newFolder();
    const driver = newDriver(folder);
    await expect(driver.create(volume('huge', 1024 ** 5))).rejects.toThrow(/datastore \S+ has .* free; volume huge needs 1024 TiB: choose a smaller size/);
    expect(existsSync(join(sim.datastores[0]!.dir, folder, 'huge'))).toBe(false);
  });

  it('VM not found: export for an unknown BIOS UUID says what to configure', async () => {
    const a = await heldByHost0('lost');
    await expect(a.driver.export('lost', { hostId: 'h0', vmUuid: '11111111-2222-3333-4444-555555555555' })).rejects.toThrow(
      /no VM with BIOS UUID 11111111-2222-3333-4444-555555555555 .*set backends.vmdk.vm_uuid/,
    );
  });

  it('no permission to reconfigure the VM: the error names the privilege; the disk is attached nowhere', async () => {
    const a = await heldByHost0('denied');
    await sim.deny(sim.vms[0]!.moid, 'VirtualMachine.Config.AddExistingDisk');
    try {
      await expect(a.driver.export('denied', a.initiator)).rejects.toThrow(/lacks privilege VirtualMachine.Config.AddExistingDisk on vm-/);
    } finally {
      await sim.allow(sim.vms[0]!.moid);
    }
    expect(await attachedTo(0, a.driver.imagePath('denied'))).toEqual([]);
    expect(await attachedTo(1, a.driver.imagePath('denied'))).toEqual([]);
  });

  it('a missing disk file: attach fails with file-not-found and leaves no device on the VM', async () => {
    const a = await heldByHost0('gone');
    const { rm } = await import('node:fs/promises');
    await rm(join(sim.datastores[0]!.dir, a.folder, 'gone', 'disk.vmdk'));
    await rm(join(sim.datastores[0]!.dir, a.folder, 'gone', 'disk-flat.vmdk'));
    await expect(a.driver.export('gone', a.initiator)).rejects.toThrow(/cannot attach volume gone .*does not exist on the datastore/);
    expect(await attachedTo(0, a.driver.imagePath('gone'))).toEqual([]);
  });

  it('vCenter hangs (accepts, never answers): the call gives up at the timeout', async () => {
    const { createServer } = await import('node:net');
    const sockets: import('node:net').Socket[] = [];
    const server = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const driver = newDriver(newFolder(), { vsphere: connect({ url: `http://127.0.0.1:${port}/sdk`, timeoutMs: 1_500 }) });
      const started = Date.now();
      await expect(driver.checkHealth()).rejects.toThrow(BackendUnavailable);
      await expect(driver.checkHealth()).rejects.toThrow(/did not answer RetrieveServiceContent within 1.5 s/);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      sockets.forEach((s) => s.destroy());
      server.close();
    }
  });
});
