import type { CinderBackendConfig } from '../../config/schema.js';
import { BackendUnavailable, errorMessage, InvalidRequest, LeaseHeld, StaleRevision, VolumeNotFound } from '../../errors.js';
import type { Export, Initiator } from '../../export.js';
import type { Logger } from '../../log.js';
import type { HostLease, HostLeaseStore, OwnershipRecord, Versioned } from '../../ownership/types.js';
import { VolumeAlreadyExists, type BackendDriver, type NewVolume, type VolumeRecord } from '../types.js';
import { CinderRefusal, type CinderClient } from './client.js';
import { decodeHostLease, encodeHostLease, HOST_LEASES_VOLUME, hostLeaseKey } from './host-leases.js';
import { KEY, newVolumeMetadata, ownershipMetadata, ownershipOf, recordOf, revisionOf, type Metadata } from './metadata.js';
import { iscsiExportOf, type ConnectionInfo } from './connection-info.js';
import { CinderSnapshots, type CinderVolumes, type CloneOrigin } from './cinder-snapshots.js';

export interface Placement {
  volumeType?: string;
  availabilityZone?: string;
}

/** What ballast reads of a Cinder volume. */
interface CinderVolume {
  id: string;
  name: string;
  status: string;
  size: number;
  created_at: string;
  metadata: Metadata;
}

const GIB = 2 ** 30;
/** Status polls start at 100 ms and double up to 1 s: a lab answers in a second, a busy array in minutes. */
const POLL_FIRST_MS = 100;
const POLL_MAX_MS = 1_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Cinder's answer to a second reservation of a volume that is not multiattach: "Invalid volume:
 * Volume <id> status must be available or downloading to reserve, but the current status is
 * reserved." (or attaching, in-use, detaching; or even available: the status is read again for
 * the message, after another host withdrew its reservation). Those are a race, to read again.
 * The same words with another status (error_extending, maintenance, ...) are no race: the
 * volume needs an administrator.
 */
