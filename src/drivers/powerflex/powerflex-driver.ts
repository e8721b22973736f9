import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { PowerFlexBackendConfig } from '../../config/schema.js';
import { BackendUnavailable, InvalidRequest, LeaseHeld } from '../../errors.js';
import type { Export, Initiator } from '../../export.js';
import type { Logger } from '../../log.js';
import { MappedArrayDriver, type ArrayApi } from '../mapped-array.js';
import type { PoolRef, PowerFlexArray } from './array.js';

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

/** A ballast volume's PowerFlex volume, and the pool its SDTs serve it from. */
export interface PowerFlexRef {
  id: string;
  pool: PoolRef;
}

/**
 * Dell PowerFlex as ballast needs it: volumes in a profile's protection domain and pool, in
 * 8 GiB steps under names of at most 31 characters; hosts as NVMe hosts (registered by NQN on
 * first use); mappings with allowMultipleMappings FALSE, so the array itself refuses (error 306)
 * a second host while one is mapped; exports over NVMe/TCP to the SDTs.
 */
export class PowerFlexApi implements ArrayApi<PowerFlexRef> {
  readonly describe = 'PowerFlex';
  private sdtPortals = new Map<string, { portals: string[]; readAt: number }>();

  constructor(
    private readonly array: PowerFlexArray,
    private readonly backend: PowerFlexBackendConfig,
    /** Per ballast profile: its protection domain and pool. */
    private readonly pools: ReadonlyMap<string, PoolRef>,
  ) {}

  private poolOf(profile: string): PoolRef {
    return this.pools.get(profile) ?? { protectionDomain: this.backend.protection_domain, storagePool: this.backend.storage_pool };
  }

  async checkHealth(): Promise<void> {
    await this.array.ids(this.poolOf('default'));
  }

  async create(name: string, sizeBytes: number, profile: string): Promise<PowerFlexRef | undefined> {
    const pool = this.poolOf(profile);
    const id = await this.array.createVolume(powerflexName(name), sizeBytes, this.backend.provisioning === 'thin', pool);
    return id === undefined ? undefined : { id, pool };
  }

  remove(ref: PowerFlexRef, name: string): Promise<void> {
    return this.array.removeVolume(ref.id, powerflexName(name));
  }

  async grow(ref: PowerFlexRef, name: string, sizeBytes: number): Promise<void> {
    const { sizeInKb } = await this.array.volume(ref.id);
    if (sizeInKb * 1024 < sizeBytes) await this.array.setSize(ref.id, powerflexName(name), sizeBytes);
  }

  hostFor(initiator: Initiator): Promise<string> {
    if (!initiator.nqn) throw new InvalidRequest(`host ${initiator.hostId} has no NVMe host NQN (/etc/nvme/hostnqn); PowerFlex volumes are attached over NVMe/TCP`);
    return this.array.hostFor(initiator.nqn, powerflexName(initiator.hostId));
  }

  async mappedHosts(ref: PowerFlexRef): Promise<string[]> {
    return ((await this.array.volume(ref.id)).mappedSdcInfo ?? []).map((m) => m.sdcId);
  }

  async map(ref: PowerFlexRef, name: string, host: string): Promise<void> {
    if (!(await this.array.mapOnly(ref.id, powerflexName(name), host))) {
      throw new LeaseHeld(`PowerFlex maps volume ${name} (${powerflexName(name)}) to another host (error 306); another host is taking it`);
    }
  }

  unmap(ref: PowerFlexRef, name: string, host: string): Promise<void> {
    return this.array.unmap(ref.id, powerflexName(name), host);
  }

  async exportOf(ref: PowerFlexRef): Promise<Export> {
    const systemId = await this.array.systemId();
    const portals = this.backend.portals ?? (await this.portals(ref.pool));
    return { transport: 'nvme-tcp', subsystemNqn: subsystemNqnOf(systemId), portals, nguid: `${ref.id}${systemId}`.toLowerCase() };
  }

  /** The SDTs' portals, read again at most once a minute: they change only when SDTs are added or moved. */
  private async portals(pool: PoolRef): Promise<string[]> {
    const cached = this.sdtPortals.get(pool.protectionDomain);
    if (cached && performance.now() - cached.readAt < SDT_PORTALS_TTL_MS) return cached.portals;
    const portals = await this.array.sdtPortals(pool);
    if (portals.length === 0) throw new BackendUnavailable(`PowerFlex lists no SDT serving hosts in protection domain ${pool.protectionDomain}; set backends.powerflex.portals`);
    this.sdtPortals.set(pool.protectionDomain, { portals, readAt: performance.now() });
    return portals;
  }
}

/** Volumes on Dell PowerFlex over NVMe/TCP, their records in backends.powerflex.metadata_root. */
export function powerflexDriver(array: PowerFlexArray, backend: PowerFlexBackendConfig, pools: ReadonlyMap<string, PoolRef>, log: Logger): MappedArrayDriver<PowerFlexRef> {
  return new MappedArrayDriver('powerflex', 'nvme-tcp', new PowerFlexApi(array, backend, pools), join(backend.metadata_root, 'powerflex'), 'backends.powerflex.metadata_root', log);
}
