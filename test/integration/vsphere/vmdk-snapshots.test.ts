import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import type { VmdkBackendConfig } from '../../../src/config/schema.js';
import type { NewVolume } from '../../../src/drivers/types.js';
import { VsphereClient } from '../../../src/drivers/vsphere/client.js';
import { Inventory } from '../../../src/drivers/vsphere/inventory.js';
import { VmDisks } from '../../../src/drivers/vsphere/vm-disks.js';
import { VmdkDriver, type Vsphere } from '../../../src/drivers/vsphere/vmdk-driver.js';
import { BackendUnavailable, SnapshotExists, SnapshotNotFound, VolumeInUse } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';
import { managerFixture, type ManagerFixture } from '../../helpers/manager-fixture.js';
import { startVcsim, type Vcsim } from '../../lab/vcsim.js';

// Snapshots and clones on the vmdk backend against vcsim: each a copy of the volume's disk made
// by VirtualDiskManager.CopyVirtualDisk_Task into the volume's own directory. vcsim keeps a disk
// as two local files (disk.vmdk and disk-flat.vmdk, empty when it makes them) and copies them
// byte for byte, so the test writes data into the source's files, as a guest would, and
// compares the copies' bytes. Also what each operation costs in vCenter round trips.

const MiB = 1024 ** 2;
const T = 60_000;

let sim: Vcsim;

function connect(): Vsphere {
  const client = new VsphereClient({ url: sim.url, username: sim.username, password: sim.password, timeoutMs: 20_000 }, silentLogger());
  return { client, inventory: new Inventory(client), disks: new VmDisks(client, silentLogger()) };
}

function newDriver(folder: string, vsphere = connect()): VmdkDriver {
  const datastore = sim.datastores[0]!.name;
  const config: VmdkBackendConfig = { vcenter: { url: sim.url, user: sim.username, password_file: '/dev/null', timeout_seconds: 20 }, datastore, folder, provisioning: 'thin' };
  return new VmdkDriver(vsphere, datastore, config, silentLogger());
}

