import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanExt4, SUPERBLOCK_BYTES, SUPERBLOCK_OFFSET } from '../../../src/attach/ext4-superblock.js';
import { Filesystem, parseBlkidExport, parseDumpe2fs, parseXfsSize } from '../../../src/attach/filesystem.js';
import { MountTable } from '../../../src/util/mountinfo.js';
import { silentLogger } from '../../../src/log.js';
import type { Exec, ExecResult } from '../../../src/exec.js';
import { FakeExec, TimedExec } from '../../helpers/fake-exec.js';

/** `exec`, except that `fsfreeze --freeze /m/v` is recorded and answered by `freeze` (a hang, a slow reply). */
const withFreeze = (exec: FakeExec, freeze: () => Promise<ExecResult>): Exec => ({
  run: (argv, options) => {
    if (argv.join(' ') !== 'fsfreeze --freeze /m/v') return exec.run(argv, options);
    exec.calls.push([...argv]);
    return freeze();
  },
});

const fs = (exec: FakeExec) => new Filesystem(exec, silentLogger(), { slowMs: 1000 });

describe('Filesystem', () => {
  it('reads blkid export output', () => {
    expect(parseBlkidExport('DEVNAME=/dev/loop0\nTYPE=ext4\n')).toEqual({ type: 'ext4', partitionTable: undefined });
    expect(parseBlkidExport('PTTYPE=gpt\n')).toEqual({ type: undefined, partitionTable: 'gpt' });
  });

  it('treats blkid exit 2 as a blank device', async () => {
    const exec = new FakeExec().reply({ match: 'blkid', exitCode: 2 });
    expect(await fs(exec).detect('/dev/loop0')).toBeUndefined();
    expect(exec.commands).toEqual(['blkid -p -s TYPE -s PTTYPE -o export /dev/loop0']);
  });

  it('formats ext4 and xfs with fixed flags, a label and the user mkfs options before the device', async () => {
    const exec = new FakeExec();
    await fs(exec).format('/dev/loop0', 'ext4', ['-b', '4096'], 'a-very-long-volume-name');
    await fs(exec).format('/dev/loop1', 'xfs', [], 'a-very-long-volume-name');
    expect(exec.commands).toEqual([
      'mkfs.ext4 -F -q -m0 -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 -L a-very-long-volu -b 4096 /dev/loop0',
      'mkfs.xfs -f -q -K -L a-very-long- /dev/loop1',
    ]);
  });

  it.each([0, 1, 2])('accepts fsck exit %d (clean or corrected)', async (code) => {
    const exec = new FakeExec().reply({ match: 'fsck', exitCode: code });
    await fs(exec).check('/dev/loop0');
    expect(exec.commands).toEqual(['fsck -a /dev/loop0']);
  });

  it('refuses to go on when fsck leaves errors uncorrected (exit 4)', async () => {
    const exec = new FakeExec().reply({ match: 'fsck', exitCode: 4, stderr: 'UNEXPECTED INCONSISTENCY' });
    await expect(fs(exec).check('/dev/loop0')).rejects.toThrow(/fsck -a \/dev\/loop0' exited with code 4: UNEXPECTED INCONSISTENCY/);
  });

  it('mounts read-only with user options, and unmounts', async () => {
    const exec = new FakeExec();
    await fs(exec).mount('/dev/loop0', '/m/v', 'ext4', ['noatime'], true);
    await fs(exec).mount('/dev/loop0', '/m/w', 'xfs', [], false);
    await fs(exec).unmount('/m/v');
    expect(exec.commands).toEqual(['mount -t ext4 -o ro,noatime /dev/loop0 /m/v', 'mount -t xfs /dev/loop0 /m/w', 'umount /m/v']);
  });

  it('counts unmounting something not mounted as done, but not a busy filesystem', async () => {
    await fs(new FakeExec().reply({ match: 'umount', exitCode: 32, stderr: 'umount: /m/v: not mounted.' })).unmount('/m/v');
    await expect(fs(new FakeExec().reply({ match: 'umount', exitCode: 32, stderr: 'umount: /m/v: target is busy.' })).unmount('/m/v')).rejects.toThrow(/busy/);
  });

  it('shuts down only a filesystem mounted from the given device, never the directory\'s parent', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ballast-fs-'));
    try {
      const mountinfo = join(dir, 'mountinfo');
      writeFileSync(mountinfo, '22 1 0:21 / / rw - ext4 /dev/vda rw\n100 22 7:0 / /m/v rw - ext4 /dev/loop3 rw\n');
      const exec = new FakeExec();
      const filesystem = new Filesystem(exec, silentLogger(), { slowMs: 1000 }, new MountTable(mountinfo));
      await filesystem.shutdown('/m/v', '/dev/loop3');
      expect(exec.commands).toEqual(['fsfreeze --freeze /m/v', 'xfs_io -x -c shutdown /m/v', 'fsfreeze --unfreeze /m/v']);
      await expect(filesystem.shutdown('/m/w', '/dev/loop4')).rejects.toThrow(/refusing to shut down \/m\/w: it is not a mount of \/dev\/loop4 \(found no mount\)/);
      await expect(filesystem.shutdown('/m/v', '/dev/loop9')).rejects.toThrow(/found \/dev\/loop3/);
      expect(exec.commands).toHaveLength(3);
      // A freeze that fails (already frozen by someone else: busy) does not hold up the shutdown, and is not undone.
      const busy = new FakeExec().reply({ match: 'fsfreeze --freeze', exitCode: 1, stderr: 'fsfreeze: /m/v: freeze failed: Device or resource busy' });
      await new Filesystem(busy, silentLogger(), { slowMs: 1000 }, new MountTable(mountinfo)).shutdown('/m/v', '/dev/loop3');
      expect(busy.commands).toEqual(['fsfreeze --freeze /m/v', 'xfs_io -x -c shutdown /m/v']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fences even when the freeze hangs on dead storage: shuts down after waiting for it, and thaws only once it finishes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ballast-fs-'));
    try {
      const mountinfo = join(dir, 'mountinfo');
      writeFileSync(mountinfo, '100 22 7:0 / /m/v rw - ext4 /dev/loop3 rw\n');
      let finishFreeze: () => void = () => undefined;
      const exec = new FakeExec();
      const hanging = withFreeze(exec, () => new Promise((resolve) => (finishFreeze = () => resolve({ stdout: '', stderr: '', exitCode: 0 }))));
      const started = Date.now();
      await new Filesystem(hanging, silentLogger(), { slowMs: 1000 }, new MountTable(mountinfo)).shutdown('/m/v', '/dev/loop3');
      expect(Date.now() - started).toBeGreaterThanOrEqual(1_900);
      // No thaw yet: it would wait on the superblock as long as the freeze does.
      expect(exec.commands).toEqual(['fsfreeze --freeze /m/v', 'xfs_io -x -c shutdown /m/v']);
      finishFreeze(); // the storage answered and the freeze went through after all: thawed then
      await new Promise((r) => setTimeout(r, 20));
      expect(exec.commands.slice(2)).toEqual(['fsfreeze --unfreeze /m/v']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('waits for a slow freeze as long as it is told (the lease left), and shuts down frozen', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ballast-fs-'));
    try {
      const mountinfo = join(dir, 'mountinfo');
      writeFileSync(mountinfo, '100 22 7:0 / /m/v rw - ext4 /dev/loop3 rw\n');
      const exec = new FakeExec();
      const slow = withFreeze(exec, () => new Promise((resolve) => setTimeout(() => resolve({ stdout: '', stderr: '', exitCode: 0 }), 2_500)));
      await new Filesystem(slow, silentLogger(), { slowMs: 1000 }, new MountTable(mountinfo)).shutdown('/m/v', '/dev/loop3', 4_000);
      // The freeze (2.5 s, longer than the default wait) finished first: the shutdown came after it, then the thaw.
      expect(exec.commands).toEqual(['fsfreeze --freeze /m/v', 'xfs_io -x -c shutdown /m/v', 'fsfreeze --unfreeze /m/v']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("bounds the fence's own freeze command far past the fence's wait: killed, the kernel would finish the freeze unseen and nothing would thaw it", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ballast-fs-'));
    try {
      const mountinfo = join(dir, 'mountinfo');
      writeFileSync(mountinfo, '100 22 7:0 / /m/v rw - ext4 /dev/loop3 rw\n');
      const exec = new TimedExec();
      await new Filesystem(exec, silentLogger(), { slowMs: 1000 }, new MountTable(mountinfo)).shutdown('/m/v', '/dev/loop3', 30_000);
      expect(exec.commands[0]).toBe('fsfreeze --freeze /m/v');
      expect(exec.timeouts[0]).toBeGreaterThanOrEqual(10 * 60_000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('when the freeze hangs, fails the I/O queued in the multipath map beneath (under LUKS) before the shutdown', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ballast-fs-'));
    try {
      const mountinfo = join(dir, 'mountinfo');
      writeFileSync(mountinfo, '100 22 253:5 / /m/v rw - ext4 /dev/mapper/luks-v rw\n');
      const dm = (kname: string, name: string, uuid: string, slaves: string[]) => {
        mkdirSync(join(dir, 'sys/block', kname, 'dm'), { recursive: true });
        writeFileSync(join(dir, 'sys/block', kname, 'dm/name'), `${name}\n`);
        writeFileSync(join(dir, 'sys/block', kname, 'dm/uuid'), `${uuid}\n`);
        for (const slave of slaves) mkdirSync(join(dir, 'sys/block', kname, 'slaves', slave), { recursive: true });
      };
      dm('dm-5', 'luks-v', 'CRYPT-LUKS2-abc-luks-v', ['dm-3']);
      dm('dm-3', 'mpatha', 'mpath-36001405abc', ['sdb', 'sdc']);
      const exec = new FakeExec();
      const hanging = withFreeze(exec, () => new Promise(() => undefined)); // the storage never answers
      await new Filesystem(hanging, silentLogger(), { slowMs: 1000 }, new MountTable(mountinfo), dir).shutdown('/m/v', '/dev/mapper/luks-v');
      expect(exec.commands).toEqual(['fsfreeze --freeze /m/v', 'dmsetup message mpatha 0 fail_if_no_path', 'xfs_io -x -c shutdown /m/v']);
      // A device whose kernel name cannot be found (a dangling link): no map to fail, the shutdown still runs.
      exec.calls.length = 0;
      writeFileSync(mountinfo, '100 22 253:5 / /m/v rw - ext4 /dev/disk/by-id/gone rw\n');
      await new Filesystem(hanging, silentLogger(), { slowMs: 1000 }, new MountTable(mountinfo), dir).shutdown('/m/v', '/dev/disk/by-id/gone');
      expect(exec.commands).toEqual(['fsfreeze --freeze /m/v', 'xfs_io -x -c shutdown /m/v']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('grows ext4 offline after a forced check, and xfs online by mount point', async () => {
    const exec = new FakeExec();
    await fs(exec).growExt4Offline('/dev/loop0');
    await fs(exec).growXfsOnline('/m/v');
    expect(exec.commands).toEqual(['e2fsck -f -p /dev/loop0', 'resize2fs /dev/loop0', 'xfs_growfs -d /m/v']);
  });

  it('reads the device size from sysfs in 512-byte sectors, with no child process', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ballast-fs-'));
    try {
      for (const [name, sectors] of [['loop0', '262144'], ['dm-3', '2097152']] as const) {
        mkdirSync(join(dir, 'sys', 'class', 'block', name), { recursive: true });
        writeFileSync(join(dir, 'sys', 'class', 'block', name, 'size'), `${sectors}\n`);
      }
      const exec = new FakeExec();
      const filesystem = new Filesystem(exec, silentLogger(), { slowMs: 1000 }, new MountTable(), dir);
      expect(await filesystem.deviceBytes('/dev/loop0')).toBe(128 * 1024 ** 2);
      expect(await filesystem.deviceBytes('/dev/dm-3')).toBe(1024 ** 3);
      await expect(filesystem.deviceBytes('/dev/loop9')).rejects.toThrow(/ENOENT/);
      expect(exec.commands).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('parses xfs_db output for the data size, and nothing from garbage or another magic', () => {
    expect(parseXfsSize('magicnum = 0x58465342\ndblocks = 102400\nblocksize = 4096\n')).toEqual({ dblocks: 102400, blocksize: 4096 });
    expect(parseXfsSize('magicnum = 0x00000000\ndblocks = 102400\nblocksize = 4096\n')).toBeUndefined();
    expect(parseXfsSize('dblocks = 102400\nblocksize = 4096\n')).toBeUndefined();
    expect(parseXfsSize('xfs_db: /dev/loop0 is not a valid XFS filesystem\n')).toBeUndefined();
  });
});

// Real e2fsprogs on image files (no root, no loop device): what dumpe2fs -h prints in each state.
describe('parseDumpe2fs and cleanExt4 on real superblocks', () => {
  let dir: string;
  let image: string;
  const run = (...argv: string[]) => execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
  const state = () => parseDumpe2fs(run('dumpe2fs', '-h', image), Date.now() / 1000);

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ballast-e2fs-'));
    image = join(dir, 'disk.img');
    run('truncate', '-s', '64M', image);
    run('mkfs.ext4', '-q', '-F', '-b', '1024', image);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('a freshly made filesystem is clean: no reason to check, and its size', () => {
    expect(state()).toEqual({ isExt4: true, blockCount: 65536, blockSize: 1024, checkReasons: [] });
  });

  it('tells ext4 from ext3 as blkid does (the extent feature), and finds no ext4 on xfs', () => {
    run('mkfs.ext3', '-q', '-F', '-b', '1024', image);
    expect(state().isExt4).toBe(false);
    run('truncate', '-s', '320M', image); // xfs's minimum is 300 MB
    run('mkfs.xfs', '-q', '-f', image);
    expect(() => run('dumpe2fs', '-h', image)).toThrow(/Bad magic number/);
    const xfs = parseXfsSize(run('xfs_db', '-r', '-c', 'sb 0', '-c', 'print magicnum dblocks blocksize', image));
    expect(xfs).toEqual({ dblocks: (320 * 1024 * 1024) / 4096, blocksize: 4096 });
  });

  it('xfs_db finds no xfs superblock on an ext4 filesystem', () => {
    let out = '';
    try {
      out = run('xfs_db', '-r', '-c', 'sb 0', '-c', 'print magicnum dblocks blocksize', image);
    } catch (err) {
      out = String((err as { stdout?: string }).stdout ?? '');
    }
    expect(parseXfsSize(out)).toBeUndefined();
  });

  it('recorded errors make it due', () => {
    run('tune2fs', '-E', 'force_fsck', image);
    expect(state().checkReasons.join('; ')).toMatch(/state "clean with errors"/);
  });

  it('a journal with transactions to replay makes it due', () => {
    run('debugfs', '-w', '-R', 'feature needs_recovery', image);
    expect(state().checkReasons.join('; ')).toMatch(/needs_recovery/);
  });

  it('the maximum mount count and a due check interval make it due', () => {
    run('tune2fs', '-c', '3', '-C', '5', image);
    expect(state().checkReasons).toEqual(['mounted 5 times, maximum 3']);
    run('tune2fs', '-c', '-1', '-i', '1d', '-T', '20200101', image);
    expect(state().checkReasons).toEqual(['check interval of 86400 s due']);
  });

  it('anything it cannot read counts as a reason', () => {
    expect(parseDumpe2fs('', Date.now() / 1000).checkReasons.length).toBeGreaterThan(3);
  });

  // The same superblocks read in-process: cleanExt4 may only ever call clean what dumpe2fs calls clean.
  const fast = () => cleanExt4(readFileSync(image).subarray(SUPERBLOCK_OFFSET, SUPERBLOCK_OFFSET + SUPERBLOCK_BYTES));

  it('a fresh filesystem: clean, with the size dumpe2fs reads', () => {
    const { blockCount, blockSize } = state();
    expect(fast()).toEqual({ blockCount, blockSize });
  });

  it('a 64-bit filesystem with 4 KiB blocks: the size dumpe2fs reads', () => {
    run('truncate', '-s', '200M', image);
    run('mkfs.ext4', '-q', '-F', '-O', '64bit', '-b', '4096', image);
    const { blockCount, blockSize } = state();
    expect(fast()).toEqual({ blockCount, blockSize });
  });

  it.each([
    ['recorded errors', ['tune2fs', '-E', 'force_fsck']],
    ['a journal to replay', ['debugfs', '-w', '-R', 'feature needs_recovery']],
    ['the maximum mount count reached', ['tune2fs', '-c', '3', '-C', '5']],
    ['a check interval (left to dumpe2fs to weigh)', ['tune2fs', '-i', '1d']],
    ['a state other than clean', ['debugfs', '-w', '-R', 'ssv state 0']],
    ['an orphan inode', ['debugfs', '-w', '-R', 'ssv last_orphan 12']],
  ])('%s: not clean', (_, command) => {
    run(...command, image);
    expect(fast()).toBeUndefined();
  });

  it('ext3, xfs, zeros and a short read: not ext4', () => {
    run('mkfs.ext3', '-q', '-F', '-b', '1024', image);
    expect(fast()).toBeUndefined();
    run('truncate', '-s', '0', image);
    run('truncate', '-s', '320M', image);
    expect(fast()).toBeUndefined();
    run('mkfs.xfs', '-q', '-f', image);
    expect(fast()).toBeUndefined();
    expect(cleanExt4(Buffer.alloc(100))).toBeUndefined();
  });
});
