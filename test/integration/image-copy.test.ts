import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageCopier, type CopyProgress } from '../../src/drivers/image-copy.js';
import { CommandRunner } from '../../src/exec.js';
import { silentLogger } from '../../src/log.js';
import { cleanUpUnder } from '../helpers/cleanup.js';
import { requireRootAndTools } from '../helpers/root.js';

// ImageCopier on real filesystems: ext4 (no reflink: a sparse copy) and an xfs made with reflink
// (shared extents), loop-mounted under the test's own temp dir.
requireRootAndTools('losetup', 'mkfs.xfs', 'mount', 'umount');

const run = (...argv: string[]) => execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 60_000 });
const MiB = 1 << 20;

/** A 64 MiB sparse image with 3 MiB of data in two places. */
async function makeImage(path: string): Promise<void> {
  const handle = await open(path, 'wx');
  try {
    await handle.truncate(64 * MiB);
    await handle.write(Buffer.alloc(2 * MiB, 0xab), 0, 2 * MiB, 8 * MiB);
    await handle.write(Buffer.alloc(MiB, 0xcd), 0, MiB, 40 * MiB + 4096);
  } finally {
    await handle.close();
  }
}

describe('ImageCopier', () => {
  const copier = new ImageCopier(new CommandRunner(silentLogger()), 30_000);
  const copyImage = (source: string, target: string, onProgress?: (p: CopyProgress) => void) => copier.copy(source, target, onProgress);
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'ballast-copy-'))));
  afterEach(async () => {
    cleanUpUnder(dir);
    await rm(dir, { recursive: true, force: true });
  });

  it('without reflink: a sparse copy (cp), the same bytes, only the data blocks allocated, progress to the end', async () => {
    const source = join(dir, 'a.img');
    const target = join(dir, 'b.img');
    await makeImage(source);
    const progress: CopyProgress[] = [];
    const result = await copyImage(source, target, (p) => progress.push(p));
    expect(result.method).toBe('copy');
    expect(result.bytes).toBe(64 * MiB);
    expect(result.writtenBytes).toBeGreaterThanOrEqual(3 * MiB); // the data, 3 MiB; the holes stay holes
    expect(result.writtenBytes).toBeLessThanOrEqual(3 * MiB + 64 * 1024);
    expect(Buffer.compare(await readFile(source), await readFile(target))).toBe(0);
    expect((await stat(target)).blocks * 512).toBe(result.writtenBytes);
    expect(progress.at(-1)).toEqual({ doneBytes: (await stat(source)).blocks * 512, totalBytes: (await stat(source)).blocks * 512 });
  });

  it('never overwrites an existing target', async () => {
    const source = join(dir, 'a.img');
    await makeImage(source);
    await writeFile(join(dir, 'taken'), 'mine');
    await expect(copyImage(source, join(dir, 'taken'))).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await readFile(join(dir, 'taken'), 'utf8')).toBe('mine');
  });

  it('on xfs with reflink: shared extents, nothing written, and the copy is its own', async () => {
    const image = join(dir, 'xfs.img');
    const mnt = join(dir, 'mnt');
    run('truncate', '-s', '512M', image);
    run('mkfs.xfs', '-q', '-m', 'reflink=1', image);
    await mkdir(mnt);
    run('mount', '-o', 'loop', image, mnt);
    const source = join(mnt, 'a.img');
    const target = join(mnt, 'b.img');
    await makeImage(source);
    const result = await copyImage(source, target);
    expect(result).toEqual({ method: 'reflink', bytes: 64 * MiB, writtenBytes: 0 });
    expect(Buffer.compare(await readFile(source), await readFile(target))).toBe(0);
    const handle = await open(target, 'r+');
    await handle.write(Buffer.from('changed'), 0, 7, 8 * MiB);
    await handle.close();
    expect((await readFile(source)).subarray(8 * MiB, 8 * MiB + 7)).toEqual(Buffer.alloc(7, 0xab));
  });
});
