import { createServer } from 'node:net';
import { silentLogger } from '../../src/log.js';
import { HostLeaseKeeper } from '../../src/ownership/host-lease.js';
import { HostMonitor } from '../../src/ownership/host-monitor.js';
import { OwnershipLease } from '../../src/ownership/lease.js';
import type { HostIdentity, HostLeaseStore, OwnershipStore } from '../../src/ownership/types.js';

// One ballast host's ownership machinery on a backend driver, for tests that play several hosts
// in one process: its host lease (renewed only when the test says) and its volume leases, on a
// clock the test moves.

export const LEASE_TIMING = { leaseSeconds: 20, renewEverySeconds: 2 };

/** Monotonic seconds the test sets. */
export class FakeClock {
  constructor(public now = 0) {}
  read = () => this.now;
}

/** Registers the host's lease on the driver and returns its keeper and ownership lease. */
export async function leaseHost(driver: OwnershipStore & HostLeaseStore, identity: HostIdentity, clock = new FakeClock()) {
  const keeper = new HostLeaseKeeper(driver, identity, LEASE_TIMING, silentLogger(), clock.read);
  const lease = new OwnershipLease(driver, identity, silentLogger(), { store: driver, keeper, monitor: new HostMonitor(LEASE_TIMING.leaseSeconds, clock.read) });
  await keeper.register();
  return { keeper, lease, clock };
}

/** A loopback port nothing listens on (bound, then closed): a backend that is down. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
