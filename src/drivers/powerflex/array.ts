import { BackendUnavailable, InvalidRequest } from '../../errors.js';
import { LookupCache } from '../../util/lookup-cache.js';
import { ERR, PowerFlexRefusal, type PowerFlexClient } from './client.js';

/** PowerFlex allocates in 8 GiB steps: sizes are rounded up to them. */
export const SIZE_STEP_BYTES = 8 * 2 ** 30;
export const roundToStep = (bytes: number) => Math.max(1, Math.ceil(bytes / SIZE_STEP_BYTES)) * SIZE_STEP_BYTES;

/** A ballast volume's PowerFlex volume, and the pool its SDTs serve it from. */
export interface PowerFlexRef {
  id: string;
  pool: PoolRef;
}

export interface PoolRef {
  protectionDomain: string;
  storagePool: string;
}

export interface PowerFlexVolume {
  id: string;
  name: string;
  sizeInKb: number;
  /** The hosts (SDCs or NVMe hosts) the volume is mapped to. */
  mappedSdcInfo?: { sdcId: string; sdcName?: string }[] | null;
  /** Set on a snapshot: the volume it was taken of. */
  ancestorVolumeId?: string | null;
}

/** A mapping's limits as setMappedSdcLimits takes them: reads and writes together, 0 unlimited. */
export interface MappingLimits {
  iopsLimit: number;
  /** KiB/s, in whole MiB/s (multiples of 1024). */
  bandwidthLimitInKbps: number;
}

export interface NvmeHost {
  id: string;
  name?: string;
  nqn?: string;
  hostType?: string;
}

interface Sdt {
  ipList?: { ip: string; role?: string }[];
  nvmePort?: number;
}

const refusedWith = (err: unknown, ...codes: number[]) => err instanceof PowerFlexRefusal && err.errorCode !== undefined && codes.includes(err.errorCode);

/**
 * The gateway calls one storage pool's volumes need, typed: ids of the pool, volumes by name,
 * NVMe hosts by NQN, mappings, sizes. Knows the API, not ballast's records.
 */
export class PowerFlexArray {
  private readonly poolIds = new LookupCache<{ domainId: string; poolId: string }>();
  private systemIdCache: string | undefined;

  constructor(readonly client: PowerFlexClient) {}

  /** The protection domain's and pool's ids, looked up once. */
  ids(pool: PoolRef): Promise<{ domainId: string; poolId: string }> {
    return this.poolIds.get(`${pool.protectionDomain}/${pool.storagePool}`, () => this.lookUpPool(pool));
  }

  private async lookUpPool({ protectionDomain, storagePool }: PoolRef): Promise<{ domainId: string; poolId: string }> {
    const domainId = await this.client.call<string>('GET', `/api/types/Domain/instances/getByName::${encodeURIComponent(protectionDomain)}`, `find protection domain ${protectionDomain}`).catch((err: unknown) => {
      if (err instanceof PowerFlexRefusal) throw new InvalidRequest(`PowerFlex has no protection domain ${protectionDomain} (${err.detail}); check protection_domain in backends.powerflex or the profile`);
      throw err;
    });
    const poolId = await this.client.call<string>('GET', `/api/types/Pool/instances/getByName::${domainId},${encodeURIComponent(storagePool)}`, `find storage pool ${storagePool}`).catch((err: unknown) => {
      if (err instanceof PowerFlexRefusal) throw new InvalidRequest(`PowerFlex has no storage pool ${storagePool} in protection domain ${protectionDomain} (${err.detail}); check storage_pool in backends.powerflex or the profile`);
      throw err;
    });
    return { domainId, poolId };
  }

  /** The system's id: half of every namespace's NGUID and the tail of its subsystem's NQN. */
  async systemId(): Promise<string> {
    if (!this.systemIdCache) {
      const systems = await this.client.call<{ id: string }[]>('GET', '/api/types/System/instances', 'read the system id');
      if (!systems[0]) throw new InvalidRequest(`the PowerFlex gateway at ${this.client.endpoint} manages no system`);
      this.systemIdCache = systems[0].id;
    }
    return this.systemIdCache;
  }

  /** Creates a volume; undefined when the name is taken (names are unique in a system). */
  async createVolume(name: string, sizeBytes: number, thin: boolean, pool: PoolRef): Promise<string | undefined> {
    const { domainId, poolId } = await this.ids(pool);
    const body = { name, storagePoolId: poolId, protectionDomainId: domainId, volumeType: thin ? 'ThinProvisioned' : 'ThickProvisioned', volumeSizeInKb: String(roundToStep(sizeBytes) / 1024) };
    try {
      return (await this.client.call<{ id: string }>('POST', '/api/types/Volume/instances', `create volume ${name}`, body)).id;
    } catch (err) {
      if (err instanceof PowerFlexRefusal && /already (in use|exists)/i.test(err.detail)) return undefined;
      if (err instanceof PowerFlexRefusal) {
        throw new InvalidRequest(`${err.message}; check the free space of storage pool ${pool.storagePool} in protection domain ${pool.protectionDomain}`);
      }
      throw err;
    }
  }

