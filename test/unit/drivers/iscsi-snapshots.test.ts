import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LioBackendConfig } from '../../../src/config/schema.js';
import { ArrayHostCopier } from '../../../src/drivers/array-host/array-copier.js';
import { LocalFileStore } from '../../../src/drivers/file-store.js';
import { LioDriver } from '../../../src/drivers/lio/lio-driver.js';
import type { NewVolume } from '../../../src/drivers/types.js';
import { CommandFailed } from '../../../src/errors.js';
import type { Exec } from '../../../src/exec.js';
import { silentLogger } from '../../../src/log.js';
import { TimedExec } from '../../helpers/fake-exec.js';

const MiB = 1024 ** 2;
const volume = (name: string): NewVolume => ({ name, profile: 'gold', sizeBytes: 64 * MiB, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });

describe('ArrayHostCopier', () => {
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'ballast-copier-'))));
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const source = '/pool/v/disk.img';
  const target = () => join(dir, 'disk.img');
  // 6144 blocks of 512 bytes: 3 MiB of data in a 64 MiB image.
  const statSource = { match: `stat -L -c %s %b %B -- ${source}`, stdout: `${64 * MiB} 6144 512\n` };
  const noReflink = { match: 'cp --reflink=always', exitCode: 1, stderr: 'cp: failed to clone: Operation not supported' };
  const copyBound = 100_000 + Math.ceil((3 * MiB) / 20_000); // the base bound plus 3 MiB at 20 MB/s
  const copier = (exec: Exec) => new ArrayHostCopier(exec, new LocalFileStore(), 5_000, 100_000);

  it('without reflink: claims the target, then a sparse cp, sync and stat on the array host, each bounded', async () => {
    const exec = new TimedExec().reply(statSource, noReflink, { match: 'stat -c', stdout: '6152 512\n' });
    const progress: { doneBytes: number; totalBytes: number }[] = [];
    const result = await copier(exec).copy(source, target(), (p) => progress.push(p));
    expect(result).toEqual({ method: 'copy', bytes: 64 * MiB, writtenBytes: 6152 * 512 });
    expect(exec.calls).toEqual([
      ['stat', '-L', '-c', '%s %b %B', '--', source],
      ['cp', '--reflink=always', '--', source, target()],
      ['cp', '--reflink=never', '--sparse=always', '--', source, target()],
      ['sync', '--', target()],
      ['stat', '-c', '%b %B', '--', target()],
    ]);
    expect(exec.timeouts).toEqual([5_000, copyBound, copyBound, copyBound, 5_000]);
    expect(await readdir(dir)).toEqual(['disk.img']); // claimed before the copy (cp itself is faked)
    expect(progress).toEqual([{ doneBytes: 3 * MiB, totalBytes: 3 * MiB }]);
  });

  it('with reflink: one cp, and nothing written', async () => {
    const exec = new TimedExec().reply(statSource, { match: 'stat -c', stdout: '6144 512\n' });
    expect(await copier(exec).copy(source, target())).toEqual({ method: 'reflink', bytes: 64 * MiB, writtenBytes: 0 });
    expect(exec.commands.filter((c) => c.startsWith('cp '))).toEqual([`cp --reflink=always -- ${source} ${target()}`]);
  });

  it('reports progress from the blocks the target holds while the copy runs', async () => {
    const exec = new TimedExec().reply(statSource, noReflink, { match: 'stat -c', stdout: '2048 512\n' });
    const slowCopy: Exec = {
      run: async (argv, options) => {
        if (argv.includes('--sparse=always')) await new Promise((r) => setTimeout(r, 1_300)); // one poll, a second in
        return exec.run(argv, options);
      },
    };
    const progress: { doneBytes: number; totalBytes: number }[] = [];
    await copier(slowCopy).copy(source, target(), (p) => progress.push(p));
    expect(progress).toEqual([{ doneBytes: MiB, totalBytes: 3 * MiB }, { doneBytes: 3 * MiB, totalBytes: 3 * MiB }]);
  });

  it('removes the target when the copy fails or times out, and passes the failure on', async () => {
    for (const failure of [{ exitCode: 1, stderr: 'cp: error writing: No space left on device' }, { timedOut: true, exitCode: 124 }]) {
      const exec = new TimedExec().reply(statSource, noReflink, { match: 'cp --reflink=never', ...failure });
      const err = await copier(exec).copy(source, target()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CommandFailed);
      expect(exec.calls.at(-1)).toEqual(['rm', '-f', '--', target()]);
      expect(exec.calls.some((argv) => argv[0] === 'sync')).toBe(false);
      await rm(target(), { force: true }); // what the (faked) rm does
    }
  });

  it('never copies over a file that is there', async () => {
    await writeFile(target(), 'mine');
    const exec = new TimedExec().reply(statSource);
    await expect(copier(exec).copy(source, target())).rejects.toMatchObject({ code: 'EEXIST' });
    expect(exec.calls).toEqual([['stat', '-L', '-c', '%s %b %B', '--', source]]);
    expect(await readFile(target(), 'utf8')).toBe('mine');
  });
});

describe('LioDriver snapshots', () => {
  it('copy the image on the array host, as on tgt, into the snapshot beside the volume', async () => {
    const pool = await mkdtemp(join(tmpdir(), 'ballast-lio-pool-'));
    try {
      const image = join(pool, 'v', 'disk.img');
      const exec = new TimedExec().reply({ match: `stat -L -c %s %b %B -- ${image}`, stdout: `${64 * MiB} 0 512\n` }, { match: 'stat -c', stdout: '0 512\n' });
      const backend: LioBackendConfig = { array: {}, pool, transport: 'iscsi', iscsi: { portals: ['127.0.0.1:3260'], target_prefix: 'iqn.2026-12.dev.ballast' }, multipath: true, reservations: true };
      const driver = new LioDriver(pool, backend, 'iscsi', { exec }, 5_000, silentLogger(), undefined, 100_000);
      const v = await driver.create(volume('v'));
      const snapshot = await driver.snapshots.createSnapshot(v, 's1');
      expect(snapshot).toMatchObject({ volume: 'v', name: 's1', method: 'reflink', sizeBytes: 64 * MiB });
      const copy = exec.calls.find((argv) => argv[0] === 'cp')!;
      expect(copy.slice(0, 4)).toEqual(['cp', '--reflink=always', '--', image]);
      expect(copy[4]).toMatch(new RegExp(`^${pool}/v/snapshots/`));
      expect((await driver.snapshots.listSnapshots('v')).map((s) => s.name)).toEqual(['s1']);
    } finally {
      await rm(pool, { recursive: true, force: true });
    }
  });
});
