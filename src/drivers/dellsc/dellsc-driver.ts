import { join } from 'node:path';
import { z } from 'zod';
import type { DellScBackendConfig } from '../../config/schema.js';
import { BackendUnavailable, InvalidRequest, LeaseHeld, VolumeNotFound } from '../../errors.js';
import type { Export, Initiator } from '../../export.js';
import type { Logger } from '../../log.js';
import type { FileStore } from '../file-store.js';
import { FileVolumes } from '../file-volumes.js';
import type { VolumeImages } from '../images.js';
import type { NewVolume, VolumeRecord } from '../types.js';
import { checkMetadataRoot } from '../metadata-root.js';
import type { DellScArray, ScVolumeRef } from './array.js';

/** Beside each record: which Storage Center volume it is (SC's names are not unique, its ids are). */
const REF = 'dellsc.json';
const refSchema = z.object({ instanceId: z.string(), deviceId: z.string() });

/** The Storage Center volume's name: readable on the array, never relied on. */
export const scName = (name: string) => `ballast-${name}`;

/** Which storage profile a volume being created gets: its ballast profile's, else the backend's. */
interface StorageProfiles {
  byProfile: ReadonlyMap<string, string | undefined>;
  fallback: string | undefined;
  /** Volume name -> ballast profile, while create() runs (VolumeImages.create knows the name only). */
  creating: Map<string, string>;
}

/** The volume's data: a Storage Center volume, its id kept in dellsc.json beside the record. */
class ScVolumes implements VolumeImages {
  /** Volumes this process made whose records are not in place yet: abandon() deletes them by id. */
  private readonly pending = new Map<string, string>();
  private readonly profileIds = new Map<string, Promise<string>>();

  constructor(
    private readonly array: DellScArray,
    private readonly root: string,
    private readonly files: FileStore,
    private readonly profiles: StorageProfiles,
  ) {}

  path(name: string): string {
    return `dellsc:${scName(name)}`;
  }

  async ref(name: string): Promise<ScVolumeRef | undefined> {
    const text = await this.files.readFile(join(this.root, name, REF));
    return text === undefined ? undefined : refSchema.parse(JSON.parse(text));
  }

  async create(name: string, staging: string, sizeBytes: number): Promise<void> {
    const profileId = await this.storageProfileId(this.profiles.creating.get(name) ?? 'default');
    const ref = await this.array.createVolume(scName(name), sizeBytes, `ballast volume ${name}`, profileId);
    this.pending.set(name, ref.instanceId);
    await this.files.writeNew(join(staging, REF), `${JSON.stringify(ref)}\n`);
  }

  async abandon(name: string): Promise<void> {
    const id = this.pending.get(name);
    this.pending.delete(name);
    if (id) await this.array.deleteVolume(id, scName(name));
  }

  /** The SC volume went in the driver's withdraw(), before its record. */
  async remove(name: string): Promise<void> {
    this.pending.delete(name);
  }

  async mustRef(name: string): Promise<ScVolumeRef> {
    const ref = await this.ref(name);
    if (!ref) throw new BackendUnavailable(`volume ${name} has no ${REF} under ${this.files.describe(this.root)}: its Storage Center volume is unknown`);
    return ref;
  }

  async grow(name: string, sizeBytes: number): Promise<void> {
    await this.array.expand((await this.mustRef(name)).instanceId, scName(name), sizeBytes);
  }

  async ensureSize(): Promise<void> {}

  /** The storage profile's id, looked up once (a failed lookup is tried again next time). */
  private storageProfileId(profile: string): Promise<string | undefined> {
    const wanted = this.profiles.byProfile.get(profile) ?? this.profiles.fallback;
    if (!wanted) return Promise.resolve(undefined);
    let id = this.profileIds.get(wanted);
    if (!id) {
      id = this.array.storageProfileId(wanted).catch((err: unknown) => {
        this.profileIds.delete(wanted);
        throw err;
      });
      this.profileIds.set(wanted, id);
    }
    return id;
  }
}

/**
 * Volumes on a Dell Storage Center over iSCSI, through Dell Storage Manager. SC volumes have free
 * text Notes but nothing that compares and swaps, and SC maps a volume to as many servers as
 * asked: so the records and the ownership lease live in a directory all hosts share
 * (metadata_root, the loop backend's compare-and-swap), and the array is made to follow them:
 * Mount maps the volume to this host's server object only, unmapping any other (a former
 * holder: the fence), and the SCSI-3 reservation on the LUN fences what a former holder still
 * has in flight, as on the iscsi backend.
 */
