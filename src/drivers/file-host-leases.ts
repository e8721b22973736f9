import { join } from 'node:path';
import { z } from 'zod';
import { BackendUnavailable, errorMessage } from '../errors.js';
import { HostLeaseDamaged, type HostLease, type HostLeaseStore } from '../ownership/types.js';
import { writeProblem, type FileStore } from './file-store.js';
import { type Beacon, BeaconWriter, beaconsByHost, KnownHostLeases } from './host-beacons.js';

// <root>/.hosts/<hostId>.json                              each host's lease, written only by that host
// <root>/.hosts/.beacon.<hostId>.<generation>.<renewSeq>   its renewal progress as a name (host-beacons.ts)
const hostLeaseSchema = z.object({
  hostId: z.string(),
  bootId: z.string(),
  hostname: z.string(),
  generation: z.number().int(),
  renewSeq: z.number().int(),
  leaseSeconds: z.number().positive(),
  renewEverySeconds: z.number().positive(),
  renewedAtWall: z.string(),
});

/** The record in `text`, or undefined when it is not one (empty, cut off mid-write, another shape). */
function parseHostLease(text: string): HostLease | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  const parsed = hostLeaseSchema.safeParse(json);
  return parsed.success ? parsed.data : undefined;
}

/**
 * Host leases as files under a shared root's .hosts directory. Listing them costs one readdir
 * at steady state, whatever the number of hosts: each host's renewSeq comes from its beacon,
 * and its record is read only when the beacon cannot stand in for it (KnownHostLeases).
 */
export class FileHostLeases implements HostLeaseStore {
  private readonly dir: string;
  private readonly beacons: BeaconWriter;
  private readonly known = new KnownHostLeases();

  constructor(
    root: string,
    private readonly files: FileStore,
    private readonly where: string,
  ) {
    this.dir = join(root, '.hosts');
    this.beacons = new BeaconWriter(this.dir, files);
  }

  private path(hostId: string): string {
    return join(this.dir, `${hostId}.json`);
  }

  /** The record itself, read now (a holder about to be judged: never a beacon alone). */
  async readHostLease(hostId: string): Promise<HostLease | undefined> {
    const lease = await this.readRecord(hostId);
    if (!lease) {
      this.known.forget(hostId);
      return undefined;
    }
    return this.known.fromRead(lease);
  }

  async listHostLeases(): Promise<HostLease[]> {
    const entries = await this.entries();
    const hostIds = entries.filter((e) => e.endsWith('.json') && !e.startsWith('.')).map((e) => e.slice(0, -5));
    this.known.keepOnly(new Set(hostIds));
    const beacons = beaconsByHost(entries);
    const leases = await Promise.all(
      hostIds.map((hostId) => {
        const beacon = beacons.get(hostId)?.[0];
        return this.known.fromBeacon(hostId, beacon) ?? this.readListed(hostId, beacon).catch(() => undefined);
      }),
    );
    return leases.filter((l): l is HostLease => l !== undefined);
  }

  /**
   * The beacon first, then the record: a renewal counts (the keeper's writeHostLease returns)
   * only once both moved, so what observers see never lags what this host believes it renewed.
   * The record is still written every time: daemons from before beacons read only it.
   */
  async writeHostLease(lease: HostLease): Promise<void> {
    try {
      await this.files.mkdir(this.dir);
      await this.beacons.advance(lease.hostId, lease.generation, lease.renewSeq);
      await this.files.writeAtomic(this.path(lease.hostId), `${JSON.stringify(lease)}\n`);
    } catch (err) {
      throw new BackendUnavailable(`cannot write the host lease of ${lease.hostId} under ${this.where}: ${writeProblem(err, this.where)}`);
    }
  }

  private async readListed(hostId: string, beacon: Beacon | undefined): Promise<HostLease | undefined> {
    const lease = await this.readRecord(hostId);
    if (!lease) {
      this.known.forget(hostId);
      return undefined;
    }
    return this.known.fromListing(lease, beacon);
  }

  private async entries(): Promise<string[]> {
    try {
      return (await this.files.readdir(this.dir)) ?? [];
    } catch (err) {
      throw new BackendUnavailable(`cannot list host leases under ${this.where}: ${errorMessage(err)}`);
    }
  }

  private async readRecord(hostId: string): Promise<HostLease | undefined> {
    const text = await this.readText(hostId);
    if (text === undefined) return undefined;
    const lease = parseHostLease(text);
    if (!lease) throw await this.damaged(hostId, text);
    return lease;
  }

  /**
   * With the generation and renewSeq of the host's beacon, for the host itself to rewrite the
   * record from: the beacon moves before every write of the record, so it got at least as far.
   */
  private async damaged(hostId: string, text: string): Promise<HostLeaseDamaged> {
    const problem = `is damaged (${text.trim() ? 'not a host lease' : 'empty'})`;
    const [beacon] = beaconsByHost(await this.entries()).get(hostId) ?? [];
    return new HostLeaseDamaged(
      this.unreadable(hostId, problem),
      `${this.files.describe(this.path(hostId))} ${problem}`,
      beacon && { generation: beacon.generation, renewSeq: beacon.renewSeq },
    );
  }

  private async readText(hostId: string): Promise<string | undefined> {
    try {
      return await this.files.readFile(this.path(hostId));
    } catch (err) {
      throw new BackendUnavailable(this.unreadable(hostId, `cannot be read (${errorMessage(err)})`));
    }
  }

  /**
   * What to tell about a host whose record cannot be read. Nobody can tell whether such a host is
   * alive, so it counts as alive: its volumes are never taken over (nor force-released) until the
   * file is readable or gone.
   */
  private unreadable(hostId: string, problem: string): string {
    const file = this.files.describe(this.path(hostId));
    return (
      `the host lease of ${hostId} (${file}) ${problem}, so ${hostId} counts as alive and none of its volumes is taken over: ` +
      `if ${hostId} runs ballast, it rewrites the file at its next renewal (a directory there must be removed by hand); ` +
      `if ${hostId} is down for good, remove ${file}, and its volumes can be taken over once its lease time has passed`
    );
  }
}
