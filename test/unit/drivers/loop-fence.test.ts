import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../../src/errors.js';
import { LoopDriver } from '../../../src/drivers/loop-driver.js';
import { decideFence, mountOf, nfsRecoversLostLocks } from '../../../src/drivers/loop-fence.js';
import { silentLogger } from '../../../src/log.js';
import { MountTable, parseMountInfo, type MountEntry } from '../../../src/util/mountinfo.js';

// mountinfo lines as a Debian 6.1 kernel prints them (the nfs4 one as a VM-lab client of ganesha
// showed it for `mount -t nfs4 -o vers=4.2,hard,lookupcache=positive`).
const NFS_OK = '/mnt/nfs rw,relatime - nfs4 10.0.2.2:/export rw,vers=4.2,rsize=1048576,wsize=1048576,namlen=255,hard,proto=tcp,port=43835,timeo=600,retrans=2,sec=sys,clientaddr=10.0.2.15,lookupcache=pos,local_lock=none,addr=10.0.2.2';
const mount = (fstype: string, superOptions: string, at = '/srv'): MountEntry => ({ mountPoint: at, source: 'server:/export', fstype, options: 'rw', superOptions });

describe('the fence of a shared loop root', () => {
  it('reads the NFS super options from mountinfo and finds the deepest mount holding a path', () => {
    const entries = parseMountInfo(`22 1 0:21 / / rw - ext4 /dev/vda rw\n90 22 0:50 / ${NFS_OK}\n91 90 0:51 / /mnt/nfs/x rw - tmpfs tmpfs rw\n`);
    expect(mountOf('/mnt/nfs/loop', entries)).toMatchObject({ fstype: 'nfs4', superOptions: expect.stringContaining('lookupcache=pos') });
    expect(mountOf('/mnt/nfs/x/loop', entries)?.fstype).toBe('tmpfs');
    expect(mountOf('/mnt/nfsother', entries)?.fstype).toBe('ext4');
    expect(decideFence('auto', '/mnt/nfs/loop', mountOf('/mnt/nfs/loop', entries), false)).toMatchObject({ fence: 'nfs-lock', problems: [] });
  });

  it('auto: nfs-lock on NFS 4.1+, shutdown on a local filesystem, none (manual) on NFSv3, 4.0 and unknown filesystems', () => {
    const decide = (m: MountEntry) => decideFence('auto', '/srv/loop', m, false).fence;
    expect(decide(mount('nfs4', 'rw,vers=4.1,hard,lookupcache=none'))).toBe('nfs-lock');
    expect(decide(mount('ext4', 'rw'))).toBe('shutdown');
    expect(decide(mount('xfs', 'rw'))).toBe('shutdown');
    expect(decide(mount('nfs', 'rw,vers=3,hard,lookupcache=pos'))).toBe('none');
    expect(decide(mount('nfs4', 'rw,vers=4.0,hard,lookupcache=pos'))).toBe('none');
    expect(decide(mount('cifs', 'rw'))).toBe('none');
    expect(decide(mount('fuse.glusterfs', 'rw'))).toBe('none');
  });

  it('refuses mount options the compare-and-swap or the fence cannot live with, saying what to change', () => {
    const problems = (configured: 'auto' | 'nfs-lock' | 'none', m: MountEntry, recover = false) => decideFence(configured, '/srv/loop', m, recover).problems.join('\n');
    expect(problems('auto', mount('nfs4', 'rw,vers=4.2,hard'))).toMatch(/caches negative lookups .* mount it with lookupcache=positive/);
    expect(problems('auto', mount('nfs4', 'rw,vers=4.2,soft,lookupcache=pos'))).toMatch(/mounted soft: mount it hard/);
    expect(problems('auto', mount('nfs4', 'rw,vers=4.2,hard,lookupcache=pos'), true)).toMatch(/recover_lost_locks=Y/);
    expect(problems('nfs-lock', mount('nfs', 'rw,vers=3,hard,lookupcache=pos'))).toMatch(/needs vers=4.1 or 4.2 .* or set backends.loop.fence: none/);
    expect(problems('nfs-lock', mount('ext4', 'rw'))).toMatch(/fence is nfs-lock, but .* not NFS/);
    expect(problems('none', mount('nfs4', 'rw,vers=4.2,hard,lookupcache=pos'), true)).toBe(''); // no lock: its module option is moot
    expect(problems('none', mount('nfs4', 'rw,vers=4.2,hard'))).toMatch(/lookupcache/); // visibility matters without a fence too
  });

  it('reads recover_lost_locks from the nfs module (absent module: no)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ballast-nfsparam-'));
    try {
      await writeFile(join(dir, 'p'), 'Y\n');
      expect(await nfsRecoversLostLocks(join(dir, 'p'))).toBe(true);
      await writeFile(join(dir, 'p'), 'N\n');
      expect(await nfsRecoversLostLocks(join(dir, 'p'))).toBe(false);
      expect(await nfsRecoversLostLocks(join(dir, 'missing'))).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the driver: a shared root on a bad NFS mount stops the daemon; nfs-lock exports ask for the lock; none makes takeover manual', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ballast-fence-'));
    const root = join(dir, 'loop');
    const table = async (superOptions: string) => {
      await writeFile(join(dir, 'mountinfo'), `22 1 0:21 / / rw - ext4 /dev/vda rw\n90 22 0:50 / ${dir} rw - nfs4 s:/e ${superOptions}\n`);
      return new MountTable(join(dir, 'mountinfo'));
    };
    const spec = { name: 'v', profile: 'default', sizeBytes: 1 << 24, fstype: 'ext4' as const, mkfsOpts: [], mountOpts: [], readonly: false };
    try {
      const bad = new LoopDriver({ root, shared: true, mountTable: await table('rw,vers=4.2,hard') }, silentLogger());
      await expect(bad.start()).rejects.toThrow(ConfigError);
      const locked = new LoopDriver({ root, shared: true, lockWaitSeconds: 7, mountTable: await table('rw,vers=4.2,hard,lookupcache=pos') }, silentLogger());
      await locked.start();
      await locked.create(spec);
      expect(await locked.export('v')).toEqual({ transport: 'loop', file: join(root, 'v', 'disk.img'), lock: { waitSeconds: 7 } });
      expect(locked.takeover).toBe('automatic');
      const manual = new LoopDriver({ root, shared: true, fence: 'none', mountTable: await table('rw,vers=4.2,hard,lookupcache=pos') }, silentLogger());
      await manual.start();
      expect(await manual.export('v')).toEqual({ transport: 'loop', file: join(root, 'v', 'disk.img') });
      expect(manual.takeover).toBe('manual');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
