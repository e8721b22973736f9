import { hostname } from 'node:os';
import { join } from 'node:path';
import type { ScbeBackendConfig } from '../../config/schema.js';
import { InvalidRequest } from '../../errors.js';
import type { Export, Initiator } from '../../export.js';
import type { Logger } from '../../log.js';
import { LookupCache } from '../../util/lookup-cache.js';
import { MappedArrayDriver, type ArrayApi } from '../mapped-array.js';
import { ScbeRefusal, type ScbeClient } from './client.js';

/** A ballast volume's SCBE volume: its SCSI identifier (the WWN), which SCBE's calls take as the volume's id. */
export interface ScbeRef {
  wwn: string;
}

interface Mapping {
  id: number | string;
  volume: string;
  host: number | string;
  lun_number: number;
}

/** SCBE's volume name for a ballast volume. */
export const scbeName = (name: string) => `ballast-${name}`;

const GIB = 2 ** 30;
const notFound = (err: unknown) => err instanceof ScbeRefusal && err.status === 404;

/**
 * IBM Spectrum Connect as ballast needs it: a profile is a storage service (seed 003), volumes
 * are created in it, hosts are the ones defined on the storage system (SCBE has no call to
 * define one), mappings per host, and the export is the storage system's iSCSI target from the
 * configuration (SCBE's mappings give only the LUN). No public client extends a volume.
 */
export class ScbeApi implements ArrayApi<ScbeRef> {
  readonly describe = 'Spectrum Connect';
  private readonly services = new LookupCache<string>();

  constructor(
    private readonly client: ScbeClient,
    private readonly backend: ScbeBackendConfig,
    /** Per ballast profile: its storage service (absent: the backend's). */
    private readonly serviceOf: ReadonlyMap<string, string | undefined>,
  ) {}

  async checkHealth(): Promise<void> {
    await this.serviceId(this.backend.service);
  }

  private serviceId(name: string): Promise<string> {
    return this.services.get(name, async () => {
      const found = await this.client.call<{ id: string; name: string }[]>('GET', `/services?name=${encodeURIComponent(name)}`, `find storage service ${name}`);
      const service = found.find((s) => s.name === name);
      if (!service) throw new InvalidRequest(`Spectrum Connect has no storage service "${name}" for this user; check service in backends.scbe or the profile, and that the service is delegated to the user's interface`);
      return String(service.id);
    });
  }

  async create(name: string, sizeBytes: number, profile: string): Promise<ScbeRef> {
    const service = this.serviceOf.get(profile) ?? this.backend.service;
    const body = { service: await this.serviceId(service), name: scbeName(name), size: Math.ceil(sizeBytes / GIB), size_unit: 'gb' };
    const made = await this.client.call<{ scsi_identifier: string }>('POST', '/volumes', `create volume ${scbeName(name)}`, body).catch((err: unknown) => {
      if (err instanceof ScbeRefusal) throw new InvalidRequest(`${err.message}; check the free space of storage service ${service}`);
      throw err;
    });
    return { wwn: made.scsi_identifier };
  }

  async remove(ref: ScbeRef, name: string): Promise<void> {
    await this.client.call('DELETE', `/volumes/${ref.wwn}`, `delete volume ${scbeName(name)}`).catch((err: unknown) => {
      if (!notFound(err)) throw err;
    });
  }

  async grow(_ref: ScbeRef, name: string): Promise<void> {
    throw new InvalidRequest(`Spectrum Connect offers no call to extend volume ${scbeName(name)} in any public client; extend it on the storage system, then grow it with ballast`);
  }

  /** The host defined on the storage system under this host's name (SCBE cannot define hosts). */
  async hostFor(initiator: Initiator): Promise<string> {
    const name = this.backend.host_name ?? hostname();
    const hosts = await this.client.call<{ id: number | string; name: string }[]>('GET', `/hosts?name=${encodeURIComponent(name)}`, `find host ${name}`);
    const host = hosts.find((h) => h.name === name);
    if (!host) throw new InvalidRequest(`the storage system behind Spectrum Connect has no host "${name}" (for ${initiator.hostId}): define it there with this host's IQN, or set backends.scbe.host_name`);
    return String(host.id);
  }

  private async mappings(ref: ScbeRef, name: string): Promise<Mapping[]> {
    return this.client.call<Mapping[]>('GET', `/mappings?volume=${ref.wwn}`, `list the mappings of volume ${scbeName(name)}`);
  }

  async mappedHosts(ref: ScbeRef, name: string): Promise<string[]> {
    return (await this.mappings(ref, name)).map((m) => String(m.host));
  }

  async map(ref: ScbeRef, name: string, host: string): Promise<void> {
    await this.client.call('POST', '/mappings', `map volume ${scbeName(name)} to host ${host}`, { volume_id: ref.wwn, host_id: host });
  }

  async unmap(ref: ScbeRef, name: string, host: string): Promise<void> {
    await this.client.call('DELETE', '/mappings', `unmap volume ${scbeName(name)} from host ${host}`, { volume_id: ref.wwn, host_id: host }).catch((err: unknown) => {
      if (!notFound(err)) throw err;
    });
  }

  async exportOf(ref: ScbeRef, name: string, host: string): Promise<Export> {
    const mapping = (await this.mappings(ref, name)).find((m) => String(m.host) === host);
    if (!mapping) throw new InvalidRequest(`Spectrum Connect lists no mapping of volume ${scbeName(name)} to host ${host} right after mapping it`);
    const { target, portals } = this.backend.iscsi;
    return { transport: 'iscsi', iqn: target, portals, lun: mapping.lun_number, multipath: this.backend.multipath, reservations: this.backend.reservations };
  }
}

/** Volumes behind IBM Spectrum Connect over iSCSI, their records in backends.scbe.metadata_root. */
export function scbeDriver(client: ScbeClient, backend: ScbeBackendConfig, serviceOf: ReadonlyMap<string, string | undefined>, log: Logger): MappedArrayDriver<ScbeRef> {
  return new MappedArrayDriver('scbe', 'iscsi', new ScbeApi(client, backend, serviceOf), join(backend.metadata_root, 'scbe'), 'backends.scbe.metadata_root', log);
}
