import type { Holder, HostLease } from './types.js';
import { monotonicSeconds } from './host-lease.js';

/** What this observer concludes about a volume's holder. */
export interface HolderAssessment {
  dead: boolean;
  /** Why, in words for the user. */
  reason: string;
  /** Seconds since this observer last saw the holder's lease move (or first saw it). */
  quietSeconds: number;
  /** Seconds until the holder counts as dead if it stays quiet; 0 when dead. */
  takeableInSeconds: number;
}

interface Observation {
  bootId: string;
  generation: number;
  renewSeq: number;
  leaseSeconds: number;
  /** Observer's monotonic time when renewSeq last changed, or when first observed. */
  changedAt: number;
}

/**
 * Judges other hosts alive or dead from their host leases, by watching renewSeq move on
 * this host's own monotonic clock: another host's wall clock is never compared with ours.
 */
export class HostMonitor {
  private readonly seen = new Map<string, Observation | { missingSince: number }>();

  constructor(
    private readonly defaultLeaseSeconds: number,
    private readonly clock: () => number = monotonicSeconds,
  ) {}

  /** Records a read of `hostId`'s lease (undefined: no lease record exists). */
  observe(hostId: string, lease: HostLease | undefined): void {
    const now = this.clock();
    const previous = this.seen.get(hostId);
    if (!lease) {
      if (!previous || !('missingSince' in previous)) this.seen.set(hostId, { missingSince: now });
      return;
    }
    const moved =
      !previous || 'missingSince' in previous || previous.renewSeq !== lease.renewSeq || previous.bootId !== lease.bootId || previous.generation !== lease.generation;
    this.seen.set(hostId, {
      bootId: lease.bootId,
      generation: lease.generation,
      renewSeq: lease.renewSeq,
      leaseSeconds: lease.leaseSeconds,
      changedAt: moved ? now : (previous as Observation).changedAt,
    });
  }

  /** Seconds since `hostId`'s lease last moved as this host saw it, without reading anything. */
  quietSeconds(hostId: string): number | undefined {
    const seen = this.seen.get(hostId);
    if (!seen) return undefined;
    return this.clock() - ('missingSince' in seen ? seen.missingSince : seen.changedAt);
  }

  /** Call after observe(holder.hostId, ...). */
  assess(holder: Holder): HolderAssessment {
    const now = this.clock();
    const seen = this.seen.get(holder.hostId);
    if (!seen) throw new Error(`host ${holder.hostId} was never observed`);
    if ('missingSince' in seen) {
      const quiet = now - seen.missingSince;
      const left = Math.max(0, this.defaultLeaseSeconds - quiet);
      return { dead: left === 0, reason: `host ${holder.hostId} has no host lease`, quietSeconds: quiet, takeableInSeconds: left };
    }
    if (seen.bootId !== holder.bootId || seen.generation !== holder.hostGeneration) {
      return { dead: true, reason: `host ${holder.hostId} restarted (new boot) and lost what it had mounted`, quietSeconds: 0, takeableInSeconds: 0 };
    }
    const quiet = now - seen.changedAt;
    const left = Math.max(0, seen.leaseSeconds - quiet);
    return {
      dead: left === 0,
      reason: left === 0 ? `host ${holder.hostId} stopped renewing its lease ${Math.round(quiet)} s ago` : `host ${holder.hostId} is alive`,
      quietSeconds: quiet,
      takeableInSeconds: left,
    };
  }
}
