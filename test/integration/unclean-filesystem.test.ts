import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BallastProcess } from '../lab/ballast.js';
import { cleanUpUnder } from '../helpers/cleanup.js';
import { callOk } from '../helpers/plugin-client.js';
import { requireRootAndTools } from '../helpers/root.js';

// The Mount hot path skips fsck when the ext4 superblock says the filesystem was cleanly
// unmounted. This checks the other half for real: a filesystem shut down while mounted (what
// the fence does, and what a crash leaves) and never cleanly unmounted is checked at the next
// Mount, its journal replayed, and the data that was synced before is there.
requireRootAndTools('losetup', 'mkfs.ext4', 'mount', 'umount', 'xfs_io', 'dumpe2fs');

const run = (...argv: string[]) => execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 30_000 });

describe('a filesystem not cleanly unmounted', () => {
  let dir: string;
  let daemon: BallastProcess;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ballast-unclean-'));
    daemon = await BallastProcess.create({ dir });
    await daemon.start();
  });

  afterEach(async () => {
    await daemon.stop('SIGKILL');
    await daemon.stopWatchdog();
    cleanUpUnder(dir);
    await rm(dir, { recursive: true, force: true });
  });

  const fsckLines = async () => (await daemon.logs()).filter((l) => l.message === 'filesystem not known clean: fsck before mounting');

  it('is checked (journal replayed) at the next Mount; a clean one is not', async () => {
    await callOk(daemon.socket, 'VolumeDriver.Create', { Name: 'v', Opts: { size: '32M' } });
    let mountpoint = (await callOk(daemon.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'one' })).Mountpoint!;
    await callOk(daemon.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'one' });
    mountpoint = (await callOk(daemon.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'two' })).Mountpoint!;
    expect(await fsckLines()).toEqual([]); // cleanly unmounted: no fsck

    await writeFile(join(mountpoint, 'synced'), 'kept\n');
    run('sync', '-f', join(mountpoint, 'synced'));
    const device = run('findmnt', '-n', '-o', 'SOURCE', '--mountpoint', mountpoint).trim();
    // The host "crashes": the daemon dies, the filesystem stops where it is (as the fence
    // stops it), and what the kernel held is gone (unmount and detach by hand, as a reboot would).
    await daemon.stop('SIGKILL');
    await daemon.stopWatchdog();
    run('xfs_io', '-x', '-c', 'shutdown', mountpoint);
    run('umount', mountpoint);
    expect(run('dumpe2fs', '-h', device)).toMatch(/^Filesystem features:.*\bneeds_recovery\b/m);
    run('losetup', '--detach', device);

    await daemon.start();
    mountpoint = (await callOk(daemon.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'three' })).Mountpoint!;
    const [checked, ...more] = await fsckLines();
    expect(more).toEqual([]);
    expect(checked).toMatchObject({ volume: 'v', reasons: expect.arrayContaining([expect.stringMatching(/needs_recovery/)]) });
    expect(await readFile(join(mountpoint, 'synced'), 'utf8')).toBe('kept\n');
    await callOk(daemon.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'three' });
    await callOk(daemon.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'four' }); // checked and cleanly unmounted since
    expect(await fsckLines()).toHaveLength(1);
    await callOk(daemon.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'four' });
  });
});
