import { Filesystem, parseBlkidExport } from '../../../src/attach/filesystem.js';
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

  it('grows ext4 by device and xfs by mount point', async () => {
    const exec = new FakeExec();
    await fs(exec).grow('/dev/loop0', '/m/v', 'ext4');
    await fs(exec).grow('/dev/loop0', '/m/v', 'xfs');
    expect(exec.commands).toEqual(['resize2fs /dev/loop0', 'xfs_growfs -d /m/v']);
  });
});