  volume(id: string): Promise<PowerFlexVolume> {
    return this.client.call<PowerFlexVolume>('GET', `/api/instances/Volume::${id}`, `read volume ${id}`);
  }

  async removeVolume(id: string, name: string): Promise<void> {
    await this.client.call('POST', `/api/instances/Volume::${id}/action/removeVolume`, `delete volume ${name}`, { removeMode: 'ONLY_ME' }).catch((err: unknown) => {
      if (!refusedWith(err, ERR.volumeNotFound)) throw err;
    });
  }

  async setSize(id: string, name: string, sizeBytes: number): Promise<void> {
    await this.client.call('POST', `/api/instances/Volume::${id}/action/setVolumeSize`, `grow volume ${name}`, { sizeInGB: String(roundToStep(sizeBytes) / 2 ** 30) });
  }

  /**
   * Snapshots the volume as a new volume named `name` (a writable one, in the volume's vTree);
   * undefined when the name is taken.
   */
  async snapshot(id: string, name: string, what: string): Promise<string | undefined> {
    const systemId = await this.systemId();
    try {
      const reply = await this.client.call<{ volumeIdList?: string[] }>('POST', `/api/instances/System::${systemId}/action/snapshotVolumes`, what, { snapshotDefs: [{ volumeId: id, snapshotName: name }] });
      const made = reply.volumeIdList?.[0];
      if (!made) throw new BackendUnavailable(`the PowerFlex gateway at ${this.client.endpoint} answered no volume id to ${what}`);
      return made;
    } catch (err) {
      if (err instanceof PowerFlexRefusal && /already (in use|exists)/i.test(err.detail)) return undefined;
      if (err instanceof PowerFlexRefusal) throw new InvalidRequest(`${err.message}; check the free space of the volume's storage pool and its vTree's snapshot count (at most 126)`);
      throw err;
    }
  }

  /** Limits the volume's IO through this host's mapping (PowerFlex keeps them per mapping). */
  async setMappingLimits(id: string, name: string, hostId: string, limits: MappingLimits): Promise<void> {
    const body = { sdcId: hostId, iopsLimit: String(limits.iopsLimit), bandwidthLimitInKbps: String(limits.bandwidthLimitInKbps) };
    await this.client.call('POST', `/api/instances/Volume::${id}/action/setMappedSdcLimits`, `limit the IO of volume ${name} on host ${hostId}`, body);
  }

  /** The NVMe host object with this NQN, made (named `name`) when the array has none. */
  async hostFor(nqn: string, name: string): Promise<string> {
    const hosts = await this.client.call<NvmeHost[]>('GET', '/api/types/Sdc/instances', 'list hosts');
    const found = hosts.find((h) => h.nqn === nqn);
    if (found) return found.id;
    return (await this.client.call<{ id: string }>('POST', '/api/types/Host/instances', `register NVMe host ${nqn}`, { name, nqn })).id;
  }

  /**
   * Maps the volume to one host, refusing while another host has it (allowMultipleMappings
   * FALSE: error 306). Returns false when another host holds the mapping; true also when it was
   * mapped here already (error 81).
   */
  async mapOnly(id: string, name: string, hostId: string): Promise<boolean> {
    try {
      await this.client.call('POST', `/api/instances/Volume::${id}/action/addMappedHost`, `map volume ${name} to host ${hostId}`, { hostId, accessMode: 'ReadWrite', allowMultipleMappings: 'FALSE' });
      return true;
    } catch (err) {
      if (refusedWith(err, ERR.alreadyMappedHere)) return true;
      if (refusedWith(err, ERR.singleMapping)) return false;
      throw err;
    }
  }

  async unmap(id: string, name: string, hostId: string): Promise<void> {
    await this.client.call('POST', `/api/instances/Volume::${id}/action/removeMappedHost`, `unmap volume ${name} from host ${hostId}`, { hostId }).catch((err: unknown) => {
      if (!refusedWith(err, ERR.notMapped, ERR.hostNotMapped, ERR.volumeNotFound)) throw err;
    });
  }

  /** The NVMe/TCP portals of the protection domain's SDTs that serve hosts. */
  async sdtPortals(pool: PoolRef): Promise<string[]> {
    const { domainId } = await this.ids(pool);
    const sdts = await this.client.call<Sdt[]>('GET', `/api/instances/ProtectionDomain::${domainId}/relationships/Sdt`, `list the SDTs of protection domain ${pool.protectionDomain}`);
    return sdts.flatMap((sdt) => (sdt.ipList ?? []).filter((ip) => ip.role !== 'StorageOnly').map((ip) => `${ip.ip.includes(':') ? `[${ip.ip}]` : ip.ip}:${sdt.nvmePort ?? 4420}`));
  }
}
