import { join } from 'node:path';
import { CommandFailed } from '../errors.js';
import type { Exec } from '../exec.js';
import type { FileStore } from './file-store.js';

/**
 * Where a file-volume backend keeps each volume's data: a sparse image file in the volume's
 * directory (loop, and iscsi by default), or an LVM logical volume on the array host.
 */
export interface VolumeImages {
  /** What losetup attaches or tgtd serves. */
  path(name: string): string;
  /** Makes the image of a volume being created; `staging` becomes the volume's directory. EEXIST when taken. */
  create(name: string, staging: string, sizeBytes: number): Promise<void>;
  /** Undoes create() when the volume's creation failed after it. */
  abandon(name: string): Promise<void>;
  /** Deletes the image of a destroyed volume (its directory is gone already). */
  remove(name: string): Promise<void>;
  grow(name: string, sizeBytes: number): Promise<void>;
  /** Catches up with a size recorded while the image was not reachable (a no-op where grow is immediate). */
  ensureSize(name: string, sizeBytes: number): Promise<void>;
}

export const IMAGE = 'disk.img';

/** Sparse files, `<root>/<name>/disk.img`: they go with their directory. */
export class SparseImages implements VolumeImages {
  constructor(
    private readonly root: string,
    private readonly files: FileStore,
  ) {}

  path(name: string): string {
    return join(this.root, name, IMAGE);
  }

  create(_name: string, staging: string, sizeBytes: number): Promise<void> {
    return this.files.createSparse(join(staging, IMAGE), sizeBytes);
  }

  async abandon(): Promise<void> {}

  async remove(): Promise<void> {}

  grow(name: string, sizeBytes: number): Promise<void> {
    return this.files.truncate(this.path(name), sizeBytes);
  }

  async ensureSize(name: string, sizeBytes: number): Promise<void> {
    const { size } = (await this.files.stat(this.path(name))) ?? { size: 0 };
    if (size < sizeBytes) await this.files.truncate(this.path(name), sizeBytes);
  }
}

/** The logical volume that holds volume `name`'s data (snapshots are taken of it). */
export function logicalVolumeName(name: string): string {
  return `ballast-${name}`;
}

/**
 * Logical volumes `ballast-<name>` in a volume group on the array host (lvcreate, lvextend,
 * lvremove through the array host's Exec). LVM rounds sizes up to whole extents.
 */
export class LogicalVolumes implements VolumeImages {
  constructor(
    private readonly exec: Exec,
    private readonly volumeGroup: string,
    private readonly timeoutMs: number,
  ) {}

  private lv(name: string): string {
    return logicalVolumeName(name);
  }

  path(name: string): string {
    return `/dev/${this.volumeGroup}/${this.lv(name)}`;
  }

  async create(name: string, _staging: string, sizeBytes: number): Promise<void> {
    try {
      // -W y -Z y: wipe any old signature and zero the start, so the new volume reads blank.
      await this.exec.run(['lvcreate', '--yes', '-W', 'y', '-Z', 'y', '-n', this.lv(name), '-L', `${sizeBytes}b`, this.volumeGroup], { timeoutMs: this.timeoutMs });
    } catch (err) {
      if (err instanceof CommandFailed && /already exists/.test(err.stderr)) throw Object.assign(new Error(`logical volume ${this.lv(name)} already exists in ${this.volumeGroup}`), { code: 'EEXIST' });
      throw err;
    }
  }

  async abandon(name: string): Promise<void> {
    await this.remove(name);
  }

  async remove(name: string): Promise<void> {
    await this.exec.run(['lvremove', '--yes', `${this.volumeGroup}/${this.lv(name)}`], { timeoutMs: this.timeoutMs }).catch((err: unknown) => {
      if (!(err instanceof CommandFailed && /not found|Failed to find/.test(err.stderr))) throw err;
    });
  }

  async grow(name: string, sizeBytes: number): Promise<void> {
    await this.exec.run(['lvextend', '-L', `${sizeBytes}b`, `${this.volumeGroup}/${this.lv(name)}`], { timeoutMs: this.timeoutMs }).catch((err: unknown) => {
      // Already that large (LVM rounded up to whole extents at create): nothing to do.
      if (!(err instanceof CommandFailed && /matches existing size|not larger than existing/.test(err.stderr))) throw err;
    });
  }

  async ensureSize(): Promise<void> {}
}
