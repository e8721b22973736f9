import { randomBytes } from 'node:crypto';
import { join, relative } from 'node:path';
import { z } from 'zod';
import { BackendUnavailable, SnapshotExists, SnapshotNotFound } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { CopyResult } from '../image-copy.js';
import type { SnapshotRecord, VolumeRecord } from '../types.js';
import type { DatastoreFiles } from './datastore-files.js';
import { vsphereError } from './faults.js';
import type { DiskSource, VirtualDisks } from './virtual-disks.js';

// A vmdk volume's snapshots live in its directory on the datastore, so they go with it:
//   <folder>/<volume>/snapshots/<name>/disk.vmdk       a full copy (CopyVirtualDisk_Task)
//   <folder>/<volume>/snapshots/<name>/snapshot.json   its record
// Each is made in <volume>/snapshots/.creating-<name>-<hex>/ and moved into place with
// MoveDatastoreFile_Task, which vCenter refuses when the name is taken: exactly one of two
// racing creators wins, and a failed copy leaves only a staging directory, which is removed.
const SNAPSHOTS = 'snapshots';
const RECORD = 'snapshot.json';

const snapshotSchema = z.object({
  volume: z.string(),
  name: z.string(),
  createdAt: z.string(),
  sizeBytes: z.number().int().positive(),
  fstype: z.enum(['ext4', 'xfs']),
  method: z.literal('copy'),
  /** The copied disk's capacity: a clone of it is grown to its own size at its first attach. */
  capacityKb: z.number().int().nonnegative(),
});
type StoredSnapshot = z.infer<typeof snapshotSchema>;

const errnoOf = (err: unknown) => (err as NodeJS.ErrnoException)?.code;

/** Snapshots of vmdk volumes, as disk copies beside each volume's own disk. */
export class VmdkSnapshots {
  constructor(
    private readonly root: string,
    private readonly files: DatastoreFiles,
    private readonly disks: VirtualDisks,
    private readonly log: Logger,
  ) {}

  private dir(volume: string, name?: string): string {
    return name === undefined ? join(this.root, volume, SNAPSHOTS) : join(this.root, volume, SNAPSHOTS, name);
  }

  /** Copies `disk` (the volume's, as the caller made it still: frozen or held) into a new snapshot. */
  async create(volume: VolumeRecord, disk: DiskSource, name: string): Promise<SnapshotRecord & CopyResult> {
    if (await this.read(volume.name, name)) throw new SnapshotExists(`volume ${volume.name} already has a snapshot ${name}`);
    const staging = join(this.dir(volume.name), `.creating-${name}-${randomBytes(4).toString('hex')}`);
    try {
      await this.files.mkdir(staging); // and snapshots/, the first time
      await this.disks.copy(disk, staging);
      const writtenBytes = ((await this.files.search(staging)) ?? []).reduce((sum, f) => sum + f.size, 0);
      const stored: StoredSnapshot = {
        volume: volume.name,
        name,
        createdAt: new Date().toISOString(),
        sizeBytes: volume.sizeBytes,
        fstype: volume.fstype,
        method: 'copy',
        capacityKb: disk.capacityKb,
      };
      await this.files.writeNew(join(staging, RECORD), `${JSON.stringify(stored, null, 2)}\n`);
      await this.files.rename(staging, this.dir(volume.name, name));
      this.log.info('snapshot created', { volume: volume.name, snapshot: name, method: 'copy', writtenBytes });
      return { ...recordOf(stored), bytes: volume.sizeBytes, writtenBytes };
    } catch (err) {
      await this.files.removeTree(staging).catch((undoErr: unknown) => {
        this.log.warn('could not remove the staging directory of a failed snapshot', { volume: volume.name, snapshot: name, staging, error: String(undoErr) });
      });
      if (errnoOf(err) === 'EEXIST') throw new SnapshotExists(`volume ${volume.name} already has a snapshot ${name}`);
      // ESXi locks the disk of a running VM, so a real vCenter refuses to copy one that is attached (vcsim does not lock).
      const attached = volume.ownership.state === 'held' ? ' (the volume is in use: a disk attached to a running VM is locked by it, so copy it once its containers have stopped)' : '';
      throw vsphereError(`snapshot volume ${volume.name} on ${this.files.describe(this.root)}${attached}`, err);
    }
  }

  /** The snapshot's disk, to clone from; SnapshotNotFound when it has none. */
  async source(volume: string, name: string): Promise<DiskSource> {
    const stored = await this.read(volume, name);
    if (!stored) throw new SnapshotNotFound(volume, name);
    return { file: this.disks.fileIn(this.dir(volume, name)), capacityKb: stored.capacityKb };
  }

  /**
   * The snapshots of `volume`, or of every volume; oldest first. One search finds every record
   * (SearchDatastoreSubFolders_Task), then one GET each.
   */
  async list(volume?: string): Promise<SnapshotRecord[]> {
    let found;
    try {
      found = (await this.files.searchTree(volume === undefined ? this.root : this.dir(volume), RECORD)) ?? [];
    } catch (err) {
      throw new BackendUnavailable(`cannot list the snapshots under ${this.files.describe(this.root)}: ${vsphereError('search', err).message}`);
    }
    const named = found.flatMap(({ folder, files }) => {
      const [v, dir, name, ...deeper] = relative(this.root, folder).split('/');
      const visible = v && name && dir === SNAPSHOTS && !deeper.length && !v.startsWith('.') && !name.startsWith('.') && files.includes(RECORD);
      return visible ? [{ volume: v, name }] : [];
    });
    const stored = await Promise.all(named.map((s) => this.read(s.volume, s.name).catch(() => undefined)));
    return stored
      .filter((s): s is StoredSnapshot => s !== undefined)
      .sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.name < b.name ? -1 : 1))
      .map(recordOf);
  }

  /** Moves the snapshot out of sight, then deletes it (disk and record). */
  async remove(volume: string, name: string): Promise<void> {
    const trash = join(this.dir(volume), `.deleting-${name}-${randomBytes(4).toString('hex')}`);
    try {
      await this.files.rename(this.dir(volume, name), trash);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') throw new SnapshotNotFound(volume, name);
      throw vsphereError(`remove snapshot ${name} of volume ${volume}`, err);
    }
    await this.files.removeTree(trash).catch((err: unknown) => {
      throw vsphereError(`delete ${this.files.describe(trash)} (snapshot ${name} of volume ${volume}, already out of sight)`, err);
    });
    this.log.info('snapshot removed', { volume, snapshot: name });
  }

  private async read(volume: string, name: string): Promise<StoredSnapshot | undefined> {
    let text: string | undefined;
    try {
      text = await this.files.readFile(join(this.dir(volume, name), RECORD));
    } catch (err) {
      throw vsphereError(`read snapshot ${name} of volume ${volume}`, err);
    }
    if (text === undefined) return undefined;
    const parsed = snapshotSchema.safeParse(JSON.parse(text));
    if (!parsed.success) throw new BackendUnavailable(`the record of snapshot ${name} of volume ${volume} is damaged: ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  }
}

/** What the manager and the CLI see: the record without the disk's capacity. */
function recordOf({ capacityKb: _capacityKb, ...record }: StoredSnapshot): SnapshotRecord {
  return record;
}
