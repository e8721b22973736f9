import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { BackendUnavailable, StaleRevision, VolumeNotFound, errorMessage } from '../../errors.js';
import type { Logger } from '../../log.js';
import { monotonicSeconds } from '../../ownership/host-lease.js';
import type { VolumeRecord } from '../types.js';
import { volumeRecordSchema } from '../file-volumes.js';
import type { DatastoreFiles } from './datastore-files.js';
import type { MoRef } from './soap.js';

// The vmdk volume's record, compare-and-swapped in 4 vCenter calls instead of FileVolumes' 9
// (guard file made, read again, record replaced, guard deleted: each file operation a task):
//   <root>/<name>/meta.json          {v, revision, volume, vmdk?}: the record FileVolumes reads,
//                                    plus what the vmdk driver keeps of the disk (`vmdk`)
//   <root>/<name>/.claims-<i>-<b>/<r>  empty directory: revision r is taken (b = floor(r / 64); i
//                                    names the volume's incarnation, a hash of its createdAt)
// A writer that read revision n makes the directory for n + 1 (MakeDirectory without parents:
// one synchronous call, refused when the name exists), then replaces meta.json (scratch file
// moved over it). Every writer claims, so once n + 1 is claimed nobody else can write n + 1, and
// nobody can write n + 2 before reading n + 1: the claim alone proves the record is still at n,
// with no guard to delete and no second read.
// The timing rules are the metadata guard's (metadata-guard.ts): a writer claims within
// READ_FRESH_MS of its read and commits within CLAIM_HOLD_LIMIT_MS of its claim or not at all; a
// claim another host sees unused (the record still at n) for CLAIM_STALE_MS belonged to a writer
// that died, and is skipped (the next writer takes n + 2). Old claims go a bucket at a time,
// PRUNE_AFTER_MS after the bucket two later was begun: no writer can still be about to claim them.

const META = 'meta.json';
const BUCKET = 64;
export const READ_FRESH_MS = 10_000;
export const CLAIM_HOLD_LIMIT_MS = 15_000;
export const CLAIM_STALE_MS = 30_000;
const PRUNE_AFTER_MS = 60_000;
/** How long one writer waits for a claim another writer is still committing. */
const WAIT_MS = 5_000;

const refSchema = z.object({ type: z.string(), value: z.string() });
const notesSchema = z.object({
  /** VMs ballast may have attached the disk to; absent: unknown (ask vCenter about every VM on the datastore). */
  vms: z.array(refSchema).optional(),
  diskUuid: z.string().optional(),
  /** The disk file's capacity as ballast made or grew it. */
  capacityKb: z.number().int().nonnegative().optional(),
});
const sidecarSchema = z.object({ v: z.literal(1), revision: z.number().int().nonnegative(), volume: volumeRecordSchema, vmdk: notesSchema.optional() });

export interface DiskNotes {
  vms?: MoRef[];
  diskUuid?: string;
  capacityKb?: number;
}

/** A volume's record at one revision, as this process read or wrote it, and when (monotonic ms). */
export interface VmdkRecord {
  revision: number;
  volume: VolumeRecord;
  notes: DiskNotes;
  atMs: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const errnoOf = (err: unknown) => (err as NodeJS.ErrnoException)?.code;

export class VmdkRecords {
  /** The record of each volume as this process last read or wrote it. */
  private readonly last = new Map<string, VmdkRecord>();
  /** Per volume: a claim seen with the record unchanged, and since when. */
  private readonly sightings = new Map<string, { revision: number; claim: number; sinceMs: number }>();

  constructor(
    private readonly files: DatastoreFiles,
    private readonly root: string,
    private readonly log: Logger,
    private readonly clockMs: () => number = () => monotonicSeconds() * 1000,
  ) {}

  /** The record from the datastore now; undefined when the volume does not exist. */
  async read(name: string): Promise<VmdkRecord | undefined> {
    let text: string | undefined;
    try {
      text = await this.files.readFile(join(this.root, name, META));
    } catch (err) {
      throw new BackendUnavailable(`cannot read the metadata of volume ${name} on ${this.files.describe(this.root)}: ${errorMessage(err)}`);
    }
    if (text === undefined) {
      this.last.delete(name);
      return undefined;
    }
    const parsed = sidecarSchema.safeParse(JSON.parse(text));
    if (!parsed.success) throw new BackendUnavailable(`the metadata of volume ${name} on ${this.files.describe(this.root)} is damaged: ${parsed.error.issues[0]?.message}`);
    return this.remember(name, { revision: parsed.data.revision, volume: parsed.data.volume, notes: parsed.data.vmdk ?? {}, atMs: this.clockMs() });
  }

