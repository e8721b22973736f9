import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { BackendUnavailable, CommandFailed, InvalidOption, SnapshotExists, SnapshotNotFound, VolumeNotFound, errorMessage } from '../../errors.js';
import type { Exec } from '../../exec.js';
import type { Logger } from '../../log.js';
import type { Versioned } from '../../ownership/types.js';
import { copyTimeoutMs, type CopyProgress, type CopyResult } from '../image-copy.js';
import { logicalVolumeName } from '../images.js';
import type { CloneSource, NewVolume, SnapshotCapable, SnapshotRecord, VolumeRecord } from '../types.js';

// A snapshot is an LVM snapshot (lvcreate -s) of the volume's logical volume, never exported:
//   <vg>/ballast.snap.<24 hex of sha256(volume NUL name)>   tagged with its record:
//   ballast.snapshot ballast.volume=V ballast.name=S ballast.created=ISO ballast.size=BYTES ballast.fstype=F
// The name is fixed by volume and snapshot (a second create of it fails in lvcreate, on any host),
// short whatever the names (LVM allows 127 characters), and hex only, so no name of the user's
// reaches LVM's list of reserved words ("_mlog", "snapshot"...). The tags make `lvs` the only record.
// A live clone copies from a temporary snapshot ballast.tmp.<random>, removed on every path.
const SNAPSHOT_TAG = 'ballast.snapshot';
const TEMPORARY_TAG = 'ballast.temporary';
/** What lvcreate and lvremove say of a logical volume that is not there. */
const NOT_FOUND = /Failed to find logical volume/;

/** What the manager checks already: the driver's own guard, as names go into tags and arguments. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

function assertName(what: string, name: string): void {
  if (!NAME.test(name)) {
    throw new InvalidOption(`${what} name ${JSON.stringify(name).slice(0, 140)}: expected letters, digits and _ . - (at most 128, starting with a letter or digit)`);
  }
}

export function snapshotLvName(volume: string, name: string): string {
  return `ballast.snap.${createHash('sha256').update(`${volume}\0${name}`).digest('hex').slice(0, 24)}`;
}

/*
 * `lvs --reportformat json -o lv_name,lv_tags,origin VG`:
 *   {"report": [{"lv": [{"lv_name":"ballast-v", "lv_tags":"", "origin":""},
 *                       {"lv_name":"ballast.snap.3f…", "lv_tags":"ballast.created=…,ballast.fstype=ext4,…", "origin":"ballast-v"}]}]}
 */
const lvsSchema = z.object({ report: z.array(z.object({ lv: z.array(z.object({ lv_name: z.string(), lv_tags: z.string(), origin: z.string() })) })) });

/** What snapshots and clones need of a driver whose volumes are logical volumes (FileVolumes with LogicalVolumes). */
export interface LvmPool {
  read(name: string): Promise<Versioned<VolumeRecord> | undefined>;
  /** Creates the volume on a new, blank logical volume, which `fill` writes before the volume's record is in place. */
  create(volume: NewVolume, fill: (device: string) => Promise<void>): Promise<VolumeRecord>;
}

export interface LvmSnapshotsOptions {
  exec: Exec;
  volumeGroup: string;
  /** Bound on lvcreate, lvs, lvremove. */
  commandTimeoutMs: number;
  /** Base bound on a clone's copy; it grows with the size. */
  copyTimeoutMs: number;
}

/**
 * Snapshots of logical volumes as LVM snapshots on the array host, and clones as new volumes
 * whose logical volume is filled by dd from a snapshot (a temporary one for a live clone). Every
 * command runs through the array host's Exec (here or over SSH), bounded.
 */
export class LvmSnapshots implements SnapshotCapable {
  private readonly exec: Exec;
  private readonly vg: string;
  private readonly timeoutMs: number;

  constructor(
    private readonly pool: LvmPool,
    private readonly options: LvmSnapshotsOptions,
    private readonly log: Logger,
  ) {
    this.exec = options.exec;
    this.vg = options.volumeGroup;
    this.timeoutMs = options.commandTimeoutMs;
  }

