import { join } from 'node:path';
import { BackendUnavailable, LeaseHeld, VolumeNotFound } from '../errors.js';
import type { Export, Initiator, Transport } from '../export.js';
import type { Logger } from '../log.js';
import type { FileStore } from './file-store.js';
import { FileVolumes } from './file-volumes.js';
import type { VolumeImages } from './images.js';
import { checkMetadataRoot } from './metadata-root.js';
import { VolumeAlreadyExists, type NewVolume, type SnapshotCapable, type VolumeRecord } from './types.js';

/**
 * What an array that keeps no compare-and-swap metadata on its volumes (powerflex, dellsc, scbe)
 * does for ballast, through its REST API. `Ref` names the array's volume (its id, its WWN): it is
 * kept beside the record, so the array's names never have to be unique or found again.
 */
export interface ArrayApi<Ref> {
  /** "PowerFlex", "Storage Center 64702": for messages. */
  readonly describe: string;
  /** Creates the array's volume; undefined when the array refuses the name as taken. */
  create(name: string, sizeBytes: number, profile: string): Promise<Ref | undefined>;
  remove(ref: Ref, name: string): Promise<void>;
  grow(ref: Ref, name: string, sizeBytes: number): Promise<void>;
  /** The array's id of the host (its SDC/NVMe host, server object), made when the array allows it. */
  hostFor(initiator: Initiator): Promise<string>;
  /** The array host ids the volume is mapped to. */
  mappedHosts(ref: Ref, name: string): Promise<string[]>;
  map(ref: Ref, name: string, host: string): Promise<void>;
  unmap(ref: Ref, name: string, host: string): Promise<void>;
  /** How `host` reaches the mapped volume. */
  exportOf(ref: Ref, name: string, host: string): Promise<Export>;
  /** Throws BackendUnavailable (or InvalidRequest for a configuration the array refuses) when unusable. */
  checkHealth(): Promise<void>;
}

const REF = 'array.json';

/** The volume's data: the array's volume, its Ref in array.json beside the record. */
class ArrayVolumes<Ref> implements VolumeImages {
  /** Volumes this process made whose records are not in place yet: abandon() deletes them by Ref. */
  private readonly pending = new Map<string, Ref>();
  /** Volume name -> ballast profile while create() runs (VolumeImages.create knows the name only). */
  readonly creating = new Map<string, string>();
  /** Volume name -> what makes its array volume instead of an empty create (a clone), while create() runs. */
  readonly origins = new Map<string, () => Promise<Ref>>();

  constructor(
    private readonly api: ArrayApi<Ref>,
    private readonly root: string,
    private readonly files: FileStore,
  ) {}

  path(name: string): string {
    return `${this.api.describe}:${name}`;
  }

  async ref(name: string): Promise<Ref | undefined> {
    const text = await this.files.readFile(join(this.root, name, REF));
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text) as Ref; // written by this class only, from the array's reply
    } catch {
      throw new BackendUnavailable(`${REF} of volume ${name} under ${this.files.describe(this.root)} is damaged: it names the volume's ${this.api.describe} volume; restore it from a backup of metadata_root`);
    }
  }

  async mustRef(name: string): Promise<Ref> {
    const ref = await this.ref(name);
    if (!ref) throw new BackendUnavailable(`volume ${name} has no ${REF} under ${this.files.describe(this.root)}: which ${this.api.describe} volume it is, is unknown`);
    return ref;
  }

  async create(name: string, staging: string, sizeBytes: number): Promise<void> {
    const origin = this.origins.get(name);
    const ref = origin ? await origin() : await this.api.create(name, sizeBytes, this.creating.get(name) ?? 'default');
    if (ref === undefined) throw Object.assign(new Error(`${this.api.describe} already has a volume for ${name}`), { code: 'EEXIST' });
    this.pending.set(name, ref);
    await this.files.writeNew(join(staging, REF), `${JSON.stringify(ref)}\n`);
  }

  async abandon(name: string): Promise<void> {
    const ref = this.pending.get(name);
    this.pending.delete(name);
    if (ref !== undefined) await this.api.remove(ref, name);
  }

  /** The array's volume went in the driver's withdraw(), before its record. */
  async remove(name: string): Promise<void> {
    this.pending.delete(name);
  }

  /** The driver grows the array's volume before it records the size. */
  async grow(): Promise<void> {}

  async ensureSize(): Promise<void> {}
}

/**
 * Volumes on an array that keeps no compare-and-swap metadata on them. The records and the
 * ownership lease live in a directory every host shares (metadata_root, the loop backend's
 * compare-and-swap), and the array is made to follow them: Mount maps the volume to the holder
 * alone, unmapping any other host first (a former holder: the fence at the array), Unmount
 * unmaps it, and Remove unmaps it everywhere and deletes it before its record goes.
 */
