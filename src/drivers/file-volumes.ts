import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { BackendUnavailable, errorMessage, InvalidOption, isErrno, StaleRevision, VolumeDamaged, VolumeInUse, VolumeNotFound } from '../errors.js';
import type { Logger } from '../log.js';
import { formatSize } from '../config/size.js';
import type { HostLease, HostLeaseStore, OwnershipRecord, Versioned } from '../ownership/types.js';
import { FREE_OWNERSHIP } from '../ownership/types.js';
import { LocalFileStore, writeProblem, type FileStore } from './file-store.js';
import { IMAGE, LogicalVolumes, SparseImages, type VolumeImages } from './images.js';
import type { Exec } from '../exec.js';
import { MetadataGuard, type HeldGuard } from './metadata-guard.js';
import { FileHostLeases } from './file-host-leases.js';
import { ChangeMarkers } from './file-change-markers.js';
import type { Export, Initiator, Transport } from '../export.js';
import { VolumeAlreadyExists, type BackendDriver, type ChangeListing, type NewVolume, type VolumeRecord } from './types.js';

// On-disk layout under the root (one directory a volume, so creation is one atomic rename):
//   <root>/<name>/disk.img    sparse image: attached with losetup (loop) or exported as a LUN (iscsi)
//   <root>/<name>/meta.json   { v, revision, volume } - the record, including the ownership lease
//   <root>/<name>/meta.lock   guard file held for the few milliseconds of a compare-and-swap
//   <root>/.hosts/             host leases (file-host-leases.ts)
//   <root>/.rev/<name>@<rev>   empty change marker, renamed to the next revision before every
//                              metadata write: one readdir tells a reader which volumes changed
//                              (local and NFS roots only; a rename over SSH or vSphere costs a round trip)
const META = 'meta.json';
const GUARD = 'meta.lock';

const holderSchema = z.object({ hostId: z.string(), bootId: z.string(), hostname: z.string(), hostGeneration: z.number().int().default(0) });
const ownershipSchema = z.discriminatedUnion('state', [
  z.object({ state: z.literal('free'), generation: z.number().int(), updatedAt: z.string() }),
  z.object({ state: z.literal('held'), holder: holderSchema, generation: z.number().int(), updatedAt: z.string() }),
]);
/** A volume's record in its sidecar; the vmdk records (vsphere/vmdk-records.ts) carry the same. */
export const volumeRecordSchema = z.object({
  name: z.string(),
  profile: z.string(),
  sizeBytes: z.number().int().positive(),
  fstype: z.enum(['ext4', 'xfs']),
  mkfsOpts: z.array(z.string()),
  mountOpts: z.array(z.string()),
  readonly: z.boolean(),
  createdAt: z.string(),
  ownership: ownershipSchema,
  ioLimits: z
    .object({ readIops: z.number().int().positive(), writeIops: z.number().int().positive(), readBps: z.number().int().positive(), writeBps: z.number().int().positive() })
    .partial()
    .optional(),
  encryption: z.discriminatedUnion('key', [z.object({ key: z.literal('profile') }), z.object({ key: z.literal('key_dir'), name: z.string() })]).optional(),
});
const sidecarSchema = z.object({
  v: z.literal(1),
  revision: z.number().int().nonnegative(),
  volume: volumeRecordSchema,
});
type Sidecar = z.infer<typeof sidecarSchema>;

export interface FileVolumesOptions {
  root: string;
  shared: boolean;
  /** Where the root is: this host (default) or an array host over SSH. */
  files?: FileStore;
  /** Where volume data lives; default sparse files beside the metadata. */
  images?: (root: string, files: FileStore) => VolumeImages;
}

/** A pool on an array host (tgt, LIO): shared, its files and logical volumes reached through that host. */
export function arrayPool(pool: string, arrayHost: { exec: Exec; files?: FileStore }, commandTimeoutMs: number, volumeGroup?: string): FileVolumesOptions {
  return {
    root: pool,
    shared: true,
    files: arrayHost.files,
    ...(volumeGroup ? { images: () => new LogicalVolumes(arrayHost.exec, volumeGroup, commandTimeoutMs) } : {}),
  };
}

