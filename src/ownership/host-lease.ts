import type { Logger } from '../log.js';
import { errorMessage } from '../errors.js';
import type { HostIdentity, HostLease, HostLeaseStore } from './types.js';

export interface LeaseTiming {
  leaseSeconds: number;
  renewEverySeconds: number;
}

/** Monotonic seconds: never the wall clock, which can jump. */
export const monotonicSeconds = (): number => performance.now() / 1000;

/**
 * Keeps this host's lease in one backend: registers it (a new boot id raises the
 * generation), then advances renewSeq on every renew(). Only this host writes the record.
 */
export class HostLeaseKeeper {
  private current?: HostLease;
  /** Monotonic time of the last successful write (registration counts). */
  lastRenewed = -Infinity;

  constructor(
    private readonly store: HostLeaseStore,
    private readonly me: HostIdentity,
    private readonly timing: LeaseTiming,
    private readonly log: Logger,
    private readonly clock: () => number = monotonicSeconds,
  ) {}

  /** This host's generation in this backend; valid after register(). */
  get generation(): number {
    return this.current?.generation ?? 0;
  }

  async register(): Promise<HostLease> {
    const previous = await this.store.readHostLease(this.me.hostId);
    const sameBoot = previous?.bootId === this.me.bootId;
    const lease: HostLease = {
      hostId: this.me.hostId,
      bootId: this.me.bootId,
      hostname: this.me.hostname,
      generation: previous ? (sameBoot ? previous.generation : previous.generation + 1) : 1,
      renewSeq: (previous?.renewSeq ?? 0) + 1,
      leaseSeconds: this.timing.leaseSeconds,
      renewEverySeconds: this.timing.renewEverySeconds,
      renewedAtWall: new Date().toISOString(),
    };
    await this.store.writeHostLease(lease);
    this.current = lease;
    this.lastRenewed = this.clock();
    this.log.info('host lease registered', { hostId: lease.hostId, generation: lease.generation, newBoot: !sameBoot });
    return lease;
  }

  /** One write: renewSeq + 1. Returns false (and logs) when the backend cannot be written. */
  async renew(): Promise<boolean> {
    if (!this.current) {
      try {
        await this.register();
        return true;
      } catch (err) {
        this.log.error('cannot register the host lease', { error: errorMessage(err) });
        return false;
      }
    }
    const next = { ...this.current, renewSeq: this.current.renewSeq + 1, renewedAtWall: new Date().toISOString() };
    try {
      await this.store.writeHostLease(next);
    } catch (err) {
      this.log.error('cannot renew the host lease', { error: errorMessage(err), secondsSinceRenewal: Math.round(this.secondsSinceRenewal()) });
      return false;
    }
    this.current = next;
    this.lastRenewed = this.clock();
    return true;
  }

  secondsSinceRenewal(): number {
    return this.clock() - this.lastRenewed;
  }
}
