import { LeaseHeld, StaleRevision, VolumeNotFound } from '../errors.js';
import type { Logger } from '../log.js';
import type { HostIdentity, OwnershipRecord, OwnershipStore } from './types.js';

const CAS_ATTEMPTS = 8;

export function describeHolder(record: OwnershipRecord): string {
  return record.state === 'held' ? `host ${record.holder.hostId} (${record.holder.hostname})` : 'nobody';
}

/**
 * The per-volume ownership lease, over a backend's compare-and-swap metadata. A volume is
 * held by at most one host; every acquisition raises the generation (the fencing token).
 */
export class OwnershipLease {
  constructor(
    private readonly store: OwnershipStore,
    private readonly me: HostIdentity,
    private readonly log: Logger,
  ) {}

  /** True when `record` is held by this host in this boot. */
  heldByMe(record: OwnershipRecord): boolean {
    return record.state === 'held' && record.holder.hostId === this.me.hostId && record.holder.bootId === this.me.bootId;
  }

  /** Takes the volume for this host, or returns the record if this host already holds it. */
  async acquire(name: string): Promise<OwnershipRecord> {
    return this.retryOnStale(name, async () => {
      const current = await this.read(name);
      const record = current.value;
      if (this.heldByMe(record)) return record;
      if (record.state === 'held' && record.holder.hostId !== this.me.hostId) throw this.heldError(name, record);
      if (record.state === 'held') {
        // Same host id, other boot id: this host rebooted; what it held before is re-acquired.
        this.log.warn('re-acquiring a volume held by this host before a reboot', { volume: name, oldBootId: record.holder.bootId });
      }
      const next: OwnershipRecord = {
        state: 'held',
        holder: { hostId: this.me.hostId, bootId: this.me.bootId, hostname: this.me.hostname },
        generation: record.generation + 1,
        updatedAt: new Date().toISOString(),
      };
      await this.store.writeOwnership(name, current.revision, next);
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
      this.log.info('ownership released', { volume: name, generation: record.generation });
    });
  }

  /** Throws LeaseHeld when another host holds the volume (used before Remove). */
  async assertNotHeldElsewhere(name: string): Promise<void> {
    const current = await this.store.readOwnership(name);
    if (current && current.value.state === 'held' && current.value.holder.hostId !== this.me.hostId) {
      throw this.heldError(name, current.value);
    }
  }

  private heldError(name: string, record: Extract<OwnershipRecord, { state: 'held' }>): LeaseHeld {
    return new LeaseHeld(
      `volume ${name} is in use on ${describeHolder(record)} since ${record.updatedAt}; ` +
        `it can be used here once that host unmounts it`,
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
