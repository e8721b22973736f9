import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { VsphereClient } from '../../../src/drivers/vsphere/client.js';
import { moref } from '../../../src/drivers/vsphere/soap.js';
import type { AttachedDisk } from '../../../src/drivers/vsphere/vm-disks.js';
import type { Vsphere } from '../../../src/drivers/vsphere/vmdk-driver.js';
import { LeaseHeld } from '../../../src/errors.js';
import type { VmdkExport } from '../../../src/export.js';
import { startVcsim, type Vcsim } from '../../lab/vcsim.js';
import { connect, newFolder, volume, vmdkHost } from '../../helpers/vmdk-vcsim.js';

// How many vCenter round trips each vmdk operation costs (the figure that carries over from
// vcsim to a real vCenter), and that what the driver keeps to save them - the VM's device list,
// the record it just wrote, the disk's UUID and size, the VMs the record names - is given up
// when someone else changed things behind its back. The record's revision claims are in
// vmdk-revision-claims.test.ts.

const T = 60_000;

let sim: Vcsim;
let observer: Vsphere;

const vmRef = (index: number) => moref('VirtualMachine', sim.vms[index]!.moid);
const host = (index: number, folder: string, options: { locking?: boolean } = {}) => vmdkHost(sim, index, folder, options);

/** Round trips (SOAP calls and datastore HTTP requests) `body` made, by method. */
async function counted(client: VsphereClient, body: () => Promise<unknown>): Promise<{ total: number; byMethod: Record<string, number> }> {
  const before = new Map(client.calls);
  await body();
  const byMethod: Record<string, number> = {};
  for (const [method, n] of client.calls) if (n - (before.get(method) ?? 0) > 0) byMethod[method] = n - (before.get(method) ?? 0);
  return { total: Object.values(byMethod).reduce((a, b) => a + b, 0), byMethod };
}

async function attachedTo(index: number, file: string): Promise<AttachedDisk[]> {
  return observer.disks.find([vmRef(index)], file);
}

/** A host that has attached and detached one volume already: it knows its VM and the VM's devices, as a daemon does after its first mount. */
async function warmHost(index: number, folder: string, options: { locking?: boolean } = {}) {
  const h = host(index, folder, options);
  await h.keeper.register();
  await h.driver.checkHealth();
  await h.driver.create(volume(`warm-up-${index}`));
  await h.lease.acquire(`warm-up-${index}`);
  await h.driver.export(`warm-up-${index}`, h.initiator);
  await h.driver.unexport(`warm-up-${index}`, h.initiator);
  await h.lease.release(`warm-up-${index}`);
  return h;
}

beforeAll(async () => {
  sim = await startVcsim({ vms: 2, datastores: 1 });
  observer = connect(sim);
}, T);

afterAll(async () => {
  await observer?.client.logout();
  await sim?.stop();
});

describe('vmdk round trips against vcsim', () => {
  it('attach of a new volume (lease acquire + export) takes at most 6 round trips; detach 7, destroy 6; the disk is really attached and the record says so', async () => {
    const a = await warmHost(0, newFolder());
    await a.driver.create(volume('fresh'));
    const file = a.driver.imagePath('fresh');
    let exp: VmdkExport | undefined;
    const attach = await counted(a.vsphere.client, async () => {
      await a.lease.acquire('fresh');
      exp = (await a.driver.export('fresh', a.initiator)) as VmdkExport;
    });
    expect(attach.total).toBeLessThanOrEqual(6);
    // Exactly one change of the VM and one claim; no device list, UUID or note read.
    expect(attach.byMethod).toMatchObject({ ReconfigVM_Task: 1, MakeDirectory: 1 });
    expect(attach.byMethod.QueryVirtualDiskUuid).toBeUndefined();
    expect(await attachedTo(0, file)).toHaveLength(1);
    // The UUID given is the disk's, as vCenter answers it asked directly.
    const { virtualDiskManager } = await observer.client.serviceContent();
    const dc = (await observer.inventory.datacenter()).ref;
    const asked = String(await observer.client.call('QueryVirtualDiskUuid', virtualDiskManager, { name: file, datacenter: dc }));
    expect(exp!.diskUuid).toBe(asked.replace(/[\s-]/g, '').toLowerCase());
    // The lease was taken: the record on the datastore says h0 holds it.
    expect((await a.driver.read('fresh'))?.value.ownership).toMatchObject({ state: 'held', holder: { hostId: 'h0' } });

    const detach = await counted(a.vsphere.client, async () => {
      await a.driver.unexport('fresh', a.initiator);
      await a.lease.release('fresh');
    });
    expect(detach.total).toBeLessThanOrEqual(7);
    expect(await attachedTo(0, file)).toEqual([]);
    const destroy = await counted(a.vsphere.client, () => a.driver.destroy('fresh'));
    expect(destroy.total).toBeLessThanOrEqual(6);
    expect(await a.driver.read('fresh')).toBeUndefined();
  }, T);

  it('attach of an existing volume whose record this daemon has not seen lately: one read more (7)', async () => {
    const folder = newFolder();
    const a = await warmHost(0, folder);
    await a.driver.create(volume('old'));
    await a.lease.acquire('old');
    await a.driver.export('old', a.initiator);
    await a.driver.unexport('old', a.initiator);
    await a.lease.release('old');
    const b = await warmHost(1, folder); // another daemon: reads the record afresh
    const attach = await counted(b.vsphere.client, async () => {
      await b.lease.acquire('old');
      await b.driver.export('old', b.initiator);
    });
    expect(attach.total).toBeLessThanOrEqual(7);
    expect(attach.byMethod['HTTP GET']).toBe(1);
    expect(await attachedTo(1, b.driver.imagePath('old'))).toHaveLength(1);
    await b.driver.unexport('old', b.initiator);
  }, T);
});

