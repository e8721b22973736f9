import { execFileSync } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { readdir, readFile, statfs, writeFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BallastProcess, BALLAST_BIN } from '../lab/ballast.js';
import { cleanUpUnder, loopDevicesUnder, mountsUnder } from '../helpers/cleanup.js';
import { callOk, callPlugin } from '../helpers/plugin-client.js';
import { requireRootAndTools } from '../helpers/root.js';

// Real losetup, blkid, mkfs, fsck, mount and umount, driven through a real `ballast serve`
// over its Unix socket. Needs root; fails (never skips) without it.
requireRootAndTools('losetup', 'blkid', 'mkfs.ext4', 'mkfs.xfs', 'fsck', 'resize2fs', 'xfs_growfs', 'mount', 'umount');


const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('the loop backend for real', () => {
  let daemon: BallastProcess;
  const sock = () => daemon.socket;
  const commandsRun = async () =>
    (await daemon.logs()).filter((l) => l.message === 'command').map((l) => (l.argv as string[]).join(' '));

  beforeAll(async () => {
    daemon = await BallastProcess.create();
    await daemon.start();
  });

  afterAll(async () => {
    await daemon.stop();
    const left = cleanUpUnder(daemon.dir);
    await daemon.removeDir();
    // Fail the suite (after cleaning) if a test left a mount or a device behind.
    expect(left).toEqual({ mounts: [], loops: [] });
  });

  afterEach(() => {
    expect(mountsUnder(daemon.dir)).toEqual([]);
    expect(loopDevicesUnder(daemon.dir)).toEqual([]);
  });

  it('creates, mounts, writes, unmounts, remounts: 10 MB of random data intact, nothing left behind', async () => {
    await callOk(sock(), 'VolumeDriver.Create', { Name: 'data', Opts: { size: '64M' } });
    const mountpoint = (await callOk(sock(), 'VolumeDriver.Mount', { Name: 'data', ID: 'c1' })).Mountpoint!;
    expect(mountsUnder(daemon.dir)).toEqual([mountpoint]);
    expect(loopDevicesUnder(daemon.dir)).toHaveLength(1);
    expect(await readdir(mountpoint)).toEqual([]); // no lost+found: Docker copies image content only into an empty volume
    const payload = randomBytes(10 * 1024 * 1024);
    await writeFile(join(mountpoint, 'blob'), payload);
    await callOk(sock(), 'VolumeDriver.Unmount', { Name: 'data', ID: 'c1' });
    expect(mountsUnder(daemon.dir)).toEqual([]);
    expect(loopDevicesUnder(daemon.dir)).toEqual([]);

    const again = (await callOk(sock(), 'VolumeDriver.Mount', { Name: 'data', ID: 'c2' })).Mountpoint!;
    expect(sha256(await readFile(join(again, 'blob')))).toBe(sha256(payload));
    await callOk(sock(), 'VolumeDriver.Unmount', { Name: 'data', ID: 'c2' });
    const commands = await commandsRun();
    expect(commands.filter((c) => c.startsWith('mkfs.ext4'))).toHaveLength(1); // formatted once, when blank
    // Cleanly unmounted: the superblock, read in-process before the second rw mount, says so: no
    // dumpe2fs, blkid or fsck (test/integration/unclean-filesystem.test.ts covers the unclean case).
    expect(commands.filter((c) => /^(dumpe2fs|blkid|fsck)/.test(c))).toEqual([]);
    expect((await daemon.logs()).filter((l) => l.message === 'filesystem clean: no fsck')).toHaveLength(1);
    await callOk(sock(), 'VolumeDriver.Remove', { Name: 'data' });
    expect(await readdir(daemon.loopRoot)).toEqual(['.rev']);
    expect(await readdir(join(daemon.loopRoot, '.rev'))).toEqual([]);
  });

  it('keeps the volume mounted under a docker cp (same ID mounted twice, unmounted once)', async () => {
    await callOk(sock(), 'VolumeDriver.Create', { Name: 'cp' });
    const mp = (await callOk(sock(), 'VolumeDriver.Mount', { Name: 'cp', ID: 'ctr' })).Mountpoint!;
    await callOk(sock(), 'VolumeDriver.Mount', { Name: 'cp', ID: 'ctr' });
    await callOk(sock(), 'VolumeDriver.Unmount', { Name: 'cp', ID: 'ctr' });
    await writeFile(join(mp, 'still-writable'), 'yes');
    expect(mountsUnder(daemon.dir)).toEqual([mp]);
    await callOk(sock(), 'VolumeDriver.Unmount', { Name: 'cp', ID: 'ctr' });
    await callOk(sock(), 'VolumeDriver.Remove', { Name: 'cp' });
  });

  it('grows the image and the filesystem at the next mount after `ballast volume grow`', async () => {
    await callOk(sock(), 'VolumeDriver.Create', { Name: 'grow', Opts: { size: '32M' } });
    let mp = (await callOk(sock(), 'VolumeDriver.Mount', { Name: 'grow', ID: 'a' })).Mountpoint!;
    await writeFile(join(mp, 'keep'), 'before grow');
    const before = await statfs(mp);
    await callOk(sock(), 'VolumeDriver.Unmount', { Name: 'grow', ID: 'a' });
    const out = execFileSync(process.execPath, [BALLAST_BIN, '--config', daemon.configPath, 'volume', 'grow', 'grow', '128M'], { encoding: 'utf8', timeout: 30_000 });
    expect(out).toContain('grow: 128 MiB');
    mp = (await callOk(sock(), 'VolumeDriver.Mount', { Name: 'grow', ID: 'b' })).Mountpoint!;
    const after = await statfs(mp);
    expect(after.blocks * after.bsize).toBeGreaterThan(3 * before.blocks * before.bsize);
    expect(await readFile(join(mp, 'keep'), 'utf8')).toBe('before grow');
    expect(await readdir(mp)).toEqual(['keep']); // e2fsck's new lost+found removed again
    expect((await stat(join(daemon.loopRoot, 'grow', 'disk.img'))).size).toBe(128 * 1024 ** 2);
    await callOk(sock(), 'VolumeDriver.Unmount', { Name: 'grow', ID: 'b' });
    await callOk(sock(), 'VolumeDriver.Remove', { Name: 'grow' });
  });

  it('serves xfs volumes', async () => {
    await callOk(sock(), 'VolumeDriver.Create', { Name: 'x', Opts: { size: '320M', fstype: 'xfs' } });
    const mp = (await callOk(sock(), 'VolumeDriver.Mount', { Name: 'x', ID: 'a' })).Mountpoint!;
    await writeFile(join(mp, 'f'), 'xfs');
    const source = execFileSync('findmnt', ['-n', '-o', 'FSTYPE', mp], { encoding: 'utf8' }).trim();
    expect(source).toBe('xfs');
    await callOk(sock(), 'VolumeDriver.Unmount', { Name: 'x', ID: 'a' });
    await callOk(sock(), 'VolumeDriver.Remove', { Name: 'x' });
  });

  it('mounts a readonly volume read-only', async () => {
    await callOk(sock(), 'VolumeDriver.Create', { Name: 'ro', Opts: { readonly: 'true' } });
    const mp = (await callOk(sock(), 'VolumeDriver.Mount', { Name: 'ro', ID: 'a' })).Mountpoint!;
    await expect(writeFile(join(mp, 'f'), 'x')).rejects.toThrow(/EROFS/);
    await callOk(sock(), 'VolumeDriver.Unmount', { Name: 'ro', ID: 'a' });
    await callOk(sock(), 'VolumeDriver.Remove', { Name: 'ro' });
  });

  it.each([
    ['mkfs', { mkfsopts: '-O no_such_feature' }, /mkfs\.ext4 .* exited with code 1: Invalid filesystem option set: no_such_feature/],
    ['mount', { mountopts: 'no_such_option' }, /mount -t ext4 -o no_such_option .* exited with code 32/],
  ])('rolls back everything when %s fails: no device, no mount, lease free', async (what, opts, message) => {
    const name = `bad-${what}`;
    await callOk(sock(), 'VolumeDriver.Create', { Name: name, Opts: opts });
    const reply = await callPlugin(sock(), 'VolumeDriver.Mount', { Name: name, ID: 'a' });
    expect(reply.body.Err).toMatch(message);
    expect(mountsUnder(daemon.dir)).toEqual([]);
    expect(loopDevicesUnder(daemon.dir)).toEqual([]);
    const get = await callOk(sock(), 'VolumeDriver.Get', { Name: name });
    expect((get.Volume as { Status: { lease: unknown } }).Status.lease).toMatchObject({ state: 'free' });
    await callOk(sock(), 'VolumeDriver.Remove', { Name: name });
  });

  it('keeps a mount across a daemon restart (SIGTERM never unmounts) and unmounts it afterwards', async () => {
    await callOk(sock(), 'VolumeDriver.Create', { Name: 'rs' });
    const mp = (await callOk(sock(), 'VolumeDriver.Mount', { Name: 'rs', ID: 'held' })).Mountpoint!;
    await daemon.stop('SIGTERM');
    expect(mountsUnder(daemon.dir)).toEqual([mp]);
    await writeFile(join(mp, 'during-restart'), 'ok');
    await daemon.start();
    expect((await callOk(sock(), 'VolumeDriver.Path', { Name: 'rs' })).Mountpoint).toBe(mp);
    await callOk(sock(), 'VolumeDriver.Unmount', { Name: 'rs', ID: 'held' });
    await callOk(sock(), 'VolumeDriver.Remove', { Name: 'rs' });
  });

  it('reconciles at start: a mount removed behind its back is dropped and its lease freed', async () => {
    await callOk(sock(), 'VolumeDriver.Create', { Name: 'gone' });
    const mp = (await callOk(sock(), 'VolumeDriver.Mount', { Name: 'gone', ID: 'x' })).Mountpoint!;
    await daemon.stop('SIGKILL');
    execFileSync('umount', [mp]);
    await daemon.start();
    const get = await callOk(sock(), 'VolumeDriver.Get', { Name: 'gone' });
    expect(get.Volume).toMatchObject({ Mountpoint: '', Status: { lease: { state: 'free' }, attachment: 'detached' } });
    expect(loopDevicesUnder(daemon.dir)).toEqual([]);
    await callOk(sock(), 'VolumeDriver.Remove', { Name: 'gone' });
  });
});
