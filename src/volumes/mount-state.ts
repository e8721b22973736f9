import { readFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { Export } from '../export.js';
import { writeFileAtomic } from '../util/atomic-file.js';

/** A volume attached and mounted on this host, and who uses it. */
export interface MountedVolume {
  device: string;
  mountpoint: string;
  export: Export;
  /** Docker mount ID -> count. A multiset: `docker cp` mounts again with the same ID. */
  refs: Record<string, number>;
  /** IDs recorded before dockerd restarted: a Mount with one re-arms it to 1 instead of adding. */
  staleIds: string[];
  generation: number;
  /** Set once the filesystem was shut down because this host may have lost the volume: why. */
  fenced?: string;
}

export function totalRefs(volume: MountedVolume): number {
  return Object.values(volume.refs).reduce((sum, n) => sum + n, 0);
}

/** Records one Mount(ID). */
export function addRef(volume: MountedVolume, id: string): void {
  if (volume.staleIds.includes(id)) {
    volume.staleIds = volume.staleIds.filter((s) => s !== id);
    volume.refs[id] = 1;
    return;
  }
  volume.refs[id] = (volume.refs[id] ?? 0) + 1;
}

/** Records one Unmount(ID); false when the ID holds no reference (an unknown or repeated Unmount). */
export function removeRef(volume: MountedVolume, id: string): boolean {
  const count = volume.refs[id];
  if (!count) return false;
  if (count > 1) volume.refs[id] = count - 1;
  else delete volume.refs[id];
  volume.staleIds = volume.staleIds.filter((s) => s !== id);
  return true;
}

/** After dockerd restarted, every ID it held may come back with a fresh Mount: mark them. */
export function markStale(volume: MountedVolume): void {
  volume.staleIds = Object.keys(volume.refs);
}

const stateSchema = z.object({
  v: z.literal(1),
  volumes: z.record(
    z.string(),
    z.object({
      device: z.string(),
      mountpoint: z.string(),
      export: z.object({ transport: z.literal('loop'), file: z.string() }),
      refs: z.record(z.string(), z.number().int().positive()),
      staleIds: z.array(z.string()),
      generation: z.number().int(),
      fenced: z.string().optional(),
    }),
  ),
});

/** The mount references of this host, persisted atomically (temp file, fsync, rename) on every change. */
export class MountStateStore {
  readonly file: string;
  private lastSave: Promise<void> = Promise.resolve();

  constructor(stateDir: string) {
    this.file = join(stateDir, 'mounts.json');
  }

  async load(): Promise<Map<string, MountedVolume>> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
      throw err;
    }
    const parsed = stateSchema.parse(JSON.parse(text));
    return new Map(Object.entries(parsed.volumes));
  }

  /**
   * Saves run one after another and each serialises the map when its turn comes, so a
   * slow save started earlier can never overwrite a newer one.
   */
  save(volumes: ReadonlyMap<string, MountedVolume>): Promise<void> {
    const next = this.lastSave.catch(() => undefined).then(() => this.write(volumes));
    this.lastSave = next;
    return next;
  }

  private async write(volumes: ReadonlyMap<string, MountedVolume>): Promise<void> {
    await mkdir(join(this.file, '..'), { recursive: true, mode: 0o700 });
    const document = { v: 1 as const, volumes: Object.fromEntries(volumes) };
    await writeFileAtomic(this.file, `${JSON.stringify(document, null, 2)}\n`);
  }
}
