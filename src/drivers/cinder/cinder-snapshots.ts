import type { CinderBackendConfig } from '../../config/schema.js';
import { BackendUnavailable, errorMessage, InvalidOption, InvalidRequest, SnapshotExists, SnapshotNotFound, VolumeInUse, VolumeNotFound } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { CloneSource, NewVolume, SnapshotCapable, SnapshotRecord, VolumeRecord } from '../types.js';
import type { CopyResult } from '../image-copy.js';
import { CinderRefusal, type CinderClient } from './client.js';
import { KEY, ownershipOf, type Metadata } from './metadata.js';

/** What the snapshots need of the driver: its volumes, found and created as it finds and creates them. */
export interface CinderVolumes {
  /** The oldest live Cinder volume of that ballast name. */
  volumeOf(name: string): Promise<{ id: string; status: string; metadata: Metadata } | undefined>;
  /** Creates a ballast volume (its record in its metadata) whose data Cinder copies from `origin`. */
  createRecorded(volume: NewVolume, origin: CloneOrigin): Promise<VolumeRecord>;
}

/** Where Cinder takes a new volume's data from: POST /volumes with one of these. */
export type CloneOrigin = { snapshot_id: string } | { source_volid: string };

/** What ballast reads of a Cinder snapshot. */
interface CinderSnapshot {
  id: string;
  name: string | null;
  status: string;
  size: number;
  volume_id: string;
  created_at: string;
  metadata: Metadata;
}

// A ballast snapshot is a Cinder snapshot of the volume's Cinder volume, with its name and its
// record in the snapshot's own metadata, so that every host sees it (nothing is kept locally).
const SNAP = {
  volume: 'ballast.volume',
  snapshot: 'ballast.snapshot',
  fstype: 'ballast.fstype',
  created: 'ballast.created',
} as const;

const GIB = 2 ** 30;
const POLL_FIRST_MS = 100;
const POLL_MAX_MS = 1_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** The volume-name rules (src/volumes/names.ts): checked here too, before any call to Cinder. */
const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Cinder's name for a ballast snapshot; the snapshot's volume is its volume_id. */
export const cinderSnapshotName = (name: string) => `ballast-${name}`;

function assertSnapshotName(name: string): void {
  if (!SNAPSHOT_NAME.test(name)) throw new InvalidOption(`snapshot name ${JSON.stringify(name).slice(0, 140)}: expected letters, digits and _ . - (at most 128, starting with a letter or digit)`);
}

/**
 * Snapshots and clones through Cinder's own calls: POST /snapshots, POST /volumes with a
 * snapshot_id or a source_volid. How the data is copied is the volume type's backend's business
 * (LVM: a copy-on-write snapshot; the lab's file driver: a sparse copy).
 */
export class CinderSnapshots implements SnapshotCapable {
  constructor(
    private readonly client: CinderClient,
    private readonly backend: CinderBackendConfig,
    private readonly volumes: CinderVolumes,
    private readonly log: Logger,
  ) {}

  async createSnapshot(volume: VolumeRecord, name: string): Promise<SnapshotRecord & CopyResult> {
    assertSnapshotName(name);
    const source = await this.mustFind(volume.name);
    if (await this.find(source.id, volume.name, name)) throw new SnapshotExists(`volume ${volume.name} already has a snapshot ${name}`);
    const force = await this.readyToCopy(source, volume.name);
    const createdAt = new Date().toISOString();
    const body = {
      snapshot: {
        volume_id: source.id,
        name: cinderSnapshotName(name),
        description: `ballast snapshot ${name} of volume ${volume.name}`,
        // Cinder snapshots an attached (in-use) volume only when forced; ballast froze it or holds it.
        force,
        metadata: { [SNAP.volume]: volume.name, [SNAP.snapshot]: name, [SNAP.fstype]: volume.fstype, [SNAP.created]: createdAt },
      },
    };
    const reply = await this.client.call<{ snapshot: CinderSnapshot }>('POST', '/snapshots', `snapshot volume ${volume.name}`, body).catch((err: unknown) => {
      if (err instanceof CinderRefusal) throw new InvalidRequest(`${err.message}; check the project's snapshot quota and the volume's state`);
      throw err;
    });
    const id = reply.data.snapshot.id;
    let made: CinderSnapshot;
    try {
      made = await this.waitFor(id, volume.name, name);
    } catch (err) {
      await this.discard(id, volume.name, name).catch((e: unknown) => {
        throw new BackendUnavailable(`${errorMessage(err)}; ballast could not delete it (${errorMessage(e)}): delete Cinder snapshot ${id} by hand`);
      });
      throw err;
    }
    // Cinder's names are not unique: of two hosts snapshotting with one name at once, the oldest wins.
    const winner = await this.find(source.id, volume.name, name);
    if (winner && winner.id !== id) {
      await this.deleteSnapshot(id, volume.name, name);
      throw new SnapshotExists(`volume ${volume.name} already has a snapshot ${name}`);
    }
    this.log.info('snapshot created', { volume: volume.name, snapshot: name, id, sizeGiB: made.size, forced: force });
    const record = this.recordOf(made, volume.name);
    // Cinder does not say whether its backend shared or copied the data, nor how much it wrote.
    return { ...record, bytes: record.sizeBytes, writtenBytes: 0 };
  }