/**
 * Volumes as sparse image files, one directory each, with their metadata beside them: the
 * storage and metadata half of the loop and iscsi drivers. Subclasses say how a host reaches
 * the image (export/unexport).
 */
export abstract class FileVolumes implements BackendDriver, HostLeaseStore {
  abstract readonly kind: string;
  abstract readonly transport: Transport;
  readonly scope: 'local' | 'global';
  readonly keepsIoLimits = true;
  readonly keepsEncryption = true;
  protected readonly root: string;
  protected readonly files: FileStore;
  protected readonly images: VolumeImages;
  private readonly guard: MetadataGuard;
  private readonly hostLeases: FileHostLeases;
  /** Change markers are kept where a rename is a local syscall (a local or NFS root). */
  private readonly markers: ChangeMarkers | undefined;

  constructor(options: FileVolumesOptions, protected readonly log: Logger) {
    this.root = options.root;
    this.files = options.files ?? new LocalFileStore();
    this.markers = this.files instanceof LocalFileStore ? new ChangeMarkers(this.root, this.files) : undefined;
    this.images = options.images ? options.images(this.root, this.files) : new SparseImages(this.root, this.files);
    this.scope = options.shared ? 'global' : 'local';
    this.guard = new MetadataGuard(this.files, log);
    this.hostLeases = new FileHostLeases(this.root, this.files, this.files.describe(this.root));
  }

  /** The root as messages show it (with the array host when remote). */
  protected get where(): string {
    return this.files.describe(this.root);
  }

  private dir(name: string): string {
    return join(this.root, name);
  }

  imagePath(name: string): string {
    return this.images.path(name);
  }

  async checkHealth(): Promise<void> {
    try {
      await this.files.ensureWritableDir(this.root);
    } catch (err) {
      throw new BackendUnavailable(`${this.kind} backend root ${this.where} is not usable: ${errorMessage(err)}`);
    }
  }

  /**
   * Creates the volume, exactly once across hosts. `fill` writes a clone's data before the record
   * is in place, so no host sees the volume half-copied: for sparse image files it must create the
   * file at the path given (a smaller one is grown to the volume's size); for logical volumes it
   * writes the new, blank logical volume at the device path given.
   */
  async create(volume: NewVolume, fill?: (image: string) => Promise<void>): Promise<VolumeRecord> {
    await this.checkHealth();
    const record: VolumeRecord = { ...volume, createdAt: new Date().toISOString(), ownership: { ...FREE_OWNERSHIP } };
    const staging = join(this.root, `.creating-${volume.name}-${randomBytes(4).toString('hex')}`);
    let imageMade = false;
    try {
      await this.files.mkdir(staging);
      if (fill && this.images instanceof SparseImages) {
        await this.fillImage(join(staging, IMAGE), volume.sizeBytes, fill);
        imageMade = true;
      } else {
        await this.images.create(volume.name, staging, volume.sizeBytes);
        imageMade = true;
        if (fill) await fill(this.images.path(volume.name));
      }
      await this.files.writeNew(join(staging, META), serialize({ v: 1, revision: 1, volume: record }));
      await this.files.fsyncDir(staging);
      // rename() onto an existing, non-empty directory fails: exactly one creator wins, on any host.
      await this.files.rename(staging, this.dir(volume.name));
      await this.files.fsyncDir(this.root);
    } catch (err) {
      await this.files.removeTree(staging).catch(() => undefined);
      if (imageMade) await this.images.abandon(volume.name).catch(() => undefined);
      if (isErrno(err, 'ENOTEMPTY', 'EEXIST')) {
        const existing = await this.read(volume.name);
        if (existing) throw new VolumeAlreadyExists(existing.value);
      }
      throw new BackendUnavailable(`cannot create volume ${volume.name} under ${this.where} (nothing was created): ${writeProblem(err, this.where)}`);
    }
    await this.markChange(volume.name, undefined, 1).catch((err) => {
      // Readers re-read a volume without a marker every round and put one back.
      this.log.warn('cannot write the change marker of a new volume', { volume: volume.name, error: errorMessage(err) });
    });
    this.log.info('volume created', { volume: volume.name, sizeBytes: volume.sizeBytes, root: this.root });
    return record;
  }

