import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** A temp-file name next to `path`, on the same file system, so rename() is atomic. */
export function siblingTempPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/** fsync(2) of a file or a directory, opened read-only (enough for fsync on Linux). */
export async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `data` to a new file and fsyncs it unless told not to (the file must not exist). */
export async function writeNewFile(path: string, data: string, sync = true): Promise<void> {
  const handle = await open(path, 'wx', 0o644);
  try {
    await handle.writeFile(data);
    if (sync) await handle.sync();
  } catch (err) {
    // Created by us (wx), so ours to remove: a full disk must not leave an empty or partial file
    // behind (an empty metadata guard would lock its volume until it is judged stale).
    await handle.close().catch(() => undefined);
    await rm(path, { force: true });
    throw err;
  }
  await handle.close();
}

/**
 * Replaces `path` atomically: a reader sees the old content or the new, never a mix. Durable
 * (file and directory fsynced) unless told otherwise: a file that only describes this kernel's
 * state (what is mounted here) need not survive a power loss, and atomicity alone survives a crash
 * of the process.
 */
export async function writeFileAtomic(path: string, data: string, { durable = true }: { durable?: boolean } = {}): Promise<void> {
  const temp = siblingTempPath(path);
  try {
    await writeNewFile(temp, data, durable);
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  if (durable) await fsyncPath(dirname(path));
}

export { fsyncPath as fsyncDirectory };
