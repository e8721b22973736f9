import { BackendUnavailable, errorMessage, InvalidOption, SnapshotExists, SnapshotNotFound, VolumeNotFound } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Versioned } from '../../ownership/types.js';
import type { CopyResult } from '../image-copy.js';
import { VolumeAlreadyExists, type CloneSource, type NewVolume, type SnapshotCapable, type SnapshotRecord, type VolumeRecord } from '../types.js';
import type { DellScArray, ScReplay, ScVolumeRef } from './array.js';

/** What the snapshots need of the driver: records, the array volume of each, and creation from a view. */
export interface ScVolumes {
  read(name: string): Promise<Versioned<VolumeRecord> | undefined>;
  list(): Promise<VolumeRecord[]>;
  refOf(name: string): Promise<ScVolumeRef | undefined>;
  /** Creates a ballast volume whose Storage Center volume `origin` makes. */
  createFrom(volume: NewVolume, origin: () => Promise<ScVolumeRef>): Promise<VolumeRecord>;
}

/** The volume-name rules (src/volumes/names.ts): checked here too, before any call to the array. */
const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** A replay's description names ballast's snapshot: the only field a replay keeps for its maker. */
const DESCRIPTION = 'ballast snapshot ';
/** A clone's temporary replay expires by itself after this long, should ballast not get to it. */
const TEMPORARY_MINUTES = 60;

export const replayDescription = (name: string) => `${DESCRIPTION}${name}`;

function assertSnapshotName(name: string): void {
  if (!SNAPSHOT_NAME.test(name)) throw new InvalidOption(`snapshot name ${JSON.stringify(name).slice(0, 140)}: expected letters, digits and _ . - (at most 128, starting with a letter or digit)`);
}

/** "1073741824 Bytes" (SC's sizes) -> bytes; undefined when absent or unreadable. */
function bytesOf(size: string | undefined): number | undefined {
  const match = /^(\d+(?:\.\d+)?)\s*Bytes$/i.exec(size ?? '');
  return match ? Number(match[1]) : undefined;
}

/**
 * Snapshots and clones through Storage Center's own calls: a snapshot is a replay of the
 * volume (CreateReplay, its description naming the snapshot; ReplayList; Expire), a clone a view
 * volume of a replay (CreateView) that becomes the new ballast volume's array volume. A clone of
 * the live volume is a view of a temporary replay, expired once the view is made.
 */
export class DellScSnapshots implements SnapshotCapable {
  constructor(
    private readonly array: DellScArray,
    private readonly volumes: ScVolumes,
    private readonly scName: (name: string) => string,
    private readonly log: Logger,
  ) {}

  async createSnapshot(volume: VolumeRecord, name: string): Promise<SnapshotRecord & CopyResult> {
    assertSnapshotName(name);
    const ref = await this.mustRef(volume.name);
    if (await this.find(ref, volume.name, name)) throw new SnapshotExists(`volume ${volume.name} already has a snapshot ${name}`);
    const replay = await this.array.createReplay(ref.instanceId, this.scName(volume.name), replayDescription(name), 0);
    // Descriptions are not unique: of two hosts snapshotting with one name at once, the first listed wins.
    const winner = await this.find(ref, volume.name, name);
    if (winner && winner.instanceId !== replay.instanceId) {
      await this.array.expireReplay(replay.instanceId, `replay ${replay.instanceId} of volume ${volume.name}`);
      throw new SnapshotExists(`volume ${volume.name} already has a snapshot ${name}`);
    }
    this.log.info('snapshot created', { volume: volume.name, snapshot: name, replay: replay.instanceId });
    const record = this.recordOf(replay, volume);
    // Storage Center does not say how much a replay holds: its pages are shared until either side changes.
    return { ...record, bytes: record.sizeBytes, writtenBytes: 0 };
  }

  /** The snapshots of `volume`, or of every ballast volume; oldest first. */
  async listSnapshots(volume?: string): Promise<SnapshotRecord[]> {
    const records = volume === undefined ? await this.volumes.list() : [(await this.volumes.read(volume))?.value].filter((r) => r !== undefined);
    const found: SnapshotRecord[] = [];
    for (const record of records) {
      const ref = await this.volumes.refOf(record.name);
      if (ref) found.push(...(await this.ours(ref, record.name)).map((r) => this.recordOf(r, record)));
    }
    return found;
  }

