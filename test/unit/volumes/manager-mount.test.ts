import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LoopDriver } from '../../../src/drivers/loop-driver.js';
import { silentLogger } from '../../../src/log.js';
import { OwnershipLease } from '../../../src/ownership/lease.js';
import { f, freshManagerEachTest, image, loopRoot, ownership } from '../../helpers/manager-suite.js';

// VolumeManager's Mount and Unmount: attach, fsck or mkfs, mount and grow, the reference count
// per container ID, and the rollback of every step when one fails. Create, Remove, Get, List and
// restarts are in manager.test.ts.

describe('VolumeManager (real loop driver on a temp dir, FakeHost for commands)', () => {
  freshManagerEachTest();

  describe('mount and unmount', () => {
    it('attaches, formats a blank volume, mounts, grows; and on the last unmount tears it all down', async () => {
      await f.manager.create('v', { size: '64M' });
      const mountpoint = await f.manager.mount('v', 'id1');
      expect(mountpoint).toBe(join(f.dir, 'mounts', 'v'));
      expect(f.host.calls).toEqual([
        `losetup --find --show ${image('v')}`,
        // First acquisition ever, and no block of the image allocated: blank without blkid.
        'mkfs.ext4 -F -q -m0 -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 -L v /dev/loop0',
        `mount -t ext4 /dev/loop0 ${mountpoint}`,
      ]);
      expect(await ownership('v')).toMatchObject({ state: 'held', holder: { hostId: 'node-a' }, generation: 1 });
      f.host.calls.length = 0;
      await f.manager.unmount('v', 'id1');
      expect(f.host.calls).toEqual([`umount ${mountpoint}`, 'losetup --detach /dev/loop0']);
      expect(await ownership('v')).toMatchObject({ state: 'free', generation: 1 });
      expect(f.host.attachedDevices).toEqual([]);
    });

    it('an Unmount whose umount is refused (busy) keeps its reference: the retry with the same ID tears it down', async () => {
      await f.manager.create('v', {});
      const mountpoint = await f.manager.mount('v', 'id1');
      f.host.failures.push({ prefix: 'umount', exitCode: 32, stderr: `umount: ${mountpoint}: target is busy.` });
      await expect(f.manager.unmount('v', 'id1')).rejects.toThrow(/could not be unmounted .*target is busy/);
      expect(f.host.attachedDevices).toEqual(['/dev/loop0']);
      f.host.failures.length = 0;
      f.host.calls.length = 0;
      await f.manager.unmount('v', 'id1');
      expect(f.host.calls).toEqual([`umount ${mountpoint}`, 'losetup --detach /dev/loop0']);
      expect(f.host.attachedDevices).toEqual([]);
      expect(await ownership('v')).toMatchObject({ state: 'free' });
    });

    it('mounts a cleanly unmounted filesystem without fsck: the superblock says clean', async () => {
      await f.manager.create('v', {});
      await f.manager.mount('v', 'a');
      await f.manager.unmount('v', 'a');
      f.host.calls.length = 0;
      await f.manager.mount('v', 'b');
      expect(f.host.calls).toEqual([
        expect.stringMatching(/^losetup --find/),
        'dumpe2fs -h /dev/loop1', // it shows an ext4 superblock: blkid has nothing to add
        expect.stringMatching(/^mount -t ext4 \/dev\/loop1 /),
      ]);
    });

    it('asks blkid before mkfs on a first acquisition whose image has data', async () => {
      await f.manager.create('v', { size: '64M' });
      await writeFile(image('v'), 'x', { flag: 'r+' });
      await f.manager.mount('v', 'a');
      expect(f.host.calls.filter((c) => /^(blkid|dumpe2fs|mkfs)/.test(c))).toEqual([
        'dumpe2fs -h /dev/loop0',
        'blkid -p -s TYPE -s PTTYPE -o export /dev/loop0',
        expect.stringMatching(/^mkfs\.ext4 /),
      ]);
    });

    it('never takes a volume acquired before as blank, though its image shows no block allocated', async () => {
      await f.manager.create('v', { size: '64M' });
      await f.manager.mount('v', 'a');
      await f.manager.unmount('v', 'a');
      f.host.forgetFilesystems(); // the fake's mkfs writes nothing to the image: it stays sparse
      f.host.calls.length = 0;
      await f.manager.mount('v', 'b');
      expect(f.host.calls.filter((c) => /^(blkid|dumpe2fs|mkfs)/.test(c))).toEqual([
        'dumpe2fs -h /dev/loop1',
        'blkid -p -s TYPE -s PTTYPE -o export /dev/loop1',
        expect.stringMatching(/^mkfs\.ext4 /),
      ]);
    });

    it.each([
      ['not clean', 'Filesystem state:         not clean\nFilesystem features:      has_journal extent\nMount count:              1\nMaximum mount count:      -1\nCheck interval:           0 (<none>)\n'],
      ['a journal to replay', 'Filesystem state:         clean\nFilesystem features:      has_journal extent needs_recovery\nMount count:              1\nMaximum mount count:      -1\nCheck interval:           0 (<none>)\n'],
      ['a superblock it cannot read', 'garbage\n'],
    ])('runs fsck before mounting a filesystem whose superblock says %s', async (what, superblock) => {
      await f.manager.create('v', {});
      await f.manager.mount('v', 'a');
      await f.manager.unmount('v', 'a');
      f.host.ext4Superblock.set('/dev/loop1', superblock);
      f.host.calls.length = 0;
      await f.manager.mount('v', 'b');
      expect(f.host.calls).toEqual([
        expect.stringMatching(/^losetup --find/),
        'dumpe2fs -h /dev/loop1',
        // No ext4 superblock shown: blkid decides what the device holds.
        ...(what === 'a superblock it cannot read' ? ['blkid -p -s TYPE -s PTTYPE -o export /dev/loop1'] : []),
        'fsck -a /dev/loop1',
        expect.stringMatching(/^mount -t ext4 \/dev\/loop1 /),
      ]);
    });

    it('grows the filesystem offline at the next mount after the volume grew', async () => {
      await f.manager.create('v', { size: '32M' });
      await f.manager.mount('v', 'a');
      await f.manager.unmount('v', 'a');
      await f.manager.grow('v', 64 * 1024 ** 2);
      f.host.calls.length = 0;
      await f.manager.mount('v', 'b');
      expect(f.host.calls.filter((c) => /^(e2fsck|resize2fs|fsck|mkfs)/.test(c))).toEqual(['e2fsck -f -p /dev/loop1', 'resize2fs /dev/loop1']);
      await f.manager.unmount('v', 'b');
      f.host.calls.length = 0;
      await f.manager.mount('v', 'c'); // already grown and clean: nothing to do
      expect(f.host.calls.filter((c) => /^(dumpe2fs|e2fsck|resize2fs|fsck|mkfs)/.test(c))).toEqual(['dumpe2fs -h /dev/loop2']);
    });

    it('grows xfs online after mounting only when the device outgrew the filesystem', async () => {
      await f.manager.create('x', { size: '320M', fstype: 'xfs' });
      await f.manager.mount('x', 'a');
      await f.manager.unmount('x', 'a');
      f.host.calls.length = 0;
      const mp = await f.manager.mount('x', 'b');
      expect(f.host.calls.filter((c) => /^(xfs|fsck|mkfs)/.test(c))).toEqual(['xfs_db -r -c sb 0 -c print magicnum dblocks blocksize /dev/loop1']);
      await f.manager.unmount('x', 'b');
      await f.manager.grow('x', 400 * 1024 ** 2);
      f.host.calls.length = 0;
      await f.manager.mount('x', 'c');
      expect(f.host.calls.slice(-2)).toEqual([`mount -t xfs /dev/loop2 ${mp}`, `xfs_growfs -d ${mp}`]);
    });

    it('takes inline options as a name (size=32M,name=inl): creates inl with them, answers to the name Docker gave', async () => {
      const as = 'size=32M,name=inl';
      await f.manager.create(as, null);
      const view = await f.manager.get(as);
      expect(view).toMatchObject({ name: as, status: { size: '32 MiB' } });
      expect((await f.manager.list()).map((v) => v.name)).toEqual(['inl']);
      expect(await f.manager.mount(as, 'a')).toBe(join(f.dir, 'mounts', 'inl'));
      expect(await f.manager.path('inl')).toBe(join(f.dir, 'mounts', 'inl'));
      await f.manager.unmount(as, 'a');
      await f.manager.create(as, {}); // the same options again: it is there
      // Other inline options name no volume to Get (dockerd then sends Create, which says why).
      await expect(f.manager.get('size=64M,name=inl')).rejects.toThrow(/volume size=64M,name=inl does not exist/);
      await expect(f.manager.create('size=64M,name=inl', null)).rejects.toThrow(/volume inl already exists with different options: size is 32 MiB, asked 64 MiB/);
      await expect(f.manager.create('size=32M,name=other', { size: '64M' })).rejects.toThrow(/option size is "32M" inline but "64M" in the options/);
      await expect(f.manager.create('bogus=1,name=other', null)).rejects.toThrow(/unknown option "bogus"/);
      expect((await f.manager.list()).map((v) => v.name)).toEqual(['inl']);
    });

    it('counts a second Mount with the same ID (docker cp) and unmounts only after both Unmounts', async () => {
      await f.manager.create('v', {});
      await f.manager.mount('v', 'c1');
      const callsAfterFirst = f.host.calls.length;
      await f.manager.mount('v', 'c1');
      expect(f.host.calls.length).toBe(callsAfterFirst); // nothing new attached or mounted
      await f.manager.unmount('v', 'c1');
      expect(f.host.mountPoints).toHaveLength(1);
      await f.manager.unmount('v', 'c1');
      expect(f.host.mountPoints).toHaveLength(0);
    });

    it('keeps the volume mounted while another container (another ID) uses it', async () => {
      await f.manager.create('v', {});
      await f.manager.mount('v', 'c1');
      await f.manager.mount('v', 'c2');
      await f.manager.unmount('v', 'c1');
      expect((await f.manager.get('v')).mountpoint).not.toBe('');
      await f.manager.unmount('v', 'c2');
      expect((await f.manager.get('v')).mountpoint).toBe('');
    });

    it('ignores an Unmount of an ID it does not hold, changing nothing', async () => {
      await f.manager.create('v', {});
      await f.manager.mount('v', 'c1');
      await f.manager.unmount('v', 'unknown');
      await f.manager.unmount('nosuchvolume', 'x');
      expect(f.host.mountPoints).toHaveLength(1);
    });

    it('serialises concurrent Mounts and Unmounts of one volume', async () => {
      await f.manager.create('v', {});
      await Promise.all(['a', 'b', 'c', 'd'].map((id) => f.manager.mount('v', id)));
      expect(f.host.calls.filter((c) => c.startsWith('mount ')).length).toBe(1);
      await Promise.all(['a', 'b', 'c', 'd'].map((id) => f.manager.unmount('v', id)));
      expect(f.host.calls.filter((c) => c.startsWith('umount ')).length).toBe(1);
      expect(f.host.attachedDevices).toEqual([]);
    });

    it('refuses to mount a volume that does not exist', async () => {
      await expect(f.manager.mount('ghost', 'a')).rejects.toThrow('mount ghost: volume ghost does not exist');
      expect(f.host.calls).toEqual([]);
    });

    it('refuses to mount a volume held by another host, naming it, and runs no command', async () => {
      await f.manager.create('v', {});
      const b = new OwnershipLease(new LoopDriver({ root: loopRoot(), shared: true }, silentLogger()), { hostId: 'node-b', bootId: 'x', hostname: 'b' }, silentLogger());
      await b.acquire('v');
      await expect(f.manager.mount('v', 'a')).rejects.toThrow(/mount v: volume v is in use on host node-b \(b\)/);
      expect(f.host.calls).toEqual([]);
    });
  });

  describe('rollback of a failed Mount (Docker never sends Unmount for it)', () => {
    it.each([
      ['mkfs.ext4', /mkfs\.ext4 .* exited with code 1: injected failure/],
      ['mount -t', /mount -t ext4 .* exited with code 1: injected failure/],
      ['losetup --find', /losetup --find .* exited with code 1/],
    ])('undoes every step when %s fails', async (prefix, message) => {
      await f.manager.create('v', {});
      f.host.fail(prefix);
      await expect(f.manager.mount('v', 'a')).rejects.toThrow(message);
      expect(f.host.attachedDevices).toEqual([]);
      expect(f.host.mountPoints).toEqual([]);
      expect(await ownership('v')).toMatchObject({ state: 'free' });
      expect(f.manager.mountedVolumes().size).toBe(0);
      expect(await readdir(join(f.dir, 'mounts')).catch(() => [])).toEqual([]);
    });

    it('refuses to format over a different filesystem and leaves nothing attached', async () => {
      await f.manager.create('v', { fstype: 'ext4' });
      await f.manager.mount('v', 'a');
      await f.manager.unmount('v', 'a');
      // Pretend someone reformatted the image as xfs.
      f.host.forgetFilesystems();
      const run = f.host.run.bind(f.host);
      f.host.run = async (argv, options) => (argv[0] === 'blkid' ? { stdout: 'TYPE=xfs\n', stderr: '', exitCode: 0 } : run(argv, options));
      await expect(f.manager.mount('v', 'b')).rejects.toThrow(/holds an xfs filesystem but was created as ext4; ballast will not format over it/);
      expect(f.host.attachedDevices).toEqual([]);
    });
  });

  it('undoes the offline grow path too when resize2fs fails', async () => {
    await f.manager.create('v', { size: '32M' });
    await f.manager.mount('v', 'a');
    await f.manager.unmount('v', 'a');
    await f.manager.grow('v', 64 * 1024 ** 2);
    f.host.fail('resize2fs');
    await expect(f.manager.mount('v', 'b')).rejects.toThrow(/resize2fs \/dev\/loop1' exited with code 1/);
    expect(f.host.attachedDevices).toEqual([]);
    expect(await ownership('v')).toMatchObject({ state: 'free' });
  });
});
