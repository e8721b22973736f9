import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { PowerFlexBackendConfig } from '../../config/schema.js';
import { BackendUnavailable, InvalidRequest, LeaseHeld, VolumeNotFound } from '../../errors.js';
import type { Export, Initiator } from '../../export.js';
import type { Logger } from '../../log.js';
import { FileVolumes } from '../file-volumes.js';
import { checkMetadataRoot } from '../metadata-root.js';
import type { VolumeImages } from '../images.js';
import type { PowerFlexArray } from './array.js';

const SDT_PORTALS_TTL_MS = 60_000;

/** PowerFlex names: at most 31 characters, unique in the system. */
const NAME_MAX = 31;

/** "bl-<name>", or for a long name its start and a hash of the whole, so two names never meet. */
export function powerflexName(name: string): string {
  const plain = `bl-${name}`;
  if (plain.length <= NAME_MAX) return plain;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 9);
  return `bl-${name.slice(0, NAME_MAX - 13)}-${hash}`;
}

/** The NVM subsystem a PowerFlex system's SDTs serve (unverified against a real system: see the README). */
export const subsystemNqnOf = (systemId: string) => `nqn.1988-11.com.dell:powerflex:00:${systemId}`;

/** The volume's data: a PowerFlex volume in the pool, made, grown and removed through the gateway. */
class PowerFlexVolumes implements VolumeImages {
  constructor(
    private readonly array: PowerFlexArray,
    private readonly thin: boolean,
  ) {}

  path(name: string): string {
    return `powerflex:${powerflexName(name)}`;
  }

  async create(name: string, _staging: string, sizeBytes: number): Promise<void> {
    const id = await this.array.createVolume(powerflexName(name), sizeBytes, this.thin);
    if (!id) throw Object.assign(new Error(`PowerFlex volume ${powerflexName(name)} already exists`), { code: 'EEXIST' });
  }

  async abandon(name: string): Promise<void> {
    await this.remove(name);
  }

  async remove(name: string): Promise<void> {
    const id = await this.array.findVolume(powerflexName(name));
    if (id) await this.array.removeVolume(id, powerflexName(name));
  }

  async grow(name: string, sizeBytes: number): Promise<void> {
    const id = await this.array.findVolume(powerflexName(name));
    if (!id) throw new VolumeNotFound(name);
    const { sizeInKb } = await this.array.volume(id);
    if (sizeInKb * 1024 < sizeBytes) await this.array.setSize(id, powerflexName(name), sizeBytes);
  }

  async ensureSize(): Promise<void> {}
}

/**
 * Volumes on Dell PowerFlex over NVMe/TCP. PowerFlex keeps no metadata on a volume, so the record
 * and the ownership lease live in a directory all hosts share (metadata_root), written by the
 * same compare-and-swap as the loop backend's shared root. The array enforces it: a volume is
 * mapped to one host at a time (allowMultipleMappings FALSE, refused with error 306), and a host
 * that won the record unmaps the former holder before mapping itself, which cuts the former
 * holder's access at the array (the fence).
 */
export class PowerFlexDriver extends FileVolumes {
  readonly kind = 'powerflex';
  readonly transport = 'nvme-tcp' as const;
  private readonly hostIds = new Map<string, string>();
  private sdtPortals: { portals: string[]; readAt: number } | undefined;

  constructor(
    private readonly array: PowerFlexArray,
    private readonly backend: PowerFlexBackendConfig,
    log: Logger,
  ) {
    const { protectionDomain, storagePool } = array.pool;
    const root = join(backend.metadata_root, encodeURIComponent(`${protectionDomain}.${storagePool}`));
    super({ root, shared: true, images: () => new PowerFlexVolumes(array, backend.provisioning === 'thin') }, log);
  }

  /** Refuses a metadata root whose NFS mount would break the records' compare-and-swap. */
  async start(): Promise<void> {
    await this.checkHealth();
    await checkMetadataRoot(this.root, 'backends.powerflex.metadata_root');
  }

