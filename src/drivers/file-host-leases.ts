import { join } from 'node:path';
import { z } from 'zod';
import { BackendUnavailable, errorMessage } from '../errors.js';
import type { HostLease, HostLeaseStore } from '../ownership/types.js';
import type { FileStore } from './file-store.js';

// <root>/.hosts/<hostId>.json  each host's lease, written only by that host
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

/** Host leases as files under a shared root's .hosts directory. */
export class FileHostLeases implements HostLeaseStore {
  private readonly dir: string;

  constructor(
    root: string,
    private readonly files: FileStore,
    private readonly where: string,
  ) {
    this.dir = join(root, '.hosts');
  }

  private path(hostId: string): string {
    return join(this.dir, `${hostId}.json`);
  }

  async readHostLease(hostId: string): Promise<HostLease | undefined> {
    let text: string | undefined;
    try {
      text = await this.files.readFile(this.path(hostId));
    } catch (err) {
      throw new BackendUnavailable(`cannot read the host lease of ${hostId} under ${this.where}: ${errorMessage(err)}`);
    }
    if (text === undefined) return undefined;
    const parsed = hostLeaseSchema.safeParse(JSON.parse(text));
    if (!parsed.success) throw new BackendUnavailable(`the host lease of ${hostId} under ${this.where} is damaged`);
    return parsed.data;
  }

  async listHostLeases(): Promise<HostLease[]> {
    let entries: string[];
    try {
      entries = (await this.files.readdir(this.dir)) ?? [];
    } catch (err) {
      throw new BackendUnavailable(`cannot list host leases under ${this.where}: ${errorMessage(err)}`);
    }
    const leases = await Promise.all(
      entries.filter((e) => e.endsWith('.json') && !e.startsWith('.')).map((e) => this.readHostLease(e.slice(0, -5)).catch(() => undefined)),
    );
    return leases.filter((l): l is HostLease => l !== undefined);
  }

  /** One atomic replace: only the host itself writes its lease, so no compare-and-swap is needed. */
  async writeHostLease(lease: HostLease): Promise<void> {
    try {
      await this.files.mkdir(this.dir);
      await this.files.writeAtomic(this.path(lease.hostId), `${JSON.stringify(lease)}\n`);
    } catch (err) {
      throw new BackendUnavailable(`cannot write the host lease of ${lease.hostId} under ${this.where}: ${errorMessage(err)}`);
    }
  }
}
