import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { BackendUnavailable, errorMessage, InvalidOption, SnapshotExists, SnapshotNotFound, VolumeNotFound } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Versioned } from '../../ownership/types.js';
import type { FileStore } from '../file-store.js';
import type { CopyResult } from '../image-copy.js';
import type { CloneSource, NewVolume, SnapshotCapable, SnapshotRecord, VolumeRecord } from '../types.js';
import type { PowerFlexArray, PowerFlexRef } from './array.js';

// PowerFlex keeps nothing on a volume but its name (31 characters), so a snapshot's ballast name
// lives in a record beside the volume's, in metadata_root:
//   <root>/<volume>/snapshots/<name>.json   {volume, name, createdAt, sizeBytes, fstype, method, id, powerflexName}
// It goes with the volume's directory, and only the lease holder writes it (snapshots.ts).
const SNAPSHOTS = 'snapshots';

/** The volume-name rules (src/volumes/names.ts): checked here too, before any call to the array or path. */
const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

const recordSchema = z.object({
  volume: z.string(),
  name: z.string(),
  createdAt: z.string(),
  sizeBytes: z.number().int().positive(),
  fstype: z.enum(['ext4', 'xfs']),
  method: z.literal('array'),
  /** The PowerFlex snapshot's volume id and name. */
  id: z.string(),
  powerflexName: z.string(),
});
type Recorded = z.infer<typeof recordSchema>;

function assertSnapshotName(name: string): void {
  if (!SNAPSHOT_NAME.test(name)) throw new InvalidOption(`snapshot name ${JSON.stringify(name).slice(0, 140)}: expected letters, digits and _ . - (at most 128, starting with a letter or digit)`);
}

/** "bs-" and 28 hex of a hash of VOLUME@NAME: 31 characters, never a volume's "bl-" name. */
export const snapshotPowerflexName = (volume: string, name: string) => `bs-${createHash('sha256').update(`${volume}@${name}`).digest('hex').slice(0, 28)}`;

/** What the snapshots need of the driver: records, the PowerFlex volume of each, creation from another. */
export interface PowerFlexVolumes {
  read(name: string): Promise<Versioned<VolumeRecord> | undefined>;
  list(): Promise<VolumeRecord[]>;
  refOf(name: string): Promise<PowerFlexRef | undefined>;
  /** Creates a ballast volume whose PowerFlex volume `origin` makes. */
  createFrom(volume: NewVolume, origin: () => Promise<PowerFlexRef>): Promise<VolumeRecord>;
}

/**
 * Snapshots and clones through PowerFlex's own snapshotVolumes: a snapshot is a PowerFlex
 * snapshot of the volume (a volume itself, in its vTree) named by a hash, its ballast name in a
 * record; a clone is a snapshot of the snapshot, or of the live volume, named as any ballast
 * volume is, that becomes the new volume's PowerFlex volume (grown when asked larger). Removing
 * a snapshot removes only it (removeMode ONLY_ME): its clones stay.
 */
export class PowerFlexSnapshots implements SnapshotCapable {
  constructor(
    private readonly array: PowerFlexArray,
    private readonly volumes: PowerFlexVolumes,
    private readonly root: string,
    private readonly files: FileStore,
    private readonly volumeName: (name: string) => string,
    private readonly log: Logger,
  ) {}

  async createSnapshot(volume: VolumeRecord, name: string): Promise<SnapshotRecord & CopyResult> {
    assertSnapshotName(name);
    const ref = await this.mustRef(volume.name);
    if (await this.read(volume.name, name)) throw new SnapshotExists(`volume ${volume.name} already has a snapshot ${name}`);
    const powerflexName = snapshotPowerflexName(volume.name, name);
    const id = await this.array.snapshot(ref.id, powerflexName, `snapshot volume ${volume.name} as ${powerflexName}`);
    if (id === undefined) {
      throw new BackendUnavailable(
        `PowerFlex already has a volume ${powerflexName}, the name of snapshot ${name} of volume ${volume.name}, but ballast has no record of it ` +
          `(a snapshot interrupted before its record was written): delete PowerFlex volume ${powerflexName}, then take the snapshot again`,
      );
    }
    const record: Recorded = { volume: volume.name, name, createdAt: new Date().toISOString(), sizeBytes: volume.sizeBytes, fstype: volume.fstype, method: 'array', id, powerflexName };
    try {
      await this.files.mkdir(this.dir(volume.name));
      await this.files.writeNew(this.path(volume.name, name), `${JSON.stringify(record, null, 2)}\n`);
    } catch (err) {
      await this.array.removeVolume(id, powerflexName).catch((e: unknown) => {
        this.log.warn(`could not delete PowerFlex snapshot ${powerflexName} after its record failed: delete it by hand`, { id, error: errorMessage(e) });
      });
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new SnapshotExists(`volume ${volume.name} already has a snapshot ${name}`);
      throw new BackendUnavailable(`cannot record snapshot ${name} of volume ${volume.name} under ${this.files.describe(this.root)}: ${errorMessage(err)}`);
    }
    this.log.info('snapshot created', { volume: volume.name, snapshot: name, powerflex: powerflexName, id });
    // PowerFlex shares the snapshot's data with the volume until either side changes.
    return { ...publicPart(record), bytes: record.sizeBytes, writtenBytes: 0 };
  }