  override async checkHealth(): Promise<void> {
    await super.checkHealth();
    await this.array.ids();
  }

  async export(name: string, initiator: Initiator): Promise<Export> {
    const { nqn } = initiator;
    if (!nqn) throw new InvalidRequest(`host ${initiator.hostId} has no NVMe host NQN (/etc/nvme/hostnqn); PowerFlex volumes are attached over NVMe/TCP`);
    const record = await this.read(name);
    if (!record) throw new VolumeNotFound(name);
    const owner = record.value.ownership;
    if (owner.state !== 'held' || owner.holder.hostId !== initiator.hostId) throw new LeaseHeld(`volume ${name} is not leased to host ${initiator.hostId}; it is not mapped here`);
    const id = await this.volumeId(name);
    const hostId = await this.hostId(initiator.hostId, nqn);
    if (!(await this.array.mapOnly(id, powerflexName(name), hostId))) {
      // This host holds the record, so the host still mapped is a former holder: unmap it (the fence).
      const others = ((await this.array.volume(id)).mappedSdcInfo ?? []).filter((m) => m.sdcId !== hostId);
      this.log.warn('volume still mapped to a former holder: unmapping it there', { volume: name, hosts: others.map((m) => m.sdcName ?? m.sdcId) });
      for (const other of others) await this.array.unmap(id, powerflexName(name), other.sdcId);
      if (!(await this.array.mapOnly(id, powerflexName(name), hostId))) {
        throw new LeaseHeld(`PowerFlex maps volume ${name} (${powerflexName(name)}) to another host again; another host is taking it`);
      }
    }
    const systemId = await this.array.systemId();
    return { transport: 'nvme-tcp', subsystemNqn: subsystemNqnOf(systemId), portals: this.backend.portals ?? (await this.portals()), nguid: `${id}${systemId}`.toLowerCase() };
  }

  async unexport(name: string, initiator: Initiator): Promise<void> {
    if (!initiator.nqn) return;
    const id = await this.array.findVolume(powerflexName(name));
    if (id) await this.array.unmap(id, powerflexName(name), await this.hostId(initiator.hostId, initiator.nqn));
  }

  /** Unmaps the volume from every host before its record goes. */
  protected override async withdraw(name: string): Promise<void> {
    const id = await this.array.findVolume(powerflexName(name));
    if (!id) return;
    for (const mapping of (await this.array.volume(id)).mappedSdcInfo ?? []) await this.array.unmap(id, powerflexName(name), mapping.sdcId);
  }

  private async volumeId(name: string): Promise<string> {
    const id = await this.array.findVolume(powerflexName(name));
    if (!id) throw new BackendUnavailable(`PowerFlex has no volume ${powerflexName(name)} for ballast volume ${name}; it was deleted on the array (remove the volume from Docker)`);
    return id;
  }

  /** This host's NVMe host object on the array, registered on first use. */
  private async hostId(hostId: string, nqn: string): Promise<string> {
    let id = this.hostIds.get(nqn);
    if (!id) {
      id = await this.array.hostFor(nqn, powerflexName(hostId));
      this.hostIds.set(nqn, id);
    }
    return id;
  }

  /** The SDTs' portals, read again at most once a minute: they change only when SDTs are added or moved. */
  private async portals(): Promise<string[]> {
    if (this.sdtPortals && performance.now() - this.sdtPortals.readAt < SDT_PORTALS_TTL_MS) return this.sdtPortals.portals;
    const portals = await this.array.sdtPortals();
    if (portals.length === 0) {
      throw new BackendUnavailable(`PowerFlex lists no SDT serving hosts in protection domain ${this.array.pool.protectionDomain}; set backends.powerflex.portals`);
    }
    this.sdtPortals = { portals, readAt: performance.now() };
    return portals;
  }
}
