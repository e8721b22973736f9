import type { Logger } from '../log.js';
import { BackendUnavailable, errorMessage } from '../errors.js';
import { HostLeaseDamaged, type HostIdentity, type HostLease, type HostLeaseStore } from './types.js';

export interface LeaseTiming {
  leaseSeconds: number;
  renewEverySeconds: number;
}

/**
 * Monotonic seconds: never the wall clock, which can jump. The system's CLOCK_MONOTONIC (what
 * hrtime reads on Linux), not this process's performance.now(): the fence watchdog, another
 * process, compares its own reading with the daemon's renewal times.
 */
export const monotonicSeconds = (): number => Number(process.hrtime.bigint()) / 1e9;

/**
 * Keeps this host's lease in one backend: registers it (a new boot id raises the
 * generation), then advances renewSeq on every renew(). Only this host writes the record.
 */
export class HostLeaseKeeper {
  private current?: HostLease;
  /**
   * Monotonic time at which the last successful write (registration counts) STARTED: other
   * hosts may see a write as soon as it begins to land, and count this host's lease from then,
   * so the self-fence must count from then too, not from when a slow write returned.
   */
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
    const previous = await this.readPrevious();
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
    const started = this.clock();
    await this.store.writeHostLease(lease);
    this.current = lease;
    this.lastRenewed = started;
    this.log.info('host lease registered', { hostId: lease.hostId, generation: lease.generation, newBoot: !sameBoot });
    return lease;
  }

  /**
   * This host's record as it stands; a damaged one is taken up from what the store salvaged of
   * it, and register() rewrites it. Nothing needs waiting out first: while the record cannot be
   * read, other hosts count this host alive. The salvaged generation is kept, as in the same
   * boot: if this is the same boot, volumes still mounted here stay this host's in others' eyes
   * (a new generation would let another host take them at once); if it is not, the new boot id
   * alone makes others judge the old boot's holds dead (they read the record before judging a
   * holder). With nothing salvaged, no generation is safe to guess.
   */
  private async readPrevious(): Promise<HostLease | undefined> {
    try {
      return await this.store.readHostLease(this.me.hostId);
    } catch (err) {
      if (!(err instanceof HostLeaseDamaged)) throw err;
      if (!err.progress) {
        throw new BackendUnavailable(
          `this host's lease ${err.damage} and nothing beside it tells the generation it had, so ballast does not rewrite it ` +
            `(a wrong guess could let another host take a volume still mounted here): once no volume of this backend is mounted ` +
            `on this host, remove that file; ballast then registers afresh at its next renewal`,
        );
      }
      this.log.warn("rewriting this host's damaged lease record", { damaged: err.damage, ...err.progress });
      const { leaseSeconds, renewEverySeconds } = this.timing;
      return { ...this.me, ...err.progress, leaseSeconds, renewEverySeconds, renewedAtWall: '' };
    }
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
    const started = this.clock();
    try {
      await this.store.writeHostLease(next);
    } catch (err) {
      this.log.error('cannot renew the host lease', { error: errorMessage(err), secondsSinceRenewal: Math.round(this.secondsSinceRenewal()) });
      return false;
    }
    this.current = next;
    this.lastRenewed = started;
    return true;
  }

  secondsSinceRenewal(): number {
    return this.clock() - this.lastRenewed;
  }
}