function isReservedElsewhere(err: unknown): boolean {
  return err instanceof CinderRefusal && err.status === 400 && /current status is (available|reserved|attaching|in-use|detaching)\b/i.test(err.detail);
}

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
    this.snapshots = new CinderSnapshots(client, backend, this, log);
  }

  private get timeoutMs(): number {
    return this.backend.timeout_seconds * 1000;
  }

  async checkHealth(): Promise<void> {
    await this.client.call('GET', '/volumes?limit=1', 'list volumes');
  }

  /** Finds (or makes) the volume that holds the host leases: the oldest of that name, as for volumes. */
  async start(): Promise<void> {
    if (!(await this.findVolume(HOST_LEASES_VOLUME))) {
      const placement = { ...(this.backend.volume_type ? { volumeType: this.backend.volume_type } : {}), ...(this.backend.availability_zone ? { availabilityZone: this.backend.availability_zone } : {}) };
      const created = await this.createVolume(HOST_LEASES_VOLUME, 1, {}, 'ballast host leases (one metadata key per host)', placement);
      const oldest = await this.findVolume(HOST_LEASES_VOLUME);
      if (oldest && oldest.id !== created.id) await this.deleteVolume(created.id, HOST_LEASES_VOLUME); // another host made one first
    }
    this.hostLeasesId = (await this.findVolume(HOST_LEASES_VOLUME))?.id;
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
    const created = await this.createVolume(cinderName(volume.name), sizeGiB, metadata, `ballast volume ${volume.name} (profile ${volume.profile})`, this.placements.get(volume.profile) ?? {}, origin);
    // Cinder's names are not unique: two hosts creating one name at once both succeed. The
    // oldest volume of that name is the volume; a later one deletes itself.
    const winner = await this.findVolume(cinderName(volume.name));
    if (winner && winner.id !== created.id) {
      this.log.warn('another host created this volume at the same moment: deleting ours', { volume: volume.name, ours: created.id, theirs: winner.id });
      await this.deleteVolume(created.id, volume.name);
      throw new VolumeAlreadyExists(recordOf(volume.name, winner.metadata, winner.size));
    }
    this.log.info('volume created', { volume: volume.name, id: created.id, sizeGiB });
    return recordOf(volume.name, created.metadata, created.size);
  }

  async destroy(name: string): Promise<void> {
    const volume = await this.findVolume(cinderName(name));
    if (!volume) return;
    const attachment = volume.metadata[KEY.attachment];
    if (attachment) await this.deleteAttachment(attachment, name);
    await this.snapshots.removeAllOf(volume.id, name); // Cinder deletes no volume that has snapshots
    await this.deleteVolume(volume.id, name);
  }

  async read(name: string): Promise<Versioned<VolumeRecord> | undefined> {
    const volume = await this.findVolume(cinderName(name));
    if (!volume) return undefined;
    return { value: recordOf(name, volume.metadata, volume.size), revision: revisionOf(name, volume.metadata) };
  }

  async list(): Promise<VolumeRecord[]> {
    const records: VolumeRecord[] = [];
    for (const volume of await this.allVolumes()) {
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
      await this.waitFor(volume.id, name, (v) => v.status !== 'extending' && v.size >= newSize, 'extended');
      this.log.info('volume extended', { volume: name, sizeGiB: newSize });
    }
    return (await this.read(name))!.value;
  }

  async readOwnership(name: string): Promise<Versioned<OwnershipRecord> | undefined> {
    const volume = await this.findVolume(cinderName(name));
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
    for (const id of forced ? await this.attachmentIds(volume.id, name) : named ? [named] : []) await this.deleteAttachment(id, name);
    const attachment = next.state === 'held' ? await this.reserve(volume.id, name) : '';
    try {
      await this.setMetadata(volume.id, name, { ...ownershipMetadata(next, attachment), [KEY.rev]: String(revision + 1) });
    } catch (err) {
      if (attachment) await this.dropReservation(attachment, name);
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
        await this.dropReservation(made, name);
        throw err;
      });
    }
    await this.client.call('POST', `/attachments/${attachment}/action`, `complete the attachment of volume ${name}`, { 'os-complete': null });
    return iscsiExportOf(name, info, this.backend);
  }

  /** Deletes this host's attachment: Cinder removes the target. The record stays held until release. */
  async unexport(name: string, initiator: Initiator): Promise<void> {
    const volume = await this.findVolume(cinderName(name));
    if (!volume) return;
    const owner = ownershipOf(name, volume.metadata);
    const attachment = volume.metadata[KEY.attachment];
    if (owner.state === 'held' && owner.holder.hostId === initiator.hostId && attachment) await this.deleteAttachment(attachment, name);
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

  /**
   * Reserves the volume for this host. Cinder accepts one reservation of a volume at a time, but
   * sets the status and inserts the attachment in two steps, and a concurrent delete of another
   * attachment can reset the status between them: so the reservation counts only when it is the
   * volume's one attachment. Whoever inserted second sees both and withdraws.
   */
  private async reserve(volumeId: string, name: string): Promise<string> {
    let id: string;
    try {
      id = (await this.client.call<{ attachment: { id: string } }>('POST', '/attachments', `reserve volume ${name}`, { attachment: { volume_uuid: volumeId } })).data.attachment.id;
    } catch (err) {
      if (!(err instanceof CinderRefusal && err.status === 400)) throw err;
      if (!isReservedElsewhere(err)) throw new BackendUnavailable(`Cinder cannot reserve volume ${name}: ${err.detail}; an administrator may need to reset its state`);
      return this.racedAnother(volumeId, name);
    }
    const all = await this.attachmentIds(volumeId, name);
    if (all.length !== 1 || all[0] !== id) {
      await this.dropReservation(id, name);
      return this.racedAnother(volumeId, name);
    }
    return id;
  }

  /**
   * Another reservation stands. Usually another host's, about to write the record: wait a moment
   * (jittered, so racing hosts spread out) and read again. The error names the attachments, for
   * the case where none is ever recorded (a host that died between reserving and writing).
   */
  private async racedAnother(volumeId: string, name: string): Promise<never> {
    const ids = await this.attachmentIds(volumeId, name).catch(() => [] as string[]);
    await sleep(100 + Math.random() * 400);
    throw new StaleRevision(
      `Cinder holds another reservation of volume ${name} (attachment ${ids.join(', ') || 'unknown'}), which no ballast host has recorded yet; ` +
        `if this persists, no host is taking it (one died between reserving and recording): delete it with 'openstack volume attachment delete <id>'`,
    );
  }

  /** Deletes a reservation this host made and could not record; a failure is logged with its id for the operator. */
  private async dropReservation(id: string, name: string): Promise<void> {
    await this.deleteAttachment(id, name).catch((err: unknown) => {
      this.log.error('could not delete a reservation this host made: delete it by hand', { volume: name, attachment: id, error: errorMessage(err) });
    });
  }

  private async attachmentIds(volumeId: string, name: string): Promise<string[]> {
    const reply = await this.client.call<{ attachments: { id: string; volume_id?: string }[] }>('GET', `/attachments?volume_id=${volumeId}`, `list the attachments of volume ${name}`);
    return reply.data.attachments.filter((a) => !a.volume_id || a.volume_id === volumeId).map((a) => a.id);
  }

  private async deleteAttachment(id: string, name: string): Promise<void> {
    await this.client.call('DELETE', `/attachments/${id}`, `delete attachment ${id} of volume ${name}`).catch((err: unknown) => {
      if (!(err instanceof CinderRefusal && err.status === 404)) throw err;
    });
  }

  /** POST merges: keys not named stay as they are. */
  private async setMetadata(volumeId: string, name: string, metadata: Metadata): Promise<void> {
    await this.client.call('POST', `/volumes/${volumeId}/metadata`, `write the metadata of volume ${name}`, { metadata });
  }

  private async createVolume(cinderVolumeName: string, sizeGiB: number, metadata: Metadata, description: string, placement: Placement, origin?: CloneOrigin): Promise<CinderVolume> {
    const body = {
      volume: {
        ...origin,
        name: cinderVolumeName,
        size: sizeGiB,
        description,
        metadata,
        ...(placement.volumeType ? { volume_type: placement.volumeType } : {}),
        ...(placement.availabilityZone ? { availability_zone: placement.availabilityZone } : {}),
      },
    };
    const reply = await this.client.call<{ volume: CinderVolume }>('POST', '/volumes', `create volume ${cinderVolumeName} of ${sizeGiB} GiB`, body).catch((err: unknown) => {
      if (err instanceof CinderRefusal) throw new InvalidRequest(`${err.message}; check the profile's volume_type and availability_zone, and the project's quota`);
      throw err;
    });
    const id = reply.data.volume.id;
    try {
      return await this.waitFor(id, cinderVolumeName, (v) => v.status !== 'creating', 'created', (v) => v.status === 'available');
    } catch (err) {
      await this.deleteVolume(id, cinderVolumeName).catch(() => undefined);
      throw err;
    }
  }

  private async deleteVolume(id: string, name: string): Promise<void> {
    try {
      await this.client.call('DELETE', `/volumes/${id}`, `delete volume ${name}`);
    } catch (err) {
      if (err instanceof CinderRefusal && err.status === 404) return;
      if (err instanceof CinderRefusal) throw new InvalidRequest(`${err.message}; detach it everywhere first`);
      throw err;
    }
    await this.waitGone(id, name);
  }

  /**
   * Polls the volume until `done`, bounded by the backend's timeout; `ok` (default: always)
   * decides whether the state it ended in is a success.
   */
  private async waitFor(id: string, name: string, done: (v: CinderVolume) => boolean, what: string, ok: (v: CinderVolume) => boolean = () => true): Promise<CinderVolume> {
    const deadline = performance.now() + this.timeoutMs;
    for (let pause = POLL_FIRST_MS; ; pause = Math.min(pause * 2, POLL_MAX_MS)) {
      const volume = await this.getVolume(id);
      if (!volume) throw new VolumeNotFound(name);
      if (volume.status === 'error' || volume.status.startsWith('error_')) {
        throw new BackendUnavailable(`Cinder could not get volume ${name} ${what} (status ${volume.status}): see cinder-volume's log (a size beyond the backend's free space ends this way)`);
      }
      if (done(volume)) {
        if (!ok(volume)) throw new BackendUnavailable(`volume ${name} is ${volume.status} in Cinder, not available`);
        return volume;
      }
      if (performance.now() > deadline) throw new BackendUnavailable(`volume ${name} was not ${what} within ${this.backend.timeout_seconds} s (Cinder status ${volume.status})`);
      await sleep(pause);
    }
  }

  /** Polls until Cinder no longer knows the volume, bounded by the backend's timeout. */
  private async waitGone(id: string, name: string): Promise<void> {
    const deadline = performance.now() + this.timeoutMs;
    for (let pause = POLL_FIRST_MS; ; pause = Math.min(pause * 2, POLL_MAX_MS)) {
      const volume = await this.getVolume(id);
      if (!volume) return;
      if (volume.status === 'error_deleting') throw new BackendUnavailable(`Cinder could not delete volume ${name} (status error_deleting): see cinder-volume's log`);
      if (performance.now() > deadline) throw new BackendUnavailable(`volume ${name} was not deleted within ${this.backend.timeout_seconds} s (Cinder status ${volume.status})`);
      await sleep(pause);
    }
  }

  /** The volume by id, or undefined once Cinder answers 404. */
  private async getVolume(id: string): Promise<CinderVolume | undefined> {
    try {
      return (await this.client.call<{ volume: CinderVolume }>('GET', `/volumes/${id}`, `read volume ${id}`)).data.volume;
    } catch (err) {
      if (err instanceof CinderRefusal && err.status === 404) return undefined;
      throw err;
    }
  }

  async volumeOf(name: string): Promise<CinderVolume | undefined> {
    return this.findVolume(cinderName(name));
  }

  private async mustFind(name: string): Promise<CinderVolume> {
    const volume = await this.findVolume(cinderName(name));
    if (!volume) throw new VolumeNotFound(name);
    return volume;
  }

  /** The oldest ballast volume of that Cinder name (names are not unique in Cinder). */
  private async findVolume(cinderVolumeName: string): Promise<CinderVolume | undefined> {
    const reply = await this.client.call<{ volumes: CinderVolume[] }>('GET', `/volumes/detail?name=${encodeURIComponent(cinderVolumeName)}`, `find volume ${cinderVolumeName}`);
    const live = reply.data.volumes.filter((v) => v.name === cinderVolumeName && !['deleting', 'error_deleting'].includes(v.status));
    live.sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id));
    return live[0];
  }

  /** Every volume of the project, page by page. */
  private async allVolumes(): Promise<CinderVolume[]> {
    const all: CinderVolume[] = [];
    let marker = '';
    for (;;) {
      const reply = await this.client.call<{ volumes: CinderVolume[] }>('GET', `/volumes/detail?limit=1000&sort=created_at:asc${marker ? `&marker=${marker}` : ''}`, 'list volumes');
      // Cinder may cap a page below the limit asked (osapi_max_limit): only an empty page ends the list.
      if (reply.data.volumes.length === 0) return all;
      all.push(...reply.data.volumes);
      marker = reply.data.volumes.at(-1)!.id;
    }
  }
}
