import type { BackendDriver, ChangeListing, VolumeRecord } from '../drivers/index.js';
import { BackendUnavailable, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { metrics } from '../metrics/registry.js';
import type { Versioned } from '../ownership/types.js';
import { unreadRecord } from './volume-view.js';

export interface IndexEntry {
  driver: BackendDriver;
  record: VolumeRecord;
  revision: number;
  /** Why the last read of the record failed; `record` is then the last good one. */
  error?: string;
  /** Changed on this host since it was read: Get reads it afresh. */
  dirty?: boolean;
}

const READS_IN_FLIGHT = 16;
/** An index nobody asked for this long stops refreshing in the background. */
const IDLE_MS = 60_000;

/**
 * Every backend's volumes in memory, so Get and List do no I/O. On backends that keep change
 * markers (FileVolumes.changes) a refresh is two readdirs and a read of only the volumes whose
 * marker moved; a refresh starts at least every `maxAgeMs` (lease.renew_every) while the index is
 * in use, so an answer reflects every change any host committed before now - maxAgeMs. Changes on
 * this host go through at once. Absence is never cached: a name the index does not know is read
 * afresh, so a volume created elsewhere a moment ago is found at once. Backends without markers
 * are read afresh on every call, as before the index.
 */
export class VolumeIndex {
  private readonly entries = new Map<string, IndexEntry>();
  /** Per indexed driver: monotonic ms at which its last complete refresh started. */
  private readonly refreshedAt = new Map<BackendDriver, number>();
  private readonly unindexed = new Set<BackendDriver>();
  private readonly lastErrors = new Map<BackendDriver, string>();
  private refreshing?: Promise<void>;
  private timer?: NodeJS.Timeout;
  private lastUsed = -Infinity;
  /** Local writes are stamped; a refresh that started before a stamp does not overwrite that name. */
  private epoch = 0;
  private readonly stamps = new Map<string, number>();
  /** Bumped whenever membership or a record changes: List reuses its reply while it stands. */
  version = 0;

  constructor(
    private readonly drivers: BackendDriver[],
    private readonly maxAgeMs: number,
    private readonly hostId: string,
    private readonly log: Logger,
    private readonly clockMs: () => number = () => performance.now(),
  ) {
    for (const driver of drivers) if (!driver.changes) this.unindexed.add(driver);
  }

  /** Refreshes in the background at twice the required rate while the index is in use. */
  start(): void {
    this.timer = setInterval(() => {
      if (this.clockMs() - this.lastUsed < IDLE_MS) void this.refresh().catch(() => undefined);
    }, this.maxAgeMs / 2);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** The volume as known within maxAgeMs, or undefined: not indexed, dirty, or unknown (read it afresh). */
  async lookup(name: string): Promise<IndexEntry | undefined> {
    await this.ensureFresh();
    const entry = this.entries.get(name);
    if (!entry || entry.dirty || !this.isFresh(entry.driver)) return undefined;
    return entry;
  }

  /** The last record seen, however old: for answers while a backend is down, and for the lease upkeep. */
  cached(name: string): IndexEntry | undefined {
    return this.entries.get(name);
  }

  /**
   * Every volume. Backends without markers are listed afresh; `cacheable` says whether the
   * answer can be reused while `version` stands.
   */
  async all(): Promise<{ entries: IndexEntry[]; cacheable: boolean }> {
    await this.ensureFresh();
    for (const driver of this.drivers) {
      if (this.unindexed.has(driver)) {
        const records = await metrics.backendRound(driver, driver.list());
        this.replaceAll(driver, records);
      } else if (!this.isFresh(driver)) {
        throw new BackendUnavailable(`cannot list the volumes of the ${driver.kind} backend: ${this.lastErrors.get(driver) ?? 'not refreshed'}`);
      }
    }
    return { entries: [...this.entries.values()], cacheable: this.unindexed.size === 0 };
  }

  /** A record read afresh or written on this host. */
  put(driver: BackendDriver, versioned: Versioned<VolumeRecord>): void {
    this.stamp(versioned.value.name);
    this.store(driver, versioned);
  }

  /** The volume is gone (removed here, or a fresh read found nothing). */
  remove(name: string): void {
    this.stamp(name);
    this.forget(name);
  }

  /** Changed on this host: the next Get reads it afresh; List keeps it meanwhile. */
  touch(name: string): void {
    this.stamp(name);
    const entry = this.entries.get(name);
    if (entry) entry.dirty = true;
  }

  /** One refresh of every indexed driver at a time; callers share the one in flight. */
  refresh(): Promise<void> {
    this.refreshing ??= this.refreshAll().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async ensureFresh(): Promise<void> {
    this.lastUsed = this.clockMs();
    const stale = this.drivers.some((d) => !this.unindexed.has(d) && !this.isFresh(d));
    if (stale) await this.refresh();
  }

  private isFresh(driver: BackendDriver): boolean {
    if (this.unindexed.has(driver)) return false;
    return this.clockMs() - (this.refreshedAt.get(driver) ?? -Infinity) <= this.maxAgeMs;
  }

  private async refreshAll(): Promise<void> {
    const startEpoch = this.epoch;
    for (const driver of this.drivers) {
      if (this.unindexed.has(driver)) continue;
      const startedAt = this.clockMs();
      const epoch = this.epoch;
      let listing: ChangeListing | undefined;
      try {
        listing = await metrics.backendRound(driver, driver.changes!());
      } catch (err) {
        this.lastErrors.set(driver, errorMessage(err));
        this.log.warn('volume index: cannot list the backend; Get reads afresh until it can', { backend: driver.kind, error: errorMessage(err) });
        continue;
      }
      if (!listing) {
        this.unindexed.add(driver);
        continue;
      }
      await this.apply(driver, listing, epoch);
      this.refreshedAt.set(driver, startedAt);
      this.lastErrors.delete(driver);
    }
    for (const [name, stamp] of this.stamps) if (stamp <= startEpoch) this.stamps.delete(name);
  }

  /** Drops what is gone and re-reads what is new or whose marker moved. */
  private async apply(driver: BackendDriver, { names, revisions }: ChangeListing, epoch: number): Promise<void> {
    const present = new Set(names);
    for (const [name, entry] of this.entries) {
      if (entry.driver === driver && !present.has(name) && !this.stampedAfter(name, epoch)) this.forget(name);
    }
    const changed = names.filter((name) => {
      const entry = this.entries.get(name);
      const seen = revisions.get(name);
      if (entry && entry.driver !== driver) return false; // the same name on another backend: Get reads afresh
      const moved = !entry || entry.error !== undefined || seen?.length !== 1 || seen[0] !== entry.revision;
      // Touched here before this listing, and its marker still at the revision held: a marker moves
      // before every metadata write, so the record held is the stored one. Get may trust it again.
      if (!moved && entry.dirty && !this.stampedAfter(name, epoch)) entry.dirty = false;
      return moved;
    });
    await inParallel(changed, READS_IN_FLIGHT, async (name) => {
      let found: Versioned<VolumeRecord> | undefined;
      try {
        found = await driver.read(name);
      } catch (err) {
        const entry = this.entries.get(name);
        if (!entry && !this.stampedAfter(name, epoch)) {
          // Listed but unreadable (a damaged record): List shows it and Get reports why, instead of
          // the volume vanishing from Docker's view.
          this.entries.set(name, { driver, record: unreadRecord(name), revision: 0, error: errorMessage(err) });
          this.version += 1;
        } else if (entry && entry.error !== errorMessage(err)) {
          entry.error = errorMessage(err);
          this.version += 1;
        }
        return;
      }
      if (this.stampedAfter(name, epoch)) return;
      if (!found) return this.forget(name);
      this.store(driver, found);
      const seen = revisions.get(name) ?? [];
      if (seen.length !== 1 || seen[0] !== found.revision) {
        await driver.repairMarkers?.(name, found.revision, seen).catch((err) => {
          this.log.debug('volume index: cannot repair change markers', { volume: name, error: errorMessage(err) });
        });
      }
    });
  }

  private replaceAll(driver: BackendDriver, records: VolumeRecord[]): void {
    const present = new Set(records.map((r) => r.name));
    for (const [name, entry] of this.entries) if (entry.driver === driver && !present.has(name)) this.forget(name);
    // A listing carries no revisions: these entries are never trusted for Get (the driver is unindexed).
    for (const record of records) this.store(driver, { value: record, revision: this.entries.get(record.name)?.revision ?? 0 });
  }

  private store(driver: BackendDriver, { value, revision }: Versioned<VolumeRecord>): void {
    const entry = this.entries.get(value.name);
    const same = entry && entry.driver === driver && revision > 0 && entry.revision === revision && entry.error === undefined;
    this.entries.set(value.name, { driver, record: value, revision });
    if (same) return;
    this.version += 1;
    metrics.observeLease(value.name, value.ownership, this.hostId);
  }

  private forget(name: string): void {
    if (!this.entries.delete(name)) return;
    this.version += 1;
    metrics.volumeGone(name);
  }

  private stamp(name: string): void {
    this.epoch += 1;
    this.stamps.set(name, this.epoch);
  }

  private stampedAfter(name: string, epoch: number): boolean {
    return (this.stamps.get(name) ?? 0) > epoch;
  }
}

async function inParallel<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
