import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { BackendUnavailable, SnapshotExists, SnapshotNotFound, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { FileStore } from './file-store.js';
import type { CopyProgress, CopyResult, ImageCopier } from './image-copy.js';
import { IMAGE } from './images.js';
import type { SnapshotRecord, VolumeRecord } from './types.js';

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

function isErrno(err: unknown, ...codes: string[]): boolean {
  return codes.includes((err as NodeJS.ErrnoException)?.code ?? '');
}

/** Snapshots of image-file volumes under a loop root. */
export class ImageSnapshots {
  constructor(
    private readonly root: string,
    private readonly files: FileStore,
    private readonly copier: ImageCopier,
    private readonly log: Logger,
  ) {}

  private dir(volume: string, name?: string): string {
    return name === undefined ? join(this.root, volume, SNAPSHOTS) : join(this.root, volume, SNAPSHOTS, name);
  }

  imagePath(volume: string, name: string): string {
    return join(this.dir(volume, name), IMAGE);
  }

  /** Copies `image` (the volume's data as the caller made it still: frozen or held) into a new snapshot. */
  async create(volume: VolumeRecord, image: string, name: string, onProgress?: (p: CopyProgress) => void): Promise<SnapshotRecord & CopyResult> {
    if (await this.read(volume.name, name)) throw new SnapshotExists(`volume ${volume.name} already has a snapshot ${name}`);
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
    if (!(await this.read(volume, name))) throw new SnapshotNotFound(volume, name);
    const trash = join(this.dir(volume), `.deleting-${name}-${randomBytes(4).toString('hex')}`);
    await this.files.rename(this.dir(volume, name), trash);
    await this.files.removeTree(trash);
    this.log.info('snapshot removed', { volume, snapshot: name });
  }
}
