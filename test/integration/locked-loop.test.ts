import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LoopAttacher } from '../../src/attach/loop-attacher.js';
import { CommandRunner } from '../../src/exec.js';
import { silentLogger } from '../../src/log.js';
import { cleanUpUnder, loopDevicesUnder } from '../helpers/cleanup.js';
import { requireRootAndTools } from '../helpers/root.js';

// The locked attach (nfs-lock) for real on this kernel: perl takes the flock and hands the locked
// file to LOOP_SET_FD. On a local file two open files conflict exactly as two NFS clients' locks
// do at the server, so the lock's lifetime can be checked here; what the NFS server does with it
// is the VM lab's NFS takeover test.
requireRootAndTools('losetup', 'perl', 'mkfs.ext4', 'mount');

describe('attaching a loop device through the file that holds the image lock', () => {
  let dir: string;
  let image: string;
  const attacher = new LoopAttacher(new CommandRunner(silentLogger()));
  const locked = (waitSeconds: number) => ({ transport: 'loop' as const, file: image, lock: { waitSeconds } });
  const flockHolders = () => readFileSync('/proc/locks', 'utf8').split('\n').filter((l) => / FLOCK .* WRITE /.test(l) && l.includes(`:${inode()} `));
  const inode = () => execFileSync('stat', ['-c', '%i', image], { encoding: 'utf8' }).trim();

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ballast-locked-loop-'));
    image = join(dir, 'disk.img');
    await writeFile(image, '');
    await truncate(image, 16 << 20);
  });
  /** The holder mounts a filesystem from its device, as a Mount does: the device is then claimed, never reused or detached by another attach. */
  function mountOn(device: string): string {
    const mountpoint = join(dir, 'mnt');
    execFileSync('mkfs.ext4', ['-q', '-F', device]);
    execFileSync('mkdir', ['-p', mountpoint]);
    execFileSync('mount', [device, mountpoint]);
    return mountpoint;
  }

  afterEach(async () => {
    cleanUpUnder(dir);
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps the lock while the device is attached (after the helper exited), refuses a second holder, frees it on detach', async () => {
    const device = await attacher.attach(locked(1));
    expect(device).toMatch(/^\/dev\/loop\d+$/);
    expect(loopDevicesUnder(dir)).toEqual([device]);
    expect(flockHolders()).toHaveLength(1); // held by the loop device's file, not by a process
    const mountpoint = mountOn(device);
    const started = performance.now();
    await expect(attacher.attach(locked(2))).rejects.toThrow(/locked by another NFS client/);
    expect(performance.now() - started).toBeGreaterThanOrEqual(2_000); // it waited its bound
    expect(loopDevicesUnder(dir)).toEqual([device]); // the refused attach left nothing
    execFileSync('umount', [mountpoint]);
    await attacher.detach(locked(1), device);
    expect(flockHolders()).toHaveLength(0);
    const again = await attacher.attach(locked(1));
    expect(flockHolders()).toHaveLength(1);
    await attacher.detach(locked(1), again);
  });

  it('writes through the locked device reach the image', async () => {
    const device = await attacher.attach(locked(1));
    execFileSync('dd', ['if=/dev/zero', `of=${device}`, 'bs=4096', 'count=1', 'seek=10', 'oflag=direct', 'status=none'], { input: '' });
    execFileSync('sh', ['-c', `printf ballast | dd of=${device} bs=512 seek=100 oflag=direct,sync conv=notrunc status=none`]);
    await attacher.detach(locked(1), device);
    expect(readFileSync(image).subarray(100 * 512, 100 * 512 + 7).toString()).toBe('ballast');
  });

  it('an idle device this host left bound to the image (a crash between attach and mount) is detached, not waited for', async () => {
    await attacher.attach(locked(1)); // left bound and never mounted: the leftover
    const device = await attacher.attach(locked(1));
    // The leftover holds the image no more. Not "its name is gone from losetup --list": another
    // suite may already have its own file on that name (a CI run saw /dev/loop0 reused so).
    expect(loopDevicesUnder(dir)).toEqual([device]);
    expect(flockHolders()).toHaveLength(1);
    await attacher.detach(locked(1), device);
  });

  it('a waiting attach takes the lock as soon as the holder detaches', async () => {
    const first = await attacher.attach(locked(1));
    const mountpoint = mountOn(first);
    const waiting = attacher.attach(locked(20));
    await new Promise((r) => setTimeout(r, 1_500));
    execFileSync('umount', [mountpoint]);
    await attacher.detach(locked(1), first);
    const second = await waiting;
    expect(loopDevicesUnder(dir)).toEqual([second]);
    await attacher.detach(locked(1), second);
  });
});