  /** The snapshots of `volume`, or of every ballast volume; oldest first. */
  async listSnapshots(volume?: string): Promise<SnapshotRecord[]> {
    if (volume !== undefined) {
      const source = await this.volumes.volumeOf(volume);
      return source ? (await this.ofVolume(source.id, volume)).map((s) => this.recordOf(s, volume)) : [];
    }
    const all = await this.allSnapshots('', 'list snapshots');
    return all.filter((s) => this.isOurs(s, s.metadata[SNAP.volume] ?? '')).map((s) => this.recordOf(s, s.metadata[SNAP.volume]!));
  }

  async removeSnapshot(volume: string, name: string): Promise<void> {
    assertSnapshotName(name);
    const source = await this.mustFind(volume);
    const found = await this.find(source.id, volume, name);
    if (!found) throw new SnapshotNotFound(volume, name);
    await this.deleteSnapshot(found.id, volume, name);
    this.log.info('snapshot removed', { volume, snapshot: name, id: found.id });
  }

  /** Every ballast snapshot of the volume, before the volume itself is deleted (Cinder refuses it otherwise). */
  async removeAllOf(volumeId: string, volume: string): Promise<void> {
    for (const s of await this.ofVolume(volumeId, volume)) await this.deleteSnapshot(s.id, volume, s.metadata[SNAP.snapshot]!);
  }

  async createFrom(volume: NewVolume, source: CloneSource): Promise<VolumeRecord & { method: 'array' }> {
    if (source.snapshot !== undefined) assertSnapshotName(source.snapshot);
    const from = await this.mustFind(source.volume);
    let origin: CloneOrigin;
    if (source.snapshot === undefined) {
      await this.readyToCopy(from, source.volume);
      origin = { source_volid: from.id };
    } else {
      const snapshot = await this.find(from.id, source.volume, source.snapshot);
      if (!snapshot) throw new SnapshotNotFound(source.volume, source.snapshot);
      if (snapshot.status !== 'available') throw new InvalidRequest(`snapshot ${source.snapshot} of volume ${source.volume} is ${snapshot.status} in Cinder, not available`);
      origin = { snapshot_id: snapshot.id };
    }
    const record = await this.volumes.createRecorded(volume, origin);
    this.log.info('volume cloned', { volume: volume.name, from: source });
    return { ...record, method: 'array' };
  }

  /**
   * Whether Cinder must be forced to copy the volume now. Cinder copies a volume that is
   * available, or in-use when forced; it refuses one that is only reserved, which is what a
   * volume leased by ballast but not mounted is. The caller holds that lease (or froze the
   * volume): the reservation is the holder's, so it is completed, Cinder calls the volume
   * in-use, and the release that follows deletes the attachment as always.
   */
  private async readyToCopy(volume: { id: string; status: string; metadata: Metadata }, name: string): Promise<boolean> {
    if (volume.status === 'available') return false;
    if (volume.status === 'in-use') return true;
    if (volume.status === 'reserved') {
      const attachment = volume.metadata[KEY.attachment];
      if (!attachment || ownershipOf(name, volume.metadata).state !== 'held') {
        throw new VolumeInUse(`Cinder holds a reservation of volume ${name} that no ballast host has recorded (another host is taking it): try again`);
      }
      await this.client.call('POST', `/attachments/${attachment}/action`, `complete the reservation of volume ${name}`, { 'os-complete': null });
      return true;
    }
    throw new InvalidRequest(`volume ${name} is ${volume.status} in Cinder; Cinder copies a volume that is available or in-use`);
  }

  private recordOf(s: CinderSnapshot, volume: string): SnapshotRecord {
    const fstype = s.metadata[SNAP.fstype] === 'xfs' ? 'xfs' : 'ext4';
    return { volume, name: s.metadata[SNAP.snapshot]!, createdAt: s.metadata[SNAP.created] ?? s.created_at, sizeBytes: s.size * GIB, fstype, method: 'array' };
  }

  private isOurs(s: CinderSnapshot, volume: string): boolean {
    const name = s.metadata?.[SNAP.snapshot];
    return !!name && !!volume && s.metadata[SNAP.volume] === volume && s.name === cinderSnapshotName(name) && !['deleting', 'error_deleting'].includes(s.status);
  }

