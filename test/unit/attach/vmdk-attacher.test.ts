import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { vmwareSerialUuid, VmdkAttacher, type VmdkAttacherOptions } from '../../../src/attach/vmdk/vmdk-attacher.js';
import { AttachFailed } from '../../../src/errors.js';
import type { Exec, ExecOptions, ExecResult } from '../../../src/exec.js';
import type { VmdkExport } from '../../../src/export.js';
import { silentLogger } from '../../../src/log.js';

const UUID = '6000c2929b23ab3ae9a8c4d9f5c3c1d2';
const EXP: VmdkExport = { transport: 'vmdk', diskUuid: UUID, file: '[ds1] ballast/pgdata/disk.vmdk' };

/**
 * The guest kernel of a vSphere VM, for unit tests: a sysfs tree under `root` that changes as
 * the kernel's would when `settle()` runs (from the attacher's injected sleep). A disk the
 * hypervisor hot-added (`hotAdd`) shows up at the next wildcard scan of a host, or by itself
 * after a number of polls (PVSCSI reports hot-adds); a write to device/delete removes the disk.
 * Commands (blockdev) are recorded with what the kernel had at that moment. Its real
 * counterpart is the VM lab (test/integration/vm/vmdk-guest.test.ts).
 */
class FakeVmGuest implements Exec {
  readonly calls: { argv: string[]; deleteWritten: boolean }[] = [];
  readonly scans: string[] = [];
  private readonly pending: { wwid: string; readyIn: number; reportsItself: boolean }[] = [];
  private next = 0;

  constructor(readonly root: string) {}

  sys(...parts: string[]): string {
    return join(this.root, 'sys', ...parts);
  }

  get commands(): string[] {
    return this.calls.map((c) => c.argv.join(' '));
  }

  /** host0 and host1 are the VM's HBAs; host2 belongs to an iSCSI session. */
  async init(): Promise<void> {
    for (const host of ['host0', 'host1', 'host2']) {
      await mkdir(this.sys('class', 'scsi_host', host), { recursive: true });
      await writeFile(this.sys('class', 'scsi_host', host, 'scan'), '');
    }
    await mkdir(this.sys('class', 'iscsi_host', 'host2'), { recursive: true });
    await mkdir(this.sys('block'), { recursive: true });
  }

  /** A disk the kernel already has; `wwid` undefined: one without a device identification page. */
  async addDisk(wwid: string | undefined): Promise<string> {
    const disk = `sd${String.fromCharCode(97 + this.next++)}`;
    await mkdir(this.sys('block', disk, 'device'), { recursive: true });
    await mkdir(this.sys('block', disk, 'holders'), { recursive: true });
    if (wwid !== undefined) await writeFile(this.sys('block', disk, 'device', 'wwid'), `${wwid}\n`);
    await writeFile(this.sys('block', disk, 'device', 'delete'), '');
    return disk;
  }

  /**
   * The hypervisor attaches a disk, done after `readyIn` settles. Then it shows up at the next
   * scan (LSI Logic, SATA) or, with `reportsItself` (PVSCSI), at once.
   */
  hotAdd(wwid: string, { readyIn = 0, reportsItself = false } = {}): void {
    this.pending.push({ wwid, readyIn, reportsItself });
  }

  async settle(): Promise<void> {
    let scanned = false;
    for (const host of ['host0', 'host1', 'host2']) {
      const file = this.sys('class', 'scsi_host', host, 'scan');
      const request = (await readFile(file, 'utf8')).trim();
      if (!request) continue;
      this.scans.push(`${host} ${request}`);
      await writeFile(file, '');
      if (host !== 'host2') scanned = true;
    }
    for (const disk of [...this.pending]) {
      disk.readyIn -= 1;
      if (disk.readyIn < 0 && (scanned || disk.reportsItself)) {
        this.pending.splice(this.pending.indexOf(disk), 1);
        await this.addDisk(disk.wwid);
      }
    }
    for (const disk of await this.disks()) {
      if ((await readFile(this.sys('block', disk, 'device', 'delete'), 'utf8')).trim() === '1') await rm(this.sys('block', disk), { recursive: true, force: true });
    }
  }

  async disks(): Promise<string[]> {
    return (await readdir(this.sys('block'))).sort();
  }

  async run(argv: readonly string[], _options?: ExecOptions): Promise<ExecResult> {
    const device = argv.at(-1)!.replace('/dev/', '');
    const deleteWritten = (await readFile(this.sys('block', device, 'device', 'delete'), 'utf8').catch(() => '')).trim() === '1';
    this.calls.push({ argv: [...argv], deleteWritten });
    if (argv[0] !== 'blockdev') throw new Error(`FakeVmGuest: unexpected command ${argv.join(' ')}`);
    return { stdout: '', stderr: '', exitCode: 0 };
  }
}

