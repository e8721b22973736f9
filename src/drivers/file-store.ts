import { access, constants, mkdir, open, readdir, readFile, rename, rm, stat, truncate, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fsyncDirectory, writeFileAtomic, writeNewFile } from '../util/atomic-file.js';

/**
 * The file operations volume metadata needs, on whichever host keeps it: this one (a loop
 * root, or an array when ballast runs on it) or an array host reached over SSH. Failures
 * carry Node's errno codes (err.code: ENOENT, EEXIST, ENOTEMPTY, ...) on every implementation,
 * so callers judge them one way.
 */
export interface FileStore {
  /** Where the files are, for messages: "/srv/pool" or "array1:/srv/pool". */
  describe(path: string): string;
  /** Creates the directory (and parents) if needed and checks it is readable and writable. */
  ensureWritableDir(path: string): Promise<void>;
  mkdir(path: string): Promise<void>;
  /** The file's text, or undefined when it (or its directory) does not exist. */
  readFile(path: string): Promise<string | undefined>;
  /**
   * Creates the file with `data` and fsyncs it; EEXIST when it exists: the exclusive create locks
   * rely on. `sync: false` skips the fsync where a store can (a file that is only a hint).
   */
  writeNew(path: string, data: string, options?: { sync: boolean }): Promise<void>;
  /** Replaces the file atomically (temp file, fsync, rename, fsync of the directory). */
  writeAtomic(path: string, data: string): Promise<void>;
  /** A new sparse file of `size` bytes, fsynced; EEXIST when it exists. */
  createSparse(path: string, size: number): Promise<void>;
  fsyncDir(path: string): Promise<void>;
  /** rename(2): atomic; onto a non-empty directory it fails with ENOTEMPTY or EEXIST. */
  rename(from: string, to: string): Promise<void>;
  removeTree(path: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** Entry names, or undefined when the directory does not exist. */
  readdir(path: string): Promise<string[] | undefined>;
  /** Size and modification time, or undefined when the file does not exist. */
  stat(path: string): Promise<{ size: number; mtimeMs: number } | undefined>;
  truncate(path: string, size: number): Promise<void>;
}

/**
 * A failed write, with what the operator does about it where the errno says: a full or
 * read-only root is fixed there, not by retrying. `where` is a path on it as messages show it.
 */
export function writeProblem(err: unknown, where: string): string {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOSPC') return `the file system holding ${where} is full (ENOSPC, no space left on the device): free space there, then retry`;
  if (code === 'EDQUOT') return `the file system holding ${where} is over its disk quota (EDQUOT): free space or raise the quota, then retry`;
  if (code === 'EROFS') return `the file system holding ${where} is mounted read-only (EROFS): remount it read-write, then retry`;
  return err instanceof Error ? err.message : String(err);
}

function isMissing(err: unknown): boolean {
  return ['ENOENT', 'ENOTDIR'].includes((err as NodeJS.ErrnoException)?.code ?? '');
}

/**
 * ESTALE (Node has no name for it: "Unknown system error -116"), and EREMOTEIO (-121), which is
 * how Linux's NFS client reports NFS4ERR_SERVERFAULT: nfs-ganesha answered that once (CI, 3 reads
 * in flight) for a read racing another host's rename over the file. Both say "this file handle
 * went away under you"; a read of the name again is the answer.
 */
export function isStale(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException;
  return ['ESTALE', 'EREMOTEIO'].includes(e?.code ?? '') || e?.errno === -116 || e?.errno === -121;
}

/**
 * 8 ran out once in CI: three reads in flight under another host's ~40 replaces a second, on
 * emulated VMs, hit ESTALE 8 times in a row. Sixteen wait about 0.6 s in all.
 */
const STALE_ATTEMPTS = 16;

/**
 * Runs a read again when NFS answers ESTALE (or the server fault a replace can cause): the file handle it used belongs to a file another
 * host replaced by rename (host leases and metadata are replaced that way all the time). While
 * another read in this process still has the old file open, a plain retry reuses its cached
 * lookup and fails again (seen in the VM lab with three reads in flight), so before each retry
 * the directory is listed: that revalidates it and drops the stale name, and the next open
 * looks the name up afresh.
 */
export async function retryStale<T>(path: string, read: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await read();
    } catch (err) {
      if (!isStale(err) || attempt >= STALE_ATTEMPTS) throw err;
      await readdir(dirname(path)).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, attempt * 5));
    }
  }
}

/**
 * Files on this host, the shared root of several hosts included (NFS): reads retry ESTALE, and
 * "absent" comes from the server, given the mount options the loop backend checks at start
 * (lookupcache=positive or none: no cached negative lookups).
 */
export class LocalFileStore implements FileStore {
  describe(path: string): string {
    return path;
  }

  async ensureWritableDir(path: string): Promise<void> {
    await mkdir(path, { recursive: true, mode: 0o700 });
    await access(path, constants.R_OK | constants.W_OK);
  }

  async mkdir(path: string): Promise<void> {
    await mkdir(path, { recursive: true, mode: 0o700 });
  }

  async readFile(path: string): Promise<string | undefined> {
    try {
      return await retryStale(path, () => readFile(path, 'utf8'));
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  writeNew(path: string, data: string, options?: { sync: boolean }): Promise<void> {
    return writeNewFile(path, data, options?.sync ?? true);
  }

  writeAtomic(path: string, data: string): Promise<void> {
    return writeFileAtomic(path, data);
  }

  async createSparse(path: string, size: number): Promise<void> {
    const image = await open(path, 'wx', 0o600);
    try {
      await image.truncate(size);
      await image.sync();
    } finally {
      await image.close();
    }
  }

  fsyncDir(path: string): Promise<void> {
    return fsyncDirectory(path);
  }

  rename(from: string, to: string): Promise<void> {
    return rename(from, to);
  }

  removeTree(path: string): Promise<void> {
    return rm(path, { recursive: true, force: true });
  }

  unlink(path: string): Promise<void> {
    return unlink(path);
  }

  async readdir(path: string): Promise<string[] | undefined> {
    try {
      return await retryStale(path, () => readdir(path));
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  async stat(path: string): Promise<{ size: number; mtimeMs: number } | undefined> {
    try {
      const { size, mtimeMs } = await retryStale(path, () => stat(path));
      return { size, mtimeMs };
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  truncate(path: string, size: number): Promise<void> {
    return truncate(path, size);
  }
}
