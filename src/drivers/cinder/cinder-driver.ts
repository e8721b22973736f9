import type { CinderBackendConfig } from '../../config/schema.js';
import { BackendUnavailable, InvalidRequest, LeaseHeld, StaleRevision, VolumeNotFound } from '../../errors.js';
import type { Export, Initiator } from '../../export.js';
import type { Logger } from '../../log.js';
import type { HostLease, HostLeaseStore, OwnershipRecord, Versioned } from '../../ownership/types.js';
import { VolumeAlreadyExists, type BackendDriver, type NewVolume, type VolumeRecord } from '../types.js';
import { CinderRefusal, type CinderClient } from './client.js';
import { decodeHostLease, encodeHostLease, HOST_LEASES_VOLUME, hostLeaseKey } from './host-leases.js';
import { KEY, newVolumeMetadata, ownershipMetadata, ownershipOf, recordOf, revisionOf, type Metadata } from './metadata.js';
import { iscsiExportOf, type ConnectionInfo } from './connection-info.js';
import { CinderSnapshots, type CinderVolumes, type CloneOrigin } from './cinder-snapshots.js';
import { CinderVolumesApi, isReservedElsewhere, type CinderVolume, type Placement } from './cinder-volumes-api.js';

export type { Placement } from './cinder-volumes-api.js';

const GIB = 2 ** 30;

/** Cinder's name for a ballast volume. Docker's names fit: 128 characters at most, Cinder takes 255. */
export const cinderName = (name: string) => `ballast-${name}`;

/**
 * Volumes as OpenStack Cinder volumes, through the Block Storage API v3. The record and the
 * ownership lease live in the volume's metadata. Cinder's metadata has no compare-and-swap (its
 * If-Match checks and writes in two steps) and is never used as one: the arbiter is Cinder's
 * attachment reservation. A non-multiattach volume takes one attachment at a time, so a host
 * writes "held by me" only after its reservation was accepted as the volume's only one, and a
 * takeover deletes the former holder's reservation first. Host leases are keys of the
 * metadata of one volume, ballast_host_leases, one key per host, each written by its host only.
 */
export class CinderDriver implements BackendDriver, HostLeaseStore, CinderVolumes {
  readonly kind = 'cinder';
  readonly transport = 'iscsi' as const;
  readonly scope = 'global' as const;
  /** The record's encryption is kept in the volume's metadata (ballast.encryption). */
  readonly keepsEncryption = true;
  private hostLeasesId: string | undefined;
  /** Cinder's volumes and attachments through the REST API: create, wait, find, reserve. */
  private readonly volumes: CinderVolumesApi;
  /** Cinder's snapshots; clones are volumes Cinder copies from one, or from a volume. */
  readonly snapshots: CinderSnapshots;

  /**
   * A former holder could log in again (Cinder re-creates a target with the same CHAP secret):
   * only the SCSI-3 reservation on the LUN stops its writes, so without it an operator decides.
   */
  get takeover(): 'automatic' | 'manual' {
    return this.backend.reservations ? 'automatic' : 'manual';
  }

  constructor(
    private readonly client: CinderClient,
    private readonly backend: CinderBackendConfig,
    /** Per profile: the volume type and availability zone its volumes are created in. */
    private readonly placements: ReadonlyMap<string, Placement>,
    /** This host's address as its connector gives it to Cinder. */
    private readonly connectorIp: string,
    private readonly log: Logger,
  ) {
    this.volumes = new CinderVolumesApi(client, backend, log);
    this.snapshots = new CinderSnapshots(client, backend, this, log);
  }

  async checkHealth(): Promise<void> {
    await this.client.call('GET', '/volumes?limit=1', 'list volumes');
  }

  /** Finds (or makes) the volume that holds the host leases: the oldest of that name, as for volumes. */
  async start(): Promise<void> {
    if (!(await this.volumes.findVolume(HOST_LEASES_VOLUME))) {
      const placement = { ...(this.backend.volume_type ? { volumeType: this.backend.volume_type } : {}), ...(this.backend.availability_zone ? { availabilityZone: this.backend.availability_zone } : {}) };
      const created = await this.volumes.createVolume(HOST_LEASES_VOLUME, 1, {}, 'ballast host leases (one metadata key per host)', placement);
      const oldest = await this.volumes.findVolume(HOST_LEASES_VOLUME);
      if (oldest && oldest.id !== created.id) await this.volumes.deleteVolume(created.id, HOST_LEASES_VOLUME); // another host made one first
    }
    this.hostLeasesId = (await this.volumes.findVolume(HOST_LEASES_VOLUME))?.id;
    if (!this.hostLeasesId) throw new BackendUnavailable(`Cinder lost volume ${HOST_LEASES_VOLUME} while ballast created it`);
  }

  async create(volume: NewVolume): Promise<VolumeRecord> {
    return this.createRecorded(volume);
  }