const volume = (name: string, sizeBytes = 64 * MiB): NewVolume => ({ name, profile: 'default', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
const newFolder = () => `snap-${randomBytes(3).toString('hex')}`;
/** A path in vcsim's local directory of the datastore. */
const onDatastore = (...parts: string[]) => join(sim.datastores[0]!.dir, ...parts);
const entries = (...parts: string[]) => (existsSync(onDatastore(...parts)) ? readdirSync(onDatastore(...parts)).sort() : []);

/** The two files of a disk in vcsim, by length and SHA-256 (a byte-for-byte comparison that reads well when it fails). */
interface DiskFiles {
  descriptor: string;
  data: string;
}
const digest = (bytes: Buffer) => `${bytes.length} bytes, sha256 ${createHash('sha256').update(bytes).digest('hex')}`;

/** What a guest's writes leave in vcsim's files of a disk: a descriptor and data. */
async function writeDisk(folder: string, name: string): Promise<{ files: DiskFiles; bytes: number }> {
  const descriptor = Buffer.from(`# Disk DescriptorFile\nversion=1\n# ${randomBytes(4).toString('hex')}\n`);
  const data = randomBytes(256 * 1024);
  await writeFile(onDatastore(folder, name, 'disk.vmdk'), descriptor);
  await writeFile(onDatastore(folder, name, 'disk-flat.vmdk'), data);
  return { files: { descriptor: digest(descriptor), data: digest(data) }, bytes: descriptor.length + data.length };
}

async function diskBytes(...dir: string[]): Promise<DiskFiles> {
  return { descriptor: digest(await readFile(onDatastore(...dir, 'disk.vmdk'))), data: digest(await readFile(onDatastore(...dir, 'disk-flat.vmdk'))) };
}

/** Round trips (SOAP calls and datastore HTTP requests) `body` made, by method, and its result. */
async function counted<R>(client: VsphereClient, body: () => Promise<R>): Promise<{ result: R; total: number; byMethod: Record<string, number> }> {
  const before = new Map(client.calls);
  const result = await body();
  const byMethod: Record<string, number> = {};
  for (const [method, n] of client.calls) if (n - (before.get(method) ?? 0) > 0) byMethod[method] = n - (before.get(method) ?? 0);
  return { result, total: Object.values(byMethod).reduce((a, b) => a + b, 0), byMethod };
}

beforeAll(async () => {
  sim = await startVcsim({ vms: 1, datastores: 1 });
}, T);

afterAll(async () => {
  await sim?.stop();
});

describe('vmdk snapshots and clones against vcsim', () => {
  it('copies the disk into <volume>/snapshots/<name>, lists and removes it, and clones from it and from the live volume', async () => {
    const folder = newFolder();
    const vsphere = connect();
    const driver = newDriver(folder, vsphere);
    const snapshots = driver.snapshots;
    const v = await driver.create(volume('v'));
    const { files: before, bytes } = await writeDisk(folder, 'v');

    const made = await counted(vsphere.client, () => snapshots.createSnapshot(v, 's1'));
    const snap = made.result;
    expect(snap).toMatchObject({ volume: 'v', name: 's1', sizeBytes: 64 * MiB, fstype: 'ext4', method: 'copy', bytes: 64 * MiB });
    expect(snap.writtenBytes).toBe(bytes);
    // The copy, byte for byte, and its record; no staging directory left.
    expect(await diskBytes(folder, 'v', 'snapshots', 's1')).toEqual(before);
    expect(entries(folder, 'v', 'snapshots')).toEqual(['s1']);
    expect(entries(folder, 'v', 'snapshots', 's1')).toEqual(['disk-flat.vmdk', 'disk.vmdk', 'snapshot.json']);
    expect(JSON.parse(await readFile(onDatastore(folder, 'v', 'snapshots', 's1', 'snapshot.json'), 'utf8'))).toMatchObject({ volume: 'v', name: 's1', capacityKb: 64 * 1024 });
    expect(made.byMethod).toMatchObject({ CopyVirtualDisk_Task: 1, MakeDirectory: 1, MoveDatastoreFile_Task: 1, 'HTTP GET': 1, 'HTTP PUT': 1 });

    // The volume changes afterwards; the snapshot does not.
    const after = (await writeDisk(folder, 'v')).files;
    expect(await diskBytes(folder, 'v', 'snapshots', 's1')).toEqual(before);
    await expect(snapshots.createSnapshot(v, 's1')).rejects.toThrow(SnapshotExists);
    expect(await diskBytes(folder, 'v', 'snapshots', 's1')).toEqual(before);

    // ls: of one volume, and of all (another host's driver sees them too).
    const w = await driver.create(volume('w', 32 * MiB));
    await snapshots.createSnapshot(w, 'a');
    const elsewhere = newDriver(folder);
    const listed = await counted(vsphere.client, () => snapshots.listSnapshots('v'));
    expect(listed.result).toEqual([{ volume: 'v', name: 's1', createdAt: snap.createdAt, sizeBytes: 64 * MiB, fstype: 'ext4', method: 'copy' }]);
    expect((await elsewhere.snapshots.listSnapshots()).map((s) => `${s.volume}@${s.name}`)).toEqual(['v@s1', 'w@a']);
    const listedAll = await counted(vsphere.client, () => snapshots.listSnapshots());
    expect(await snapshots.listSnapshots('nosnaps-here')).toEqual([]);

    // Clones: new volumes with their own record, their disk a copy (with a new UUID asked for).
    const fromSnap = await counted(vsphere.client, () => snapshots.createFrom(volume('from-snap', 128 * MiB), { volume: 'v', snapshot: 's1' }));
    expect(fromSnap.result).toMatchObject({ name: 'from-snap', sizeBytes: 128 * MiB, method: 'copy', ownership: { state: 'free' } });
    expect(fromSnap.byMethod).toMatchObject({ CopyVirtualDisk_Task: 1, SetVirtualDiskUuid: 1 });
    expect(fromSnap.byMethod.CreateVirtualDisk_Task).toBeUndefined();
    expect(await diskBytes(folder, 'from-snap')).toEqual(before);
    const fromLive = await counted(vsphere.client, () => snapshots.createFrom(volume('from-live'), { volume: 'v' }));
    expect(await diskBytes(folder, 'from-live')).toEqual(after);
    expect((await elsewhere.read('from-snap'))?.value).toMatchObject({ name: 'from-snap', sizeBytes: 128 * MiB, ownership: { state: 'free' } });
    expect((await elsewhere.list()).map((r) => r.name).sort()).toEqual(['from-live', 'from-snap', 'v', 'w']);
    expect(entries(folder).filter((e) => e.startsWith('.creating-'))).toEqual([]);
    // A clone has no snapshots of its own; the source's are not touched.
    expect(await snapshots.listSnapshots('from-snap')).toEqual([]);
    expect(await diskBytes(folder, 'v', 'snapshots', 's1')).toEqual(before);

    const removed = await counted(vsphere.client, () => snapshots.removeSnapshot('v', 's1'));
    expect(entries(folder, 'v', 'snapshots')).toEqual([]);
    expect(await snapshots.listSnapshots('v')).toEqual([]);
    await expect(snapshots.removeSnapshot('v', 's1')).rejects.toThrow(SnapshotNotFound);
    expect(await diskBytes(folder, 'from-snap')).toEqual(before); // a clone outlives its snapshot
    // The volume and what it keeps go together.
    await driver.destroy('w');
    expect(existsSync(onDatastore(folder, 'w'))).toBe(false);
    expect(await snapshots.listSnapshots()).toEqual([]);

    // Round trips: a snapshot is the copy task and its poll plus 7 (record check, staging
    // directory, size listing and its poll, record PUT, move and its poll); a clone is a create
    // (9, README "vmdk round trips") with the copy for the new disk, plus the new UUID and, from a
    // snapshot, its record. vcsim ends a task before answering, so each task costs one poll.
    expect(made.total).toBe(9);
    expect(listed.total).toBe(3); // search, its poll, one GET per snapshot
    expect(listedAll.total).toBe(4);
    expect(fromLive.total).toBeLessThanOrEqual(10 + 2); // + 2 when create's health check asks again (every 5 s)
    expect(fromSnap.total).toBeLessThanOrEqual(11 + 2);
    expect(removed.total).toBe(4); // move out of sight and delete, each a task and its poll
  }, T);

  it('a failed copy leaves no snapshot record and no partial disk, and a failed clone no volume', async () => {
    const folder = newFolder();
    const vsphere = connect();
    const driver = newDriver(folder, vsphere);
    const v = await driver.create(volume('v'));
    await writeDisk(folder, 'v');
    await driver.snapshots.createSnapshot(v, 'kept');

    // A copy that fails half way: vcsim copies disk-flat.vmdk, then finds no disk.vmdk to copy.
    const broken = await driver.create(volume('broken'));
    await writeDisk(folder, 'broken');
    await rm(onDatastore(folder, 'broken', 'disk.vmdk'));
    await expect(driver.snapshots.createSnapshot(broken, 'half')).rejects.toThrow(/cannot snapshot volume broken/);
    expect(entries(folder, 'broken', 'snapshots')).toEqual([]);
    await expect(driver.snapshots.createFrom(volume('half-clone'), { volume: 'broken' })).rejects.toThrow(/cannot create volume half-clone/);
    expect(entries(folder).filter((e) => !['.hosts', '.tmp'].includes(e))).toEqual(['broken', 'v']);
    await driver.destroy('broken');

    // vCenter refuses the copy.
    const { virtualDiskManager } = await vsphere.client.serviceContent();
    await sim.deny(virtualDiskManager.value, 'Datastore.FileManagement');
    try {
      await expect(driver.snapshots.createSnapshot(v, 'denied')).rejects.toThrow(/cannot snapshot volume v .*lacks privilege Datastore.FileManagement/);
      await expect(driver.snapshots.createFrom(volume('clone'), { volume: 'v' })).rejects.toThrow(BackendUnavailable);
      await expect(driver.snapshots.createFrom(volume('clone2'), { volume: 'v', snapshot: 'kept' })).rejects.toThrow(/cannot create volume clone2/);
    } finally {
      await sim.allow(virtualDiskManager.value);
    }
    expect(entries(folder, 'v', 'snapshots')).toEqual(['kept']);
    expect((await driver.snapshots.listSnapshots()).map((s) => s.name)).toEqual(['kept']);
    expect(entries(folder).filter((e) => !['.hosts', '.tmp'].includes(e))).toEqual(['v']);
    expect((await driver.list()).map((r) => r.name)).toEqual(['v']);

    // Missing sources: nothing made either.
    await expect(driver.snapshots.createFrom(volume('c'), { volume: 'v', snapshot: 'nosuch' })).rejects.toThrow(SnapshotNotFound);
    await expect(driver.snapshots.createFrom(volume('c'), { volume: 'nosuch' })).rejects.toThrow(/volume nosuch does not exist/);
    expect(entries(folder).filter((e) => !['.hosts', '.tmp'].includes(e))).toEqual(['v']);
    // And the copy works again once vCenter allows it.
    await driver.snapshots.createSnapshot(v, 'later');
    expect(entries(folder, 'v', 'snapshots')).toEqual(['kept', 'later']);
  }, T);

  describe('through the volume manager', () => {
    let fixture: ManagerFixture | undefined;
    afterEach(async () => {
      await fixture?.cleanup();
      fixture = undefined;
    });

    /** A VolumeManager whose default profile is the vmdk backend on vcsim, in its own folder. */
    async function vmdkManager(folder: string): Promise<ManagerFixture> {
      return managerFixture((dir) => {
        writeFileSync(join(dir, 'vcenter.password'), `${sim.password}\n`);
        return {
          backends: {
            loop: { root: join(dir, 'loop') },
            vmdk: { vcenter: { url: sim.url, user: sim.username, password_file: join(dir, 'vcenter.password'), timeout_seconds: 20 }, datastore: sim.datastores[0]!.name, folder },
          },
          profiles: { default: { backend: 'vmdk' } },
        };
      });
    }

    it('snapshots a volume no host uses under its lease, clones with from=, and refuses Remove of a volume with snapshots', async () => {
      const folder = newFolder();
      fixture = await vmdkManager(folder);
      const { manager } = fixture;
      await manager.create('v', { size: '64M' });
      const data = (await writeDisk(folder, 'v')).files;
      const meta = async () => JSON.parse(await readFile(onDatastore(folder, 'v', 'meta.json'), 'utf8')) as { revision: number; volume: { ownership: { state: string; generation: number } } };
      const before = await meta();
      const made = await manager.snapshots.create('v', 's1');
      expect(made).toMatchObject({ volume: 'v', name: 's1', method: 'copy', sizeBytes: 64 * MiB });
      // The lease was taken for the copy and given back.
      const after = await meta();
      expect(after.volume.ownership).toEqual(expect.objectContaining({ state: 'free', generation: before.volume.ownership.generation + 1 }));
      expect(after.revision).toBe(before.revision + 2);
      expect((await manager.snapshots.list('v')).map((s) => s.name)).toEqual(['s1']);

      await manager.create('c-snap', { from: 'v@s1', size: '96M' });
      await manager.create('c-live', { from: 'v' });
      expect(await diskBytes(folder, 'c-snap')).toEqual(data);
      expect(await diskBytes(folder, 'c-live')).toEqual(data);
      expect(JSON.parse(await readFile(onDatastore(folder, 'c-snap', 'meta.json'), 'utf8')).volume).toMatchObject({ name: 'c-snap', sizeBytes: 96 * MiB, fstype: 'ext4', ownership: { state: 'free' } });

      await expect(manager.remove('v')).rejects.toThrow(/volume v has 1 snapshot\(s\) \(s1\): remove them first/);
      await expect(manager.remove('v')).rejects.toMatchObject({ cause: expect.any(VolumeInUse) });
      expect(existsSync(onDatastore(folder, 'v', 'disk.vmdk'))).toBe(true);
      await manager.snapshots.remove('v', 's1');
      await manager.remove('v');
      expect(existsSync(onDatastore(folder, 'v'))).toBe(false);
      // --with-snapshots takes them along.
      await manager.snapshots.create('c-live', 'keep');
      await manager.remove('c-live', true);
      expect(existsSync(onDatastore(folder, 'c-live'))).toBe(false);
      expect(entries(folder).filter((e) => !e.startsWith('.'))).toEqual(['c-snap']);
    }, T);

    it('refuses bad input with a clear error and leaves nothing on the datastore', async () => {
      const folder = newFolder();
      fixture = await vmdkManager(folder);
      const { manager } = fixture;
      await manager.create('v', { size: '32M' });
      for (const name of ['../etc', 'a/b', '.hidden', '', 'x'.repeat(129)]) {
        await expect(manager.snapshots.create('v', name)).rejects.toThrow(/snapshot name .*: expected letters, digits/);
      }
      const cases: [Record<string, string>, RegExp][] = [
        [{ from: 'missing' }, /option from=missing: volume missing does not exist/],
        [{ from: 'v@nosnap' }, /volume v has no snapshot nosnap/],
        [{ from: 'v@../x' }, /expected VOLUME or VOLUME@SNAPSHOT/],
        [{ from: 'v', size: '16M' }, /a clone cannot be smaller than its source v \(32 MiB\)/],
      ];
      for (const [opts, message] of cases) await expect(manager.create('clone', opts)).rejects.toThrow(message);
      await expect(manager.snapshots.remove('v', 'nosnap')).rejects.toThrow(/volume v has no snapshot nosnap/);
      await expect(manager.snapshots.create('nosuch', 's')).rejects.toThrow(/volume nosuch does not exist/);
      expect(entries(folder).filter((e) => !e.startsWith('.'))).toEqual(['v']);
      expect(entries(folder, 'v')).not.toContain('snapshots');
      expect(entries(folder).filter((e) => e.startsWith('.creating-') || e.startsWith('.deleting-'))).toEqual([]);
    }, T);
  });
});
