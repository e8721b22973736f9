import { constants } from 'node:fs';
import { copyFile, open, rm, stat } from 'node:fs/promises';
import type { Exec } from '../exec.js';
import { fsyncPath } from '../util/atomic-file.js';

/**
 * How a copy was made: shared extents (FICLONE: instant, no space), the bytes read and written, or
 * the array's own snapshot or clone call (Cinder: its volume type's backend decides).
 */
export type CopyMethod = 'reflink' | 'copy' | 'array';

/** How far a copy is, in bytes of data (a sparse image's holes are not counted). */
export interface CopyProgress {
  doneBytes: number;
  totalBytes: number;
}

export interface CopyResult {
  method: CopyMethod;
  /** The file's apparent size. */
  bytes: number;
  /** Bytes the copy occupies on disk: 0 for a reflink (it shares the source's). */
  writtenBytes: number;
}

/** Makes a new image file holding another's data: what snapshots and clones are made with. */
export interface Copier {
  /** Copies `source` to `target`, which must not exist; `target` is fsynced, and removed on failure. */
  copy(source: string, target: string, onProgress?: (p: CopyProgress) => void): Promise<CopyResult>;
}

/** What a reflink that the filesystem cannot do fails with. */
const NO_REFLINK = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY']);
const PROGRESS_EVERY_MS = 250;
/** The slowest copy allowed for, beyond the base bound: 20 MB/s of data. */
const SLOWEST_BYTES_PER_MS = 20_000;

/** The bound on copying `dataBytes` of data: the base bound plus the time at the slowest rate allowed for. */
export function copyTimeoutMs(baseTimeoutMs: number, dataBytes: number): number {
  return baseTimeoutMs + Math.ceil(dataBytes / SLOWEST_BYTES_PER_MS);
}

/**
 * Copies image files: a reflink where the filesystem shares extents (xfs with reflink, btrfs), in
 * process; else `cp --sparse=always`, which skips the holes (SEEK_DATA) and writes only data,
 * its progress read from the blocks the copy has so far. A copy's bound grows with the data.
 */
export class ImageCopier implements Copier {
  constructor(
    private readonly exec: Exec,
    private readonly baseTimeoutMs: number,
  ) {}

  async copy(source: string, target: string, onProgress?: (p: CopyProgress) => void): Promise<CopyResult> {
    const { size, blocks } = await stat(source);
    const dataBytes = blocks * 512;
    try {
      await copyFile(source, target, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE_FORCE);
      await fsyncPath(target);
      onProgress?.({ doneBytes: dataBytes, totalBytes: dataBytes });
      return { method: 'reflink', bytes: size, writtenBytes: 0 };
    } catch (err) {
      if (!NO_REFLINK.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
      await rm(target, { force: true });
    }
    await (await open(target, 'wx', 0o600)).close(); // cp would overwrite a file that is there: claim the name first
    const timer = setInterval(() => {
      void stat(target).then(
        (s) => onProgress?.({ doneBytes: Math.min(s.blocks * 512, dataBytes), totalBytes: dataBytes }),
        () => undefined,
      );
    }, PROGRESS_EVERY_MS);
    try {
      await this.exec.run(['cp', '--sparse=always', '--reflink=never', '--', source, target], {
        timeoutMs: copyTimeoutMs(this.baseTimeoutMs, dataBytes),
      });
      await fsyncPath(target);
    } catch (err) {
      await rm(target, { force: true });
      throw err;
    } finally {
      clearInterval(timer);
    }
    onProgress?.({ doneBytes: dataBytes, totalBytes: dataBytes });
    return { method: 'copy', bytes: size, writtenBytes: (await stat(target)).blocks * 512 };
  }
}