  private async fillImage(image: string, sizeBytes: number, fill: (image: string) => Promise<void>): Promise<void> {
    await fill(image);
    const size = (await this.files.stat(image))?.size ?? 0;
    if (size < sizeBytes) await this.files.truncate(image, sizeBytes);
  }

  async destroy(name: string): Promise<void> {
    const dir = this.dir(name);
    const trash = join(this.root, `.deleting-${name}-${randomBytes(4).toString('hex')}`);
    if (!(await this.readSidecar(name))) return;
    const removed = await this.withGuard(name, async (guard) => {
      const current = await this.readSidecar(name);
      if (!current) return false;
      const ownership = current.volume.ownership;
      if (ownership.state === 'held') {
        throw new VolumeInUse(`volume ${name} is in use on host ${ownership.holder.hostId} (${ownership.holder.hostname}); unmount it there first`);
      }
      await this.withdraw(name);
      guard.assertFresh();
      await this.files.rename(dir, trash);
      await this.markers?.remove(name, current.revision);
      return true;
    }).catch((err: unknown) => {
      if (err instanceof VolumeNotFound) return false; // removed meanwhile
      throw err;
    });
    if (removed) {
      await this.files.removeTree(trash);
      await this.images.remove(name);
      this.log.info('volume destroyed', { volume: name, root: this.where });
    }
  }

  async read(name: string): Promise<Versioned<VolumeRecord> | undefined> {
    const sidecar = await this.readSidecar(name);
    return sidecar && { value: sidecar.volume, revision: sidecar.revision };
  }

  async list(): Promise<VolumeRecord[]> {
    let entries: string[];
    try {
      entries = (await this.files.readdir(this.root)) ?? [];
    } catch (err) {
      throw new BackendUnavailable(`cannot list ${this.where}: ${errorMessage(err)}`);
    }
    const records = await Promise.all(
      entries
        .filter((entry) => !entry.startsWith('.'))
        .map((entry) =>
          this.readSidecar(entry).catch((err: unknown) => {
            // A listing has no place for an error: the volume's Get reports it (VolumeIndex lists it when it indexes this root).
            this.log.warn('volume left out of the listing: its metadata cannot be read', { volume: entry, error: errorMessage(err) });
            return undefined;
          }),
        ),
    );
    return records.filter((s): s is Sidecar => s !== undefined).map((s) => s.volume);
  }

  async readOwnership(name: string): Promise<Versioned<OwnershipRecord> | undefined> {
    const sidecar = await this.readSidecar(name);
    return sidecar && { value: sidecar.volume.ownership, revision: sidecar.revision };
  }

  async writeOwnership(name: string, expectedRevision: number, next: OwnershipRecord): Promise<number> {
    return this.compareAndSwap(name, expectedRevision, (volume) => ({ ...volume, ownership: next }));
  }

  async grow(name: string, sizeBytes: number): Promise<VolumeRecord> {
    const current = await this.read(name);
    if (!current) throw new VolumeNotFound(name);
    if (sizeBytes < current.value.sizeBytes) {
      throw new InvalidOption(`volume ${name} is ${formatSize(current.value.sizeBytes)}; volumes can grow but not shrink`);
    }
    const grownRevision = await this.compareAndSwap(name, current.revision, (volume) => ({ ...volume, sizeBytes }));
    try {
      await this.images.grow(name, sizeBytes);
    } catch (err) {
      // The record must not claim what the storage refused (LVM extends a snapshot origin only while inactive).
      await this.compareAndSwap(name, grownRevision, (volume) => ({ ...volume, sizeBytes: current.value.sizeBytes })).catch((e: unknown) =>
        this.log.warn('cannot put back the size of a volume whose grow failed', { volume: name, error: errorMessage(e) }),
      );
      throw err;
    }
    await this.resized(name, sizeBytes);
    this.log.info('volume grown', { volume: name, sizeBytes });
    return { ...current.value, sizeBytes };
  }