  /** The record as this process last read or wrote it, if that was at most `maxAgeMs` ago. */
  recent(name: string, maxAgeMs: number): VmdkRecord | undefined {
    const last = this.last.get(name);
    return last && this.clockMs() - last.atMs <= maxAgeMs ? last : undefined;
  }

  /** A record this process wrote by other means (the volume's creation). */
  remember(name: string, record: VmdkRecord): VmdkRecord {
    this.last.set(name, record);
    return record;
  }

  forget(name: string): void {
    this.last.delete(name);
  }

  /**
   * Writes change(record) as the next revision if the record is still at `expected`; throws
   * StaleRevision when another writer got there first, VolumeNotFound when the volume is gone.
   */
  async swap(name: string, expected: number, change: (current: VmdkRecord) => { volume: VolumeRecord; notes: DiskNotes }): Promise<VmdkRecord> {
    let base = this.recent(name, READ_FRESH_MS);
    if (!base || base.revision !== expected) base = await this.read(name);
    if (!base) throw new VolumeNotFound(name);
    if (base.revision !== expected) throw new StaleRevision(`metadata of volume ${name} changed (revision ${base.revision}, expected ${expected})`);
    const { revision, claimedAt, base: current } = await this.claim(name, base);
    const next = change(current);
    const record: VmdkRecord = { revision, volume: next.volume, notes: next.notes, atMs: this.clockMs() };
    try {
      if (this.clockMs() - claimedAt > CLAIM_HOLD_LIMIT_MS) {
        throw new StaleRevision(`the claim of revision ${revision} of volume ${name} was held too long; not committing (another host may have skipped it)`);
      }
      await this.files.writeAtomic(join(this.root, name, META), serialize(record));
    } catch (err) {
      // A task that failed left meta.json as it was: the claim goes, so nobody waits for it. When
      // the outcome is unknown (vCenter unreachable, task still running) it stays and is skipped.
      if (!(err instanceof BackendUnavailable)) await this.unclaim(current.volume, revision);
      this.last.delete(name);
      throw err;
    }
    return this.remember(name, record);
  }

  /**
   * Takes revision base.revision + 1 for a change that writes no record (destroy): nobody can
   * write the volume's record after it. `unclaim` gives it back when the change did not happen.
   */
  async claimNext(name: string, base: VmdkRecord): Promise<number> {
    return (await this.claim(name, base)).revision;
  }

  async unclaim(volume: VolumeRecord, revision: number): Promise<void> {
    const name = volume.name;
    await this.files.remove(this.claimPath(volume, revision)).catch((err: unknown) => {
      this.log.warn('could not give back a metadata claim; writers skip it after 30 s', { volume: name, revision, error: errorMessage(err) });
    });
  }