  async createSnapshot(volume: VolumeRecord, name: string): Promise<SnapshotRecord & CopyResult> {
    assertName('volume', volume.name);
    assertName('snapshot', name);
    const record: SnapshotRecord = { volume: volume.name, name, createdAt: new Date().toISOString(), sizeBytes: volume.sizeBytes, fstype: volume.fstype, method: 'array' };
    const lv = snapshotLvName(volume.name, name);
    const tags = [SNAPSHOT_TAG, `ballast.volume=${volume.name}`, `ballast.name=${name}`, `ballast.created=${record.createdAt}`, `ballast.size=${record.sizeBytes}`, `ballast.fstype=${record.fstype}`];
    try {
      await this.snapshotOf(volume.name, lv, tags);
    } catch (err) {
      if (err instanceof CommandFailed && /already exists/.test(err.stderr)) throw new SnapshotExists(`volume ${volume.name} already has a snapshot ${name}`);
      if (err instanceof CommandFailed && NOT_FOUND.test(err.stderr)) throw new VolumeNotFound(volume.name);
      // A timed-out lvcreate may have made it after all.
      await this.removeLv(lv).catch(() => undefined);
      throw new BackendUnavailable(`cannot snapshot volume ${volume.name} in LVM volume group ${this.vg} on the array host: ${errorMessage(err)}`);
    }
    this.log.info('snapshot created', { volume: volume.name, snapshot: name, lv: `${this.vg}/${lv}` });
    return { ...record, method: 'array', bytes: record.sizeBytes, writtenBytes: 0 };
  }

