import { join } from 'node:path';
import type { DellScBackendConfig } from '../../config/schema.js';
import { InvalidRequest } from '../../errors.js';
import type { Export, Initiator } from '../../export.js';
import type { Logger } from '../../log.js';
import { LookupCache } from '../../util/lookup-cache.js';
import { MappedArrayDriver, type ArrayApi } from '../mapped-array.js';
import type { DellScArray, ScVolumeRef } from './array.js';
import { DellScSnapshots } from './dellsc-snapshots.js';

/** The Storage Center volume's name: readable on the array, never relied on (SC names are not unique). */
export const scName = (name: string) => `ballast-${name}`;

/**
 * A Dell Storage Center as ballast needs it: volumes in ballast's folder with a profile's
 * storage profile, hosts as server objects with their iSCSI HBA (made on first use), mappings
 * per server, exports over iSCSI through the controller ports the mapping lists. SC maps a
 * volume to as many servers as asked: the single mapping is ballast's doing, and the SCSI-3
 * reservation on the LUN fences what a former holder still has in flight.
 */
export class DellScApi implements ArrayApi<ScVolumeRef> {
  readonly describe: string;
  private readonly profileIds = new LookupCache<string>();

  constructor(
    private readonly array: DellScArray,
    private readonly backend: DellScBackendConfig,
    /** Per ballast profile: its storage profile name (absent: the backend's, else the Storage Center's default). */
    private readonly storageProfiles: ReadonlyMap<string, string | undefined>,
  ) {
    this.describe = `Storage Center ${array.ssn}`;
  }

  async checkHealth(): Promise<void> {
    await this.array.folderId('ScVolumeFolder');
  }

  async create(name: string, sizeBytes: number, profile: string): Promise<ScVolumeRef> {
    return this.array.createVolume(scName(name), sizeBytes, `ballast volume ${name}`, await this.storageProfileId(profile));
  }

  remove(ref: ScVolumeRef, name: string): Promise<void> {
    return this.array.deleteVolume(ref.instanceId, scName(name));
  }

  grow(ref: ScVolumeRef, name: string, sizeBytes: number): Promise<void> {
    return this.array.expand(ref.instanceId, scName(name), sizeBytes);
  }

  hostFor(initiator: Initiator): Promise<string> {
    if (!initiator.iqn) throw new InvalidRequest(`host ${initiator.hostId} has no iSCSI initiator name (/etc/iscsi/initiatorname.iscsi); Storage Center volumes are attached over iSCSI`);
    return this.array.serverFor(initiator.iqn, `ballast-${initiator.hostId}`);
  }

  async mappedHosts(ref: ScVolumeRef, name: string): Promise<string[]> {
    return (await this.array.mappingProfiles(ref.instanceId, scName(name))).map((p) => p.server.instanceId);
  }

  map(ref: ScVolumeRef, name: string, host: string): Promise<void> {
    return this.array.map(ref.instanceId, scName(name), host);
  }

  async unmap(ref: ScVolumeRef, name: string, host: string): Promise<void> {
    for (const profile of await this.array.mappingProfiles(ref.instanceId, scName(name))) {
      if (profile.server.instanceId === host) await this.array.unmap(profile, scName(name));
    }
  }

  async exportOf(ref: ScVolumeRef, name: string, host: string): Promise<Export> {
    const path = await this.array.iscsiPath(ref.instanceId, scName(name), host);
    return { transport: 'iscsi', iqn: path.iqn, portals: path.portals, lun: path.lun, multipath: this.backend.multipath, reservations: this.backend.reservations };
  }

  /** The storage profile's id, looked up once. */
  private async storageProfileId(profile: string): Promise<string | undefined> {
    const wanted = this.storageProfiles.get(profile) ?? this.backend.storage_profile;
    return wanted === undefined ? undefined : this.profileIds.get(wanted, () => this.array.storageProfileId(wanted));
  }
}

/** Volumes on a Dell Storage Center over iSCSI, their records in backends.dellsc.metadata_root; snapshots are replays. */
export function dellscDriver(array: DellScArray, backend: DellScBackendConfig, storageProfiles: ReadonlyMap<string, string | undefined>, log: Logger): MappedArrayDriver<ScVolumeRef> {
  const api = new DellScApi(array, backend, storageProfiles);
  const root = join(backend.metadata_root, `sc-${array.ssn}`);
  return new MappedArrayDriver('dellsc', 'iscsi', api, root, 'backends.dellsc.metadata_root', log, (volumes) => new DellScSnapshots(array, volumes, scName, log));
}
