import type { Config } from '../config/schema.js';
import type { BackendDriver } from '../drivers/index.js';
import type { Logger } from '../log.js';
import { HostLeaseKeeper } from '../ownership/host-lease.js';
import { HostMonitor } from '../ownership/host-monitor.js';
import { OwnershipLease, type HostLiveness } from '../ownership/lease.js';
import type { HostIdentity, HostLeaseStore } from '../ownership/types.js';

function isHostLeaseStore(driver: BackendDriver): driver is BackendDriver & HostLeaseStore {
  return 'writeHostLease' in driver && 'readHostLease' in driver;
}

/**
 * One ownership lease per backend, and on backends several hosts share, this host's host lease
 * and its watch on the others' (what makes a takeover of a silent holder possible).
 */
export function backendLeases(
  drivers: Iterable<BackendDriver>,
  identity: HostIdentity,
  timings: Config['lease'],
  log: Logger,
): { leases: Map<BackendDriver, OwnershipLease>; liveness: Map<BackendDriver, HostLiveness> } {
  const leases = new Map<BackendDriver, OwnershipLease>();
  const liveness = new Map<BackendDriver, HostLiveness>();
  for (const driver of new Set(drivers)) {
    let live: HostLiveness | undefined;
    if (driver.scope === 'global' && isHostLeaseStore(driver)) {
      const timing = { leaseSeconds: timings.seconds, renewEverySeconds: timings.renew_every };
      live = {
        store: driver,
        keeper: new HostLeaseKeeper(driver, identity, timing, log),
        monitor: new HostMonitor(timings.seconds),
        automaticTakeover: () => driver.takeover !== 'manual',
      };
      liveness.set(driver, live);
    }
    leases.set(driver, new OwnershipLease(driver, identity, log, live));
  }
  return { leases, liveness };
}
