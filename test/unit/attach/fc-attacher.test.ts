import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FcAttacher, type FcAttacherOptions } from '../../../src/attach/fc/fc-attacher.js';
import { reservationKey } from '../../../src/attach/iscsi/reservations.js';
import { AttachFailed } from '../../../src/errors.js';
import type { FcExport } from '../../../src/export.js';
import { silentLogger } from '../../../src/log.js';
import { FakeFcHost } from '../../helpers/fake-fc-host.js';

// The FCoE lab's names (research/fcoe-lab.md): two initiator ports, two array ports.
const HBA0 = '2000525400000201';
const HBA1 = '2000525400000202';
const T1 = '2000525400000101';
const T2 = '2000525400000102';
const WWID = 'naa.60014056f1d0c2a3b4c4d5e8f6071829';
const WWID7 = 'naa.60014050000000000000000000000007';
const MAP = '360014056f1d0c2a3b4c4d5e8f6071829';
const CTX = { hostId: 'host1', generation: 7 };
const MINE = reservationKey('host1', 7);

describe('FcAttacher (fake FC sysfs; the FCoE lab runs it against a real kernel)', () => {
  let root: string;
  let host: FakeFcHost;
  let attacher: FcAttacher;
  const exp = (over: Partial<FcExport> = {}): FcExport => ({ transport: 'fc', targetWwpns: [T1, T2], lun: 3, multipath: false, reservations: false, ...over });
  const newAttacher = (over: Partial<FcAttacherOptions> = {}) =>
    new FcAttacher(host, silentLogger(), { commandTimeoutMs: 1_000, root, deviceWaitMs: 2_000, pollMs: 10, sleep: () => host.settle(), ...over });
  const scsiDevices = async () => (await readdir(join(root, 'sys', 'bus', 'scsi', 'devices'))).sort();

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'ballast-fc-'));
    host = new FakeFcHost(root);
    await host.init();
    await host.addHba(0, HBA0);
    await host.addHba(1, HBA1);
    await host.addRport(0, { wwpn: T1, targetId: 0 }); // rport-0:0-0
    await host.addRport(1, { wwpn: T2, targetId: 2 }); // rport-1:0-0
    for (const t of [T1, T2]) host.targets.set(t, [{ lun: 3, wwid: WWID }, { lun: 7, wwid: WWID7 }]);
    attacher = newAttacher();
  });
  afterEach(async () => {
    host.releaseHung();
    await rm(root, { recursive: true, force: true });
  });

  describe('identify', () => {
    it('returns the port_name of every HBA, without 0x', async () => {
      expect(await attacher.identify()).toEqual({ wwpns: [HBA0, HBA1] });
    });

    it('fails naming /sys/class/fc_host when the host has no HBA', async () => {
      const bare = await mkdtemp(join(tmpdir(), 'ballast-fc-'));
      try {
        await new FakeFcHost(bare).init();
        const err = await new FcAttacher(host, silentLogger(), { commandTimeoutMs: 1_000, root: bare }).identify().catch((e: unknown) => e);
        expect(err).toBeInstanceOf(AttachFailed);
        expect((err as Error).message).toMatch(/^no Fibre Channel HBA \(\/sys\/class\/fc_host is empty\): /);
      } finally {
        await rm(bare, { recursive: true, force: true });
      }
    });
  });

  describe('attach', () => {
    it('scans exactly the LUN on each HBA\'s target port and joins the two paths in one map; a second attach returns it again', async () => {
      await host.addRport(0, { wwpn: '2000000000000999', targetId: 1 }); // another array on the same fabric
      const device = await attacher.attach(exp(), CTX);
      expect(device).toBe(`/dev/mapper/${MAP}`);
      expect(host.scans).toEqual(['host0: 0 0 3', 'host1: 0 2 3']);
      expect(await scsiDevices()).toEqual(['0:0:0:3', '1:0:2:3']); // LUN 7 is mapped, but not scanned
      expect(await host.maps()).toHaveLength(1);
      expect(await attacher.isAttached(exp(), device)).toBe(true);
      expect(await attacher.isAttached(exp({ lun: 7 }), device)).toBe(false);

      expect(await attacher.attach(exp(), CTX)).toBe(device);
      expect(host.scans).toHaveLength(2);
      expect((await host.disks()).sort()).toEqual(['sda', 'sdb']);
    });

    it('has multipathd build the map over two paths when it did not by itself (find_multipaths yes)', async () => {
      host.autoMultipath = false;
      expect(await attacher.attach(exp(), CTX)).toBe(`/dev/mapper/${MAP}`);
      expect(host.commands).toEqual(['multipath -a /dev/sda', 'multipathd add path /dev/sda', 'multipathd add path /dev/sdb']);
    });

    it('skips a target port that is not Online and uses the one path as /dev/sdX', async () => {
      await host.setRport('rport-1:0-0', { state: 'Blocked' });
      expect(await attacher.attach(exp(), CTX)).toBe('/dev/sda');
      expect(host.scans).toEqual(['host0: 0 0 3']);
      expect(await attacher.isAttached(exp(), '/dev/sda')).toBe(true);
    });

    it('does not use a target port whose scsi_target_id is -1 (a login before the ACL)', async () => {
      await host.setRport('rport-1:0-0', { targetId: -1 });
      expect(await attacher.attach(exp(), CTX)).toBe('/dev/sda');
      expect(host.scans).toEqual(['host0: 0 0 3']);
    });

    it('fails clearly when every target port has scsi_target_id -1, and scans nothing', async () => {
      await host.setRport('rport-0:0-0', { targetId: -1 });
      await host.setRport('rport-1:0-0', { targetId: -1 });
      const err = await attacher.attach(exp(), CTX).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AttachFailed);
      expect((err as Error).message).toMatch(/^FC target port rport-0:0-0 \(2000525400000101\), rport-1:0-0 \(2000525400000102\) is Online but not ready: scsi_target_id is -1\./);
      expect(host.scans).toEqual([]);
      expect(host.commands).toEqual([]);
    });

    it('names each HBA and the ports it sees when no Online FCP target port matches', async () => {
      await host.setRport('rport-0:0-0', { roles: 'FCP Initiator' }); // the array has no ACL for this host
      await host.setRport('rport-1:0-0', { state: 'Blocked' });
      await host.addRport(0, { wwpn: '2000000000000999', targetId: -1 }); // another array's port, not ready
      await expect(attacher.attach(exp(), CTX)).rejects.toThrow(
        `no Online FCP target port with WWPN ${T1} or ${T2} is visible from this host's HBAs (` +
          `host0: port_name ${HBA0} Online, rports seen: rport-0:0-0 ${T1} Online [FCP Initiator], ` +
          'rport-0:0-1 2000000000000999 Online [FCP Target, FCP Initiator] scsi_target_id -1; ' +
          `host1: port_name ${HBA1} Online, rports seen: rport-1:0-0 ${T2} Blocked [FCP Target, FCP Initiator]); ` +
          "check zoning/cabling and that the array registered this host's WWPNs",
      );
      expect(host.scans).toEqual([]);
    });

    it('fails within the bound when the LUN never appears on a path, naming it, and deletes the path that did appear', async () => {
      host.targets.set(T2, []); // the array maps LUN 3 to this host through T1 only
      const started = Date.now();
      const err = await newAttacher({ deviceWaitMs: 300 }).attach(exp(), CTX).catch((e: unknown) => e);
      expect(Date.now() - started).toBeLessThan(3_000);
      expect((err as Error).message).toBe(
        `LUN 3 did not appear on host1 (${HBA1}) -> ${T2} (1:0:2:3) within 0.3 s; does the array map that LUN to this host's WWPN?`,
      );
      expect(host.scans).toEqual(['host0: 0 0 3', 'host1: 0 2 3']);
      expect(await host.disks()).toEqual([]);
      expect(await scsiDevices()).toEqual([]);
    });

    it('gives up on a scan the kernel does not return from (a hung target), within the bound, naming it, with nothing scanned after it', async () => {
      await host.hang('class', 'scsi_host', 'host0', 'scan');
      const started = Date.now();
      const err = await newAttacher({ commandTimeoutMs: 300 }).attach(exp(), CTX).catch((e: unknown) => e);
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(err).toBeInstanceOf(AttachFailed);
      expect((err as Error).message).toMatch(/^the scan of LUN 0:0:0:3 did not return within 0\.3 s \(writing "0 0 3" to .*host0\/scan\): the HBA or the storage behind it is not answering/);
      expect(host.scans).toEqual([]); // host1 was never asked
      expect(await host.disks()).toEqual([]);
      expect(await scsiDevices()).toEqual([]);
    });

    it('scans a path again, and only that path, while its LUN has not appeared (the array mapped it late)', async () => {
      host.targets.set(T2, []);
      const started = Date.now();
      const late = newAttacher({
        deviceWaitMs: 5_000,
        sleep: async () => {
          if (Date.now() - started > 1_000) host.targets.set(T2, [{ lun: 3, wwid: WWID }]);
          await host.settle();
        },
      });
      expect(await late.attach(exp(), CTX)).toBe(`/dev/mapper/${MAP}`);
      expect(host.scans).toEqual(['host0: 0 0 3', 'host1: 0 2 3', 'host1: 0 2 3']); // again at 2 s
    });

    it('refuses paths that lead to different logical units, and undoes the scans', async () => {
      host.targets.set(T2, [{ lun: 3, wwid: WWID7 }]);
      await expect(attacher.attach(exp(), CTX)).rejects.toThrow(
        `the paths to FC LUN 3 lead to different or unidentified devices (sda@0:0:0:3 via ${T1}: ${WWID}, sdb@1:0:2:3 via ${T2}: ${WWID7}); refusing to join them`,
      );
      expect(await host.disks()).toEqual([]);
      expect(await host.maps()).toEqual([]);
    });

    it('scans and finds LUN 300 by the number the kernel gives it', async () => {
      for (const t of [T1, T2]) host.targets.set(t, [{ lun: 300, wwid: WWID }]);
      expect(await attacher.attach(exp({ lun: 300 }), CTX)).toBe(`/dev/mapper/${MAP}`);
      expect(host.scans).toEqual(['host0: 0 0 300', 'host1: 0 2 300']);
      expect(await scsiDevices()).toEqual(['0:0:0:300', '1:0:2:300']);
    });

    it('refuses LUN numbers above 16383, which the kernel would read as another addressing method', async () => {
      await expect(attacher.attach(exp({ lun: 16_384 }), CTX)).rejects.toThrow('FC LUN 16384 is out of range (0 to 16383)');
      expect(host.scans).toEqual([]);
    });

    it('registers the reservation key on every path and reserves before handing out the device', async () => {
      await attacher.attach(exp({ reservations: true }), CTX);
      expect(host.commands).toEqual([
        `sg_persist -n -o -I -S ${MINE} /dev/sda`,
        `sg_persist -n -o -I -S ${MINE} /dev/sdb`,
        'sg_persist -n -i -k /dev/sda',
        'sg_persist -n -i -r /dev/sda',
        `sg_persist -n -o -R -T 5 -K ${MINE} /dev/sda`,
      ]);
      expect(host.reservations.get(WWID)).toEqual({ keys: new Map([['sda', MINE], ['sdb', MINE]]), holder: MINE });
    });
  });

  describe('detach', () => {
    it('drops the reservation, flushes the map, then deletes each path and waits until they are gone', async () => {
      const device = await attacher.attach(exp({ reservations: true }), CTX);
      host.calls.length = 0;
      await attacher.detach(exp({ reservations: true }), device, CTX);
      // The fake refuses sg_persist on a deleted disk and a flush after its paths were deleted.
      expect(host.commands).toEqual([`sg_persist -n -o -G -K ${MINE} -S 0 /dev/sda`, `sg_persist -n -o -G -K ${MINE} -S 0 /dev/sdb`, `multipath -f ${MAP}`]);
      expect(await host.disks()).toEqual([]); // gone before detach returned
      expect(await host.maps()).toEqual([]);
      expect(await scsiDevices()).toEqual([]);
      expect(host.reservations.get(WWID)).toEqual({ keys: new Map(), holder: undefined });
      for (const disk of ['sda', 'sdb']) expect(host.commands).not.toContain(`blockdev --flushbufs /dev/${disk}`);
    });

    it('fails within the bound when deleting a path does not return, naming the disk', async () => {
      const device = await attacher.attach(exp(), CTX);
      await host.hang('block', 'sdb', 'device', 'delete');
      const started = Date.now();
      const err = await newAttacher({ commandTimeoutMs: 300 }).detach(exp(), device, CTX).catch((e: unknown) => e);
      expect(Date.now() - started).toBeLessThan(3_000);
      expect((err as Error).message).toMatch(/the removal of sdb did not return within 0\.3 s/);
      expect(await host.maps()).toEqual([]); // the map went first, as always
    });

    it('flushes a single path\'s buffers before deleting it', async () => {
      await host.setRport('rport-1:0-0', { state: 'Blocked' });
      await attacher.attach(exp(), CTX);
      host.calls.length = 0;
      await attacher.detach(exp(), '/dev/sda', CTX);
      expect(host.commands).toEqual(['blockdev --flushbufs /dev/sda']);
      expect(await host.disks()).toEqual([]);
    });

    it('after a restart finds the paths in sysfs, also behind a port that went down, and leaves other LUNs alone', async () => {
      await attacher.attach(exp({ lun: 3 }), CTX);
      await attacher.attach(exp({ lun: 7 }), CTX);
      await host.setRport('rport-1:0-0', { state: 'Blocked' }); // path down: its disk stays until dev_loss_tmo
      host.calls.length = 0;
      const restarted = newAttacher();
      await restarted.detach(exp({ lun: 3 }), `/dev/mapper/${MAP}`, CTX);
      expect(host.commands).toEqual([`multipath -f ${MAP}`]);
      expect(await scsiDevices()).toEqual(['0:0:0:7', '1:0:2:7']);
      expect(await host.maps()).toHaveLength(1);

      host.calls.length = 0;
      await restarted.detach(exp({ lun: 3 }), `/dev/mapper/${MAP}`, CTX); // absent: a no-op
      expect(host.commands).toEqual([]);
      expect(await scsiDevices()).toEqual(['0:0:0:7', '1:0:2:7']);
    });
  });

  describe('refreshSize', () => {
    it('rescans every path, then resizes the map; refuses while a path is down', async () => {
      const device = await attacher.attach(exp(), CTX);
      host.calls.length = 0;
      expect(await attacher.refreshSize(exp(), device)).toBe(true);
      expect(host.commands).toEqual([`multipathd resize map ${MAP}`]);
      for (const disk of ['sda', 'sdb']) expect(await readFile(join(root, 'sys', 'block', disk, 'device', 'rescan'), 'utf8')).toBe('1');
      await host.setRport('rport-1:0-0', { state: 'Blocked' });
      await expect(attacher.refreshSize(exp(), device)).rejects.toThrow(/only 1 of 2 paths are up/);
    });
  });
});
