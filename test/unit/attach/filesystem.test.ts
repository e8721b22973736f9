import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Filesystem, parseBlkidExport } from '../../../src/attach/filesystem.js';
import { MountTable } from '../../../src/util/mountinfo.js';
import { silentLogger } from '../../../src/log.js';
import { FakeExec } from '../../helpers/fake-exec.js';

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
      expect(exec.commands).toEqual(['xfs_io -x -c shutdown /m/v']);
      await expect(filesystem.shutdown('/m/w', '/dev/loop4')).rejects.toThrow(/refusing to shut down \/m\/w: it is not a mount of \/dev\/loop4 \(found no mount\)/);
      await expect(filesystem.shutdown('/m/v', '/dev/loop9')).rejects.toThrow(/found \/dev\/loop3/);
      expect(exec.commands).toHaveLength(1);
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

  it('reads the device size and the ext4 size from the superblock', async () => {
    const exec = new FakeExec().reply(
      { match: 'blockdev', stdout: '134217728\n' },
      { match: 'dumpe2fs', stdout: 'Filesystem volume name:   v\nBlock count:              32768\nBlock size:               1024\n' },
    );
    expect(await fs(exec).deviceBytes('/dev/loop0')).toBe(128 * 1024 ** 2);
    expect(await fs(exec).ext4Bytes('/dev/loop0')).toBe(32 * 1024 ** 2);
    await expect(fs(new FakeExec()).ext4Bytes('/dev/loop0')).rejects.toThrow(/no block count/);
  });
});
