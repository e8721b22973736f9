import { LeaseHeld, StaleRevision, TakeoverNeedsOperator, VolumeNotFound } from '../errors.js';
import type { Logger } from '../log.js';
import { metrics } from '../metrics/registry.js';
import type { HostLeaseKeeper } from './host-lease.js';
import type { HolderAssessment, HostMonitor } from './host-monitor.js';
import type { HostIdentity, HostLeaseStore, OwnershipRecord, OwnershipStore } from './types.js';

const CAS_ATTEMPTS = 8;

type Held = Extract<OwnershipRecord, { state: 'held' }>;

/** Host leases of a backend shared by several hosts: what makes takeover of a dead holder possible. */
export interface HostLiveness {
  store: HostLeaseStore;
  keeper: HostLeaseKeeper;
  monitor: HostMonitor;
  /** False where the storage cannot stop a former holder: a dead holder's volume waits for an operator. Default true. */
  automaticTakeover?: () => boolean;
}

export function describeHolder(record: OwnershipRecord): string {
  return record.state === 'held' ? `host ${record.holder.hostId} (${record.holder.hostname})` : 'nobody';
}

/**
 * The per-volume ownership lease, over a backend's compare-and-swap metadata. A volume is
 * held by at most one host; every acquisition raises the generation (the fencing token).
 * With host leases, a holder that stopped renewing for its lease time is taken over.
 */
export class OwnershipLease {
  constructor(
    private readonly store: OwnershipStore,
    private readonly me: HostIdentity,
    private readonly log: Logger,
    private readonly liveness?: HostLiveness,
  ) {}

  /** True when `record` is held by this host in this boot. */
  heldByMe(record: OwnershipRecord): boolean {
    return record.state === 'held' && record.holder.hostId === this.me.hostId && record.holder.bootId === this.me.bootId;
  }

  /** Takes the volume for this host (taking it over from a dead holder), or returns it if already ours. */
  async acquire(name: string): Promise<OwnershipRecord> {
    return this.retryOnStale(name, async () => {
      const current = await this.read(name);
      const record = current.value;
      if (this.heldByMe(record)) return record;
      if (record.state === 'held' && record.holder.hostId !== this.me.hostId) {
        const assessment = await this.assess(record);
        if (!assessment?.dead) throw this.heldError(name, record, assessment);
        if (this.liveness?.automaticTakeover?.() === false) throw this.needsOperatorError(name, record, assessment);
        this.log.warn('taking over a volume from a dead holder', { volume: name, from: record.holder.hostId, reason: assessment.reason, generation: record.generation + 1 });
      } else if (record.state === 'held') {
        // Same host id, other boot id: this host rebooted; what it held before is re-acquired.
        this.log.warn('re-acquiring a volume held by this host before a reboot', { volume: name, oldBootId: record.holder.bootId });
      }
      const next: OwnershipRecord = {
        state: 'held',
        holder: { hostId: this.me.hostId, bootId: this.me.bootId, hostname: this.me.hostname, hostGeneration: this.liveness?.keeper.generation ?? 0 },
        generation: record.generation + 1,
        updatedAt: new Date().toISOString(),
      };
      await this.store.writeOwnership(name, current.revision, next);
      metrics.observeLease(name, next, this.me.hostId);
      if (record.state === 'held' && record.holder.hostId !== this.me.hostId) metrics.takeover();
      this.log.info('ownership acquired', { volume: name, generation: next.generation });
      return next;
    });
  }

  /** Frees the volume if this host holds it; a record held elsewhere is left alone. */
  async release(name: string): Promise<void> {
    await this.retryOnStale(name, async () => {
      const current = await this.store.readOwnership(name);
      if (!current) return;
      const record = current.value;
      if (record.state !== 'held' || record.holder.hostId !== this.me.hostId) {
        this.log.warn('release skipped: this host does not hold the volume', { volume: name, holder: describeHolder(record) });
        return;
      }
      const next: OwnershipRecord = { state: 'free', generation: record.generation, updatedAt: new Date().toISOString() };
      await this.store.writeOwnership(name, current.revision, next);
      metrics.observeLease(name, next, this.me.hostId);
      this.log.info('ownership released', { volume: name, generation: record.generation });
    });
  }