  /** The snapshots of `volume`, or of every ballast volume; oldest first. */
  async listSnapshots(volume?: string): Promise<SnapshotRecord[]> {
    const names = volume === undefined ? (await this.volumes.list()).map((v) => v.name) : [volume];
    const found: Recorded[] = [];
    for (const v of names) found.push(...(await this.recorded(v)));
    return found.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name)).map(publicPart);
  }

  /** The readable records of the volume's snapshots. */
  private async recorded(volume: string): Promise<Recorded[]> {
    const found: Recorded[] = [];
    for (const entry of (await this.files.readdir(this.dir(volume))) ?? []) {
      const name = entry.replace(/\.json$/, '');
      const record = entry.endsWith('.json') && SNAPSHOT_NAME.test(name) ? await this.read(volume, name).catch(() => undefined) : undefined;
      if (record) found.push(record);
    }
    return found;
  }

  async removeSnapshot(volume: string, name: string): Promise<void> {
    assertSnapshotName(name);
    const record = await this.read(volume, name);
    if (!record) throw new SnapshotNotFound(volume, name);
    await this.array.removeVolume(record.id, record.powerflexName);
    await this.files.unlink(this.path(volume, name));
    this.log.info('snapshot removed', { volume, snapshot: name, powerflex: record.powerflexName });
  }

  /** Deletes the PowerFlex snapshots of every record of `volume`; the records go with the volume's directory. */
  async removeAll(volume: string): Promise<void> {
    for (const snapshot of await this.recorded(volume)) {
      await this.array.removeVolume(snapshot.id, snapshot.powerflexName);
      this.log.info('snapshot removed with its volume', { volume, snapshot: snapshot.name, powerflex: snapshot.powerflexName });
    }
  }

  async createFrom(volume: NewVolume, source: CloneSource): Promise<VolumeRecord & { method: 'array' }> {
    if (source.snapshot !== undefined) assertSnapshotName(source.snapshot);
    const ref = await this.mustRef(source.volume);
    let originId = ref.id;
    if (source.snapshot !== undefined) {
      const snapshot = await this.read(source.volume, source.snapshot);
      if (!snapshot) throw new SnapshotNotFound(source.volume, source.snapshot);
      originId = snapshot.id;
    }
    const record = await this.volumes.createFrom(volume, () => this.copyOf(originId, ref, volume));
    this.log.info('volume cloned', { volume: volume.name, from: source });
    return { ...record, method: 'array' };
  }

  /** A snapshot of `originId` named as the clone's volume, grown to its size; deleted again if growing fails. */
  private async copyOf(originId: string, source: PowerFlexRef, volume: NewVolume): Promise<PowerFlexRef> {
    const name = this.volumeName(volume.name);
    const id = await this.array.snapshot(originId, name, `make volume ${name} (clone ${volume.name})`);
    if (id === undefined) throw Object.assign(new Error(`PowerFlex already has a volume ${name} for ${volume.name}`), { code: 'EEXIST' });
    try {
      const { sizeInKb } = await this.array.volume(id);
      if (sizeInKb * 1024 < volume.sizeBytes) await this.array.setSize(id, name, volume.sizeBytes);
    } catch (err) {
      await this.array.removeVolume(id, name).catch((e: unknown) => {
        throw new BackendUnavailable(`${errorMessage(err)}; ballast could not delete PowerFlex volume ${name} (${errorMessage(e)}): delete volume ${id} by hand`);
      });
      throw err;
    }
    // A snapshot lives in its vTree's storage pool: the clone's SDTs are its source's.
    return { id, pool: source.pool };
  }

  private dir(volume: string): string {
    return join(this.root, volume, SNAPSHOTS);
  }

  private path(volume: string, name: string): string {
    return join(this.dir(volume), `${name}.json`);
  }

  private async read(volume: string, name: string): Promise<Recorded | undefined> {
    const text = await this.files.readFile(this.path(volume, name));
    if (text === undefined) return undefined;
    let parsed: ReturnType<typeof recordSchema.safeParse> | undefined;
    try {
      parsed = recordSchema.safeParse(JSON.parse(text));
    } catch {
      parsed = undefined;
    }
    if (!parsed?.success) throw new BackendUnavailable(`the record of snapshot ${name} of volume ${volume} under ${this.files.describe(this.root)} is damaged: it names the PowerFlex snapshot; restore it from a backup of metadata_root`);
    return parsed.data;
  }

  private async mustRef(volume: string): Promise<PowerFlexRef> {
    if (!(await this.volumes.read(volume))) throw new VolumeNotFound(volume);
    const ref = await this.volumes.refOf(volume);
    if (!ref) throw new BackendUnavailable(`volume ${volume} has no array.json: which PowerFlex volume it is, is unknown`);
    return ref;
  }
}

function publicPart({ volume, name, createdAt, sizeBytes, fstype, method }: Recorded): SnapshotRecord {
  return { volume, name, createdAt, sizeBytes, fstype, method };
}
