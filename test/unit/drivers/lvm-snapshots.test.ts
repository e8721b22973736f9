import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IscsiBackendConfig, LioBackendConfig } from '../../../src/config/schema.js';
import { snapshotLvName } from '../../../src/drivers/array-host/lvm-snapshots.js';
import { IscsiDriver } from '../../../src/drivers/iscsi/iscsi-driver.js';
import { LioDriver } from '../../../src/drivers/lio/lio-driver.js';
import type { NewVolume } from '../../../src/drivers/types.js';
import { BackendUnavailable, InvalidOption, SnapshotExists, SnapshotNotFound, VolumeNotFound } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';
import { TimedExec } from '../../helpers/fake-exec.js';

const MiB = 1024 ** 2;
const volume = (name: string, sizeBytes = 64 * MiB): NewVolume => ({ name, profile: 'lvm', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
const backend = (pool: string): IscsiBackendConfig => ({ portals: ['127.0.0.1:3260'], target_prefix: 'iqn.2026-12.dev.ballast', array: { tgt_control_port: 0 }, pool, multipath: true, reservations: true });
const COMMAND_MS = 5_000;
const COPY_MS = 100_000;
const copyBound = (bytes: number) => COPY_MS + Math.ceil(bytes / 20_000); // the base bound plus the size at 20 MB/s

const snapLv = snapshotLvName('v', 's1');
const tagsOf = (volume: string, name: string, createdAt: string, size = 64 * MiB) =>
  ['ballast.snapshot', `ballast.volume=${volume}`, `ballast.name=${name}`, `ballast.created=${createdAt}`, `ballast.size=${size}`, 'ballast.fstype=ext4'].join(',');
/** lvs --reportformat json as LVM 2.03 prints it. */
const lvsJson = (...lvs: { lv_name: string; lv_tags: string; origin: string }[]) => JSON.stringify({ report: [{ lv: lvs }] }, null, 2);

describe('LVM snapshots and clones (iscsi and lio with volume_group)', () => {
  let pool: string;
  let exec: TimedExec;
  let driver: IscsiDriver;

  beforeEach(async () => {
    pool = await mkdtemp(join(tmpdir(), 'ballast-lvm-pool-'));
    exec = new TimedExec();
    driver = new IscsiDriver(pool, backend(pool), { exec }, COMMAND_MS, silentLogger(), 'vg0', COPY_MS);
    await driver.create(volume('v'));
    exec.calls.length = 0;
    exec.timeouts.length = 0;
  });
  afterEach(() => rm(pool, { recursive: true, force: true }));

  const source = async () => (await driver.read('v'))!.value;

  it('a grow LVM refuses (an origin with snapshots extends only while inactive) leaves the recorded size as it was', async () => {
    exec.reply({ match: 'lvextend', exitCode: 5, stderr: '  Snapshot origin volumes can be resized only while inactive: try lvchange -an.' });
    await expect(driver.grow('v', 128 * MiB)).rejects.toThrow(/resized only while inactive/);
    expect((await driver.read('v'))?.value.sizeBytes).toBe(64 * MiB);
  });

  describe('createSnapshot', () => {
    it('is one bounded lvcreate -s of the volume, its record in the tags', async () => {
      const snapshot = await driver.snapshots.createSnapshot(await source(), 's1');
      expect(snapshot).toMatchObject({ volume: 'v', name: 's1', sizeBytes: 64 * MiB, fstype: 'ext4', method: 'array', bytes: 64 * MiB, writtenBytes: 0 });
      expect(snapLv).toMatch(/^ballast\.snap\.[0-9a-f]{24}$/);
      expect(exec.calls).toEqual([
        [
          'lvcreate', '--yes', '-s', '-l', '100%ORIGIN', '-n', snapLv,
          '--addtag', 'ballast.snapshot', '--addtag', 'ballast.volume=v', '--addtag', 'ballast.name=s1',
          '--addtag', `ballast.created=${snapshot.createdAt}`, '--addtag', `ballast.size=${64 * MiB}`, '--addtag', 'ballast.fstype=ext4',
          'vg0/ballast-v',
        ],
      ]);
      expect(exec.timeouts).toEqual([COMMAND_MS]);
    });

    it('a taken name is SnapshotExists, and the snapshot that is there stays', async () => {
      exec.reply({ match: 'lvcreate', exitCode: 5, stderr: `  Logical Volume "${snapLv}" already exists in volume group "vg0"` });
      await expect(driver.snapshots.createSnapshot(await source(), 's1')).rejects.toBeInstanceOf(SnapshotExists);
      expect(exec.calls.map((c) => c[0])).toEqual(['lvcreate']);
    });

    it('a timed-out lvcreate is undone (lvremove of that snapshot) and reported', async () => {
      exec.reply({ match: 'lvcreate', timedOut: true, exitCode: 124 });
      await expect(driver.snapshots.createSnapshot(await source(), 's1')).rejects.toThrow(/^cannot snapshot volume v in LVM volume group vg0 on the array host: command 'lvcreate .* timed out/);
      expect(exec.commands.at(-1)).toBe(`lvremove --yes vg0/${snapLv}`);
    });

    it('a volume whose logical volume is gone is VolumeNotFound', async () => {
      exec.reply({ match: 'lvcreate', exitCode: 5, stderr: '  Failed to find logical volume "vg0/ballast-v"' });
      await expect(driver.snapshots.createSnapshot(await source(), 's1')).rejects.toBeInstanceOf(VolumeNotFound);
    });

    it('hostile names never reach the array host', async () => {
      for (const name of ['../x', '-x', 'a b', 'x;rm -rf /', 'a,ballast.snapshot', '', 'x'.repeat(129)]) {
        await expect(driver.snapshots.createSnapshot(await source(), name)).rejects.toBeInstanceOf(InvalidOption);
        await expect(driver.snapshots.removeSnapshot('v', name)).rejects.toBeInstanceOf(InvalidOption);
        await expect(driver.snapshots.createFrom(volume('c'), { volume: 'v', snapshot: name })).rejects.toBeInstanceOf(InvalidOption);
        await expect(driver.snapshots.createFrom(volume(name || '-'), { volume: 'v' })).rejects.toBeInstanceOf(InvalidOption);
      }
      expect(exec.calls).toEqual([]);
    });
  });

  describe('listSnapshots', () => {
    const listing = lvsJson(
      { lv_name: 'ballast-v', lv_tags: '', origin: '' },
      { lv_name: snapshotLvName('v', 'later'), lv_tags: tagsOf('v', 'later', '2026-12-05T10:00:00.000Z'), origin: 'ballast-v' },
      { lv_name: snapLv, lv_tags: tagsOf('v', 's1', '2026-12-05T09:00:00.000Z', 128 * MiB), origin: 'ballast-v' },
      { lv_name: snapshotLvName('w', 's1'), lv_tags: tagsOf('w', 's1', '2026-12-05T08:00:00.000Z'), origin: 'ballast-w' },
      // Not ballast's snapshots: no tag, a tag on an LV of another name, a temporary snapshot, a damaged record.
      { lv_name: 'root', lv_tags: '', origin: '' },
      { lv_name: 'copied', lv_tags: tagsOf('v', 'x', '2026-12-05T07:00:00.000Z'), origin: 'ballast-v' },
      { lv_name: 'ballast.tmp.0123456789abcdef', lv_tags: 'ballast.temporary,ballast.clone=c', origin: 'ballast-v' },
      { lv_name: snapshotLvName('v', 'bad'), lv_tags: 'ballast.snapshot,ballast.volume=v,ballast.name=bad,ballast.size=oops', origin: 'ballast-v' },
    );

    it('reads the records back from one bounded lvs, oldest first', async () => {
      exec.reply({ match: 'lvs', stdout: listing });
      expect(await driver.snapshots.listSnapshots('v')).toEqual([
        { volume: 'v', name: 's1', createdAt: '2026-12-05T09:00:00.000Z', sizeBytes: 128 * MiB, fstype: 'ext4', method: 'array' },
        { volume: 'v', name: 'later', createdAt: '2026-12-05T10:00:00.000Z', sizeBytes: 64 * MiB, fstype: 'ext4', method: 'array' },
      ]);
      expect(exec.calls).toEqual([['lvs', '--reportformat', 'json', '-o', 'lv_name,lv_tags,origin', 'vg0']]);
      expect(exec.timeouts).toEqual([COMMAND_MS]);
      expect((await driver.snapshots.listSnapshots()).map((s) => `${s.volume}@${s.name}`)).toEqual(['w@s1', 'v@s1', 'v@later']);
    });

    it('an lvs that fails or prints something else is BackendUnavailable', async () => {
      exec.reply({ match: 'lvs', exitCode: 5, stderr: '  Volume group "vg0" not found', once: true }, { match: 'lvs', stdout: 'garbage' });
      await expect(driver.snapshots.listSnapshots('v')).rejects.toThrow(/^cannot list the snapshots in LVM volume group vg0 on the array host: .*Volume group "vg0" not found/);
      await expect(driver.snapshots.listSnapshots('v')).rejects.toThrow(/^unexpected output of lvs vg0: garbage/);
    });
  });

  describe('removeSnapshot', () => {
    it('is one bounded lvremove of the snapshot', async () => {
      await driver.snapshots.removeSnapshot('v', 's1');
      expect(exec.calls).toEqual([['lvremove', '--yes', `vg0/${snapLv}`]]);
      expect(exec.timeouts).toEqual([COMMAND_MS]);
    });

    it('a snapshot that is not there is SnapshotNotFound', async () => {
      exec.reply({ match: 'lvremove', exitCode: 5, stderr: `  Failed to find logical volume "vg0/${snapLv}"` });
      await expect(driver.snapshots.removeSnapshot('v', 's1')).rejects.toBeInstanceOf(SnapshotNotFound);
    });
  });

  describe('createFrom', () => {
    const withSnapshot = () => exec.reply({ match: 'lvs', stdout: lvsJson({ lv_name: snapLv, lv_tags: tagsOf('v', 's1', '2026-12-05T09:00:00.000Z'), origin: 'ballast-v' }) });
    const dd = (from: string) => ['dd', `if=${from}`, 'of=/dev/vg0/ballast-c', 'bs=4M', 'iflag=direct', 'oflag=direct', 'conv=fsync,nocreat', 'status=none'];
    /** The driver's health check before a create. */
    const tgtShow = ['tgtadm', '-C', '0', '--lld', 'iscsi', '--mode', 'target', '--op', 'show'];
    const newLv = (bytes: number) => ['lvcreate', '--yes', '-W', 'y', '-Z', 'y', '-n', 'ballast-c', '-L', `${bytes}b`, 'vg0'];

    it('from a snapshot: a new logical volume of the requested size, filled by a bounded dd from the snapshot', async () => {
      withSnapshot();
      const clone = await driver.snapshots.createFrom(volume('c', 128 * MiB), { volume: 'v', snapshot: 's1' });
      expect(clone).toMatchObject({ name: 'c', sizeBytes: 128 * MiB, method: 'copy', ownership: { state: 'free' } });
      expect(exec.calls).toEqual([['lvs', '--reportformat', 'json', '-o', 'lv_name,lv_tags,origin', 'vg0'], tgtShow, newLv(128 * MiB), dd(`/dev/vg0/${snapLv}`)]);
      expect(exec.timeouts).toEqual([COMMAND_MS, COMMAND_MS, COMMAND_MS, copyBound(64 * MiB)]);
      expect((await driver.read('c'))?.value.sizeBytes).toBe(128 * MiB);
    });

    it('from a volume as it is now: through a temporary snapshot, removed afterwards', async () => {
      const clone = await driver.snapshots.createFrom(volume('c'), { volume: 'v' });
      expect(clone.method).toBe('copy');
      const temporary = exec.calls[0]![6]!;
      expect(temporary).toMatch(/^ballast\.tmp\.[0-9a-f]{16}$/);
      expect(exec.calls).toEqual([
        ['lvcreate', '--yes', '-s', '-l', '100%ORIGIN', '-n', temporary, '--addtag', 'ballast.temporary', '--addtag', 'ballast.clone=c', 'vg0/ballast-v'],
        tgtShow,
        newLv(64 * MiB),
        dd(`/dev/vg0/${temporary}`),
        ['lvremove', '--yes', `vg0/${temporary}`],
      ]);
      expect(exec.timeouts).toEqual([COMMAND_MS, COMMAND_MS, COMMAND_MS, copyBound(64 * MiB), COMMAND_MS]);
    });

    it('no host sees the clone while its copy runs: the record is put in place after the dd', async () => {
      const run = exec.run.bind(exec);
      let seenDuringCopy: unknown = 'dd never ran';
      exec.run = async (argv, options) => {
        if (argv[0] === 'dd') seenDuringCopy = await driver.read('c');
        return run(argv, options);
      };
      await driver.snapshots.createFrom(volume('c'), { volume: 'v' });
      expect(seenDuringCopy).toBeUndefined();
      expect(await driver.read('c')).toBeDefined();
    });

    it('a copy that fails or times out leaves nothing: the new volume and the temporary snapshot go', async () => {
      for (const failure of [{ exitCode: 1, stderr: 'dd: error writing: No space left on device' }, { timedOut: true, exitCode: 124 }]) {
        exec.calls.length = 0;
        exec.reply({ match: 'dd ', once: true, ...failure });
        const err = await driver.snapshots.createFrom(volume('c'), { volume: 'v' }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(BackendUnavailable);
        expect((err as Error).message).toMatch(/^cannot create volume c under \S+ \(nothing was created\): cannot copy volume v into it on the array host: command 'dd /);
        const temporary = exec.calls[0]![6]!;
        // The copy runs before the record and the target exist: after the dd, only the new logical volume and the temporary snapshot go.
        expect(exec.commands.map((c) => c.split(' ')[0])).toEqual(['lvcreate', 'tgtadm', 'lvcreate', 'dd', 'lvremove', 'lvremove']);
        expect(exec.commands[1]).toBe('tgtadm -C 0 --lld iscsi --mode target --op show'); // a look, no target is made
        expect(exec.commands.slice(-2)).toEqual(['lvremove --yes vg0/ballast-c', `lvremove --yes vg0/${temporary}`]);
        expect(await driver.read('c')).toBeUndefined();
        expect((await readdir(pool)).filter((e) => !e.startsWith('.'))).toEqual(['v']);
      }
      // and from a snapshot
      exec.calls.length = 0;
      withSnapshot();
      exec.reply({ match: 'dd ', exitCode: 1, stderr: 'dd: error reading: Input/output error' });
      await expect(driver.snapshots.createFrom(volume('c'), { volume: 'v', snapshot: 's1' })).rejects.toBeInstanceOf(BackendUnavailable);
      expect(exec.commands.at(-1)).toBe('lvremove --yes vg0/ballast-c');
      expect(await driver.read('c')).toBeUndefined();
    });

    it('a temporary snapshot that cannot be made: no volume is begun, and a half-made snapshot is removed', async () => {
      exec.reply({ match: 'lvcreate --yes -s', exitCode: 5, stderr: '  Insufficient free space: 16 extents needed, but only 3 available' });
      await expect(driver.snapshots.createFrom(volume('c'), { volume: 'v' })).rejects.toThrow(
        /^cannot take a temporary snapshot of volume v in LVM volume group vg0 for the clone: .*Insufficient free space/,
      );
      expect(exec.calls.map((c) => c.slice(0, 2).join(' '))).toEqual(['lvcreate --yes', 'lvremove --yes']);
      expect(await driver.read('c')).toBeUndefined();
    });

    it('a clone name that is taken: the volume there stays, the temporary snapshot goes', async () => {
      await driver.create(volume('c'));
      exec.calls.length = 0;
      exec.reply({ match: 'lvcreate --yes -W', exitCode: 5, stderr: '  Logical Volume "ballast-c" already exists in volume group "vg0"' });
      await expect(driver.snapshots.createFrom(volume('c'), { volume: 'v' })).rejects.toThrow(/volume c already exists/);
      expect(exec.calls.map((c) => c[0])).toEqual(['lvcreate', 'tgtadm', 'lvcreate', 'lvremove']);
      expect(exec.calls[3]![2]).toMatch(/^vg0\/ballast\.tmp\./);
      expect(await driver.read('c')).toBeDefined();
    });

    it('a missing source or snapshot is found out before anything is made', async () => {
      await expect(driver.snapshots.createFrom(volume('c'), { volume: 'nope' })).rejects.toBeInstanceOf(VolumeNotFound);
      expect(exec.calls).toEqual([]);
      exec.reply({ match: 'lvs', stdout: lvsJson() });
      await expect(driver.snapshots.createFrom(volume('c'), { volume: 'v', snapshot: 's1' })).rejects.toBeInstanceOf(SnapshotNotFound);
      expect(exec.calls.map((c) => c[0])).toEqual(['lvs']);
    });
  });

  it('LioDriver with a volume group has the same snapshots', async () => {
    const lioBackend: LioBackendConfig = { array: {}, pool, transport: 'iscsi', iscsi: { portals: ['127.0.0.1:3260'], target_prefix: 'iqn.2026-12.dev.ballast' }, multipath: true, reservations: true };
    const lio = new LioDriver(pool, lioBackend, 'iscsi', { exec }, COMMAND_MS, silentLogger(), 'vg0', COPY_MS);
    await lio.snapshots.createSnapshot((await lio.read('v'))!.value, 's1');
    expect(exec.calls[0]!.slice(0, 7)).toEqual(['lvcreate', '--yes', '-s', '-l', '100%ORIGIN', '-n', snapLv]);
    expect(exec.calls[0]!.at(-1)).toBe('vg0/ballast-v');
  });
});
