import type { CinderBackendConfig } from '../../config/schema.js';
import { BackendUnavailable, errorMessage, InvalidRequest, StaleRevision, VolumeNotFound } from '../../errors.js';
import type { Logger } from '../../log.js';
import { CinderRefusal, type CinderClient } from './client.js';
import type { Metadata } from './metadata.js';
import type { CloneOrigin } from './cinder-snapshots.js';

export interface Placement {
  volumeType?: string;
  availabilityZone?: string;
}

/** What ballast reads of a Cinder volume. */
export interface CinderVolume {
  id: string;
  name: string;
  status: string;
  size: number;
  created_at: string;
  metadata: Metadata;
}

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
export function isReservedElsewhere(err: unknown): boolean {
  return err instanceof CinderRefusal && err.status === 400 && /current status is (available|reserved|attaching|in-use|detaching)\b/i.test(err.detail);
}

/**
 * Cinder's volumes and attachments through the Block Storage API v3: creating and deleting a
 * volume and waiting on its status, finding it by name, and reserving it for this host. The
 * driver builds ballast's records and leases on these.
 */
export class CinderVolumesApi {
  constructor(
    private readonly client: CinderClient,
    private readonly backend: CinderBackendConfig,
    private readonly log: Logger,
  ) {}

  private get timeoutMs(): number {
    return this.backend.timeout_seconds * 1000;
  }

  async createVolume(cinderVolumeName: string, sizeGiB: number, metadata: Metadata, description: string, placement: Placement, origin?: CloneOrigin): Promise<CinderVolume> {
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

  async deleteVolume(id: string, name: string): Promise<void> {
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
  async waitFor(id: string, name: string, done: (v: CinderVolume) => boolean, what: string, ok: (v: CinderVolume) => boolean = () => true): Promise<CinderVolume> {
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

  /** The oldest ballast volume of that Cinder name (names are not unique in Cinder). */
  async findVolume(cinderVolumeName: string): Promise<CinderVolume | undefined> {
    const reply = await this.client.call<{ volumes: CinderVolume[] }>('GET', `/volumes/detail?name=${encodeURIComponent(cinderVolumeName)}`, `find volume ${cinderVolumeName}`);
    const live = reply.data.volumes.filter((v) => v.name === cinderVolumeName && !['deleting', 'error_deleting'].includes(v.status));
    live.sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id));
    return live[0];
  }

  /** Every volume of the project, page by page. */
  async allVolumes(): Promise<CinderVolume[]> {
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

  /**
   * Reserves the volume for this host. Cinder accepts one reservation of a volume at a time, but
   * sets the status and inserts the attachment in two steps, and a concurrent delete of another
   * attachment can reset the status between them: so the reservation counts only when it is the
   * volume's one attachment. Whoever inserted second sees both and withdraws.
   */
  async reserve(volumeId: string, name: string): Promise<string> {
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
  async dropReservation(id: string, name: string): Promise<void> {
    await this.deleteAttachment(id, name).catch((err: unknown) => {
      this.log.error('could not delete a reservation this host made: delete it by hand', { volume: name, attachment: id, error: errorMessage(err) });
    });
  }

  async attachmentIds(volumeId: string, name: string): Promise<string[]> {
    const reply = await this.client.call<{ attachments: { id: string; volume_id?: string }[] }>('GET', `/attachments?volume_id=${volumeId}`, `list the attachments of volume ${name}`);
    return reply.data.attachments.filter((a) => !a.volume_id || a.volume_id === volumeId).map((a) => a.id);
  }

  async deleteAttachment(id: string, name: string): Promise<void> {
    await this.client.call('DELETE', `/attachments/${id}`, `delete attachment ${id} of volume ${name}`).catch((err: unknown) => {
      if (!(err instanceof CinderRefusal && err.status === 404)) throw err;
    });
  }
}