  private async claim(name: string, first: VmdkRecord): Promise<{ revision: number; claimedAt: number; base: VmdkRecord }> {
    // Waiting is bounded in real time; whether a claim is stale, on the (injectable) clock.
    const deadline = performance.now() + WAIT_MS;
    let base = first;
    let revision = base.revision + 1;
    for (;;) {
      if (this.clockMs() - base.atMs > READ_FRESH_MS) {
        const fresh = await this.read(name);
        if (!fresh) throw new VolumeNotFound(name);
        if (fresh.revision !== base.revision) throw new StaleRevision(`metadata of volume ${name} changed (revision ${fresh.revision}, expected ${base.revision})`);
        base = fresh;
      }
      try {
        await this.makeClaim(base, revision);
        this.sightings.delete(name);
        this.afterClaim(base.volume, revision);
        return { revision, claimedAt: this.clockMs(), base };
      } catch (err) {
        if (err instanceof StaleRevision || err instanceof VolumeNotFound) throw err;
        if (errnoOf(err) === 'ENOENT') throw new VolumeNotFound(name);
        if (errnoOf(err) !== 'EEXIST') throw new BackendUnavailable(`cannot claim revision ${revision} of volume ${name}: ${errorMessage(err)}`);
      }
      // Taken: by a writer that committed (the record moved on), is committing, or died.
      const now = await this.read(name);
      if (!now) throw new VolumeNotFound(name);
      if (now.revision !== base.revision) throw new StaleRevision(`metadata of volume ${name} changed (revision ${now.revision}, expected ${base.revision})`);
      base = now;
      const seen = this.sightings.get(name);
      if (!seen || seen.revision !== base.revision || seen.claim !== revision) {
        this.sightings.set(name, { revision: base.revision, claim: revision, sinceMs: this.clockMs() });
      } else if (this.clockMs() - seen.sinceMs >= CLAIM_STALE_MS) {
        this.log.warn('skipping a metadata revision claimed by a writer that never committed it', { volume: name, revision, unusedForMs: Math.round(this.clockMs() - seen.sinceMs) });
        this.sightings.delete(name);
        revision += 1;
        continue;
      }
      if (performance.now() > deadline) throw new StaleRevision(`revision ${revision} of volume ${name} stayed claimed but unwritten for ${WAIT_MS / 1000} s`);
      await sleep(25 + Math.random() * 75);
    }
  }

  /** The bucket a new volume's first claims go to: made by its creator, once the volume is there. */
  async makeFirstBucket(volume: Pick<VolumeRecord, 'name' | 'createdAt'>): Promise<void> {
    await this.files.makeExclusiveDir(this.bucketPath(volume, 0)).catch((err: unknown) => {
      if (errnoOf(err) !== 'EEXIST') throw err;
    });
  }

  private claimPath(volume: Pick<VolumeRecord, 'name' | 'createdAt'>, revision: number): string {
    return join(this.bucketPath(volume, Math.floor(revision / BUCKET)), String(revision));
  }

  private bucketPath(volume: Pick<VolumeRecord, 'name' | 'createdAt'>, bucket: number): string {
    const incarnation = createHash('sha1').update(volume.createdAt).digest('hex').slice(0, 8);
    return join(this.root, volume.name, `.claims-${incarnation}-${bucket}`);
  }

  private async makeClaim(base: VmdkRecord, revision: number): Promise<void> {
    const name = base.volume.name;
    try {
      await this.files.makeExclusiveDir(this.claimPath(base.volume, revision));
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw err;
      // No bucket: a new one (its maker died or has not got there), or another volume now has the name.
      const now = await this.read(name);
      if (!now) throw new VolumeNotFound(name);
      if (now.volume.createdAt !== base.volume.createdAt || now.revision !== base.revision) {
        throw new StaleRevision(`metadata of volume ${name} changed (revision ${now.revision} of the volume made ${now.volume.createdAt}, expected ${base.revision})`);
      }
      await this.files.makeExclusiveDir(this.bucketPath(base.volume, Math.floor(revision / BUCKET))).catch((e: unknown) => {
        if (errnoOf(e) !== 'EEXIST') throw e;
      });
      await this.files.makeExclusiveDir(this.claimPath(base.volume, revision));
    }
    // Half way through a bucket, the next one is made, so claims seldom find none.
    if (revision % BUCKET === BUCKET / 2) {
      await this.files.makeExclusiveDir(this.bucketPath(base.volume, Math.floor(revision / BUCKET) + 1)).catch(() => undefined);
    }
  }

  /** At a bucket's first claim, the bucket two back goes once no writer can still be about to claim in it. */
  private afterClaim(volume: VolumeRecord, revision: number): void {
    const bucket = Math.floor(revision / BUCKET);
    if (revision % BUCKET !== 0 || bucket < 2) return;
    const old = this.bucketPath(volume, bucket - 2);
    setTimeout(() => {
      this.files.remove(old).catch(() => undefined); // gone already, or left for destroy
    }, PRUNE_AFTER_MS).unref();
  }
}

function serialize(record: VmdkRecord): string {
  const vmdk = Object.keys(record.notes).length ? { vmdk: record.notes } : {};
  return `${JSON.stringify({ v: 1, revision: record.revision, volume: record.volume, ...vmdk }, null, 2)}\n`;
}