  async removeSnapshot(volume: string, name: string): Promise<void> {
    assertSnapshotName(name);
    const ref = await this.mustRef(volume);
    const replay = await this.find(ref, volume, name);
    if (!replay) throw new SnapshotNotFound(volume, name);
    await this.array.expireReplay(replay.instanceId, `snapshot ${name} of volume ${volume}`);
    this.log.info('snapshot removed', { volume, snapshot: name, replay: replay.instanceId });
  }

  async createFrom(volume: NewVolume, source: CloneSource): Promise<VolumeRecord & { method: 'array' }> {
    if (source.snapshot !== undefined) assertSnapshotName(source.snapshot);
    const ref = await this.mustRef(source.volume);
    let record: VolumeRecord;
    if (source.snapshot !== undefined) {
      const replay = await this.find(ref, source.volume, source.snapshot);
      if (!replay) throw new SnapshotNotFound(source.volume, source.snapshot);
      record = await this.volumes.createFrom(volume, () => this.view(replay, volume));
    } else {
      record = await this.fromLive(ref, source.volume, volume);
    }
    this.log.info('volume cloned', { volume: volume.name, from: source });
    return { ...record, method: 'array' };
  }

  /** A view of a temporary replay of the volume as it is now; the replay is expired on every path. */
  private async fromLive(ref: ScVolumeRef, source: string, volume: NewVolume): Promise<VolumeRecord> {
    const existing = await this.volumes.read(volume.name);
    if (existing) throw new VolumeAlreadyExists(existing.value); // before the replay: nothing made
    const what = `the temporary replay of volume ${source} for clone ${volume.name}`;
    const replay = await this.array.createReplay(ref.instanceId, this.scName(source), `ballast clone ${volume.name} of ${source}`, TEMPORARY_MINUTES);
    try {
      return await this.volumes.createFrom(volume, () => this.view(replay, volume));
    } finally {
      await this.array.expireReplay(replay.instanceId, what).catch((err: unknown) => {
        this.log.warn(`could not expire ${what}; Storage Center expires it by itself within ${TEMPORARY_MINUTES} minutes`, { replay: replay.instanceId, error: errorMessage(err) });
      });
    }
  }

  /** The view volume of `replay` for the clone, grown to its size; deleted again if growing fails. */
  private async view(replay: ScReplay, volume: NewVolume): Promise<ScVolumeRef> {
    const name = this.scName(volume.name);
    const made = await this.array.createView(replay.instanceId, name, `ballast volume ${volume.name}`);
    const size = bytesOf(replay.size);
    if (size !== undefined && volume.sizeBytes <= size) return made;
    try {
      await this.array.expand(made.instanceId, name, volume.sizeBytes);
    } catch (err) {
      await this.array.deleteVolume(made.instanceId, name).catch((e: unknown) => {
        throw new BackendUnavailable(`${errorMessage(err)}; ballast could not delete view volume ${name} (${errorMessage(e)}): delete Storage Center volume ${made.instanceId} by hand`);
      });
      throw err;
    }
    return made;
  }

  private recordOf(replay: ScReplay, volume: VolumeRecord): SnapshotRecord {
    const name = replay.description!.slice(DESCRIPTION.length);
    return { volume: volume.name, name, createdAt: replay.freezeTime ?? new Date().toISOString(), sizeBytes: bytesOf(replay.size) ?? volume.sizeBytes, fstype: volume.fstype, method: 'array' };
  }

  /** Ballast's live replays of the volume, in the array's order (oldest first). */
  private async ours(ref: ScVolumeRef, volume: string): Promise<ScReplay[]> {
    const replays = await this.array.replays(ref.instanceId, this.scName(volume));
    return replays.filter((r) => r.markedForExpiration !== true && r.description?.startsWith(DESCRIPTION) && SNAPSHOT_NAME.test(r.description.slice(DESCRIPTION.length)));
  }

  private async find(ref: ScVolumeRef, volume: string, name: string): Promise<ScReplay | undefined> {
    return (await this.ours(ref, volume)).find((r) => r.description === replayDescription(name));
  }

  private async mustRef(volume: string): Promise<ScVolumeRef> {
    if (!(await this.volumes.read(volume))) throw new VolumeNotFound(volume);
    const ref = await this.volumes.refOf(volume);
    if (!ref) throw new BackendUnavailable(`volume ${volume} has no array.json: which Storage Center volume it is, is unknown`);
    return ref;
  }
}