export class DellScDriver extends FileVolumes {
  readonly kind = 'dellsc';
  readonly transport = 'iscsi' as const;
  private readonly servers = new Map<string, string>();
  private readonly creating: Map<string, string>;
  private readonly volumes: ScVolumes;

  constructor(
    private readonly array: DellScArray,
    private readonly backend: DellScBackendConfig,
    /** Per ballast profile: its storage profile name (undefined: the backend's, else the Storage Center's default). */
    storageProfiles: ReadonlyMap<string, string | undefined>,
    log: Logger,
  ) {
    const creating = new Map<string, string>();
    let volumes: ScVolumes | undefined;
    const images = (root: string, files: FileStore) => (volumes = new ScVolumes(array, root, files, { byProfile: storageProfiles, fallback: backend.storage_profile, creating }));
    super({ root: join(backend.metadata_root, `sc-${array.ssn}`), shared: true, images }, log);
    this.creating = creating;
    this.volumes = volumes!;
  }

  async start(): Promise<void> {
    await this.checkHealth();
    await checkMetadataRoot(this.root, 'backends.dellsc.metadata_root');
  }

  override async checkHealth(): Promise<void> {
    await super.checkHealth();
    await this.array.folderId('ScVolumeFolder');
  }

  override async create(volume: NewVolume): Promise<VolumeRecord> {
    this.creating.set(volume.name, volume.profile);
    try {
      return await super.create(volume);
    } finally {
      this.creating.delete(volume.name);
    }
  }

  async export(name: string, initiator: Initiator): Promise<Export> {
    if (!initiator.iqn) throw new InvalidRequest(`host ${initiator.hostId} has no iSCSI initiator name (/etc/iscsi/initiatorname.iscsi); Storage Center volumes are attached over iSCSI`);
    const record = await this.read(name);
    if (!record) throw new VolumeNotFound(name);
    const owner = record.value.ownership;
    if (owner.state !== 'held' || owner.holder.hostId !== initiator.hostId) throw new LeaseHeld(`volume ${name} is not leased to host ${initiator.hostId}; it is not mapped here`);
    const { instanceId } = await this.volumes.mustRef(name);
    const server = await this.serverId(initiator.hostId, initiator.iqn);
    const profiles = await this.array.mappingProfiles(instanceId, scName(name));
    const others = profiles.filter((p) => p.server.instanceId !== server);
    if (others.length) this.log.warn('volume still mapped to a former holder: unmapping it there', { volume: name, servers: others.map((p) => p.server.instanceName ?? p.server.instanceId) });
    for (const other of others) await this.array.unmap(other, scName(name));
    if (!profiles.some((p) => p.server.instanceId === server)) await this.array.map(instanceId, scName(name), server);
    const path = await this.array.iscsiPath(instanceId, scName(name), server);
    return { transport: 'iscsi', iqn: path.iqn, portals: path.portals, lun: path.lun, multipath: this.backend.multipath, reservations: this.backend.reservations };
  }

  async unexport(name: string, initiator: Initiator): Promise<void> {
    const ref = await this.volumes.ref(name);
    if (!ref || !initiator.iqn) return;
    const server = await this.serverId(initiator.hostId, initiator.iqn);
    for (const profile of await this.array.mappingProfiles(ref.instanceId, scName(name))) {
      if (profile.server.instanceId === server) await this.array.unmap(profile, scName(name));
    }
  }

  /** Unmaps the volume everywhere and deletes it on the array, before its record goes. */
  protected override async withdraw(name: string): Promise<void> {
    const ref = await this.volumes.ref(name);
    if (!ref) return;
    for (const profile of await this.array.mappingProfiles(ref.instanceId, scName(name))) await this.array.unmap(profile, scName(name));
    await this.array.deleteVolume(ref.instanceId, scName(name));
  }

  /** This host's server object on the Storage Center, made on first use. */
  private async serverId(hostId: string, iqn: string): Promise<string> {
    let id = this.servers.get(iqn);
    if (!id) {
      id = await this.array.serverFor(iqn, `ballast-${hostId}`);
      this.servers.set(iqn, id);
    }
    return id;
  }
}
