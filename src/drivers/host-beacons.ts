import { join } from 'node:path';
import type { HostLease } from '../ownership/types.js';
import type { FileStore } from './file-store.js';

// A beacon is an empty file beside the host leases whose name carries the host's renewal
// progress: <dir>/.beacon.<hostId>.<generation>.<renewSeq>. Its host renames it on every renewal,
// so one listing of the directory tells an observer every host's renewSeq: one read per observer
// per round instead of one per host. The leading dot keeps it out of older daemons' listings
// (they take only "<hostId>.json"); host ids are [A-Za-z0-9][A-Za-z0-9_.-]*, and the two numbers
// are matched from the end, so a dot in a host id is no ambiguity.

const PREFIX = '.beacon.';
const PATTERN = /^\.beacon\.(.+)\.(\d+)\.(\d+)$/;

export interface Beacon {
  /** The directory entry. */
  name: string;
  hostId: string;
  generation: number;
  renewSeq: number;
}

export function beaconName(hostId: string, generation: number, renewSeq: number): string {
  return `${PREFIX}${hostId}.${generation}.${renewSeq}`;
}

export function parseBeacon(entry: string): Beacon | undefined {
  const match = PATTERN.exec(entry);
  if (!match) return undefined;
  const [, hostId, generation, renewSeq] = match;
  return { name: entry, hostId: hostId!, generation: Number(generation), renewSeq: Number(renewSeq) };
}

const newer = (a: Beacon, b: Beacon) => a.generation > b.generation || (a.generation === b.generation && a.renewSeq > b.renewSeq);

/** Every beacon in a directory listing, grouped by host, newest first. */
export function beaconsByHost(entries: readonly string[]): Map<string, Beacon[]> {
  const byHost = new Map<string, Beacon[]>();
  for (const entry of entries) {
    const beacon = parseBeacon(entry);
    if (!beacon) continue;
    const list = byHost.get(beacon.hostId) ?? [];
    list.push(beacon);
    byHost.set(beacon.hostId, list);
  }
  for (const list of byHost.values()) list.sort((a, b) => (newer(a, b) ? -1 : newer(b, a) ? 1 : 0));
  return byHost;
}

/**
 * Moves this process's hosts' beacons: a rename of the name it wrote last (atomic on a local
 * filesystem and NFS; a move on a vSphere datastore), or a new empty file the first time. On
 * the first move after a start it lists the directory once to take over the newest beacon the
 * host left behind and remove older ones (two can exist only after a crash between a create
 * and a rename, or two processes claiming one host id).
 */
export class BeaconWriter {
  /** The entry each host's beacon has now, as this process last wrote it. */
  private readonly current = new Map<string, string>();

  constructor(
    private readonly dir: string,
    private readonly files: FileStore,
  ) {}

  async advance(hostId: string, generation: number, renewSeq: number): Promise<void> {
    const next = beaconName(hostId, generation, renewSeq);
    try {
      let previous = this.current.has(hostId) ? this.current.get(hostId) : await this.adopt(hostId);
      if (previous !== undefined && previous !== next) {
        try {
          await this.files.rename(join(this.dir, previous), join(this.dir, next));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          previous = undefined; // removed under us: made again below
        }
      }
      if (previous === undefined) await this.create(next);
      this.current.set(hostId, next);
    } catch (err) {
      // Not knowing where the beacon is now: list again next time.
      this.current.delete(hostId);
      throw err;
    }
  }

  private async adopt(hostId: string): Promise<string | undefined> {
    const [newest, ...stale] = beaconsByHost((await this.files.readdir(this.dir)) ?? []).get(hostId) ?? [];
    for (const old of stale) {
      await this.files.unlink(join(this.dir, old.name)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
    return newest?.name;
  }

  private async create(name: string): Promise<void> {
    await this.files.writeNew(join(this.dir, name), '').catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }
}

/**
 * One observer's view of the host leases: the last full record read of each host, advanced by
 * its beacon. A host's record (the JSON) is read again only when the beacon cannot stand in for
 * it: a host seen for the first time, a new generation (a new boot id comes with one), no beacon
 * (a daemon from before beacons), or a beacon behind what was seen (a daemon downgraded since,
 * whose beacon stopped while its record moves on; or a record made afresh).
 */
export class KnownHostLeases {
  private readonly known = new Map<string, HostLease>();

  /** The lease as the beacon shows it, or undefined when the host's record must be read. */
  fromBeacon(hostId: string, beacon: Beacon | undefined): HostLease | undefined {
    const known = this.known.get(hostId);
    if (!beacon || !known || beacon.generation !== known.generation || beacon.renewSeq < known.renewSeq) return undefined;
    if (beacon.renewSeq === known.renewSeq) return known;
    const lease = { ...known, renewSeq: beacon.renewSeq };
    this.known.set(hostId, lease);
    return lease;
  }

  /**
   * A record read because of a listing: the beacon is written before the record, so of the two
   * the beacon may be one renewal ahead (or more, when the record could not be written).
   */
  fromListing(lease: HostLease, beacon: Beacon | undefined): HostLease {
    const ahead = beacon && beacon.generation === lease.generation && beacon.renewSeq > lease.renewSeq;
    return this.remember(ahead ? { ...lease, renewSeq: beacon.renewSeq } : lease);
  }

  /**
   * A record read on its own (the holder of a volume, before judging it): never reported behind
   * what this observer already saw of the same boot and generation, or a host that died between
   * its beacon and its record would seem to move at every other look, and never be judged dead.
   */
  fromRead(lease: HostLease): HostLease {
    const known = this.known.get(lease.hostId);
    const behind = known && known.bootId === lease.bootId && known.generation === lease.generation && known.renewSeq > lease.renewSeq;
    return this.remember(behind ? { ...lease, renewSeq: known.renewSeq } : lease);
  }

  forget(hostId: string): void {
    this.known.delete(hostId);
  }

  /** Forgets every host not in `hostIds` (its record is gone). */
  keepOnly(hostIds: ReadonlySet<string>): void {
    for (const hostId of this.known.keys()) if (!hostIds.has(hostId)) this.known.delete(hostId);
  }

  private remember(lease: HostLease): HostLease {
    this.known.set(lease.hostId, lease);
    return lease;
  }
}
