import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { errorMessage } from '../errors.js';
import type { Export } from '../export.js';
import { writeFileAtomic } from '../util/atomic-file.js';

/** A volume attached and mounted on this host, and who uses it. */
export interface MountedVolume {
  /** The device the filesystem is on: the attached device, or its open LUKS mapping. */
  device: string;
  /** The attached device under the LUKS mapping, for an encrypted volume. */
  attached?: string;
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

/** The device the transport attached (under the LUKS mapping of an encrypted volume): what detach takes. */
export function attachedDevice(volume: MountedVolume): string {
  return volume.attached ?? volume.device;
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
      // Each transport's fields are its attacher's to read; here only which attacher it is.
      export: z.object({ transport: z.enum(['loop', 'iscsi', 'fc', 'nvme-tcp', 'vmdk']) }).passthrough(),
      attached: z.string().optional(),
      refs: z.record(z.string(), z.number().int().positive()),
      staleIds: z.array(z.string()),
      generation: z.number().int(),
      fenced: z.string().optional(),
    }),
  ),
});

/** When this kernel booted, in ms since the epoch (/proc/stat btime). */
async function bootTimeMs(): Promise<number> {
  const btime = /^btime (\d+)$/m.exec(await readFile('/proc/stat', 'utf8'))?.[1];
  if (!btime) throw new Error('/proc/stat shows no btime');
  return Number(btime) * 1000;
}

/**
 * The mount references of this host, replaced atomically (temp file, rename) on every change.
 * Not fsynced: they describe mounts of this kernel, which a power loss takes with them. A file
 * left damaged by a power loss is therefore one written before this boot, and lists nothing
 * that can still be mounted: it is read as empty. One damaged in this boot is an error.
 */
export class MountStateStore {
  readonly file: string;
  private lastSave: Promise<void> = Promise.resolve();

  constructor(
    stateDir: string,
    private readonly bootedAtMs: () => Promise<number> = bootTimeMs,
  ) {
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
    let parsed: z.infer<typeof stateSchema>;
    try {
      parsed = stateSchema.parse(JSON.parse(text));
    } catch (err) {
      if ((await stat(this.file)).mtimeMs < (await this.bootedAtMs())) return new Map();
      throw new Error(
        `${this.file} is damaged (${errorMessage(err)}). It was written since this host booted, so volumes it listed may still be mounted: ` +
          `unmount them (umount, losetup -d) and remove the file, then start ballast again`,
      );
    }
    return new Map(Object.entries(parsed.volumes) as unknown as Array<[string, MountedVolume]>);
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
    await writeFileAtomic(this.file, `${JSON.stringify(document, null, 2)}\n`, { durable: false });
  }
}
