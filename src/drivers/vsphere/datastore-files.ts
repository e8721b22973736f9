import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { errorMessage } from '../../errors.js';
import type { FileStore } from '../file-store.js';
import type { VsphereClient } from './client.js';
import { explainFault } from './faults.js';
import type { Datastore } from './inventory.js';
import { asArray, isFault, textOf, VsphereFault } from './soap.js';

/** A failure with the errno code FileVolumes judges failures by (ENOENT, EEXIST). */
function errno(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}

const HEALTH_REUSE_MS = 5_000;

/**
 * Volume metadata as files on a vSphere datastore, through vCenter only: HTTP GET/PUT on the
 * /folder interface for content, FileManager for directories, moves and deletes, the
 * datastore browser for listings. It keeps FileStore's guarantees:
 * - a new file is written under a scratch name and moved into place with force=false, which
 *   vCenter refuses (FileAlreadyExists -> EEXIST) when the name is taken: the exclusive create
 *   the metadata guard relies on;
 * - a replace is a write under a scratch name and a move with force=true, so readers see the
 *   old file or the new one;
 * - a write into a directory that is gone fails (FileNotFound -> ENOENT) instead of making it
 *   again (the /folder PUT creates missing parents, so content never goes there directly).
 * Paths are relative to the datastore's root ("ballast/pgdata/meta.json").
 */
export class DatastoreFiles implements FileStore {
  /** Directories made by this process: made again only after a write into one failed (someone removed it). */
  private readonly made = new Set<string>();
  private readonly checkedAt = new Map<string, number>();

  constructor(
    private readonly client: VsphereClient,
    private readonly datastoreName: string,
    /** The datastore's references, looked up on first use. */
    private readonly lookup: () => Promise<Datastore>,
    /** A directory for scratch files, made on first use ("ballast/.tmp"). */
    private readonly scratchDir: string,
    /**
     * Directories only their maker writes into (a volume being created, under a random name):
     * a new file there is put in place directly, with no scratch file and move.
     */
    private readonly isPrivateDir: (path: string) => boolean = () => false,
  ) {}

  describe(path: string): string {
    return `[${this.datastoreName}] ${path}`;
  }

  /** The health check: asks vCenter again when the last answer is older than HEALTH_REUSE_MS (every create checks). */
  async ensureWritableDir(path: string): Promise<void> {
    const checked = this.checkedAt.get(path);
    if (checked !== undefined && Date.now() - checked < HEALTH_REUSE_MS) return;
    this.made.delete(path);
    await this.mkdir(path);
    await this.mkdir(this.scratchDir);
    this.checkedAt.set(path, Date.now());
  }

  async mkdir(path: string): Promise<void> {
    if (this.made.has(path)) return;
    const { fileManager } = await this.client.serviceContent();
    try {
      const datastore = await this.lookup();
      await this.client.call('MakeDirectory', fileManager, { name: this.describe(path), datacenter: datastore.datacenter.ref, createParentDirectories: true });
    } catch (err) {
      if (!isFault(err, 'FileAlreadyExists')) throw this.fileError(err, path);
    }
    this.made.add(path);
  }

  /**
   * Makes exactly this directory, not its parents: one synchronous call that vCenter refuses
   * when the name exists (EEXIST) or the parent does not (ENOENT). The exclusive create the
   * vmdk metadata's revision claims are made of (vmdk-records.ts).
   */
  async makeExclusiveDir(path: string): Promise<void> {
    const { fileManager } = await this.client.serviceContent();
    try {
      const datastore = await this.lookup();
      await this.client.call('MakeDirectory', fileManager, { name: this.describe(path), datacenter: datastore.datacenter.ref, createParentDirectories: false });
    } catch (err) {
      throw this.fileError(err, path);
    }
  }

  /** Removes a file or directory (with what it holds); ENOENT when it is not there. */
  remove(path: string): Promise<void> {
    return this.delete(path);
  }

  async readFile(path: string): Promise<string | undefined> {
    const datastore = await this.lookup();
    const response = await this.client.datastoreFile('GET', datastore.datacenter.name, datastore.name, path);
    return response?.data;
  }

  async writeNew(path: string, data: string): Promise<void> {
    if (this.isPrivateDir(path)) {
      const datastore = await this.lookup();
      await this.client.datastoreFile('PUT', datastore.datacenter.name, datastore.name, path, data);
      return;
    }
    await this.writeThenMove(path, data, false);
  }

  async writeAtomic(path: string, data: string): Promise<void> {
    await this.writeThenMove(path, data, true);
  }

  async createSparse(path: string): Promise<void> {
    throw new Error(`sparse image files are not made on a datastore (${this.describe(path)}); volumes there are virtual disks`);
  }

  async fsyncDir(): Promise<void> {
    // vCenter's file operations are durable when their call or task returns.
  }

  async rename(from: string, to: string): Promise<void> {
    await this.move(from, to, false);
  }

