import { constants } from 'node:fs';
import { copyFile, open, rm, stat } from 'node:fs/promises';

/** How a copy was made: shared extents (FICLONE: instant, no space) or the bytes read and written. */
export type CopyMethod = 'reflink' | 'copy';

export interface CopyProgress {
  doneBytes: number;
  totalBytes: number;
}

export interface CopyResult {
  method: CopyMethod;
  /** The file's apparent size. */
  bytes: number;
  /** Bytes actually written: 0 for a reflink; a sparse copy skips blocks that read as zeros. */
  writtenBytes: number;
}

/** What a reflink that the filesystem cannot do fails with. */
const NO_REFLINK = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY']);
const CHUNK = 1 << 20;
const ZEROS = Buffer.alloc(CHUNK);

/**
 * Copies an image file to `target` (which must not exist): a reflink where the filesystem shares
 * extents (xfs with reflink, btrfs), else a sparse copy that writes only the 1 MiB blocks that are
 * not all zeros, reporting progress as it goes. `target` is fsynced; on failure it is removed.
 */
export async function copyImage(source: string, target: string, onProgress?: (p: CopyProgress) => void): Promise<CopyResult> {
  const { size } = await stat(source);
  try {
    await copyFile(source, target, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE_FORCE);
    await syncFile(target);
    onProgress?.({ doneBytes: size, totalBytes: size });
    return { method: 'reflink', bytes: size, writtenBytes: 0 };
  } catch (err) {
    if (!NO_REFLINK.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
    await rm(target, { force: true });
  }
  try {
    const writtenBytes = await sparseCopy(source, target, size, onProgress);
    return { method: 'copy', bytes: size, writtenBytes };
  } catch (err) {
    await rm(target, { force: true });
    throw err;
  }
}

async function sparseCopy(source: string, target: string, size: number, onProgress?: (p: CopyProgress) => void): Promise<number> {
  const input = await open(source, 'r');
  const output = await open(target, 'wx', 0o600);
  let written = 0;
  try {
    const buffer = Buffer.allocUnsafe(CHUNK);
    for (let offset = 0; offset < size; offset += CHUNK) {
      const { bytesRead } = await input.read(buffer, 0, Math.min(CHUNK, size - offset), offset);
      if (bytesRead === 0) break;
      const chunk = buffer.subarray(0, bytesRead);
      if (!chunk.equals(ZEROS.subarray(0, bytesRead))) {
        await output.write(chunk, 0, bytesRead, offset);
        written += bytesRead;
      }
      onProgress?.({ doneBytes: offset + bytesRead, totalBytes: size });
    }
    await output.truncate(size); // the holes at the end
    await output.sync();
  } finally {
    await input.close();
    await output.close();
  }
  return written;
}

async function syncFile(path: string): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