  abstract export(name: string, initiator: Initiator): Promise<Export>;
  abstract unexport(name: string, initiator: Initiator): Promise<void>;

  /** Stops offering the volume to any host before its files go (under the metadata guard). */
  protected async withdraw(_name: string): Promise<void> {}

  /** Tells whatever serves the image that it grew. */
  protected async resized(_name: string, _sizeBytes: number): Promise<void> {}

  /** The image path, grown to the recorded size: a grow recorded while it was in use elsewhere catches up. */
  protected async imageAtRecordedSize(name: string): Promise<string> {
    const current = await this.read(name);
    if (!current) throw new VolumeNotFound(name);
    await this.images.ensureSize(name, current.value.sizeBytes);
    return this.imagePath(name);
  }

  readHostLease(hostId: string): Promise<HostLease | undefined> {
    return this.hostLeases.readHostLease(hostId);
  }

  listHostLeases(): Promise<HostLease[]> {
    return this.hostLeases.listHostLeases();
  }

  writeHostLease(lease: HostLease): Promise<void> {
    return this.hostLeases.writeHostLease(lease);
  }

  private async readSidecar(name: string): Promise<Sidecar | undefined> {
    const file = join(this.dir(name), META);
    let text: string | undefined;
    try {
      text = await this.files.readFile(file);
    } catch (err) {
      throw new BackendUnavailable(`cannot read the metadata of volume ${name} under ${this.where}: ${errorMessage(err)}`);
    }
    if (text === undefined) return undefined;
    const damaged = (problem: string) =>
      new VolumeDamaged(
        name,
        this.files.describe(file),
        problem,
        `restore that file from a backup or rewrite it (the volume's data is untouched), or move ${this.files.describe(this.dir(name))} out of the root to drop the volume from ballast`,
      );
    if (!text.trim()) throw damaged(`is empty (${text.length} bytes: truncated)`);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw damaged(`is not valid JSON (${errorMessage(err)})`);
    }
    const parsed = sidecarSchema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw damaged(`is not a volume record (${issue?.path.join('.') || 'top level'}: ${issue?.message})`);
    }
    return parsed.data;
  }

  /** Guard file + re-read + compare revision + atomic replace: safe across hosts sharing the root. */
  private async compareAndSwap(name: string, expectedRevision: number, change: (v: VolumeRecord) => VolumeRecord): Promise<number> {
    return this.withGuard(name, async (guard) => {
      const current = await this.readSidecar(name);
      if (!current) throw new VolumeNotFound(name);
      if (current.revision !== expectedRevision) {
        throw new StaleRevision(`metadata of volume ${name} changed (revision ${current.revision}, expected ${expectedRevision})`);
      }
      const revision = current.revision + 1;
      guard.assertFresh();
      try {
        await this.markChange(name, current.revision, revision);
        await this.files.writeAtomic(join(this.dir(name), META), serialize({ v: 1, revision, volume: change(current.volume) }));
      } catch (err) {
        // writeAtomic leaves the old file whole; a marker moved ahead only makes readers re-read it.
        throw new BackendUnavailable(`cannot write the metadata of volume ${name} (it is unchanged): ${writeProblem(err, this.where)}`);
      }
      return revision;
    });
  }

  /**
   * Names and change markers in two readdirs, for an index that re-reads only what changed; undefined
   * where no markers are kept.
   */
  async changes(): Promise<ChangeListing | undefined> {
    return this.markers?.list();
  }

  async repairMarkers(name: string, revision: number, seen: number[]): Promise<void> {
    await this.markers?.repair(name, revision, seen);
  }

  /** Moves the volume's change marker from `from` to `to` (or creates `to`), where markers are kept. */
  private async markChange(name: string, from: number | undefined, to: number): Promise<void> {
    await this.markers?.move(name, from, to);
  }

  private withGuard<T>(name: string, body: (guard: HeldGuard) => Promise<T>): Promise<T> {
    return this.guard.hold(join(this.dir(name), GUARD), name, body);
  }
}

function serialize(sidecar: Sidecar): string {
  return `${JSON.stringify(sidecar, null, 2)}\n`;
}