describe('what the vmdk driver keeps is given up when someone else changed things', () => {
  it('a disk ballast attached was detached by hand: exporting again attaches it again (the kept device list is not trusted for "attached")', async () => {
    const a = await warmHost(0, newFolder());
    await a.driver.create(volume('undone'));
    await a.lease.acquire('undone');
    const file = a.driver.imagePath('undone');
    await a.driver.export('undone', a.initiator);
    const [disk] = await attachedTo(0, file);
    await observer.disks.detach(disk!);
    expect(await attachedTo(0, file)).toEqual([]);
    await a.driver.export('undone', a.initiator);
    expect(await attachedTo(0, file)).toHaveLength(1);
    // And detached by hand again: unexport finds nothing to remove and succeeds.
    const [again] = await attachedTo(0, file);
    await observer.disks.detach(again!);
    await a.driver.unexport('undone', a.initiator);
    expect(await attachedTo(0, file)).toEqual([]);
  }, T);

  it('a disk ballast did not attach was added to the VM by hand in the slot ballast would pick: the attach still gets a slot of its own', async () => {
    const folder = newFolder();
    const a = await warmHost(0, folder);
    await a.driver.create(volume('mine'));
    await a.driver.create(volume('by-hand'));
    // Someone else (own session) attaches another disk to the VM: ballast's kept list lacks it.
    await observer.disks.attach(vmRef(0), a.driver.imagePath('by-hand'));
    await a.lease.acquire('mine');
    const attach = await counted(a.vsphere.client, () => a.driver.export('mine', a.initiator));
    // vCenter refused the slot the kept list offered; the VM was read again and the attach sent again.
    expect(attach.byMethod.ReconfigVM_Task).toBe(2);
    const all = [...(await attachedTo(0, a.driver.imagePath('mine'))), ...(await attachedTo(0, a.driver.imagePath('by-hand')))];
    expect(all).toHaveLength(2);
    expect(new Set(all.map((d) => `${d.controllerKey}:${d.unitNumber}`)).size).toBe(2);
    await a.driver.unexport('mine', a.initiator);
    await observer.disks.detach((await attachedTo(0, a.driver.imagePath('by-hand')))[0]!);
  }, T);

  it('the record ballast just wrote was changed by another host: the lease read goes to the datastore and sees it', async () => {
    const folder = newFolder();
    const a = await warmHost(0, folder);
    const b = await warmHost(1, folder);
    await a.driver.create(volume('raced')); // a keeps "free at revision 1" for 2 s
    await b.lease.acquire('raced');
    await expect(a.lease.acquire('raced')).rejects.toThrow(LeaseHeld);
    await expect(a.driver.export('raced', a.initiator)).rejects.toThrow(LeaseHeld);
    expect(await attachedTo(0, a.driver.imagePath('raced'))).toEqual([]);
  }, T);

  it('a volume destroyed and made again under the same name (by another host): its disk\'s UUID is asked again, not taken from the old disk\'s', async () => {
    const folder = newFolder();
    const a = await warmHost(0, folder);
    const b = await warmHost(1, folder);
    await a.driver.create(volume('reborn'));
    await a.lease.acquire('reborn');
    await a.driver.export('reborn', a.initiator);
    await a.driver.unexport('reborn', a.initiator);
    await a.lease.release('reborn');
    await b.driver.destroy('reborn');
    await new Promise((r) => setTimeout(r, 5)); // a new createdAt
    await b.driver.create(volume('reborn'));
    let second: VmdkExport | undefined;
    const attach = await counted(a.vsphere.client, async () => {
      await a.lease.acquire('reborn');
      second = (await a.driver.export('reborn', a.initiator)) as VmdkExport;
    });
    // vcsim derives a UUID from the path, so old and new disk look alike: what shows is that a asked.
    expect(attach.byMethod.QueryVirtualDiskUuid).toBe(1);
    const { virtualDiskManager } = await observer.client.serviceContent();
    const asked = String(await observer.client.call('QueryVirtualDiskUuid', virtualDiskManager, { name: second!.file, datacenter: (await observer.inventory.datacenter()).ref }));
    expect(second!.diskUuid).toBe(asked.replace(/[\s-]/g, '').toLowerCase());
    await a.driver.unexport('reborn', a.initiator);
  }, T);

  it('the record names the VM before the disk is attached there: a host that died attached is found by the next holder without asking the whole datastore', async () => {
    const folder = newFolder();
    const a = await warmHost(0, folder);
    const b = await warmHost(1, folder);
    await a.driver.create(volume('named'));
    // Once attached and detached, the record knows where the disk is (nowhere)...
    await a.lease.acquire('named');
    await a.driver.export('named', a.initiator);
    await a.driver.unexport('named', a.initiator);
    await a.lease.release('named');
    // ...and taking the lease names the VM the disk goes to next.
    await a.lease.acquire('named');
    const raw = JSON.parse(await readFile(join(sim.datastores[0]!.dir, folder, 'named', 'meta.json'), 'utf8')) as { vmdk?: { vms?: Array<{ value: string }> } };
    expect(raw.vmdk?.vms?.map((v) => v.value)).toEqual([sim.vms[0]!.moid]);
    await a.driver.export('named', a.initiator);
    // a dies holding it; an operator frees the record (its host is known down).
    const record = JSON.parse(await readFile(join(sim.datastores[0]!.dir, folder, 'named', 'meta.json'), 'utf8'));
    record.volume.ownership = { state: 'free', generation: record.volume.ownership.generation, updatedAt: new Date().toISOString() };
    await writeFile(join(sim.datastores[0]!.dir, folder, 'named', 'meta.json'), JSON.stringify(record));
    await b.lease.acquire('named');
    await b.driver.export('named', b.initiator);
    expect(await attachedTo(0, a.driver.imagePath('named'))).toEqual([]);
    expect(await attachedTo(1, a.driver.imagePath('named'))).toHaveLength(1);
    await b.driver.unexport('named', b.initiator);
    await b.lease.release('named');
    const after = JSON.parse(await readFile(join(sim.datastores[0]!.dir, folder, 'named', 'meta.json'), 'utf8')) as { vmdk?: { vms?: unknown[] } };
    expect(after.vmdk?.vms).toEqual([]); // detached from both, as b saw it
  }, T);
});