describe('VmdkAttacher (fake sysfs; the VM lab runs it against a real kernel)', () => {
  let root: string;
  let guest: FakeVmGuest;
  let attacher: VmdkAttacher;
  const make = (over: Partial<VmdkAttacherOptions> = {}) =>
    new VmdkAttacher(guest, silentLogger(), { commandTimeoutMs: 1_000, root, deviceWaitMs: 2_000, pollMs: 10, sleep: () => guest.settle(), ...over });

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'ballast-vmdk-'));
    guest = new FakeVmGuest(root);
    await guest.init();
    attacher = make();
  });
  afterEach(() => rm(root, { recursive: true, force: true }));
  /** Scans run beside the polling: lets the last one land and the fake kernel see it. */
  const scansDone = () => new Promise((r) => setTimeout(r, 50)).then(() => guest.settle());

  describe('identify', () => {
    const dmi = (file: string, text: string) => mkdir(join(root, 'sys', 'class', 'dmi', 'id'), { recursive: true }).then(() => writeFile(join(root, 'sys', 'class', 'dmi', 'id', file), text));

    it('reads the BIOS UUID from product_uuid, in lower case', async () => {
      await dmi('product_uuid', '4203942F-CE98-3F27-455C-463D34B8AF41\n');
      expect(await attacher.identify()).toEqual({ vmUuid: '4203942f-ce98-3f27-455c-463d34b8af41' });
    });

    it('prefers a VMware product_serial, which keeps vCenter\'s byte order where product_uuid is swapped', async () => {
      await dmi('product_uuid', '2F940342-98CE-273F-455C-463D34B8AF41\n'); // hardware 13+: first three fields swapped
      await dmi('product_serial', 'VMware-42 03 94 2f ce 98 3f 27-45 5c 46 3d 34 b8 af 41\n');
      expect(await attacher.identify()).toEqual({ vmUuid: '4203942f-ce98-3f27-455c-463d34b8af41' });
      expect(vmwareSerialUuid('Not Specified')).toBeUndefined();
    });

    it('returns the configured override without reading the firmware', async () => {
      expect(await make({ vmUuid: '4203942F-CE98-3F27-455C-463D34B8AF41' }).identify()).toEqual({ vmUuid: '4203942f-ce98-3f27-455c-463d34b8af41' });
    });

    it('fails clearly, naming the file and the setting, when product_uuid cannot be read', async () => {
      const err = await attacher.identify().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AttachFailed);
      expect((err as Error).message).toContain(join(root, 'sys/class/dmi/id/product_uuid'));
      expect((err as Error).message).toMatch(/readable by root only.*backends\.vmdk\.vm_uuid/);
    });
  });

  describe('attach', () => {
    it('finds the disk by its UUID among others, one without a WWID, at once and without scanning', async () => {
      await guest.addDisk('naa.6000c29000000000000000000000000a');
      await guest.addDisk(undefined);
      await guest.addDisk(`naa.${UUID.toUpperCase()}`);
      await guest.addDisk('t10.VMware  Virtual disk    ');
      expect(await attacher.attach(EXP)).toBe('/dev/sdc');
      expect(guest.scans).toEqual([]);
      expect(await attacher.attach(EXP)).toBe('/dev/sdc'); // idempotent
    });

    it('scans every SCSI host but the iSCSI ones, and finds a disk that appears after the scan', async () => {
      await guest.addDisk('naa.6000c29000000000000000000000000a');
      guest.hotAdd(`naa.${UUID}`);
      expect(await attacher.attach(EXP)).toBe('/dev/sdb');
      await scansDone();
      expect([...guest.scans].sort()).toEqual(['host0 - - -', 'host1 - - -']);
      expect(guest.commands).toEqual([]);
    });

    it('finds a disk that the controller reports by itself a few polls later', async () => {
      guest.hotAdd(`naa.${UUID}`, { readyIn: 5, reportsItself: true });
      expect(await attacher.attach(EXP)).toBe('/dev/sda');
    });

    it('scans again at 2 s when the first scan came before the hypervisor was done', async () => {
      guest.hotAdd(`naa.${UUID}`, { readyIn: 3 });
      attacher = make({ deviceWaitMs: 4_000, sleep: (ms) => new Promise((r) => setTimeout(r, ms)).then(() => guest.settle()), pollMs: 50 });
      const started = Date.now();
      expect(await attacher.attach(EXP)).toBe('/dev/sda');
      expect(Date.now() - started).toBeGreaterThanOrEqual(2_000);
      await scansDone();
      expect([...guest.scans].sort()).toEqual(['host0 - - -', 'host0 - - -', 'host1 - - -', 'host1 - - -']);
    });

    it('times out within the bound with an error naming the disk, its UUID, the wait and disk.EnableUUID', async () => {
      await guest.addDisk('naa.6000c29000000000000000000000000a');
      attacher = make({ deviceWaitMs: 300 });
      const started = Date.now();
      const err = await attacher.attach(EXP).catch((e: unknown) => e);
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(err).toBeInstanceOf(AttachFailed);
      expect((err as Error).message).toBe(
        `the disk [ds1] ballast/pgdata/disk.vmdk (UUID ${UUID}) did not appear in this VM within 0.3 s of scanning every SCSI host; ` +
          'is it attached to this VM, and is disk.EnableUUID=TRUE set on the VM (without it the guest cannot see a disk\'s UUID)?',
      );
    });

    it('refuses two disks with one UUID (a copied .vmdk) instead of guessing', async () => {
      await guest.addDisk(`naa.${UUID}`);
      await guest.addDisk(`naa.${UUID}`);
      await expect(attacher.attach(EXP)).rejects.toThrow(/disks \/dev\/sda, \/dev\/sdb all have UUID 6000c2929b23ab3ae9a8c4d9f5c3c1d2/);
    });
  });

  describe('detach', () => {
    it('flushes, then deletes the disk, and returns only once the kernel let it go', async () => {
      await guest.addDisk('naa.6000c29000000000000000000000000a');
      await guest.addDisk(`naa.${UUID}`);
      await attacher.detach(EXP, '/dev/sdb');
      expect(guest.calls).toEqual([{ argv: ['blockdev', '--flushbufs', '/dev/sdb'], deleteWritten: false }]);
      expect(await guest.disks()).toEqual(['sda']);
      expect(await attacher.isAttached(EXP, '/dev/sdb')).toBe(false);
    });

    it('finds the disk by UUID when its name changed since attach (a restart)', async () => {
      await guest.addDisk(`naa.${UUID}`);
      await attacher.detach(EXP, '/dev/sdk');
      expect(guest.commands).toEqual(['blockdev --flushbufs /dev/sda']);
      expect(await guest.disks()).toEqual([]);
    });

    it('is a no-op when the disk is not there', async () => {
      await guest.addDisk('naa.6000c29000000000000000000000000a');
      await attacher.detach(EXP, '/dev/sdb');
      expect(guest.commands).toEqual([]);
      expect(await guest.disks()).toEqual(['sda']);
    });

    it('refuses to delete a disk something is stacked on', async () => {
      const disk = await guest.addDisk(`naa.${UUID}`);
      await mkdir(guest.sys('block', disk, 'holders', 'dm-0'));
      await expect(attacher.detach(EXP, `/dev/${disk}`)).rejects.toThrow(/\/dev\/sda is still in use by dm-0/);
      expect(guest.commands).toEqual([]);
    });

    it('fails within the bound when the kernel does not remove the disk', async () => {
      await guest.addDisk(`naa.${UUID}`);
      attacher = make({ deviceWaitMs: 200, sleep: (ms) => new Promise((r) => setTimeout(r, ms)) });
      await expect(attacher.detach(EXP, '/dev/sda')).rejects.toThrow('/dev/sda ([ds1] ballast/pgdata/disk.vmdk) did not go away within 0.2 s of deleting it');
    });
  });

  describe('isAttached and refreshSize', () => {
    it('isAttached is true while the device still has the UUID, false once the name is another disk\'s', async () => {
      await guest.addDisk(`naa.${UUID}`);
      expect(await attacher.isAttached(EXP, '/dev/sda')).toBe(true);
      await writeFile(guest.sys('block', 'sda', 'device', 'wwid'), 'naa.6000c29000000000000000000000000a\n');
      expect(await attacher.isAttached(EXP, '/dev/sda')).toBe(false);
      expect(await attacher.isAttached(EXP, '/dev/mapper/x')).toBe(false);
    });

    it('refreshSize rescans the disk and says the filesystem can grow online', async () => {
      await guest.addDisk('naa.6000c29000000000000000000000000a');
      await guest.addDisk(`naa.${UUID}`);
      expect(await attacher.refreshSize(EXP, '/dev/sdb')).toBe(true);
      expect(await readFile(guest.sys('block', 'sdb', 'device', 'rescan'), 'utf8')).toBe('1');
      await rm(guest.sys('block', 'sdb'), { recursive: true });
      await expect(attacher.refreshSize(EXP, '/dev/sdb')).rejects.toThrow(/not attached to this VM/);
    });
  });
});