  async removeTree(path: string): Promise<void> {
    await this.delete(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  unlink(path: string): Promise<void> {
    return this.delete(path);
  }

  async readdir(path: string): Promise<string[] | undefined> {
    const entries = await this.search(path);
    return entries?.map((e) => e.name);
  }

  async stat(path: string): Promise<{ size: number; mtimeMs: number } | undefined> {
    const entry = (await this.search(dirname(path), basename(path)))?.find((e) => e.name === basename(path));
    return entry && { size: entry.size, mtimeMs: entry.mtimeMs };
  }

  async truncate(path: string): Promise<void> {
    throw new Error(`files on a datastore are not truncated (${this.describe(path)})`);
  }

  private async writeThenMove(path: string, data: string, replace: boolean): Promise<void> {
    const scratch = join(this.scratchDir, `${basename(path)}.${randomBytes(6).toString('hex')}`);
    const datastore = await this.lookup();
    const put = () => this.client.datastoreFile('PUT', datastore.datacenter.name, datastore.name, scratch, data);
    await this.mkdir(this.scratchDir);
    await put().catch(async () => {
      this.made.delete(this.scratchDir);
      await this.mkdir(this.scratchDir);
      await put();
    });
    try {
      await this.move(scratch, path, replace);
    } catch (err) {
      await this.delete(scratch).catch(() => undefined);
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') this.made.delete(dirname(path));
      throw err;
    }
  }

  private async move(from: string, to: string, force: boolean): Promise<void> {
    const { fileManager } = await this.client.serviceContent();
    const dc = (await this.lookup()).datacenter.ref;
    try {
      await this.client.runTask(
        'MoveDatastoreFile_Task',
        fileManager,
        { sourceName: this.describe(from), sourceDatacenter: dc, destinationName: this.describe(to), destinationDatacenter: dc, force },
        `move ${this.describe(from)} to ${to}`,
      );
    } catch (err) {
      throw this.fileError(err, to);
    }
  }

  private async delete(path: string): Promise<void> {
    const { fileManager } = await this.client.serviceContent();
    try {
      await this.client.runTask('DeleteDatastoreFile_Task', fileManager, { name: this.describe(path), datacenter: (await this.lookup()).datacenter.ref }, `delete ${this.describe(path)}`);
    } catch (err) {
      throw this.fileError(err, path);
    }
  }

  /**
   * The folders under `dir` (itself included, at any depth) that hold a file matching `pattern`,
   * relative to the datastore's root, with those files: one SearchDatastoreSubFolders_Task.
   * Undefined when `dir` does not exist.
   */
  async searchTree(dir: string, pattern: string): Promise<Array<{ folder: string; files: string[] }> | undefined> {
    let result;
    try {
      result = await this.client.runTask(
        'SearchDatastoreSubFolders_Task',
        (await this.lookup()).browser,
        { datastorePath: this.describe(dir), searchSpec: { details: { fileType: true, fileSize: false, modification: false, fileOwner: false }, matchPattern: pattern } },
        `search ${this.describe(dir)}`,
      );
    } catch (err) {
      if (isFault(err, 'FileNotFound')) return undefined;
      throw this.fileError(err, dir);
    }
    const prefix = `[${this.datastoreName}] `;
    return asArray(result?.HostDatastoreBrowserSearchResults)
      .map((r) => ({ folder: textOf(r.folderPath).replace(prefix, '').replace(/\/+$/, ''), files: asArray(r.file).map((f) => textOf(f.path)) }))
      .filter((r) => r.files.length);
  }

  /** The entries of a directory (all, or those matching `pattern`), with their sizes; undefined when it does not exist. */
  async search(dir: string, pattern = '*'): Promise<Array<{ name: string; size: number; mtimeMs: number }> | undefined> {
    let result;
    try {
      result = await this.client.runTask(
        'SearchDatastore_Task',
        (await this.lookup()).browser,
        { datastorePath: this.describe(dir), searchSpec: { details: { fileType: true, fileSize: true, modification: true, fileOwner: false }, matchPattern: pattern } },
        `list ${this.describe(dir)}`,
      );
    } catch (err) {
      if (isFault(err, 'FileNotFound')) return undefined;
      throw this.fileError(err, dir);
    }
    return asArray(result?.file).map((f) => ({
      name: textOf(f.path).replace(/\/$/, ''),
      size: Number(textOf(f.fileSize) || 0),
      mtimeMs: Date.parse(textOf(f.modification)) || 0,
    }));
  }

  private fileError(err: unknown, path: string): Error {
    if (isFault(err, 'FileNotFound')) return errno('ENOENT', `${this.describe(path)}: ${explainFault(err as VsphereFault)}`);
    if (isFault(err, 'FileAlreadyExists')) return errno('EEXIST', `${this.describe(path)} already exists`);
    if (err instanceof VsphereFault) return new Error(`${this.describe(path)}: ${explainFault(err)}`);
    return err instanceof Error ? err : new Error(errorMessage(err));
  }
}
