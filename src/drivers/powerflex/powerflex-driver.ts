import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { PowerFlexBackendConfig } from '../../config/schema.js';
import { BackendUnavailable, InvalidOption, InvalidRequest, LeaseHeld } from '../../errors.js';
import type { Export, Initiator } from '../../export.js';
import type { Logger } from '../../log.js';
import { LocalFileStore } from '../file-store.js';
import { MappedArrayDriver, type ArrayApi } from '../mapped-array.js';
import type { IoLimits, NewVolume, VolumeRecord } from '../types.js';
import type { MappingLimits, PoolRef, PowerFlexArray, PowerFlexRef } from './array.js';
import { PowerFlexSnapshots } from './snapshots.js';

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

const MiB = 2 ** 20;
/** PowerFlex refuses an IOPS limit of 10 or less (0 is unlimited). */
const MIN_IOPS = 11;

/**
 * A volume's limits as PowerFlex applies them to a mapping: one IOPS and one bandwidth limit
 * for reads and writes together. So each pair must be equal (read_iops = write_iops is the
 * mapping's iopsLimit), and bandwidth is in whole MiB/s; anything else is refused, naming the fix.
 */
export function mappingLimits(limits: IoLimits): MappingLimits {
  const pair = (kind: 'iops' | 'bps', read: number | undefined, write: number | undefined): number => {
    if (read === write) return read ?? 0;
    const show = (v: number | undefined) => (v === undefined ? 'unset' : String(v));
    throw new InvalidOption(
      `options read_${kind}=${show(read)}, write_${kind}=${show(write)}: PowerFlex limits a mapping's ${kind === 'iops' ? 'IOPS' : 'bandwidth'} for reads and writes together; ` +
        `give read_${kind} and write_${kind} the same value (the limit of both together), or use a profile on another backend for separate limits`,
    );
  };
  const iopsLimit = pair('iops', limits.readIops, limits.writeIops);
  const bps = pair('bps', limits.readBps, limits.writeBps);
  if (iopsLimit !== 0 && iopsLimit < MIN_IOPS) throw new InvalidOption(`options read_iops, write_iops = ${iopsLimit}: PowerFlex limits IOPS to more than 10`);
  if (bps % MiB) throw new InvalidOption(`options read_bps, write_bps = ${bps}: PowerFlex limits bandwidth in whole MiB/s (e.g. 50M)`);
  return { iopsLimit, bandwidthLimitInKbps: bps / 1024 };
}

/** What `docker volume inspect` shows as ioLimitsBy for a powerflex volume. */
export const IO_LIMITS_BY = 'PowerFlex setMappedSdcLimits, per mapping';

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
    /** The volume's IO limits, from its record: set on each new mapping. */
    private readonly limitsOf: (name: string) => Promise<IoLimits | undefined> = async () => undefined,
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
    const limits = await this.limitsOf(name);
    if (!limits) return;
    try {
      await this.array.setMappingLimits(ref.id, powerflexName(name), host, mappingLimits(limits));
    } catch (err) {
      // A mapping without its limits would run unthrottled: none is left.
      await this.array.unmap(ref.id, powerflexName(name), host).catch(() => undefined);
      throw err;
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

/**
 * The mapped-array driver, with IO limits PowerFlex enforces itself (refused at create when it
 * cannot) and PowerFlex's own snapshots.
 */
export class PowerFlexDriver extends MappedArrayDriver<PowerFlexRef> {
  readonly ioLimitsBy = IO_LIMITS_BY;
  declare readonly snapshots: PowerFlexSnapshots;

  override async create(volume: NewVolume): Promise<VolumeRecord> {
    if (volume.ioLimits) mappingLimits(volume.ioLimits);
    return super.create(volume);
  }

  /** The volume's snapshots go first: removeVolume ONLY_ME leaves them (and its clones) on the array. */
  protected override async withdraw(name: string): Promise<void> {
    await this.snapshots.removeAll(name);
    await super.withdraw(name);
  }
}

/** Volumes on Dell PowerFlex over NVMe/TCP, their records in backends.powerflex.metadata_root; snapshots are PowerFlex's. */
export function powerflexDriver(array: PowerFlexArray, backend: PowerFlexBackendConfig, pools: ReadonlyMap<string, PoolRef>, log: Logger): PowerFlexDriver {
  const root = join(backend.metadata_root, 'powerflex');
  const api = new PowerFlexApi(array, backend, pools, async (name) => (await driver.read(name))?.value.ioLimits);
  const driver: PowerFlexDriver = new PowerFlexDriver('powerflex', 'nvme-tcp', api, root, 'backends.powerflex.metadata_root', log, (volumes) => new PowerFlexSnapshots(array, volumes, root, new LocalFileStore(), powerflexName, log));
  return driver;
}