  /** Creates the volume, empty or with the data Cinder copies from `origin` (a clone). */
  async createRecorded(volume: NewVolume, origin?: CloneOrigin): Promise<VolumeRecord> {
    const existing = await this.read(volume.name);
    if (existing) throw new VolumeAlreadyExists(existing.value);
    const sizeGiB = Math.ceil(volume.sizeBytes / GIB);
    const metadata = newVolumeMetadata(volume, new Date().toISOString());
    const created = await this.volumes.createVolume(cinderName(volume.name), sizeGiB, metadata, `ballast volume ${volume.name} (profile ${volume.profile})`, this.placements.get(volume.profile) ?? {}, origin);
    // Cinder's names are not unique: two hosts creating one name at once both succeed. The
    // oldest volume of that name is the volume; a later one deletes itself.
    const winner = await this.volumes.findVolume(cinderName(volume.name));
    if (winner && winner.id !== created.id) {
      this.log.warn('another host created this volume at the same moment: deleting ours', { volume: volume.name, ours: created.id, theirs: winner.id });
      await this.volumes.deleteVolume(created.id, volume.name);
      throw new VolumeAlreadyExists(recordOf(volume.name, winner.metadata, winner.size));
    }
    this.log.info('volume created', { volume: volume.name, id: created.id, sizeGiB });
    return recordOf(volume.name, created.metadata, created.size);
  }

  async destroy(name: string): Promise<void> {
    const volume = await this.volumes.findVolume(cinderName(name));
    if (!volume) return;
    const attachment = volume.metadata[KEY.attachment];
    if (attachment) await this.volumes.deleteAttachment(attachment, name);
    await this.snapshots.removeAllOf(volume.id, name); // Cinder deletes no volume that has snapshots
    await this.volumes.deleteVolume(volume.id, name);
  }

  async read(name: string): Promise<Versioned<VolumeRecord> | undefined> {
    const volume = await this.volumes.findVolume(cinderName(name));
    if (!volume) return undefined;
    return { value: recordOf(name, volume.metadata, volume.size), revision: revisionOf(name, volume.metadata) };
  }

  async list(): Promise<VolumeRecord[]> {
    const records: VolumeRecord[] = [];
    for (const volume of await this.volumes.allVolumes()) {
      const name = volume.metadata[KEY.volume];
      if (name && volume.name === cinderName(name)) records.push(recordOf(name, volume.metadata, volume.size));
    }
    return records;
  }

  async grow(name: string, sizeBytes: number): Promise<VolumeRecord> {
    const volume = await this.mustFind(name);
    const newSize = Math.ceil(sizeBytes / GIB);
    if (newSize > volume.size && volume.status !== 'available') {
      // Cinder extends an attached volume only with Nova's help: ballast grows volumes no host uses.
      throw new InvalidRequest(`volume ${name} is ${volume.status} in Cinder; grow it while no container uses it (Cinder extends attached volumes only through Nova)`);
    }
    if (newSize > volume.size) {
      await this.client.call('POST', `/volumes/${volume.id}/action`, `extend volume ${name} to ${newSize} GiB`, { 'os-extend': { new_size: newSize } }).catch((err: unknown) => {
        if (err instanceof CinderRefusal && err.status === 400) throw new InvalidRequest(`Cinder cannot extend volume ${name} now (${err.detail}); extend it while no container uses it`);
        throw err;
      });
      await this.volumes.waitFor(volume.id, name, (v) => v.status !== 'extending' && v.size >= newSize, 'extended');
      this.log.info('volume extended', { volume: name, sizeGiB: newSize });
    }
    return (await this.read(name))!.value;
  }

  async readOwnership(name: string): Promise<Versioned<OwnershipRecord> | undefined> {
    const volume = await this.volumes.findVolume(cinderName(name));
    return volume && { value: ownershipOf(name, volume.metadata), revision: revisionOf(name, volume.metadata) };
  }

  /**
   * Not a compare-and-swap on the metadata (Cinder has none): the reservation is. A new holder
   * first deletes the reservation the record names (the former holder's), then reserves, and
   * goes on only if its reservation is the volume's only attachment; only then does it write
   * the record. An operator's forced release (a free record of a higher generation) deletes
   * every attachment of the volume, orphans included.
   */
  async writeOwnership(name: string, expectedRevision: number, next: OwnershipRecord): Promise<number> {
    const volume = await this.mustFind(name);
    const revision = revisionOf(name, volume.metadata);
    if (revision !== expectedRevision) throw new StaleRevision(`the record of volume ${name} changed (revision ${revision}, expected ${expectedRevision})`);
    const current = ownershipOf(name, volume.metadata);
    const named = volume.metadata[KEY.attachment] ?? '';
    const forced = next.state === 'free' && next.generation > current.generation;
    for (const id of forced ? await this.volumes.attachmentIds(volume.id, name) : named ? [named] : []) await this.volumes.deleteAttachment(id, name);
    const attachment = next.state === 'held' ? await this.volumes.reserve(volume.id, name) : '';
    try {
      await this.setMetadata(volume.id, name, { ...ownershipMetadata(next, attachment), [KEY.rev]: String(revision + 1) });
    } catch (err) {
      if (attachment) await this.volumes.dropReservation(attachment, name);
      throw err;
    }
    return revision + 1;
  }

