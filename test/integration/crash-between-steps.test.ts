import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BallastProcess } from '../lab/ballast.js';
import { cleanUpUnder, loopDevicesUnder, mountsUnder } from '../helpers/cleanup.js';
import { callOk, callPlugin } from '../helpers/plugin-client.js';
import { requireRootAndTools } from '../helpers/root.js';

// A daemon killed (SIGKILL, through the BALLAST_FAILPOINT_CRASH_AFTER failpoint in
// src/volumes/steps.ts) right after each step of a Mount or an Unmount. The next start must
// reconcile what the kernel and the backend were left with: a Mount afterwards works, the data
// is there, and after the Unmount nothing is left: no mount, no loop device, the lease free.
requireRootAndTools('losetup', 'mkfs.ext4', 'mount', 'umount');

const MOUNT_STEPS = ['acquire ownership', 'export', 'attach', 'prepare filesystem', 'create mountpoint', 'mount', 'grow filesystem', 'empty a fresh filesystem'];
const UNMOUNT_STEPS = ['umount', 'detach', 'unexport', 'release ownership'];

interface LeaseView {
  Volume?: { Status?: { lease?: { state?: string } } };
}

describe('a crash between the steps of a Mount or an Unmount', () => {
  let dir: string;
  let daemon: BallastProcess;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ballast-crash-'));
    daemon = await BallastProcess.create({ dir });
  });

  afterEach(() => daemon.stop('SIGKILL')); // a failed test leaves no daemon for the next

  afterAll(async () => {
    await daemon.stop('SIGKILL');
    await daemon.stopWatchdog();
    cleanUpUnder(dir);
    await rm(dir, { recursive: true, force: true });
  });

  /** Starts the daemon to crash after `step`, runs `call`, and expects the crash (no reply). */
  async function crashDuring(step: string, call: () => Promise<unknown>): Promise<void> {
    await daemon.start(15_000, { BALLAST_FAILPOINT_CRASH_AFTER: step });
    await expect(call()).rejects.toThrow(/socket hang up|ECONNRESET|no reply/);
    await new Promise((r) => daemon.child!.exitCode !== null || daemon.child!.signalCode !== null ? r(undefined) : daemon.child!.once('exit', r));
    expect(daemon.child!.signalCode).toBe('SIGKILL');
    await daemon.stopWatchdog();
  }

  /** After a restart: the volume mounts, holds what was written, and unmounts leaving nothing. */
  async function recoversAndLeavesNothing(name: string, expectData: boolean): Promise<void> {
    await daemon.start();
    const mountpoint = (await callOk(daemon.socket, 'VolumeDriver.Mount', { Name: name, ID: 'after' })).Mountpoint!;
    if (expectData) expect(await readFile(join(mountpoint, 'data'), 'utf8')).toBe(`${name}\n`);
    expect(mountsUnder(dir)).toEqual([mountpoint]);
    expect(loopDevicesUnder(dir)).toHaveLength(1);
    await callOk(daemon.socket, 'VolumeDriver.Unmount', { Name: name, ID: 'after' });
    expect(mountsUnder(dir)).toEqual([]);
    expect(loopDevicesUnder(dir)).toEqual([]); // Unmount waits for the kernel to release it (LoopAttacher.detach)
    expect(((await callOk(daemon.socket, 'VolumeDriver.Get', { Name: name })) as LeaseView).Volume?.Status?.lease?.state).toBe('free');
    await daemon.stop();
  }

  it.each(MOUNT_STEPS)('after Mount step "%s"', async (step) => {
    const name = `m-${step.replace(/ /g, '-')}`;
    await daemon.start();
    await callOk(daemon.socket, 'VolumeDriver.Create', { Name: name, Opts: { size: '16M' } });
    await daemon.stop();
    await crashDuring(step, () => callPlugin(daemon.socket, 'VolumeDriver.Mount', { Name: name, ID: 'crashed' }, 30_000));
    await recoversAndLeavesNothing(name, false);
  });

  it.each(UNMOUNT_STEPS)('after Unmount step "%s"', async (step) => {
    const name = `u-${step.replace(/ /g, '-')}`;
    await daemon.start();
    await callOk(daemon.socket, 'VolumeDriver.Create', { Name: name, Opts: { size: '16M' } });
    await daemon.stop();
    await daemon.start(15_000, { BALLAST_FAILPOINT_CRASH_AFTER: step });
    const mountpoint = (await callOk(daemon.socket, 'VolumeDriver.Mount', { Name: name, ID: 'c' })).Mountpoint!;
    await writeFile(join(mountpoint, 'data'), `${name}\n`);
    await expect(callPlugin(daemon.socket, 'VolumeDriver.Unmount', { Name: name, ID: 'c' }, 30_000)).rejects.toThrow(/socket hang up|ECONNRESET|no reply/);
    await new Promise((r) => daemon.child!.exitCode !== null || daemon.child!.signalCode !== null ? r(undefined) : daemon.child!.once('exit', r));
    expect(daemon.child!.signalCode).toBe('SIGKILL');
    await daemon.stopWatchdog();
    await recoversAndLeavesNothing(name, true);
  });
});