export class MappedArrayDriver<Ref> extends FileVolumes {
  private readonly volumes: ArrayVolumes<Ref>;
  private readonly hosts = new Map<string, string>();
  readonly snapshots?: SnapshotCapable;

  constructor(
    readonly kind: string,
    readonly transport: Transport,
    private readonly api: ArrayApi<Ref>,
    root: string,
    /** The configuration key of the root, for messages ("backends.powerflex.metadata_root"). */
    private readonly rootKey: string,
    log: Logger,
    /** The array's own snapshots and clones, where ballast uses them. */
    snapshots?: (driver: MappedArrayDriver<Ref>) => SnapshotCapable,
  ) {
    let volumes: ArrayVolumes<Ref> | undefined;
    super({ root, shared: true, images: (r, files) => (volumes = new ArrayVolumes(api, r, files)) }, log);
    this.volumes = volumes!;
    if (snapshots) this.snapshots = snapshots(this);
  }

  /** The array's volume of `name` (from array.json); undefined when the volume has none. */
  refOf(name: string): Promise<Ref | undefined> {
    return this.volumes.ref(name);
  }

  /**
   * Creates a volume whose array volume `origin` makes (a clone: a view of a snapshot). Checked
   * first, so an existing name makes nothing; a failure after `origin` deletes its volume again.
   */
  async createFrom(volume: NewVolume, origin: () => Promise<Ref>): Promise<VolumeRecord> {
    const existing = await this.read(volume.name);
    if (existing) throw new VolumeAlreadyExists(existing.value);
    this.volumes.origins.set(volume.name, origin);
    try {
      return await this.create(volume);
    } finally {
      this.volumes.origins.delete(volume.name);
    }
  }

  /** Refuses a metadata root whose NFS mount would break the records' compare-and-swap. */
  async start(): Promise<void> {
    await this.checkHealth();
    await checkMetadataRoot(this.root, this.rootKey);
  }

  override async checkHealth(): Promise<void> {
    await super.checkHealth();
    await this.api.checkHealth();
  }

  override async create(volume: NewVolume): Promise<VolumeRecord> {
    this.volumes.creating.set(volume.name, volume.profile);
    try {
      return await super.create(volume);
    } finally {
      this.volumes.creating.delete(volume.name);
    }
  }

  /** Grows the array's volume first, so a refusal (a full pool, an API without extend) records nothing. */
  override async grow(name: string, sizeBytes: number): Promise<VolumeRecord> {
    const current = await this.read(name);
    if (!current) throw new VolumeNotFound(name);
    if (sizeBytes > current.value.sizeBytes) await this.api.grow(await this.volumes.mustRef(name), name, sizeBytes);
    return super.grow(name, sizeBytes);
  }

  async export(name: string, initiator: Initiator): Promise<Export> {
    const record = await this.read(name);
    if (!record) throw new VolumeNotFound(name);
    const owner = record.value.ownership;
    if (owner.state !== 'held' || owner.holder.hostId !== initiator.hostId) throw new LeaseHeld(`volume ${name} is not leased to host ${initiator.hostId}; it is not mapped here`);
    const ref = await this.volumes.mustRef(name);
    const host = await this.hostId(initiator);
    const mapped = await this.api.mappedHosts(ref, name);
    const others = mapped.filter((h) => h !== host);
    // This host holds the record, so any other mapped host is a former holder: unmap it (the fence).
    if (others.length) this.log.warn(`volume still mapped to a former holder on ${this.api.describe}: unmapping it there`, { volume: name, hosts: others });
    for (const other of others) await this.api.unmap(ref, name, other);
    if (!mapped.includes(host)) await this.api.map(ref, name, host);
    return this.api.exportOf(ref, name, host);
  }

  async unexport(name: string, initiator: Initiator): Promise<void> {
    const ref = await this.volumes.ref(name);
    if (ref === undefined) return;
    const host = await this.hostId(initiator);
    if ((await this.api.mappedHosts(ref, name)).includes(host)) await this.api.unmap(ref, name, host);
  }

  protected override async withdraw(name: string): Promise<void> {
    const ref = await this.volumes.ref(name);
    if (ref === undefined) return;
    for (const host of await this.api.mappedHosts(ref, name)) await this.api.unmap(ref, name, host);
    await this.api.remove(ref, name);
  }

  /** This host's id on the array, looked up (or registered) once. */
  private async hostId(initiator: Initiator): Promise<string> {
    const key = `${initiator.hostId} ${initiator.iqn ?? ''} ${initiator.nqn ?? ''}`;
    let id = this.hosts.get(key);
    if (!id) {
      id = await this.api.hostFor(initiator);
      this.hosts.set(key, id);
    }
    return id;
  }
}
