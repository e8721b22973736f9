import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { BackendUnavailable, errorMessage, InvalidOption, isErrno, SnapshotExists, SnapshotNotFound, VolumeNotFound } from '../errors.js';
import type { Logger } from '../log.js';
import type { Versioned } from '../ownership/types.js';
import type { FileStore } from './file-store.js';
import type { Copier, CopyMethod, CopyProgress, CopyResult } from './image-copy.js';
import { IMAGE } from './images.js';
import type { NewVolume, SnapshotCapable, SnapshotRecord, VolumeRecord } from './types.js';

// A volume's snapshots live in its directory, so they go with it (and nothing else can reach them):
//   <root>/<volume>/snapshots/<name>/disk.img        the copy (a reflink where the root can)
//   <root>/<volume>/snapshots/<name>/snapshot.json   its record
// Each is made in a staging directory and renamed into place: exactly one of two racing creators wins.
const SNAPSHOTS = 'snapshots';
const RECORD = 'snapshot.json';

const snapshotSchema = z.object({
  volume: z.string(),
  name: z.string(),
  createdAt: z.string(),
  sizeBytes: z.number().int().positive(),
  fstype: z.enum(['ext4', 'xfs']),
  method: z.enum(['reflink', 'copy']),
});

/**
 * The manager checks names first; this is the driver's own guard, as a snapshot name becomes a
 * path on the storage ("../x" would land beside the volumes).
 */
function assertSnapshotName(volume: string, name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(name)) {
    throw new InvalidOption(`snapshot name ${JSON.stringify(name).slice(0, 140)} of volume ${volume}: expected letters, digits and _ . - (at most 128, starting with a letter or digit)`);
  }
}

/** Snapshots of image-file volumes under a root: a loop root, or an array's pool (on its host or over SSH). */
export class ImageSnapshots {
  constructor(
    private readonly root: string,
    private readonly files: FileStore,
    private readonly copier: Copier,
    private readonly log: Logger,
  ) {}

  private dir(volume: string, name?: string): string {
    return name === undefined ? join(this.root, volume, SNAPSHOTS) : join(this.root, volume, SNAPSHOTS, name);
  }

  imagePath(volume: string, name: string): string {
    assertSnapshotName(volume, name);
    return join(this.dir(volume, name), IMAGE);
  }

  /** Copies `image` (the volume's data as the caller made it still: frozen or held) into a new snapshot. */
  async create(volume: VolumeRecord, image: string, name: string, onProgress?: (p: CopyProgress) => void): Promise<SnapshotRecord & CopyResult> {
    assertSnapshotName(volume.name, name);
    if (await this.read(volume.name, name)) throw new SnapshotExists(`volume ${volume.name} already has a snapshot ${name}`);
    // Before anything is made: a snapshot directory would otherwise stand where no volume is.
    if (!(await this.files.stat(image))) throw new VolumeNotFound(volume.name);
    await this.files.mkdir(this.dir(volume.name));
    const staging = join(this.dir(volume.name), `.creating-${name}-${randomBytes(4).toString('hex')}`);
    try {
      await this.files.mkdir(staging);
      const copied = await this.copier.copy(image, join(staging, IMAGE), onProgress);
      const record: SnapshotRecord = { volume: volume.name, name, createdAt: new Date().toISOString(), sizeBytes: copied.bytes, fstype: volume.fstype, method: copied.method };
      await this.files.writeNew(join(staging, RECORD), `${JSON.stringify(record, null, 2)}\n`);
      await this.files.fsyncDir(staging);
      await this.files.rename(staging, this.dir(volume.name, name));
      await this.files.fsyncDir(this.dir(volume.name));
      this.log.info('snapshot created', { volume: volume.name, snapshot: name, method: copied.method, writtenBytes: copied.writtenBytes });
      return { ...record, ...copied };
    } catch (err) {
      await this.files.removeTree(staging).catch(() => undefined);
      if (isErrno(err, 'ENOTEMPTY', 'EEXIST')) throw new SnapshotExists(`volume ${volume.name} already has a snapshot ${name}`);
      throw new BackendUnavailable(`cannot snapshot volume ${volume.name} under ${this.files.describe(this.root)}: ${errorMessage(err)}`);
    }
  }

  async read(volume: string, name: string): Promise<SnapshotRecord | undefined> {
    assertSnapshotName(volume, name);
    const text = await this.files.readFile(join(this.dir(volume, name), RECORD));
    if (text === undefined) return undefined;
    const parsed = snapshotSchema.safeParse(JSON.parse(text));
    if (!parsed.success) throw new BackendUnavailable(`the record of snapshot ${name} of volume ${volume} is damaged: ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  }

  /** The snapshots of `volume`, or of every volume; oldest first. */
  async list(volume?: string): Promise<SnapshotRecord[]> {
    const volumes = volume === undefined ? ((await this.files.readdir(this.root)) ?? []).filter((n) => !n.startsWith('.')) : [volume];
    const found: SnapshotRecord[] = [];
    for (const v of volumes) {
      for (const name of (await this.files.readdir(this.dir(v))) ?? []) {
        if (name.startsWith('.')) continue;
        const record = await this.read(v, name).catch(() => undefined);
        if (record) found.push(record);
      }
    }
    return found.sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.name < b.name ? -1 : 1));
  }

  async remove(volume: string, name: string): Promise<void> {
    assertSnapshotName(volume, name);
    if (!(await this.read(volume, name))) throw new SnapshotNotFound(volume, name);
    const trash = join(this.dir(volume), `.deleting-${name}-${randomBytes(4).toString('hex')}`);
    await this.files.rename(this.dir(volume, name), trash);
    await this.files.removeTree(trash);
    this.log.info('snapshot removed', { volume, snapshot: name });
  }
}

/** What snapshots and clones need of a driver whose volumes are image files in one directory each. */
export interface ImagePool {
  imagePath(name: string): string;
  read(name: string): Promise<Versioned<VolumeRecord> | undefined>;
  /** Creates the volume with `fill` writing its image (FileVolumes.create). */
  create(volume: NewVolume, fill: (image: string) => Promise<void>): Promise<VolumeRecord>;
}

/**
 * Snapshots beside each volume's image, and clones as volumes whose image starts as a copy: the
 * snapshots of an image pool, made by `copier` where the pool's files are.
 */
export function imageSnapshotsOf(pool: ImagePool, store: ImageSnapshots, copier: Copier, log: Logger): SnapshotCapable {
  return {
    createSnapshot: (volume, name, onProgress) => store.create(volume, pool.imagePath(volume.name), name, onProgress),
    listSnapshots: (volume) => store.list(volume),
    removeSnapshot: (volume, name) => store.remove(volume, name),
    createFrom: async (volume, source, onProgress) => {
      // Checked before the volume is begun: a copy from nothing would fail half-way through its creation.
      if (!(await pool.read(source.volume))) throw new VolumeNotFound(source.volume);
      if (source.snapshot !== undefined && !(await store.read(source.volume, source.snapshot))) throw new SnapshotNotFound(source.volume, source.snapshot);
      const from = source.snapshot === undefined ? pool.imagePath(source.volume) : store.imagePath(source.volume, source.snapshot);
      let method: CopyMethod = 'copy';
      const record = await pool.create(volume, async (image) => void ({ method } = await copier.copy(from, image, onProgress)));
      log.info('volume cloned', { volume: volume.name, from: source, method });
      return { ...record, method };
    },
  };
}