  /**
   * Breaks another host's hold on a volume, for an operator who knows that host is dead.
   * Refused while the holder still renews its host lease: the loop backend cannot fence a
   * live holder at the storage, so taking its volume would let two hosts write it.
   */
  async forceRelease(name: string): Promise<OwnershipRecord> {
    return this.retryOnStale(name, async () => {
      const current = await this.read(name);
      const record = current.value;
      if (record.state !== 'held') return record;
      if (record.holder.hostId !== this.me.hostId) {
        const assessment = await this.assess(record);
        if (assessment && !assessment.dead) throw this.heldError(name, record, assessment);
      }
      const next: OwnershipRecord = { state: 'free', generation: record.generation + 1, updatedAt: new Date().toISOString() };
      await this.store.writeOwnership(name, current.revision, next);
      metrics.observeLease(name, next, this.me.hostId);
      this.log.warn('ownership force-released by the operator', { volume: name, from: record.holder.hostId, generation: next.generation });
      return next;
    });
  }

  /** Throws LeaseHeld when another host holds the volume (used before Remove). */
  async assertNotHeldElsewhere(name: string): Promise<void> {
    const current = await this.store.readOwnership(name);
    if (current && current.value.state === 'held' && current.value.holder.hostId !== this.me.hostId) {
      throw this.heldError(name, current.value, await this.assess(current.value));
    }
  }

  /** What this host sees of the holder's liveness; undefined without host leases. */
  async assess(record: Held): Promise<HolderAssessment | undefined> {
    if (!this.liveness) return undefined;
    const hostLease = await this.liveness.store.readHostLease(record.holder.hostId);
    this.liveness.monitor.observe(record.holder.hostId, hostLease);
    return this.liveness.monitor.assess(record.holder);
  }

  private needsOperatorError(name: string, record: Held, assessment: HolderAssessment): TakeoverNeedsOperator {
    const host = record.holder.hostId;
    return new TakeoverNeedsOperator(
      `volume ${name} is held by ${describeHolder(record)}, which looks dead (${assessment.reason}), but this storage cannot stop ${host} ` +
        `from writing if it is only cut off, so ballast does not take the volume over by itself. Once ${host} is known to be down ` +
        `(powered off, or its containers stopped), run on any host: ballast volume release ${name} --force; then mount again`,
    );
  }

  private heldError(name: string, record: Held, assessment: HolderAssessment | undefined): LeaseHeld {
    const host = record.holder.hostId;
    if (!assessment) {
      return new LeaseHeld(`volume ${name} is in use on ${describeHolder(record)} since ${record.updatedAt}; it can be used here once that host unmounts it`);
    }
    return new LeaseHeld(
      `volume ${name} is in use on ${describeHolder(record)} (lease renewed ${Math.round(assessment.quietSeconds)} s ago); ` +
        `it moves when ${host} releases it or ${Math.ceil(assessment.takeableInSeconds)} s after ${host} stops renewing`,
    );
  }

  private async read(name: string) {
    const current = await this.store.readOwnership(name);
    if (!current) throw new VolumeNotFound(name);
    return current;
  }

  private async retryOnStale<T>(name: string, attempt: () => Promise<T>): Promise<T> {
    for (let i = 1; ; i += 1) {
      try {
        return await attempt();
      } catch (err) {
        if (!(err instanceof StaleRevision) || i >= CAS_ATTEMPTS) throw err;
        this.log.debug('ownership compare-and-swap lost a race; retrying', { volume: name, attempt: i });
      }
    }
  }
}