  /** Connects this host through the holder's attachment: Cinder creates the target and returns its CHAP secret. */
  async export(name: string, initiator: Initiator): Promise<Export> {
    if (!initiator.iqn) throw new InvalidRequest(`host ${initiator.hostId} has no iSCSI initiator name (/etc/iscsi/initiatorname.iscsi); Cinder volumes are attached over iSCSI`);
    const volume = await this.mustFind(name);
    const owner = ownershipOf(name, volume.metadata);
    if (owner.state !== 'held' || owner.holder.hostId !== initiator.hostId) throw new LeaseHeld(`volume ${name} is not leased to host ${initiator.hostId}; Cinder will not attach it here`);
    const connector = { initiator: initiator.iqn, ip: this.connectorIp, host: initiator.hostId, multipath: this.backend.multipath, platform: 'x86_64', os_type: 'linux', do_local_attach: false };
    let attachment = volume.metadata[KEY.attachment] ?? '';
    let info: ConnectionInfo | undefined;
    if (attachment) {
      info = await this.client
        .call<{ attachment: { connection_info: ConnectionInfo } }>('PUT', `/attachments/${attachment}`, `connect volume ${name}`, { attachment: { connector } })
        .then((r) => r.data.attachment.connection_info)
        .catch((err: unknown) => {
          if (err instanceof CinderRefusal && err.status === 404) return undefined;
          throw err;
        });
    }
    if (!info) {
      // Our reservation went (an unexport whose release failed): make another, and note it.
      const reply = await this.client.call<{ attachment: { id: string; connection_info: ConnectionInfo } }>('POST', '/attachments', `attach volume ${name}`, { attachment: { volume_uuid: volume.id, connector } }).catch((err: unknown) => {
        throw isReservedElsewhere(err) ? new LeaseHeld(`Cinder refused to attach volume ${name} here: ${(err as CinderRefusal).detail}`) : err;
      });
      attachment = reply.data.attachment.id;
      info = reply.data.attachment.connection_info;
      const made = attachment;
      await this.setMetadata(volume.id, name, { [KEY.attachment]: made, [KEY.rev]: String(revisionOf(name, volume.metadata) + 1) }).catch(async (err: unknown) => {
        await this.volumes.dropReservation(made, name);
        throw err;
      });
    }
    await this.client.call('POST', `/attachments/${attachment}/action`, `complete the attachment of volume ${name}`, { 'os-complete': null });
    return iscsiExportOf(name, info, this.backend);
  }

  /** Deletes this host's attachment: Cinder removes the target. The record stays held until release. */
  async unexport(name: string, initiator: Initiator): Promise<void> {
    const volume = await this.volumes.findVolume(cinderName(name));
    if (!volume) return;
    const owner = ownershipOf(name, volume.metadata);
    const attachment = volume.metadata[KEY.attachment];
    if (owner.state === 'held' && owner.holder.hostId === initiator.hostId && attachment) await this.volumes.deleteAttachment(attachment, name);
  }

  async readHostLease(hostId: string): Promise<HostLease | undefined> {
    const meta = (await this.hostLeaseMetadata())[hostLeaseKey(hostId)];
    return meta === undefined ? undefined : decodeHostLease(hostId, meta);
  }

  async listHostLeases(): Promise<HostLease[]> {
    const meta = await this.hostLeaseMetadata();
    return Object.entries(meta).flatMap(([key, value]) => (key.startsWith(hostLeaseKey('')) ? [decodeHostLease(key.slice(hostLeaseKey('').length), value)] : []));
  }

  async writeHostLease(lease: HostLease): Promise<void> {
    await this.setMetadata(this.leasesId(), HOST_LEASES_VOLUME, { [hostLeaseKey(lease.hostId)]: encodeHostLease(lease) });
  }

  private leasesId(): string {
    if (!this.hostLeasesId) throw new Error('the cinder driver was not started');
    return this.hostLeasesId;
  }

  private async hostLeaseMetadata(): Promise<Metadata> {
    return (await this.client.call<{ metadata: Metadata }>('GET', `/volumes/${this.leasesId()}/metadata`, 'read the host leases')).data.metadata;
  }

  /** POST merges: keys not named stay as they are. */
  private async setMetadata(volumeId: string, name: string, metadata: Metadata): Promise<void> {
    await this.client.call('POST', `/volumes/${volumeId}/metadata`, `write the metadata of volume ${name}`, { metadata });
  }

  async volumeOf(name: string): Promise<CinderVolume | undefined> {
    return this.volumes.findVolume(cinderName(name));
  }

  private async mustFind(name: string): Promise<CinderVolume> {
    const volume = await this.volumes.findVolume(cinderName(name));
    if (!volume) throw new VolumeNotFound(name);
    return volume;
  }
}