describe('a disk another VM has open, on a vCenter that locks it (emulated)', () => {
  it('attached by hand to another VM after ballast last saw it: the attach is refused, every VM on the datastore is asked, the disk is taken and attached here', async () => {
    const folder = newFolder();
    const a = await warmHost(0, folder, { locking: true });
    await a.driver.create(volume('grabbed'));
    await a.lease.acquire('grabbed');
    await a.driver.export('grabbed', a.initiator);
    await a.driver.unexport('grabbed', a.initiator);
    await a.lease.release('grabbed'); // the record now says: attached nowhere
    const file = a.driver.imagePath('grabbed');
    await observer.disks.attach(vmRef(1), file);
    await a.lease.acquire('grabbed');
    await a.driver.export('grabbed', a.initiator);
    expect(await attachedTo(1, file)).toEqual([]);
    expect(await attachedTo(0, file)).toHaveLength(1);
    await a.driver.unexport('grabbed', a.initiator);
  }, T);

  it('takeover of a volume whose record names no VMs: the new holder\'s attach is refused while the dead holder\'s VM has it, and succeeds once it is taken from it', async () => {
    const folder = newFolder();
    const a = await warmHost(0, folder);
    const b = await warmHost(1, folder, { locking: true });
    await a.driver.create(volume('unnamed'));
    await a.lease.acquire('unnamed'); // a new volume's record names no VMs yet
    await a.driver.export('unnamed', a.initiator);
    const path = join(sim.datastores[0]!.dir, folder, 'unnamed', 'meta.json');
    const record = JSON.parse(await readFile(path, 'utf8'));
    expect(record.vmdk?.vms).toBeUndefined();
    record.volume.ownership = { state: 'free', generation: record.volume.ownership.generation, updatedAt: new Date().toISOString() };
    await writeFile(path, JSON.stringify(record)); // a died; an operator freed the record
    await b.lease.acquire('unnamed');
    await b.driver.export('unnamed', b.initiator);
    const file = a.driver.imagePath('unnamed');
    expect(await attachedTo(0, file)).toEqual([]);
    expect(await attachedTo(1, file)).toHaveLength(1);
    await b.driver.unexport('unnamed', b.initiator);
  }, T);
});