  /** The snapshots of `volume`, or of every volume, oldest first: read back from the tags of the logical volumes. */
  async listSnapshots(volume?: string): Promise<SnapshotRecord[]> {
    if (volume !== undefined) assertName('volume', volume);
    let stdout: string;
    try {
      ({ stdout } = await this.exec.run(['lvs', '--reportformat', 'json', '-o', 'lv_name,lv_tags,origin', this.vg], { timeoutMs: this.timeoutMs }));
    } catch (err) {
      throw new BackendUnavailable(`cannot list the snapshots in LVM volume group ${this.vg} on the array host: ${errorMessage(err)}`);
    }
    const parsed = lvsSchema.safeParse(parseJson(stdout));
    if (!parsed.success) throw new BackendUnavailable(`unexpected output of lvs ${this.vg}: ${stdout.slice(0, 200)}`);
    const found = parsed.data.report.flatMap((r) => r.lv).flatMap((lv) => {
      const record = recordOf(lv.lv_tags.split(','));
      // Only what the tags and the LV's own name and origin agree on: a tag copied by hand is not a snapshot.
      if (!record || lv.lv_name !== snapshotLvName(record.volume, record.name) || lv.origin !== logicalVolumeName(record.volume)) return [];
      return volume === undefined || record.volume === volume ? [record] : [];
    });
    return found.sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.name < b.name ? -1 : 1));
  }

  async removeSnapshot(volume: string, name: string): Promise<void> {
    assertName('volume', volume);
    assertName('snapshot', name);
    const removed = await this.removeLv(snapshotLvName(volume, name)).catch((err: unknown) => {
      throw new BackendUnavailable(`cannot remove snapshot ${name} of volume ${volume} from LVM volume group ${this.vg} on the array host: ${errorMessage(err)}`);
    });
    if (!removed) throw new SnapshotNotFound(volume, name);
    this.log.info('snapshot removed', { volume, snapshot: name });
  }

  /**
   * A new volume (a blank logical volume of its size, exported like any other), filled with dd
   * from the snapshot, or from a temporary snapshot of the volume as it is now. The copy runs
   * before the volume's record is in place (FileVolumes.create's fill), so no host can see or
   * mount it half-copied, and a failure removes the logical volume; the temporary snapshot goes
   * on every path.
   */
  async createFrom(volume: NewVolume, source: CloneSource, onProgress?: (p: CopyProgress) => void): Promise<VolumeRecord & { method: 'copy' }> {
    assertName('volume', volume.name);
    assertName('volume', source.volume);
    if (source.snapshot !== undefined) assertName('snapshot', source.snapshot);
    // Checked before anything is made.
    const origin = await this.pool.read(source.volume);
    if (!origin) throw new VolumeNotFound(source.volume);
    let sizeBytes = origin.value.sizeBytes;
    if (source.snapshot !== undefined) {
      const snapshot = (await this.listSnapshots(source.volume)).find((s) => s.name === source.snapshot);
      if (!snapshot) throw new SnapshotNotFound(source.volume, source.snapshot);
      sizeBytes = snapshot.sizeBytes;
    }
    const temporary = source.snapshot === undefined ? `ballast.tmp.${randomBytes(8).toString('hex')}` : undefined;
    try {
      if (temporary) {
        await this.snapshotOf(source.volume, temporary, [TEMPORARY_TAG, `ballast.clone=${volume.name}`]).catch((err: unknown) => {
          throw new BackendUnavailable(`cannot take a temporary snapshot of volume ${source.volume} in LVM volume group ${this.vg} for the clone: ${errorMessage(err)}`);
        });
      }
      const from = `/dev/${this.vg}/${temporary ?? snapshotLvName(source.volume, source.snapshot!)}`;
      const record = await this.pool.create(volume, (device) =>
        this.copy(from, device, sizeBytes).catch((err: unknown) => {
          throw new Error(`cannot copy ${describe(source)} into it on the array host: ${errorMessage(err)}`);
        }),
      );
      onProgress?.({ doneBytes: sizeBytes, totalBytes: sizeBytes });
      this.log.info('volume cloned', { volume: volume.name, from: source, method: 'copy' });
      return { ...record, method: 'copy' };
    } finally {
      // Also after a timed-out lvcreate, which may have made it.
      if (temporary) {
        await this.removeLv(temporary).catch((err: unknown) => {
          this.log.warn('cannot remove the temporary snapshot of a clone: remove it by hand (lvremove)', { lv: `${this.vg}/${temporary}`, error: errorMessage(err) });
        });
      }
    }
  }

  /**
   * `-l 100%ORIGIN`: LVM sizes the copy-on-write area to the most it can ever hold, every block
   * of the origin and its exception table (36 MiB for 32 MiB in the VM lab), so the snapshot
   * can never overflow and become invalid; it takes that space in the volume group.
   */
  private async snapshotOf(volume: string, lv: string, tags: string[]): Promise<void> {
    await this.exec.run(['lvcreate', '--yes', '-s', '-l', '100%ORIGIN', '-n', lv, ...tags.flatMap((t) => ['--addtag', t]), `${this.vg}/${logicalVolumeName(volume)}`], {
      timeoutMs: this.timeoutMs,
    });
  }

  /**
   * Every byte, not `conv=sparse`: a new logical volume holds whatever its extents held before
   * (lvcreate zeroes only its first 4 KiB), so a skipped block of zeros would read back as old
   * data. Direct IO keeps the copy out of the array host's page cache; nocreat, so a device
   * that is not there is never made a file in /dev.
   */
  private async copy(from: string, to: string, sizeBytes: number): Promise<void> {
    await this.exec.run(['dd', `if=${from}`, `of=${to}`, 'bs=4M', 'iflag=direct', 'oflag=direct', 'conv=fsync,nocreat', 'status=none'], {
      timeoutMs: copyTimeoutMs(this.options.copyTimeoutMs, sizeBytes),
    });
  }

  /** false when there was no such logical volume. */
  private async removeLv(lv: string): Promise<boolean> {
    try {
      await this.exec.run(['lvremove', '--yes', `${this.vg}/${lv}`], { timeoutMs: this.timeoutMs });
      return true;
    } catch (err) {
      if (err instanceof CommandFailed && NOT_FOUND.test(err.stderr)) return false;
      throw err;
    }
  }
}

/** The record in a snapshot's tags; undefined for a logical volume that is not a snapshot of ballast's. */
function recordOf(tags: string[]): SnapshotRecord | undefined {
  if (!tags.includes(SNAPSHOT_TAG)) return undefined;
  const value = (key: string) => tags.find((t) => t.startsWith(`ballast.${key}=`))?.slice(`ballast.${key}=`.length);
  const parsed = z
    .object({ volume: z.string().regex(NAME), name: z.string().regex(NAME), createdAt: z.string(), sizeBytes: z.coerce.number().int().positive(), fstype: z.enum(['ext4', 'xfs']) })
    .safeParse({ volume: value('volume'), name: value('name'), createdAt: value('created'), sizeBytes: value('size'), fstype: value('fstype') });
  return parsed.success ? { ...parsed.data, method: 'array' } : undefined;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function describe(source: CloneSource): string {
  return source.snapshot === undefined ? `volume ${source.volume}` : `snapshot ${source.snapshot} of volume ${source.volume}`;
}