  /** Ballast's snapshots of the Cinder volume `volumeId`, oldest first. */
  private async ofVolume(volumeId: string, volume: string): Promise<CinderSnapshot[]> {
    const all = await this.allSnapshots(`&volume_id=${volumeId}`, `list the snapshots of volume ${volume}`);
    return all.filter((s) => s.volume_id === volumeId && this.isOurs(s, volume));
  }

  /** The oldest ballast snapshot `name` of the volume (names are not unique in Cinder). */
  private async find(volumeId: string, volume: string, name: string): Promise<CinderSnapshot | undefined> {
    return (await this.ofVolume(volumeId, volume)).find((s) => s.metadata[SNAP.snapshot] === name);
  }

  /** Snapshots of the project matching `filter`, page by page, oldest first. */
  private async allSnapshots(filter: string, what: string): Promise<CinderSnapshot[]> {
    const all: CinderSnapshot[] = [];
    let marker = '';
    for (;;) {
      const reply = await this.client.call<{ snapshots: CinderSnapshot[] }>('GET', `/snapshots/detail?limit=1000&sort=created_at:asc${filter}${marker ? `&marker=${marker}` : ''}`, what);
      // As for volumes: Cinder may cap a page below the limit, so only an empty page ends the list.
      if (reply.data.snapshots.length === 0) return all.sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id));
      all.push(...reply.data.snapshots);
      marker = reply.data.snapshots.at(-1)!.id;
    }
  }

  private async mustFind(name: string): Promise<{ id: string; status: string; metadata: Metadata }> {
    const volume = await this.volumes.volumeOf(name);
    if (!volume) throw new VolumeNotFound(name);
    return volume;
  }

  /** Deletes a snapshot that did not become available; Cinder refuses while it is still creating, so that is waited out once. */
  private async discard(id: string, volume: string, name: string): Promise<void> {
    try {
      await this.deleteSnapshot(id, volume, name);
    } catch (err) {
      if (!(err instanceof InvalidRequest)) throw err;
      await this.poll(id, volume, name, 'settled', (s) => s?.status !== 'creating');
      await this.deleteSnapshot(id, volume, name);
    }
    this.log.warn('deleted a snapshot that did not become available', { volume, snapshot: name, id });
  }

  private async deleteSnapshot(id: string, volume: string, name: string): Promise<void> {
    try {
      await this.client.call('DELETE', `/snapshots/${id}`, `delete snapshot ${name} of volume ${volume}`);
    } catch (err) {
      if (err instanceof CinderRefusal && err.status === 404) return;
      if (err instanceof CinderRefusal) throw new InvalidRequest(`${err.message}; a volume being made from it must be created first`);
      throw err;
    }
    await this.poll(id, volume, name, 'deleted', (s) => s === undefined, 'error_deleting');
  }

  /** Polls until the snapshot is no longer creating; it must then be available. */
  private async waitFor(id: string, volume: string, name: string): Promise<CinderSnapshot> {
    const s = await this.poll(id, volume, name, 'created', (s) => s !== undefined && s.status !== 'creating', 'error');
    if (!s) throw new BackendUnavailable(`snapshot ${name} of volume ${volume} vanished from Cinder while it was created`);
    if (s.status !== 'available') throw new BackendUnavailable(`snapshot ${name} of volume ${volume} is ${s.status} in Cinder, not available`);
    return s;
  }

  /** Reads the snapshot until `done` (undefined: Cinder no longer knows it), within the backend's timeout. */
  private async poll(id: string, volume: string, name: string, what: string, done: (s: CinderSnapshot | undefined) => boolean, failed?: string): Promise<CinderSnapshot | undefined> {
    const deadline = performance.now() + this.backend.timeout_seconds * 1000;
    for (let pause = POLL_FIRST_MS; ; pause = Math.min(pause * 2, POLL_MAX_MS)) {
      const s = await this.getSnapshot(id, volume, name);
      if (failed && s?.status === failed) throw new BackendUnavailable(`Cinder could not get snapshot ${name} of volume ${volume} ${what} (status ${s.status}): see cinder-volume's log`);
      if (done(s)) return s;
      if (performance.now() > deadline) {
        throw new BackendUnavailable(`snapshot ${name} of volume ${volume} was not ${what} within ${this.backend.timeout_seconds} s (Cinder status ${s?.status ?? 'gone'})`);
      }
      await sleep(pause);
    }
  }

  private async getSnapshot(id: string, volume: string, name: string): Promise<CinderSnapshot | undefined> {
    try {
      return (await this.client.call<{ snapshot: CinderSnapshot }>('GET', `/snapshots/${id}`, `read snapshot ${name} of volume ${volume}`)).data.snapshot;
    } catch (err) {
      if (err instanceof CinderRefusal && err.status === 404) return undefined;
      throw err;
    }
  }
}
