import type { Config } from '../config/schema.js';
import type { BackendDriver, VolumeRecord } from '../drivers/index.js';
import { InvalidOption, VolumeNotFound } from '../errors.js';
import type { Logger } from '../log.js';
import { metrics } from '../metrics/registry.js';
import type { HostLiveness, OwnershipLease } from '../ownership/lease.js';
import type { HostIdentity } from '../ownership/types.js';
import { backendLeases } from './backend-leases.js';
import type { VolumeHome } from './mount-sequence.js';
import { VolumeIndex } from './volume-index.js';

export interface BackendsDeps {
  config: Config;
  identity: HostIdentity;
  drivers: Map<string, BackendDriver>;
  log: Logger;
}

/** A volume and the backend it lives on. */
export interface FoundVolume {
  driver: BackendDriver;
  record: VolumeRecord;
}

/**
 * The backends by profile, each with its ownership lease (and, when hosts share it, its host
 * lease), and the index of their volumes: where the manager looks a volume up.
 */
export class Backends {
  /** Each backend once (several profiles may name one). */
  readonly drivers: BackendDriver[];
  readonly leases: ReadonlyMap<BackendDriver, OwnershipLease>;
  /** Host leases of the backends several hosts share. */
  readonly liveness: ReadonlyMap<BackendDriver, HostLiveness>;
  /** Every volume in memory: Get and List answer from it (the last record seen, when a backend is down). */
  readonly index: VolumeIndex;

  constructor(private readonly deps: BackendsDeps) {
    const { config, identity, log } = deps;
    this.drivers = [...new Set(deps.drivers.values())];
    ({ leases: this.leases, liveness: this.liveness } = backendLeases(this.drivers, identity, config.lease, log));
    this.index = new VolumeIndex(this.drivers, config.lease.renew_every * 1000, identity.hostId, log);
    metrics.nameBackends(deps.drivers);
  }

  /** 'global' when every backend is shared by the hosts, as Docker's Capabilities asks. */
  scope(): 'local' | 'global' {
    return this.drivers.every((d) => d.scope === 'global') ? 'global' : 'local';
  }

  /** Reads the volume afresh from its backend (never the index): what mutations and index misses go by. */
  async find(name: string): Promise<FoundVolume | undefined> {
    const cached = this.index.cached(name);
    const drivers = cached ? [cached.driver, ...this.drivers] : this.drivers;
    for (const driver of new Set(drivers)) {
      const found = await metrics.backendRound(driver, driver.read(name));
      if (found) {
        this.index.put(driver, found);
        return { driver, record: found.value };
      }
    }
    this.index.remove(name);
    return undefined;
  }

  /** What a Mount works on: the volume read afresh, its lease, and whether hosts share its backend. */
  async home(name: string): Promise<VolumeHome> {
    const found = await this.find(name);
    if (!found) throw new VolumeNotFound(name);
    return { ...found, lease: this.leaseOf(found.driver), shared: this.liveness.has(found.driver) };
  }

  /** The driver a volume lives on (the last one seen, else read afresh) and its lease. */
  async ownerOf(name: string): Promise<{ driver: BackendDriver; lease: OwnershipLease } | undefined> {
    const found = this.index.cached(name) ?? (await this.find(name));
    return found && { driver: found.driver, lease: this.leaseOf(found.driver) };
  }

  driverFor(profile: string): BackendDriver {
    const driver = this.deps.drivers.get(profile);
    if (!driver) throw new InvalidOption(`no such profile ${profile}`);
    return driver;
  }

  leaseOf(driver: BackendDriver): OwnershipLease {
    const lease = this.leases.get(driver);
    if (!lease) throw new Error('driver without a lease: not created through createDrivers');
    return lease;
  }
}
